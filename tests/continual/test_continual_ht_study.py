"""The continual-ht study: smoke run, resume after a kill, bad input, pinned claims."""

import json

import pytest

from learnlab.cli import main
from learnlab.continual import continual_ht
from learnlab.core.parallel import read_records
from learnlab.core.registry import get_study
from learnlab.core.runs import RunOptions, prepare_run


def _run_dir(out, overrides=()):
    return prepare_run(get_study("continual-ht"), RunOptions(preset="smoke", overrides=overrides, out=out)).run_dir


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "continual-ht", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    return out, _run_dir(out)


def test_smoke_run_records_every_scenario(smoke_run):
    _, run_dir = smoke_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert set(results["figures"]) == {"width_sweep.png", "continual_accuracy.png", "meta_training.png"}
    assert [claim["id"] for claim in results["claims"]] == ["C1", "C2", "C3", "C4", "C5"]
    measured = results["measured"]
    config = get_study("continual-ht").config("smoke")
    assert set(measured["width_sweep"]) == {"4"}
    for name in ("cht", "constpn"):
        matrix = measured[f"{name}_task_accuracy"]
        assert [len(row) for row in matrix] == list(range(1, config.eval_tasks + 1))  # after task t: tasks 0..t
    for name in ("cht", "cht-cached", "constpn", "merged-ht", "finetune"):
        assert len(measured[f"{name}_class_average_after"]) == config.eval_tasks
    assert len(measured["minibatches_accuracy_after"]) == config.eval_tasks
    # the exact mechanics hold on the trained model, even after a few steps
    assert measured["permutation_max_abs_difference"] <= 1e-5 and measured["single_task_chain_minus_ht"] == 0
    assert measured["gradient_norm_at_first_task"] > 0 and measured["gradient_norm_at_first_task_chain_cut"] == 0
    assert {claim["id"]: claim["verdict"] for claim in results["claims"]}["C4"] == "pass"
    models = {path.name for path in (run_dir / "stages" / "models").glob("*.safetensors")}
    assert models == {"ht-w4.safetensors", "htp-w4.safetensors", "pn-w4.safetensors", "cht.safetensors",
                      "merged-ht.safetensors"}


def test_killed_run_resumes_without_retraining_finished_models(smoke_run):
    out, run_dir = smoke_run
    models = run_dir / "stages" / "models"
    trained = {path.name: path.stat().st_mtime_ns for path in models.glob("*.safetensors")}
    evaluation = run_dir / "items" / "evaluation.jsonl"
    before = read_records(evaluation)
    # Simulate a kill during the evaluations: two finished records (and a torn third) in a part file.
    lines = evaluation.read_text().splitlines()
    (run_dir / "items" / "evaluation.part0-of1.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:30])
    evaluation.unlink()
    for name in ("results.json", "stages/evaluation.json", "stages/mechanics.json"):
        (run_dir / name).unlink()
    assert main(["run", "continual-ht", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    assert {path.name: path.stat().st_mtime_ns for path in models.glob("*.safetensors")} == trained
    after = read_records(evaluation)
    assert [record["id"] for record in after] == [record["id"] for record in before]
    assert after == before  # the redone evaluations give the same numbers
    assert json.loads((run_dir / "results.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("argv, message", [
    (["--set", "ways=40"], "need 80 classes but"),
    (["--set", "queries=20"], "samples per class"),
    (["--set", "dataset=omniglot"], "needs --set data_root=DIR"),
    (["--set", "dataset=omniglot", "--set", "data_root=/nonexistent"], "Omniglot not found"),
    (["--set", "dataset=folders", "--set", "data_root=/nonexistent"], "/nonexistent does not exist"),
    (["--set", "cht_width=8"], "cht_width 8 must be one of widths"),
    (["--set", "eval_tasks=1"], "eval_tasks"),
])
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    assert main(["run", "continual-ht", "--preset", "smoke", "--out", str(tmp_path), "--quiet", *argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_claim_thresholds_are_pinned():
    assert continual_ht.SMALL_WIDTH == 8
    assert continual_ht.FORGETTING_BOUND == 0.03 and continual_ht.GRACEFUL_BOUND == 0.10
    assert continual_ht.PERMUTATION_BOUND == 1e-5 and continual_ht.EQUALITY_BOUND == 1e-6
    checks = {claim.id: [check.describe() for check in claim.checks] for claim in continual_ht.CLAIMS}
    assert checks["C2"] == ["cht_task1_drop_at_horizon <= 0.03", "cht_task1_drop_at_end <= 0.1"]
    assert checks["C4"][0] == "permutation_max_abs_difference <= 1e-05"
    quick = get_study("continual-ht").config("quick")
    assert quick.widths == (4, 8) and quick.train_tasks == 3 and quick.eval_tasks == 6
