"""Time one pretraining step of the ``world`` study's Llama at 1 and 2 CPU threads.

The quick preset trains a 4-layer, 128-wide Llama (about 1M parameters) on batches of 32 × 64
tokens. Run it on an otherwise idle machine; other processes sharing the cores distort the ratio
(two threads suffer most from contention).

    .venv/bin/python benchmarks/world_model_step.py [--steps 20] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from learnlab.knowledge.models import build_world_model, world_model_config
from learnlab.knowledge.pretraining import PretrainSettings, make_optimizer
from learnlab.knowledge.world_model import PRESETS


def time_steps(threads: int, steps: int, preset: str) -> float:
    """Median milliseconds per training step (forward, backward, clip, AdamW)."""
    config = PRESETS[preset]
    torch.set_num_threads(threads)
    model = build_world_model(world_model_config(config.vocab_size, config.hidden_size, config.num_layers,
                                                 config.num_heads, config.intermediate_size), seed=0)
    optimizer = make_optimizer(model, PretrainSettings())
    batch = torch.randint(0, config.vocab_size, (config.batch_size, config.sequence_length + 1))
    durations = []
    for step in range(steps + 3):
        started = time.perf_counter()
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step >= 3:
            durations.append(time.perf_counter() - started)
    return 1000 * statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--preset", default="quick")
    args = parser.parse_args()
    for threads in (int(value) for value in args.threads.split(",")):
        milliseconds = time_steps(threads, args.steps, args.preset)
        config = PRESETS[args.preset]
        print(f"{args.preset}: {threads} thread(s): {milliseconds:.0f} ms/step -> {config.steps} steps in "
              f"{milliseconds * config.steps / 60000:.1f} min")


if __name__ == "__main__":
    main()
