"""The fixed-batch loss probe (Sandler et al. 2023, abstract: the fixed-batch loss is "remarkably convex-like").

For parameters θ, a fixed batch B and its gradient g_B = ∇L_B(θ), the loss after one GD step of
size λ is

    φ_B(λ) = L_B(θ − λ g_B) ≈ a − b λ + c λ²,   λ* = b / (2c),   one-step ratio = φ_B(λ*) / φ_B(0).

:func:`probe_fixed_batch` evaluates φ on a grid with :func:`torch.func.functional_call`, so the
model (its parameters and BatchNorm buffers) is never modified. The grid is placed on
[0, 2 λ_min], where λ_min is the minimiser found by doubling λ from the learning rate; with
``refit`` (the default) a second grid is placed on [0, 2 λ*], λ* the first fit's minimiser, and
the parabola is fitted there: the interval symmetric about the minimum, on which "the loss is a
parabola" is judged. :func:`fixed_batch_loss` is the batch's loss at the current weights, without
side effects, for the loss of a fixed batch along the training trajectory, L_B(θ_t).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F


@dataclass(frozen=True)
class ParabolaFit:
    """Least-squares fit φ(λ) ≈ a − b λ + c λ² with its coefficient of determination R²."""

    a: float
    b: float
    c: float
    r_squared: float

    @property
    def minimiser(self) -> float:
        """λ* = b / (2c); ``inf`` when the fit is not convex (c <= 0)."""
        return self.b / (2 * self.c) if self.c > 0 else float("inf")

    def __call__(self, step: np.ndarray | float) -> np.ndarray | float:
        return self.a - self.b * np.asarray(step) + self.c * np.asarray(step) ** 2


def fit_parabola(steps: np.ndarray | list[float], losses: np.ndarray | list[float]) -> ParabolaFit:
    """Fit a − bλ + cλ² by least squares (float64) and report R² = 1 − SS_res / SS_tot."""
    x = np.asarray(steps, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if x.shape != y.shape or x.size < 3:
        raise ValueError("need at least three (step, loss) pairs of equal length")
    design = np.stack([np.ones_like(x), -x, x**2], axis=1)
    (a, b, c), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ np.array([a, b, c])
    total = np.sum((y - y.mean()) ** 2)
    r_squared = 1.0 - float(np.sum(residual**2) / total) if total > 0 else 1.0
    return ParabolaFit(float(a), float(b), float(c), r_squared)


@dataclass(frozen=True)
class ProbeResult:
    """φ_B on a grid, its parabola fit and the derived numbers of claims 1 and 2."""

    steps: np.ndarray
    losses: np.ndarray
    fit: ParabolaFit
    learning_rate: float
    best_step: float          # λ* from the fit (clipped to the grid's range)
    loss_at_best_step: float  # φ_B(λ*) measured (not the fit's value)
    initial_loss: float       # φ_B(0) = L_B(θ)

    @property
    def best_step_over_learning_rate(self) -> float:
        return self.best_step / self.learning_rate

    @property
    def one_step_ratio(self) -> float:
        """φ_B(λ*) / φ_B(0): how much of the batch loss one step of the best size removes."""
        return self.loss_at_best_step / self.initial_loss


LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def probe_fixed_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    learning_rate: float,
    num_points: int = 13,
    max_doublings: int = 16,
    loss_fn: LossFunction = F.cross_entropy,
    refit: bool = True,
) -> ProbeResult:
    """Measure φ_B(λ) = L_B(θ − λ g_B) on [0, 2 λ_min] (then on [0, 2 λ*] if ``refit``) and fit the
    parabola (model left untouched).

    The model is evaluated in its current mode (train mode: BatchNorm uses the batch's statistics,
    which is the loss SGD sees); buffers are cloned so running statistics do not move.
    λ_min is bracketed by doubling λ from ``learning_rate / 4`` until φ rises.
    """
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}

    def batch_loss(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return _loss_at(model, weights, buffers, inputs, targets, loss_fn)

    with torch.enable_grad():
        leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
        gradients = dict(zip(leaves, torch.autograd.grad(batch_loss(leaves), list(leaves.values()))))

    @torch.no_grad()
    def phi(step: float) -> float:
        return float(batch_loss({name: params[name] - step * gradients[name] for name in params}))

    initial = phi(0.0)
    step, best_step, best = learning_rate / 4, 0.0, initial
    for _ in range(max_doublings):
        value = phi(step)
        if not np.isfinite(value) or value > best:
            break
        best_step, best = step, value
        step *= 2
    upper = 2 * (best_step if best_step > 0 else learning_rate / 4)
    grid = np.linspace(0.0, upper, num_points)
    losses = np.array([initial] + [phi(float(s)) for s in grid[1:]])
    fit = fit_parabola(grid, losses)
    if refit and 0 < fit.minimiser < np.inf:
        upper = 2 * fit.minimiser
        grid = np.linspace(0.0, upper, num_points)
        losses = np.array([initial] + [phi(float(s)) for s in grid[1:]])
        fit = fit_parabola(grid, losses)
    best_fit_step = float(np.clip(fit.minimiser, 0.0, upper))
    return ProbeResult(grid, losses, fit, learning_rate, best_fit_step, phi(best_fit_step), initial)


def _loss_at(model: nn.Module, weights: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], inputs: torch.Tensor,
             targets: torch.Tensor, loss_fn: LossFunction) -> torch.Tensor:
    state = {**weights, **{name: b.clone() for name, b in buffers.items()}}
    return loss_fn(functional_call(model, state, (inputs,)), targets)


@torch.no_grad()
def fixed_batch_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                     loss_fn: LossFunction = F.cross_entropy) -> float:
    """L_B(θ) in the model's current mode, leaving parameters and BatchNorm statistics untouched."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    return float(_loss_at(model, params, buffers, inputs, targets, loss_fn))
