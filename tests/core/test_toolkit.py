"""The study toolkit in core: declarative config bounds, training progress, weights in stages,
parallel resumable items, preserved runtime, code versions and stale runs, schedules, discovery."""

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from learnlab.core import DivergenceError, StudyConfig, nonnegative, positive, ranged
from learnlab.core.io import module_weights, restore_module_weights
from learnlab.core.parallel import read_records, run_items
from learnlab.core.progress import ProgressReporter
from learnlab.core.runs import RunContext, RunOptions, execute, prepare_run
from learnlab.core.runtime import preserved_runtime
from learnlab.core.schedules import WarmupCosine
from tests.core.toy_study import STUDY, square_worker


@dataclasses.dataclass(frozen=True)
class Bounded(StudyConfig):
    count: int = positive(3)
    rate: float = positive(0.1)
    decay: float = ranged(0.9, ge=0, lt=1)
    sizes: tuple[int, ...] = nonnegative((0, 2))

    def validate(self) -> None:
        if self.count > 10 and self.rate > 1:
            raise ValueError("count > 10 needs rate <= 1")


@pytest.mark.parametrize("changes, message", [
    ({"count": 0}, "count must be >= 1, got 0"),
    ({"rate": 0.0}, "rate must be > 0, got 0.0"),
    ({"rate": float("nan")}, "rate must be > 0, got nan"),
    ({"decay": 1.0}, "decay must be < 1, got 1.0"),
    ({"sizes": (1, -1)}, "sizes must be >= 0, got 1,-1"),
    ({"sizes": ()}, "sizes must not be empty"),
    ({"count": 11, "rate": 2.0}, "count > 10 needs rate <= 1"),
])
def test_declared_bounds_are_checked_in_one_place(changes, message):
    assert Bounded().count == 3
    with pytest.raises(ValueError, match=message):
        Bounded(**changes)


def test_literal_choices_are_checked_on_construction():
    from tests.core.toy_study import Config

    with pytest.raises(ValueError, match="mode must be one of fast, slow, got 'medium'"):
        Config(mode="medium")


def _context(tmp_path, seed=0):
    return RunContext(tmp_path / "run", seed, torch.device("cpu"), ProgressReporter(quiet=True))


def test_training_progress_checks_every_loss(tmp_path):
    ctx = _context(tmp_path)
    with ctx.training_progress("train", 3, "toy training loss") as on_step:
        on_step(1, 0.5)
        with pytest.raises(DivergenceError, match="toy training loss at step 2 became nan"):
            on_step(2, float("nan"))


def test_module_weights_round_trip_through_a_stage(tmp_path):
    ctx = _context(tmp_path)
    model = torch.nn.Linear(3, 2)
    stored = ctx.stage("model", lambda: {**module_weights(model), "loss": 1.5})
    cached = ctx.stage("model", lambda: pytest.fail("the stage is cached"))
    other = restore_module_weights(torch.nn.Linear(3, 2), cached)
    assert torch.equal(other.weight, model.weight) and torch.equal(other.bias, model.bias)
    assert cached["loss"] == stored["loss"] == 1.5


