"""Time one pretraining step of the ``world`` study's Llama: threads and batch shapes, in tokens per second.

The quick preset trains a 4-layer, 128-wide Llama (about 1M parameters) on batches of 16 windows of
256 tokens (the context length its passages need). This script times the same step (forward,
backward, clip, AdamW) at each thread count and batch shape (rows x tokens) and prints
milliseconds per step, tokens per second and what the preset's steps would take. Run it on an
otherwise idle machine; other processes sharing the cores distort the ratios (two threads suffer
most from contention).

    .venv/bin/python benchmarks/world_model_step.py [--steps 8] [--threads 1,2] [--shapes 16x256,32x128,8x512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from learnlab.knowledge.models import build_world_model, world_model_config
from learnlab.knowledge.pretraining import PretrainSettings, make_optimizer
from learnlab.knowledge.world_model import PRESETS


def time_steps(threads: int, steps: int, preset: str, rows: int, length: int) -> float:
    """Median milliseconds per training step (forward, backward, clip, AdamW)."""
    config = PRESETS[preset]
    torch.set_num_threads(threads)
    model = build_world_model(world_model_config(config.vocab_size, config.hidden_size, config.num_layers,
                                                 config.num_heads, config.intermediate_size,
                                                 max_positions=max(256, 2 * length)), seed=0)
    optimizer = make_optimizer(model, PretrainSettings())
    batch = torch.randint(0, config.vocab_size, (rows, length + 1))
    durations = []
    for step in range(steps + 2):
        started = time.perf_counter()
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step >= 2:
            durations.append(time.perf_counter() - started)
    return 1000 * statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--shapes", default="", help="rows x tokens per step, comma separated (default: the preset's)")
    args = parser.parse_args()
    config = PRESETS[args.preset]
    shapes = args.shapes or f"{config.batch_size}x{config.sequence_length}"
    for shape in shapes.split(","):
        rows, length = (int(part) for part in shape.lower().split("x"))
        for threads in (int(value) for value in args.threads.split(",")):
            milliseconds = time_steps(threads, args.steps, args.preset, rows, length)
            tokens = rows * length
            print(f"{args.preset} {rows}x{length}: {threads} thread(s): {milliseconds:.0f} ms/step, "
                  f"{1000 * tokens / milliseconds:.0f} tokens/s -> {config.steps} steps of {tokens} tokens in "
                  f"{milliseconds * config.steps / 60000:.1f} min", flush=True)


if __name__ == "__main__":
    main()
