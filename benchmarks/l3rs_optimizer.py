"""Speed of the learned combined optimizer (learnlab.optim.combined), one CPU thread.

1. Inner fine-tuning steps per second across an ES population: the population loop
   (``train_population``) against training the members one after another with
   ``CombinedOptimizer``, on the l3rs study's quick task (MLP on 8x8 digits, batch 32).
2. Per-step overhead of ``CombinedOptimizer`` (SGD + momentum + Adam, the per-layer MLP) against
   ``torch.optim.Adam`` on the same model, and the optimizer state in bytes.

Run: ``.venv/bin/python benchmarks/l3rs_optimizer.py``.
"""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

from learnlab.optim.combined import CombinedOptimizer, RuleSpec, initial_meta_parameters
from learnlab.optim.finetune_tasks import TaskSource, finetune_data, structure, task_batches, task_start
from learnlab.optim.l3rs_runs import body
from learnlab.optim.population import stacked, train_population

STEPS, SOURCE = 100, TaskSource(width=8)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    def size(value):
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(size(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(size(v) for v in value)
        return 0
    return sum(size(v) for v in optimizer.state.values())


def sequential(spec, meta, start, data, batches, optimizer_factory):
    model = structure(SOURCE)
    model.load_state_dict(start)
    optimizer = optimizer_factory(model, spec, meta)
    for index in batches:
        loss = F.cross_entropy(model(data.train_x[index]), data.train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(loss=loss) if isinstance(optimizer, CombinedOptimizer) else optimizer.step()
    return optimizer


def main() -> None:
    torch.set_num_threads(1)
    data = finetune_data(SOURCE)
    start = task_start(SOURCE, body(SOURCE, 0, 300), 0)
    batches = task_batches(len(data.train_y), 32, STEPS, 0)
    spec = RuleSpec(num_layers=len(start))
    meta = initial_meta_parameters(spec, torch.Generator().manual_seed(0))
    combined = lambda model, spec, meta: CombinedOptimizer(model.parameters(), spec, meta, horizon=STEPS)  # noqa: E731
    adam = lambda model, spec, meta: torch.optim.Adam(model.parameters(), lr=3e-3)  # noqa: E731
    print(f"model: MLP width {SOURCE.width}, {sum(v.numel() for v in start.values())} parameters; {STEPS} steps, batch 32")
    print("\n| members | population: inner steps/s | one by one: inner steps/s | speed-up |")
    print("|---|---|---|---|")
    began = time.perf_counter()
    sequential(spec, meta, start, data, batches, combined)
    one_by_one = STEPS / (time.perf_counter() - began)
    for members in (1, 8, 16, 32):
        metas = {name: torch.stack([value] * members) for name, value in meta.items()}
        began = time.perf_counter()
        train_population(structure(SOURCE), stacked(start, members), spec, metas, data.train_x, data.train_y,
                         data.val_x, data.val_y, batches, STEPS)
        rate = members * STEPS / (time.perf_counter() - began)
        print(f"| {members} | {rate:.0f} | {one_by_one:.0f} | {rate / one_by_one:.1f}x |")
    print("\n| optimizer | ms per training step | state bytes | state / parameter bytes |")
    print("|---|---|---|---|")
    parameter_bytes = sum(v.numel() * v.element_size() for v in start.values())
    for name, factory in (("torch.optim.Adam", adam), ("CombinedOptimizer (sgd+momentum+adam, MLP)", combined)):
        sequential(spec, meta, start, data, batches[:5], factory)  # warm-up
        began = time.perf_counter()
        optimizer = sequential(spec, meta, start, data, batches, factory)
        milliseconds = 1000 * (time.perf_counter() - began) / STEPS
        used = state_bytes(optimizer)
        print(f"| {name} | {milliseconds:.2f} | {used} | {used / parameter_bytes:.2f} |")


if __name__ == "__main__":
    main()
