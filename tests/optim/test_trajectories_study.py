import json

import pytest

from learnlab.cli import main
from learnlab.core.errors import UserError
from learnlab.core.registry import get_study
from learnlab.core.runs import RunOptions, prepare_run


def test_smoke_run(tmp_path, capsys):
    assert main(["run", "trajectories", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    run_dir = prepare_run(get_study("trajectories"), RunOptions(preset="smoke", out=tmp_path)).run_dir
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert {"parabola_fits.png", "two_point_vs_spacing.png", "ema_vs_reduced_lr.png"} <= set(results["figures"])
    verdicts = {claim["id"]: claim["verdict"] for claim in results["claims"]}
    assert set(verdicts) == {"C1", "C2", "C3", "C4", "C5"} and set(verdicts.values()) <= {"pass", "fail"}
    measured = results["measured"]
    assert measured["parabola_r2_median"] >= measured["parabola_r2_min"]
    assert [row["method"] for row in measured["averaging_table"]][0] == "last"
    assert [json.loads(line)["id"] for line in (run_dir / "items" / "averaging.jsonl").read_text().splitlines()] == ["seed0"]


def test_seeds_in_worker_processes_equal_seeds_in_one_process(tmp_path):
    tables = []
    for workers in (1, 2):
        overrides = ("num_seeds=2", f"workers={workers}")
        argv = ["run", "trajectories", "--preset", "smoke", "--out", str(tmp_path / str(workers)), "--quiet"]
        assert main(argv + [item for pair in overrides for item in ("--set", pair)]) == 0
        run_dir = prepare_run(get_study("trajectories"), RunOptions(preset="smoke", overrides=overrides,
                                                                    out=tmp_path / str(workers))).run_dir
        tables.append(json.loads((run_dir / "results.json").read_text())["measured"]["averaging_table"])
    assert tables[0] == tables[1]


def test_bad_config_is_a_user_error():
    study = get_study("trajectories")
    with pytest.raises(UserError, match="claim_spacing"):
        prepare_run(study, RunOptions(preset="smoke", overrides=("claim_spacing=7",)))
