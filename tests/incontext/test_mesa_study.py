import json

import pytest

from learnlab.cli import main


def test_mesa_smoke_run(tmp_path, capsys):
    assert main(["run", "mesa", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    results = json.loads(next(tmp_path.glob("mesa/*/results.json")).read_text())
    assert results["status"] == "ok"
    assert {"per_t_loss.png", "per_t_loss_mesa.png", "repurposing.png", "training_curves.png"} <= set(results["figures"])
    verdicts = {claim["id"]: claim["verdict"] for claim in results["claims"]}
    assert verdicts["C1"] == "pass" and verdicts["C2"] == "pass"
    assert set(verdicts) == {"C1", "C2", "C3", "C4", "C5", "C6"}
    assert set(verdicts.values()) <= {"pass", "fail"}
    measured = results["measured"]
    for key in ("linear2", "linear1", "mesa1"):  # the smoke preset tunes every model's EOS and prefix
        assert len(measured[f"{key}_tuned_prompt_errors"]) == len(measured["prompt_examples"])
        assert measured[f"{key}_tuned_prompt_ratio_10_to_1_standard_error"] > 0
    assert measured["linear2_prompt_ratio_10_to_1"] > 0  # the untuned baseline stays reported


@pytest.mark.parametrize("override", ["linear2_steps=0", "sensitivity_positions=99", "kind=circle", "prompt_examples=2,3",
                                      "prompt_tuning_lr=0", "prompt_tuning_lr=nan", "prompt_prefix_length=-1",
                                      "prompt_tuning_steps=0", "prompt_tuned_models=mesa1", "prompt_tuned_models=linear2,gpt"])
def test_bad_config_is_a_user_error(tmp_path, capsys, override):
    assert main(["run", "mesa", "--preset", "smoke", "--set", override, "--out", str(tmp_path), "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
