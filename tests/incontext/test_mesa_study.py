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


@pytest.mark.parametrize("override", ["linear2_steps=0", "sensitivity_positions=99", "kind=circle", "prompt_examples=2,3"])
def test_bad_config_is_a_user_error(tmp_path, capsys, override):
    assert main(["run", "mesa", "--preset", "smoke", "--set", override, "--out", str(tmp_path), "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
