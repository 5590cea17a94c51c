"""Steps per second of ``learnlab.data.training.train_steps`` for every small model, on CPU.

Plain SGD, batch 32, on MNIST-1D (1-D inputs, (1, 40)) and sklearn digits (2-D, (1, 8, 8)), with
1 and 2 intra-op threads, measured in one process. Wall-clock and CPU (process) time are both
reported: on a shared machine wall-clock speed depends on the load, CPU time much less.

    .venv/bin/python benchmarks/training_loop.py [--steps 300] [--width 16] [--batch-size 32] [--budget 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from learnlab.data.datasets import load_dataset
from learnlab.data.models import MODEL_NAMES, build_model, count_parameters
from learnlab.data.training import SGDSettings, batch_indices, make_optimizer, train_steps


def measure(model_name: str, data, threads: int, steps: int, width: int, batch_size: int,
            budget_s: float) -> tuple[float, float, int]:
    """(steps/s wall-clock, steps/s of CPU time, parameters) after 10 warm-up steps; stops early
    (in chunks of 10 steps) once ``budget_s`` seconds have passed."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    model = build_model(model_name, data.input_shape, data.num_classes, width, generator)
    optimizer = make_optimizer(model, SGDSettings(learning_rate=0.05, batch_size=batch_size))
    batches = batch_indices(len(data.train), batch_size, generator)
    train_steps(model, data.train, 10, optimizer, batches)
    wall, cpu, done = time.perf_counter(), time.process_time(), 0
    while done < steps and time.perf_counter() - wall < budget_s:
        train_steps(model, data.train, 10, optimizer, batches)
        done += 10
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return done / wall, done / cpu, count_parameters(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds at most per measurement")
    args = parser.parse_args()
    datasets = {"mnist1d": load_dataset("mnist1d", num_samples=4000), "digits": load_dataset("digits")}
    print(f"torch {torch.__version__}, batch {args.batch_size}, width {args.width}, {args.steps} timed steps")
    print(f"{'dataset':8} {'model':10} {'params':>7} {'1 thread':>18} {'2 threads':>18}   (steps/s wall | cpu)")
    for dataset_name, data in datasets.items():
        for model_name in MODEL_NAMES:
            cells = []
            for threads in (1, 2):
                wall, cpu, params = measure(model_name, data, threads, args.steps, args.width, args.batch_size, args.budget)
                cells.append(f"{wall:7.0f} | {cpu:7.0f}")
            print(f"{dataset_name:8} {model_name:10} {params:7d} {cells[0]:>18} {cells[1]:>18}", flush=True)


if __name__ == "__main__":
    main()
