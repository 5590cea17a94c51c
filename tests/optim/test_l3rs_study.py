"""The l3rs study: smoke run, the saved optimizer loads into torch.optim, bad input, pinned claims."""

import json

import pytest
import torch

from learnlab.cli import main
from learnlab.core.errors import UserError
from learnlab.core.registry import get_study
from learnlab.core.runs import RunOptions, prepare_run
from learnlab.optim.combined import CombinedOptimizer, load_rule
from learnlab.optim.finetune_tasks import finetune_data, structure, task_start
from learnlab.optim.l3rs_runs import baseline_grid, body, task_source


def _smoke_dir(tmp_path, overrides=()):
    return prepare_run(get_study("l3rs"), RunOptions(preset="smoke", overrides=overrides, out=tmp_path)).run_dir


def test_smoke_run_and_its_optimizer_trains_a_model(tmp_path):
    assert main(["run", "l3rs", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    run_dir = _smoke_dir(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert {"loss_curves.png", "coefficients.png", "meta_training.png"} <= set(results["figures"])
    verdicts = {claim["id"]: claim["verdict"] for claim in results["claims"]}
    assert set(verdicts) == {"L1", "L2", "L3"} and set(verdicts.values()) <= {"pass", "fail"}
    measured = results["measured"]
    assert set(measured["in-distribution_table"]) == {"sgdm-const", "sgdm-cosine", "adam-const", "adam-cosine",
                                                      "sgdm-const-head", "sgdm-cosine-head", "adam-const-head",
                                                      "adam-cosine-head", "l3rs", "constant", "adam-hp"}
    assert len(measured["meta_training_history"]["l3rs"]) == 2
    # the meta-trained rule is a torch.optim optimizer for the task's model
    spec, meta = load_rule(run_dir / "l3rs_optimizer.safetensors")
    config = get_study("l3rs").config("smoke")
    source = task_source(config)
    model = structure(source)
    model.load_state_dict(task_start(source, body(source, 0, config.pretrain_steps), 0))
    optimizer = CombinedOptimizer(model.parameters(), spec, meta, horizon=5)
    data = finetune_data()
    before = torch.nn.functional.cross_entropy(model(data.train_x), data.train_y)
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(data.train_x), data.train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(loss=loss)
    assert torch.nn.functional.cross_entropy(model(data.train_x), data.train_y) < before
    # a second run with the saved optimizer evaluates it instead of meta-training it
    overrides = (f"load_optimizer={run_dir / 'l3rs_optimizer.safetensors'}",)
    assert main(["run", "l3rs", "--preset", "smoke", "--out", str(tmp_path / "loaded"), "--quiet",
                 "--set", overrides[0]]) == 0
    loaded = json.loads((_smoke_dir(tmp_path / "loaded", overrides) / "results.json").read_text())["measured"]
    assert "l3rs" not in loaded["meta_training_history"]
    assert loaded["in-distribution_table"]["l3rs"] == measured["in-distribution_table"]["l3rs"]


def test_baseline_grid_tables():
    config = get_study("l3rs").config("smoke")
    spec, tables, settings = baseline_grid(config, "adam-cosine-head", num_layers=6, horizon=10)
    assert spec.bases == ("adam",) and tables.shape == (4, 10, 6, 1)
    first = settings.index({"learning_rate": 1e-2, "head_ratio": 10.0})
    assert tables[first, 0, 0, 0] == pytest.approx(1e-2) and tables[first, 0, -1, 0] == pytest.approx(0.1)
    assert tables[first, -1, 0, 0] < 0.05 * tables[first, 0, 0, 0]  # the cosine has (almost) reached zero


@pytest.mark.parametrize("argv, message", [
    (["--set", "bases=sgd,lion"], "unknown base optimizer 'lion'"),
    (["--set", "unseen_pretrain_seed=0"], "unseen_pretrain_seed must not be one of pretrain_seeds"),
    (["--set", "dataset=cifar10"], "dataset cifar10 needs a local directory (root); nothing is downloaded"),
    (["--set", "dataset=cifar10", "--set", "data_root=/nonexistent"], "/nonexistent"),
])
def test_bad_config_exits_2_with_one_line(argv, message, tmp_path, capsys):
    assert main(["run", "l3rs", "--preset", "smoke", "--out", str(tmp_path), "--quiet", *argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_a_file_that_is_not_a_meta_trained_optimizer_exits_2(tmp_path, capsys):
    (tmp_path / "fake.json").write_text("{}")
    (tmp_path / "fake.safetensors").write_bytes(b"x")
    assert main(["run", "l3rs", "--preset", "smoke", "--out", str(tmp_path), "--quiet",
                 "--set", f"load_optimizer={tmp_path / 'fake.safetensors'}"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is not a meta-trained optimizer" in error


def test_claims_are_pinned():
    study = get_study("l3rs")
    checks = {claim.id: [(c.metric, c.op, c.bound) for c in claim.checks] for claim in study.claims}
    assert checks == {
        "L1": [("l3rs_beats_every_baseline", "true", None), ("steps_fraction_to_best_baseline_final", "<=", 0.7)],
        "L2": [("unseen-init_not_worse_than_best_baseline", "true", None),
               ("unseen-dataset_not_worse_than_best_baseline", "true", None),
               ("long-horizon_not_worse_than_best_baseline", "true", None)],
        "L3": [("coefficient_spread_across_layers", ">=", 1.25), ("coefficient_spread_over_time", ">=", 1.25),
               ("l3rs_beats_constant_ablation", "true", None)],
    }
    quick = study.config("quick")
    assert (quick.eval_seeds, quick.horizon) == (10, 100)


def test_the_full_preset_path_a_resnet_on_cifar10_files(tmp_path):
    """The full preset's task source (a ResNet, CIFAR-10 from a local directory) on a tiny fake CIFAR-10."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(np.arange(40) % 10)
        with open(tmp_path / name, "wb") as handle:
            pickle.dump({"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8), "labels": labels}, handle)
    overrides = ["dataset=cifar10", f"data_root={tmp_path}", "model=resnet", "width=2", "batch_size=8", "horizon=3"]
    argv = ["run", "l3rs", "--preset", "smoke", "--out", str(tmp_path / "runs"), "--quiet"]
    assert main(argv + [item for pair in overrides for item in ("--set", pair)]) == 0
    run_dir = _smoke_dir(tmp_path / "runs", tuple(overrides))
    measured = json.loads((run_dir / "results.json").read_text())["measured"]
    assert np.isfinite(measured["in-distribution_table"]["l3rs"]["mean"])
    spec, _ = load_rule(run_dir / "l3rs_optimizer.safetensors")
    assert spec.num_layers > 6  # a ResNet's parameter tensors
