"""A process of the sharded-ES test: joins a gloo group and meta-trains the quadratic of test_evolution."""

from __future__ import annotations

import torch
import torch.distributed as dist

from learnlab.optim.evolution import ESSettings, meta_train

CURVATURES = torch.tensor([0.5, 1.0, 2.0, 4.0])


def quadratic(population: torch.Tensor, iteration: int) -> torch.Tensor:
    return (CURVATURES * population.pow(2)).sum(dim=-1)


def settings() -> ESSettings:
    return ESSettings(pairs=6, iterations=5, clip=0)


def sharded_rank(rank: int, world: int, init_file: str, output: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = meta_train(quadratic, torch.ones(4), settings(), seed=2, normalise=False)
        if rank == 0:
            torch.save(result.theta, output)
    finally:
        dist.destroy_process_group()
