"""Ignore-k update pruning: undo the largest entries of a fine-tuning update, keep the rest.

Sun et al. 2025, Eq. 3 / App. A.6 ("ignore-k"). For every parameter tensor i,
with ω_base the weights before learning and ω_after the weights after it,

    Δω_i = ω_after,i − ω_base,i
    M_i  = 0 on the top-k% entries of |Δω_i|, 1 elsewhere
    ω_i  = ω_base,i + Δω_i ⊙ M_i                (kept entries are not rescaled)

This inverts the "trim" step of TIES-Merging (which keeps the top-k). "Largest" ranks the
magnitude |Δω| (not its signed value), per tensor by default;
``scope="global"`` ranks all entries of all tensors together. Controls: ``selection="random"``
drops k% of the entries chosen uniformly at random, ``selection="bottom"`` the k% smallest.

The functions work on any ``torch.nn.Module`` after any fine-tuning: keep a copy of the base
parameters (:func:`parameter_snapshot`) before training, then call :func:`ignore_topk` on the
trained model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

Selection = Literal["top", "random", "bottom"]
Scope = Literal["tensor", "global"]


def parameter_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every trainable parameter of ``model`` (the ω_base of Eq. 3)."""
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters() if parameter.requires_grad}


def entries_to_drop(numel: int, fraction: float) -> int:
    """How many of ``numel`` entries a fraction ``fraction`` drops: round(fraction · numel)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return int(round(fraction * numel))


def drop_mask(delta: torch.Tensor, fraction: float, selection: Selection = "top",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask, True on the entries of ``delta`` to drop (reset to base), False on those kept.

    ``top``: the round(fraction · numel) largest |delta| (ties broken by position, deterministic);
    ``bottom``: the smallest; ``random``: a uniformly random subset of the same size (``generator``).
    """
    count = entries_to_drop(delta.numel(), fraction)
    flat = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    if count == 0:
        return flat.view_as(delta)
    if selection == "random":
        chosen = torch.randperm(delta.numel(), generator=generator)[:count].to(delta.device)
    elif selection in ("top", "bottom"):
        magnitude = delta.detach().abs().flatten().double()
        chosen = torch.topk(magnitude, count, largest=selection == "top", sorted=False).indices
    else:
        raise ValueError(f"selection must be top, random or bottom, got {selection!r}")
    flat[chosen] = True
    return flat.view_as(delta)


def prune_update(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], fraction: float,
                 selection: Selection = "top", scope: Scope = "tensor",
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The pruned weights ω_base + Δω ⊙ M (Eq. 3) for every tensor named in ``base``.

    ``tuned`` must hold a tensor of the same shape for every name in ``base``. With
    ``scope="global"`` the k% are counted over all entries of all tensors together.
    """
    missing = [name for name in base if name not in tuned]
    if missing:
        raise KeyError(f"tuned weights lack {len(missing)} base tensors, e.g. {missing[0]!r}")
    if scope not in ("tensor", "global"):
        raise ValueError(f"scope must be tensor or global, got {scope!r}")
    deltas = {name: tuned[name].detach() - value for name, value in base.items()}
    if scope == "tensor":
        masks = {name: drop_mask(delta, fraction, selection, generator) for name, delta in deltas.items()}
    else:
        names = list(deltas)
        flat = torch.cat([deltas[name].flatten().cpu() for name in names])
        pieces = drop_mask(flat, fraction, selection, generator).split([deltas[name].numel() for name in names])
        masks = {name: piece.view_as(deltas[name]).to(deltas[name].device) for name, piece in zip(names, pieces)}
    return {name: base[name] + torch.where(masks[name], torch.zeros_like(delta), delta) for name, delta in deltas.items()}


@torch.no_grad()
def ignore_topk(model: torch.nn.Module, base: Mapping[str, torch.Tensor], fraction: float,
                selection: Selection = "top", scope: Scope = "tensor",
                generator: torch.Generator | None = None) -> dict[str, float]:
    """Apply ignore-k to ``model`` in place, relative to the base parameters ``base``.

    Returns the share of the update's squared norm that was dropped (``dropped_update_share``)
    and the number of entries reset (``dropped_entries``).
    """
    parameters = dict(model.named_parameters())
    unknown = [name for name in base if name not in parameters]
    if unknown:
        raise KeyError(f"model has no parameter {unknown[0]!r} named in the base snapshot")
    tuned = {name: parameters[name] for name in base}
    pruned = prune_update(base, tuned, fraction, selection, scope, generator)
    total = dropped = 0.0
    entries = 0
    for name, value in pruned.items():
        removed = (tuned[name] - value).double()
        total += float((tuned[name] - base[name]).double().square().sum())
        dropped += float(removed.square().sum())
        entries += int((removed != 0).sum())
        parameters[name].copy_(value)
    return {"dropped_update_share": dropped / total if total > 0 else 0.0, "dropped_entries": float(entries)}
