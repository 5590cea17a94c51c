"""Meta-training by antithetic evolution strategies (the NES estimator used to meta-train learned
optimizers; Kristiansen et al. 2024 §3 meta-train theirs with it).

For meta-parameters θ (a flat vector), noise scale σ and M antithetic pairs ε_m ~ N(0, I):

    ∇_θ E_ε[L(θ + σε)] ≈ 1 / (2Mσ) Σ_m [L(θ + σε_m) − L(θ − σε_m)] ε_m

- the objective is called once per iteration with the whole population ``[2M, D]`` (so it can
  vectorise over members, e.g. with ``torch.func.vmap``) and uses the same data and
  initialisation for every member (common random numbers within and across pairs);
- it may return losses ``[tasks, 2M]`` for several tasks: each task's differences are divided by
  that task's mean loss (normalisation per task), then averaged over tasks;
- the estimate is clipped to a maximum norm and applied by Adam;
- the meta-state (θ, the Adam moments, the iteration and the history) is checkpointed
  atomically every ``checkpoint_every`` iterations, and the noise of iteration i is a pure
  function of (seed, i), so a run resumed after a kill ends where an uninterrupted one does;
- under ``torch.distributed`` (e.g. ``torchrun``), the pairs are shared out by rank and the
  estimates summed with ``all_reduce``; every rank ends with the same θ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from learnlab.core.io import atomic_write
from learnlab.core.runtime import derive_seed

Objective = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class ESSettings:
    """Antithetic ES: ``pairs`` M, noise ``sigma`` σ, meta-Adam ``learning_rate``, ``iterations``,
    gradient-norm ``clip`` (0 = none), ``checkpoint_every`` iterations."""

    pairs: int = 8
    sigma: float = 0.05
    learning_rate: float = 0.03
    iterations: int = 100
    clip: float = 1.0
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        if self.pairs < 1 or self.iterations < 0 or self.checkpoint_every < 1:
            raise ValueError("pairs and checkpoint_every must be >= 1, iterations >= 0")
        if self.sigma <= 0 or self.learning_rate <= 0 or self.clip < 0:
            raise ValueError("sigma and learning_rate must be > 0, clip >= 0")


def flatten(meta: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Callable[[torch.Tensor], dict[str, torch.Tensor]]]:
    """A dict of tensors as one vector, and the inverse (which also accepts a leading population dim)."""
    names = list(meta)
    shapes = [meta[name].shape for name in names]
    sizes = [meta[name].numel() for name in names]
    vector = torch.cat([meta[name].reshape(-1).float() for name in names]) if names else torch.zeros(0)

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        lead = flat.shape[:-1]
        return {name: part.reshape(tuple(lead) + tuple(shape))
                for name, shape, part in zip(names, shapes, torch.split(flat, sizes, dim=-1))}

    return vector, unflatten


def iteration_noise(seed: int, iteration: int, pairs: int, dim: int) -> torch.Tensor:
    """The antithetic noise ``[pairs, dim]`` of one iteration: a pure function of (seed, iteration)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "es-noise", str(iteration)))
    return torch.randn(pairs, dim, generator=generator)


def antithetic_gradient(objective: Objective, theta: torch.Tensor, noise: torch.Tensor, sigma: float, iteration: int = 0,
                        normalise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gradient estimate, losses [tasks, 2M])`` for the pairs of ``noise`` around ``theta``.

    The population is ``[θ + σε_1, ..., θ + σε_M, θ − σε_1, ..., θ − σε_M]``.
    """
    population = torch.cat([theta + sigma * noise, theta - sigma * noise])
    losses = objective(population, iteration)
    losses = losses.reshape(-1, population.shape[0]) if losses.dim() > 1 else losses.unsqueeze(0)
    pairs = noise.shape[0]
    difference = losses[:, :pairs] - losses[:, pairs:]
    if normalise:
        difference = difference / losses.abs().mean(dim=1, keepdim=True).clamp_min(1e-12)
    gradient = (difference.mean(dim=0).unsqueeze(-1) * noise).sum(dim=0) / (2 * pairs * sigma)
    return gradient, losses


@dataclass
class MetaTrainResult:
    theta: torch.Tensor
    history: list[dict[str, float]]  # per iteration: mean population loss, gradient norm
    resumed_at: int


def _checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda temp: torch.save(state, temp))


def meta_train(objective: Objective, theta: torch.Tensor, settings: ESSettings, seed: int,
               checkpoint: Path | None = None, normalise: bool = True,
               on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> MetaTrainResult:
    """Antithetic-ES meta-training of ``theta`` (module docstring); resumes from ``checkpoint`` if it exists."""
    theta = theta.detach().clone().float()
    first_moment, second_moment = torch.zeros_like(theta), torch.zeros_like(theta)
    history: list[dict[str, float]] = []
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=True)
        theta, first_moment, second_moment = saved["theta"], saved["first_moment"], saved["second_moment"]
        history, start = list(saved["history"]), int(saved["iteration"])
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    beta1, beta2 = 0.9, 0.999
    for iteration in range(start, settings.iterations):
        noise = iteration_noise(seed, iteration, settings.pairs, theta.numel())
        mine = noise[rank::world]
        gradient, losses = antithetic_gradient(objective, theta, mine, settings.sigma, iteration, normalise)
        gradient = gradient * mine.shape[0] / settings.pairs  # each rank's share of the mean over all pairs
        mean_loss = losses.mean() * mine.shape[0] / settings.pairs
        if world > 1:
            packed = torch.cat([gradient, mean_loss.reshape(1)])
            dist.all_reduce(packed)
            gradient, mean_loss = packed[:-1], packed[-1]
        norm = float(gradient.norm())
        if settings.clip and norm > settings.clip:
            gradient = gradient * (settings.clip / norm)
        step = iteration + 1
        first_moment = beta1 * first_moment + (1 - beta1) * gradient
        second_moment = beta2 * second_moment + (1 - beta2) * gradient * gradient
        theta = theta - settings.learning_rate * (first_moment / (1 - beta1 ** step)) / (
            (second_moment / (1 - beta2 ** step)).sqrt() + 1e-8)
        record = {"iteration": step, "population_loss": float(mean_loss), "gradient_norm": norm}
        history.append(record)
        if checkpoint is not None and rank == 0 and (step % settings.checkpoint_every == 0 or step == settings.iterations):
            _checkpoint(checkpoint, {"theta": theta, "first_moment": first_moment, "second_moment": second_moment,
                                     "history": history, "iteration": step})
        if on_iteration is not None:
            on_iteration(step, record)
    return MetaTrainResult(theta, history, start)
