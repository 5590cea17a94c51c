import json

from learnlab.cli import main
from learnlab.core.registry import get_study
from learnlab.core.runs import RunOptions, prepare_run


def smoke_dir(out, seed=0):
    return prepare_run(get_study("icl-gd"), RunOptions(preset="smoke", seed=seed, out=out)).run_dir


def test_smoke_run_reuse_determinism_and_report(tmp_path, capsys):
    assert main(["run", "icl-gd", "--preset", "smoke", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "C1" in out and "finished in" in out
    run_dir = smoke_dir(tmp_path / "a")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert {"training_curves.png", "weights_vs_construction.png", "out_of_distribution.png"} <= set(results["figures"])
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
    assert markdown.count("| icl-gd | smoke |") == len(results["claims"])
    assert "data:image/png;base64," in (tmp_path / "b" / "report.html").read_text()


def test_diverging_run_is_recorded_as_failed(tmp_path, capsys):
    code = main(["run", "icl-gd", "--preset", "smoke", "--set", "learning_rate=1e30", "--set", "grad_clip_norm=0",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 1
    results_path = next(tmp_path.glob("icl-gd/*/results.json"))
    results = json.loads(results_path.read_text())
    assert results["status"] == "failed" and "training loss" in results["reason"]
    assert "run failed" in capsys.readouterr().out
