import json
import re

import pytest

from learnlab.cli import main
from learnlab.incontext.mesa import STUDY, Config


def test_mesa_smoke_run(tmp_path, capsys):
    assert main(["run", "mesa", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    results = json.loads(next(tmp_path.glob("mesa/*/results.json")).read_text())
    assert results["status"] == "ok"
    assert set(STUDY.figures) == {"per_t_loss", "per_t_loss_mesa", "repurposing", "training_curves"}
    assert sorted(results["figures"]) == sorted(f"{name}.png" for name in STUDY.figures)
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
                                      "prompt_tuning_steps=0", "prompt_tuned_models=mesa1", "prompt_tuned_models=linear2,gpt",
                                      "end_lr=1e-3", "sensitivity_positions=-1", "micro_batch=0"])
def test_bad_config_is_a_user_error(tmp_path, capsys, override):
    assert main(["run", "mesa", "--preset", "smoke", "--set", override, "--out", str(tmp_path), "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("changes, message", [
    ({"end_lr": 5e-4}, "end_lr must be <= peak_lr and mesa_peak_lr"),
    ({"sensitivity_positions": (10, 50)}, "sensitivity_positions must lie in [0, seq_len)"),
    ({"prompt_examples": (1, 2)}, "prompt_examples must contain 1 and 10"),
    ({"prompt_tuning_lr": float("nan")}, "prompt_tuning_lr must be > 0"),
    ({"seq_len": 20}, "seq_len must be > 20"),
    ({"kind": "circle"}, "kind must be one of full, partial, contracting"),
])
def test_config_rules_name_the_field(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Config(**changes)


def test_training_settings_per_model():
    config = Config()
    linear2, linear1, mesa1 = (config.training(key) for key in ("linear2", "linear1", "mesa1"))
    assert (linear2.steps, linear2.batch_size, linear2.peak_lr, linear2.warmup_steps) == (2500, 256, 3e-4, 1000)
    assert (linear1.steps, linear1.batch_size, linear1.warmup_steps) == (600, 128, 300)  # warm-up over half a short run
    assert (mesa1.steps, mesa1.batch_size, mesa1.peak_lr) == (400, 64, 4e-4)
    schedule = linear2.schedule  # the official warmup-cosine: 0 at step 0, peak after warm-up, 1e-5 at step 20 000
    assert schedule(0) == 0.0 and schedule(1000) == pytest.approx(3e-4) and schedule(20000) == pytest.approx(1e-5)