def test_items_run_in_worker_processes_and_resume(tmp_path):
    keys = [str(index) for index in range(6)]
    output = tmp_path / "items.jsonl"
    serial = run_items(keys, square_worker, {"scale": 2}, tmp_path / "serial.jsonl", seed=3)
    parallel = run_items(keys, square_worker, {"scale": 2, "seconds": dict.fromkeys(keys, 0.5)}, output, seed=3, workers=2)
    assert [r["id"] for r in parallel.records] == keys and parallel.computed == 6
    assert [r["square"] for r in parallel.records] == [2 * i * i for i in range(6)]
    assert [r["draw"] for r in parallel.records] == [r["draw"] for r in serial.records]  # same streams in any process
    assert len({r["pid"] for r in parallel.records}) == 2
    # A kill after two items: only a part file with those two (and a torn line) is left.
    lines = output.read_text().splitlines()
    output.unlink()
    for part in tmp_path.glob("items.part*"):
        part.unlink()
    (tmp_path / "items.part0-of1.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
    resumed = run_items(keys, square_worker, {"scale": 2}, output, seed=3, workers=2)
    assert resumed.computed == 4 and [r["pid"] for r in resumed.records[:2]] == [r["pid"] for r in parallel.records[:2]]
    assert [r["square"] for r in read_records(output)] == [2 * i * i for i in range(6)]


def test_a_free_worker_takes_the_next_item(tmp_path):
    # Item 0 is long: the other worker takes every later item meanwhile (a fixed round-robin would
    # leave it items 1, 3 and 5 only, and idle while item 0 runs).
    keys = [str(index) for index in range(6)]
    seconds = {"0": 4.0, **dict.fromkeys(keys[1:], 0.2)}
    records = run_items(keys, square_worker, {"scale": 1, "seconds": seconds}, tmp_path / "x.jsonl", seed=0,
                        workers=2).records
    long_pid = records[0]["pid"]
    assert sum(record["pid"] != long_pid for record in records[1:]) >= 4
    assert [record["square"] for record in records] == [index * index for index in range(6)]


def test_a_diverging_item_in_a_worker_fails_the_run(tmp_path):
    with pytest.raises(DivergenceError, match="item 3 loss at step|item 3 loss became inf"):
        run_items(["1", "2", "3", "4"], square_worker, {"scale": 1, "diverge_on": "3"}, tmp_path / "x.jsonl", seed=0,
                  workers=2)


def test_stage_items_logs_each_item_once_and_is_cached(tmp_path):
    ctx = _context(tmp_path)
    first = ctx.stage_items("squares", ["1", "2", "3"], square_worker, {"scale": 1})
    again = ctx.stage_items("squares", ["1", "2", "3"], lambda payload, c: pytest.fail("cached"), {"scale": 1})
    assert [r["square"] for r in first.records] == [1, 4, 9] and again.records == first.records
    logs = [json.loads(line) for line in ctx.metrics_path.read_text().splitlines()]
    assert [(entry["stage"], entry["item"], entry["item_value"]) for entry in logs] == [
        ("squares", "1", 1), ("squares", "2", 4), ("squares", "3", 9)]


def test_preserved_runtime_restores_threads_and_random_states():
    torch.set_num_threads(1)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    with preserved_runtime():
        torch.set_num_threads(2)
        random.seed(9), np.random.seed(9), torch.manual_seed(9)
        random.random(), np.random.rand(), torch.rand(1)
    assert torch.get_num_threads() == 1
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_run_made_by_other_code_is_recomputed_or_reused_as_stale(tmp_path):
    options = RunOptions(preset="smoke", out=tmp_path, quiet=True)
    first = execute(STUDY, options)
    run_dir = prepare_run(STUDY, options).run_dir
    assert first["code_version"] and not first["stale"]
    assert execute(STUDY, options)["reused"]
    for name in ("config.json", "results.json"):  # pretend an older version of the code made this run
        data = json.loads((run_dir / name).read_text())
        (run_dir / name).write_text(json.dumps({**data, "code_version": "older"}))
    stale = execute(STUDY, dataclasses.replace(options, reuse_stale=True))
    assert stale["reused"] and stale["stale"]
    from learnlab.core.report import collect_runs

    assert collect_runs(tmp_path, ["toy"], {"toy": STUDY})[0]["stale"]
    fresh = execute(STUDY, options)
    assert not fresh["reused"] and not fresh["stale"] and fresh["code_version"] == first["code_version"]
    assert not collect_runs(tmp_path, ["toy"], {"toy": STUDY})[0].get("stale")


def test_warmup_cosine_conventions():
    optax_like = WarmupCosine(peak=1.0, warmup_steps=4, decay_end=10, floor=0.1, warmup_from_zero=True)
    assert optax_like(0) == 0.0 and optax_like(2) == 0.5 and optax_like(4) == 1.0
    assert optax_like(7) == pytest.approx(0.1 + 0.9 * 0.5) and optax_like(10) == pytest.approx(0.1)
    assert optax_like(50) == pytest.approx(0.1)
    torch_like = WarmupCosine(peak=2.0, warmup_steps=4, decay_end=9, floor=0.0)
    assert torch_like(0) == 0.5 and torch_like(3) == 2.0 and torch_like(9) == pytest.approx(0.0, abs=1e-15)
    assert torch_like.factor(6) == pytest.approx(0.5 * (1 + np.cos(np.pi * 2 / 5)))
    no_warmup = WarmupCosine(peak=1.0, warmup_steps=0, decay_end=0)
    assert no_warmup(0) == 1.0 and no_warmup(1) == pytest.approx(0.0, abs=1e-15)  # a zero-length decay still starts at the peak
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    scheduler = torch_like.lambda_lr(optimizer)
    rates = []
    for step in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([torch_like(step) for step in range(6)])


def test_running_a_study_leaves_the_callers_threads_and_seeds_alone(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    execute(STUDY, RunOptions(preset="smoke", out=tmp_path, quiet=True, threads=2, seed=7))
    assert torch.get_num_threads() == 1
    assert torch.equal(torch.rand(3), expected)


def test_code_version_follows_imports_not_siblings(tmp_path):
    from learnlab.core.versions import _imported_names, study_sources

    world = {path.name for path in study_sources("learnlab.knowledge.world_model")}
    priming = {path.name for path in study_sources("learnlab.knowledge.priming")}
    assert {"world_model.py", "corpus.py", "pretraining.py", "__init__.py"} <= world
    assert "priming.py" not in world and "update_pruning.py" not in world  # a sibling study is not the world's code
    assert {"priming.py", "update_pruning.py", "world_model.py"} <= priming  # imported through substrate
    assert not any(path.parent.name == "core" for path in study_sources("learnlab.knowledge.priming"))
    module = tmp_path / "mod.py"
    module.write_text("from . import sibling\nfrom ..other import thing\nimport learnlab.data.images as images\n"
                      "def late():\n    from learnlab.knowledge import world\n")
    names = _imported_names(module, "learnlab.area.mod")
    assert {"learnlab.area.sibling", "learnlab.other.thing", "learnlab.data.images", "learnlab.knowledge.world"} <= names
