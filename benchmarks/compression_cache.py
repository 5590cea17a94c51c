"""What compression buys at answer time: KV-cache bytes and the time to answer from a compressed context.

For the ``world`` quick model's shape (a 4-layer, 128-wide Llama; random weights, since only the
cost is measured) and context lengths L, this compresses one context with every method of
:mod:`learnlab.compression.caches` (full context, gisting, GistPool, average pooling at each rate r),
then times answering: reading a 16-token question against the cache and greedily generating 32
tokens. It prints the cache bytes (which must shrink by r), the time to compress, the time to
answer, and the answer speed-up over the full context. Run it on an otherwise idle machine.

    .venv/bin/python benchmarks/compression_cache.py [--lengths 1024,4096] [--rates 4,16] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from learnlab.compression.caches import GistTokens, cache_bytes, compress, generate_greedy
from learnlab.knowledge.models import build_world_model, world_model_config
from learnlab.knowledge.world_model import PRESETS


def timed(call, repeats: int) -> tuple[float, object]:
    values, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        values.append(time.perf_counter() - started)
    return statistics.median(values), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,4096")
    parser.add_argument("--rates", default="4,16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    lengths = [int(value) for value in args.lengths.split(",")]
    rates = [int(value) for value in args.rates.split(",")]
    shape = PRESETS["quick"]
    config = world_model_config(shape.vocab_size, shape.hidden_size, shape.num_layers, shape.num_heads,
                                shape.intermediate_size, max_positions=2 * max(lengths) + 64)
    model = build_world_model(config, seed=0).eval().to(device)
    gists = GistTokens(shape.hidden_size, slots=max(lengths), shared=False).to(device)
    generator = torch.Generator().manual_seed(0)
    print(f"device {device}, threads {args.threads}, model {shape.num_layers} x {shape.hidden_size}, "
          f"question 16 tokens, 32 generated, median of {args.repeats}")
    print(f"{'L':>6} {'method':>10} {'r':>3} {'cache KiB':>10} {'compress s':>11} {'answer s':>9} {'answer speed-up':>16}")
    for length in lengths:
        context = torch.randint(3, shape.vocab_size, (1, length), generator=generator).to(device)
        question = torch.randint(3, shape.vocab_size, (1, 16), generator=generator).to(device)
        variants = [("full", 1)] + [(method, rate) for rate in rates for method in ("gisting", "gistpool", "avgpool")]
        baseline = None
        with torch.no_grad():
            for method, rate in variants:
                seconds, compressed = timed(lambda: compress(model, context, method, rate, gists), args.repeats)
                answer, _ = timed(lambda: generate_greedy(model, compressed, question, 32), args.repeats)
                baseline = answer if method == "full" else baseline
                print(f"{length:>6} {method:>10} {rate:>3} {cache_bytes(compressed) / 1024:>10.0f} {seconds:>11.3f} "
                      f"{answer:>9.3f} {baseline / answer:>15.2f}x")


if __name__ == "__main__":
    main()
