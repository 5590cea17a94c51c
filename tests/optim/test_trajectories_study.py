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


def test_claims_are_pinned():
    study = get_study("trajectories")
    checks = {claim.id: [(c.metric, c.op, c.bound if c.op != "within" else (c.reference, c.tolerance)) for c in claim.checks]
              for claim in study.claims}
    assert checks == {
        "C1": [("mlp_parabola_r2_median", ">=", 0.95), ("cnn_parabola_r2_median", ">=", 0.95),
               ("resnet_bn_parabola_r2_median", ">=", 0.95)],
        "C2": [("resnet_bn_one_step_ratio_median", "<=", 0.2)],
        "C3": [("nqm_sgd_ratio", "within", (1.0, 0.02)), ("nqm_ema_ratio", "within", (1.0, 0.02)),
               ("nqm_two_point_ratio", "within", (1.0, 0.02))],
        "C4": [("two_point_to_last", "<=", 1.0), ("two_point_to_half_lr", "within", (1.0, 0.10))],
        "C5": [("equivalent_lr_decreases_with_horizon", "true", None), ("equivalent_lr_prediction_max_log2_error", "<=", 1.0)],
    }
    quick = study.config("quick")
    assert (quick.claim_spacing, quick.final_points, quick.final_stride, quick.probe_interval) == (1000, 8, 100, "fitted")


def test_equivalent_learning_rate_reads_the_monotone_part_of_the_ladder():
    from learnlab.optim.trajectory_runs import equivalent_learning_rate

    fractions, losses = [1.0, 0.5, 0.25, 0.125], [0.4, 0.3, 0.2, 0.35]  # the smallest rate has not converged
    assert equivalent_learning_rate(0.3, fractions, losses) == pytest.approx(0.5)
    assert equivalent_learning_rate(0.25, fractions, losses) == pytest.approx(2 ** -1.5)
    assert equivalent_learning_rate(0.1, fractions, losses) is None  # below every rate run
    assert equivalent_learning_rate(0.5, fractions, losses) is None


def test_nqm_equivalent_rate_matches_the_sgd_variance():
    import torch

    from learnlab.optim.nqm import ema_variance_factor, equivalent_learning_rate_fraction, sgd_stationary_variance

    h, rate, decay = torch.tensor([0.5], dtype=torch.float64), 0.8, 0.99
    factor = float(ema_variance_factor(1 - rate * h, decay))
    fraction = equivalent_learning_rate_fraction(rate * float(h), factor)
    assert float(sgd_stationary_variance(h, 1.0, rate * fraction)) == pytest.approx(
        float(sgd_stationary_variance(h, 1.0, rate)) * factor, rel=1e-12)
