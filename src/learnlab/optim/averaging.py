"""Iterate averaging: two-point averages, debiased EMA and SWA, with BatchNorm refresh.

Sandler et al. (2023, abstract: "iterate aggregates are equivalent to learning-rate schedules")
relate weight averages to learning rates:

- two-point average θ̄ = (θ_t + θ_{t−k}) / 2: for k ≫ 1/(λh) the stationary variance halves,
  like halving the learning rate;
- EMA v_t = β v_{t−1} + (1 − β) θ_t with zero initialisation and debiasing v̂_t = v_t / (1 − β^t)
  (without debiasing a high-decay EMA lags behind the iterates);
- SWA, the uniform average over a window.

EMA and SWA are built on :class:`torch.optim.swa_utils.AveragedModel` (float32 averages, updated
every step). Averaged weights need BatchNorm statistics recomputed for them:
:func:`refresh_batch_norm` wraps :func:`torch.optim.swa_utils.update_bn`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn


def debiased_ema_weight(decay: float, count: int) -> float:
    """The weight w_t of θ_t in the debiased EMA written as a running update.

    From v_t = β v_{t−1} + (1−β) θ_t and v̂_t = v_t / (1 − β^t):
    v̂_t = v̂_{t−1} + w_t (θ_t − v̂_{t−1}) with w_t = (1 − β) / (1 − β^t)  (w_1 = 1).
    """
    return (1.0 - decay) / (1.0 - decay**count)


def debiased_ema_multi_avg_fn(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """A ``multi_avg_fn`` for :class:`AveragedModel` implementing the zero-initialised, debiased EMA.

    ``AveragedModel`` copies the first iterate (w_1 = 1) and then calls this with
    ``num_averaged = t − 1`` for the t-th iterate.
    """
    if not 0 <= decay < 1:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        weight = debiased_ema_weight(decay, int(num_averaged) + 1)
        torch._foreach_lerp_(averaged, current, weight)

    return update


def ema_model(model: nn.Module, decay: float) -> AveragedModel:
    """An :class:`AveragedModel` holding the debiased EMA of ``model``'s parameters (float32).

    Call ``.update_parameters(model)`` after every optimiser step; buffers are not averaged
    (refresh BatchNorm statistics with :func:`refresh_batch_norm` before evaluating).
    """
    return AveragedModel(model, multi_avg_fn=debiased_ema_multi_avg_fn(decay), use_buffers=False)


def swa_model(model: nn.Module) -> AveragedModel:
    """An :class:`AveragedModel` holding the uniform (SWA) average of the iterates it is given."""
    return AveragedModel(model, use_buffers=False)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached float32 copy of ``model``'s parameters (by name)."""
    return {name: p.detach().to(torch.float32).clone() for name, p in model.named_parameters()}


def average_parameters(states: list[Mapping[str, torch.Tensor]], weights: list[float] | None = None) -> dict[str, torch.Tensor]:
    """Weighted average of parameter dicts; uniform by default. The two-point average is
    ``average_parameters([theta_t, theta_t_minus_k])`` = (θ_t + θ_{t−k}) / 2."""
    if not states:
        raise ValueError("need at least one state to average")
    weights = [1.0 / len(states)] * len(states) if weights is None else list(weights)
    if len(weights) != len(states):
        raise ValueError("one weight per state")
    return {name: sum(w * state[name].to(torch.float32) for w, state in zip(weights, states)) for name in states[0]}


def two_point_average(later: Mapping[str, torch.Tensor], earlier: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(θ_t + θ_{t−k}) / 2, the two-point average of iterates k steps apart."""
    return average_parameters([later, earlier])


def model_with_parameters(model: nn.Module, parameters: Mapping[str, torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` carrying ``parameters`` (buffers copied from ``model``)."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in copied.named_parameters():
            parameter.copy_(parameters[name])
    return copied


@torch.no_grad()
def refresh_batch_norm(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Recompute BatchNorm running statistics of ``model`` on ``inputs`` (a no-op without BN).

    Uses :func:`torch.optim.swa_utils.update_bn`: statistics are reset, then accumulated as exact
    averages (momentum None) over one pass in batches of ``batch_size``.
    """
    update_bn([inputs[start:start + batch_size] for start in range(0, len(inputs), batch_size)], model)
    return model


def averaged_model(model: nn.Module, parameters: Mapping[str, torch.Tensor], bn_inputs: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with averaged ``parameters`` and BatchNorm statistics recomputed for them."""
    return refresh_batch_norm(model_with_parameters(model, parameters), bn_inputs)


def averaged_module_parameters(averaged: AveragedModel) -> dict[str, torch.Tensor]:
    """The averaged parameters of an :class:`AveragedModel`, by the wrapped model's names."""
    return {name: p.detach().clone() for name, p in averaged.module.named_parameters()}
