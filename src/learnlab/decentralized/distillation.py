"""The losses of multi-headed distillation (Zhmoginov et al. 2023, §3-4) and the aggregation of peers.

Agent ``i`` with neighbours ``N(i)``, private data ``D_i`` and a public batch ``x*`` shared by all:

    L_i = CE(h0_i(x), y)                                         on its private batch
        + nu  * sum_{k=1..H} KL( T^k_i(x*) || p^k_i(x*) )        head k learns from the peers' head k-1
        + nu0 * KL( T^0_i(x*) || p^0_i(x*) )                     optional: h0 from the peers' h0

with ``p^k_j = softmax(h^k_j / tau)`` and ``T^k_i = AGG_{j in N(i)} p^{k-1}_j`` (``T^0_i`` aggregates
the peers' ``h0``); ``AGG`` is the mean or, per public sample, the most confident neighbour. The KL
terms are scaled by ``tau^2`` (Hinton et al. 2015) so that their gradients do not shrink with the
temperature. An agent with no neighbours (or ``nu = nu0 = 0``) learns alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

AGGREGATIONS = ("mean", "most-confident")


@dataclass(frozen=True)
class DistillationSettings:
    """``nu`` (auxiliary heads), ``nu0`` (h0 distillation), the aggregation and the KL temperature."""

    nu: float = 1.0
    nu0: float = 0.0
    aggregation: str = "mean"
    temperature: float = 1.0

    def validate(self) -> None:
        if self.nu < 0 or self.nu0 < 0:
            raise ValueError(f"nu and nu0 must be >= 0, got nu={self.nu}, nu0={self.nu0}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def aggregate(predictions: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Combine neighbours' probabilities ``(neighbours, n, classes)`` into one target ``(n, classes)``."""
    if aggregation == "mean":
        return predictions.mean(dim=0)
    confidence = predictions.max(dim=-1).values  # (neighbours, n)
    chosen = confidence.argmax(dim=0)  # per sample, the most confident neighbour
    return predictions[chosen, torch.arange(predictions.shape[1])]


def head_targets(neighbour_predictions: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Targets ``(1 + H, n, classes)`` from the neighbours' predictions ``(neighbours, 1 + H, n, classes)``:
    index 0 is ``T^0`` (the peers' h0), index ``k >= 1`` is ``T^k`` (the peers' head ``k - 1``)."""
    own_level = aggregate(neighbour_predictions[:, 0], aggregation)
    chained = [aggregate(neighbour_predictions[:, k - 1], aggregation) for k in range(1, neighbour_predictions.shape[1])]
    return torch.stack([own_level, *chained])


def kl_to_target(target: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``tau^2 * KL(target || softmax(logits / tau))``, averaged over samples."""
    log_student = F.log_softmax(logits / temperature, dim=-1)
    return temperature ** 2 * F.kl_div(log_student, target, reduction="batchmean")


def agent_loss(private_logits: torch.Tensor, private_labels: torch.Tensor, public_logits: torch.Tensor,
               targets: torch.Tensor | None, settings: DistillationSettings) -> torch.Tensor:
    """``L_i``: ``private_logits (1 + H, n, C)`` (only h0 is used), ``public_logits (1 + H, m, C)``,
    ``targets (1 + H, m, C)`` from :func:`head_targets` (``None``: no neighbours)."""
    loss = F.cross_entropy(private_logits[0], private_labels)
    if targets is None:
        return loss
    if settings.nu > 0:
        for k in range(1, public_logits.shape[0]):
            loss = loss + settings.nu * kl_to_target(targets[k], public_logits[k], settings.temperature)
    if settings.nu0 > 0:
        loss = loss + settings.nu0 * kl_to_target(targets[0], public_logits[0], settings.temperature)
    return loss


def predictions(public_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """What an agent publishes: every head's probabilities on the public batch (no gradient)."""
    return F.softmax(public_logits.detach() / temperature, dim=-1)
