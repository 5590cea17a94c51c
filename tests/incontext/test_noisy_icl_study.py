import json

import pytest

from learnlab.cli import main
from learnlab.core.errors import UserError
from learnlab.core.registry import get_study
from learnlab.core.runs import RunOptions, prepare_run
from learnlab.incontext.noisy_icl import PRESETS, Config, paper_value


def test_config_validation_and_table():
    with pytest.raises(ValueError):
        Config(layers=(2, 1))
    with pytest.raises(ValueError):
        Config(full_layers=(4,))
    with pytest.raises(ValueError):
        Config(categorical=("1/x",))
    with pytest.raises(ValueError):
        Config(num_context=10)
    with pytest.raises(ValueError):
        Config(random_inits=(0,))  # depth 1 has no warm start
    with pytest.raises(ValueError):
        Config(random_inits=(1, 0), warm_start=False)
    for bad in ({"steps": ()}, {"steps": (10, 0)}, {"learning_rates": (0.01, -1.0)}, {"batch_size": 0},
                {"clip_norm": 0.0}, {"full_layers": (2, 1)}):
        with pytest.raises(ValueError):
            Config(**bad)
    quick = PRESETS["quick"]
    assert quick.training_steps(5) == quick.steps[-1] and quick.learning_rate(1) == quick.learning_rates[0]
    assert quick.random_starts(3) == 0 and quick.warm_start  # depth 3 starts from warm starts only
    assert [n.key for n in PRESETS["quick"].noise_settings()] == ["u0", "u1", "u3", "u5", "c1_3"]
    assert paper_value("diag1", "u0") == 1.768 and paper_value("constrr", "u5") == 0.365
    assert paper_value("full2", "u0") is None


def test_smoke_run(tmp_path, capsys):
    assert main(["run", "noisy-icl", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    assert "C7" in capsys.readouterr().out
    run_dir = prepare_run(get_study("noisy-icl"), RunOptions(preset="smoke", out=tmp_path)).run_dir
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert {"adjusted_loss_vs_sigma.png", "table1.png", "training_curves.png"} <= set(results["figures"])
    measured = results["measured"]
    verdicts = {claim["id"]: claim["verdict"] for claim in results["claims"]}
    assert verdicts["C7"] == "pass" and measured["extraction_max_abs_error_float64"] < 1e-10
    assert set(verdicts.values()) <= {"pass", "fail", "not-run"}
    assert measured["adjusted_constrr_u0"] == pytest.approx(0.0, abs=1e-3)
    assert 1.5 < measured["adjusted_gd1_u0"] < 2.1
    rows = {(row["model"], row["setting"]) for row in measured["table1"]}
    assert ("diag2", "u3") in rows and ("constrr", "u3") in rows


def test_bad_override_is_a_user_error():
    study = get_study("noisy-icl")
    with pytest.raises(UserError):
        prepare_run(study, RunOptions(preset="smoke", overrides=("layers=0",)))
