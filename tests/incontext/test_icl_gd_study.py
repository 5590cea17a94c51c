import json
import re

import pytest
import torch

from learnlab.cli import main
from learnlab.core.registry import get_study
from learnlab.core.runs import RunOptions, prepare_run
from learnlab.incontext.icl_gd import STUDY, Config, check_identities


def smoke_dir(out, seed=0):
    return prepare_run(get_study("icl-gd"), RunOptions(preset="smoke", seed=seed, out=out)).run_dir


def test_smoke_run_reuse_determinism_and_report(tmp_path, capsys):
    assert main(["run", "icl-gd", "--preset", "smoke", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "C1" in out and "finished in" in out
    run_dir = smoke_dir(tmp_path / "a")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert set(STUDY.figures) == {"training_curves", "weights_vs_construction", "out_of_distribution"}
    assert sorted(results["figures"]) == sorted(f"{name}.png" for name in STUDY.figures)
    verdicts = {claim["id"]: claim["verdict"] for claim in results["claims"]}
    assert verdicts["C1"] == "pass" and verdicts["C2"] == "pass"
    assert set(verdicts.values()) <= {"pass", "fail"}
    assert 0.40 < results["measured"]["zero_predictor_loss"] < 0.44

    assert main(["run", "icl-gd", "--preset", "smoke", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert "reused finished run" in capsys.readouterr().out

    assert main(["reproduce", "--preset", "smoke", "--only", "icl-gd", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    again = json.loads((smoke_dir(tmp_path / "b") / "results.json").read_text())
    assert again["measured"] == results["measured"] and again["claims"] == results["claims"]
    markdown = (tmp_path / "b" / "REPORT.md").read_text()
    assert markdown.count("| icl-gd | smoke |") == 1 + len(results["claims"])  # the summary row, then the claims
    assert "data:image/png;base64," in (tmp_path / "b" / "report.html").read_text()


def test_diverging_run_is_recorded_as_failed(tmp_path, capsys):
    code = main(["run", "icl-gd", "--preset", "smoke", "--set", "learning_rate=1e30", "--set", "grad_clip_norm=0",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 1
    results_path = next(tmp_path.glob("icl-gd/*/results.json"))
    results = json.loads(results_path.read_text())
    assert results["status"] == "failed"
    assert re.fullmatch(r"one_layer training loss at step \d+ became (nan|inf|-inf)", results["reason"]), results["reason"]
    assert "run failed" in capsys.readouterr().out


@pytest.mark.parametrize("changes, message", [
    ({"learning_rate": -1.0}, "learning_rate must be > 0"),
    ({"adam_beta2": 1.0}, "adam_beta2 must be < 1"),
    ({"grad_clip_norm": -0.1}, "grad_clip_norm must be >= 0"),
    ({"ood_scales": ()}, "ood_scales must not be empty"),
    ({"ood_scales": (1.0, -2.0)}, "ood_scales must be > 0"),
    ({"recurrent_layers": 0}, "recurrent_layers must be >= 1"),
])
def test_config_bounds_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        Config(**changes)


def test_baselines_are_the_paper_comparisons():
    baselines = Config(recurrent_layers=3).baselines()
    assert baselines == {"gd1": {"num_steps": 1}, "gd2": {"num_steps": 3},
                         "gdpp_tied": {"num_steps": 3, "plus_plus": True, "tied": True},
                         "gdpp": {"num_steps": 3, "plus_plus": True}}


def test_identities_hold_to_float_precision():
    measured = check_identities(4, 6, torch.Generator().manual_seed(0))
    assert measured["gd_identity_max_abs_float64"] < 1e-12 and measured["gdpp_identity_max_abs_float64"] < 1e-12
    assert 0 < measured["gd_identity_relative_float32"] < 1e-5
