"""Time one training step (sample tasks, forward, backward, clip, Adam) of the icl-gd models.

Reference on a 2-core CPU of this kind (DESIGN.md): the official JAX code takes 9.6 ms per step for
the one-layer LSA at batch 2048, d = N = 10, and 25 ms for the recurrent two-layer model; a plain
eager PyTorch one-layer step measured 17.7 ms.

    .venv/bin/python benchmarks/icl_gd_training_step.py [--steps 300]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from learnlab.incontext.attention import InContextRegressor
from learnlab.incontext.regression import RegressionTaskSpec, half_mse, sample_regression_tasks

JAX_REFERENCE_MS = {1: 9.6, 2: 25.0}


def time_steps(num_layers: int, recurrent: bool, steps: int, batch_size: int) -> float:
    """Median milliseconds per training step."""
    spec = RegressionTaskSpec()
    generator = torch.Generator().manual_seed(0)
    model = InContextRegressor(spec.token_dim, num_layers=num_layers, recurrent=recurrent, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    durations = []
    for step in range(steps + 20):
        start = time.perf_counter()
        batch = sample_regression_tasks(spec, batch_size, generator)
        loss = half_mse(model.predict(batch.tokens()), batch.y_query)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.001)
        optimizer.step()
        if step >= 20:
            durations.append(time.perf_counter() - start)
    return 1000 * statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=2048)
    args = parser.parse_args()
    print(f"{'model':<28}{'threads':>8}{'ms/step':>10}{'JAX ref':>10}{'speed-up':>10}")
    for num_layers, recurrent, name in ((1, False, "LSA, 1 layer"), (2, True, "recurrent LSA, 2 layers")):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            milliseconds = time_steps(num_layers, recurrent, args.steps, args.batch_size)
            reference = JAX_REFERENCE_MS[num_layers]
            print(f"{name:<28}{threads:>8}{milliseconds:>10.2f}{reference:>10.1f}{reference / milliseconds:>9.1f}x")


if __name__ == "__main__":
    main()
