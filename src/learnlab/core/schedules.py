"""Learning-rate schedules: linear warm-up, then cosine decay to a floor.

One function serves every study, with the two conventions that published code differs on made
explicit instead of hidden in off-by-one variants:

- ``warmup_from_zero``: optax's ``warmup_cosine_decay_schedule`` gives step 0 a rate of 0
  (``peak * step / warmup``); many PyTorch recipes give it ``peak / warmup`` (``(step + 1) / warmup``),
  so that no step is wasted at rate 0;
- ``decay_end``: the 0-based step at which the cosine reaches the floor (optax: its
  ``decay_steps``; "the last step reaches the floor": ``steps - 1``; "one past the last": ``steps``).

Steps are 0-based: ``rate(0)`` is the rate of the first update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """``peak`` after a linear warm-up of ``warmup_steps``, cosine-decayed to ``floor * peak`` at ``decay_end``.

    After ``decay_end`` the rate stays at the floor. ``floor`` is a fraction of the peak.
    """

    peak: float
    warmup_steps: int
    decay_end: int
    floor: float = 0.0
    warmup_from_zero: bool = False

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.decay_end < 0:
            raise ValueError("warmup_steps and decay_end must be >= 0")
        if not 0 <= self.floor <= 1:
            raise ValueError(f"floor must be a fraction of the peak in [0, 1], got {self.floor}")

    def factor(self, step: int) -> float:
        """The rate at ``step`` as a fraction of the peak."""
        if step < self.warmup_steps:
            return (step if self.warmup_from_zero else step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(self.decay_end - self.warmup_steps, 1), 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        """The learning rate at ``step``."""
        if step < self.warmup_steps:
            return self.peak * (step if self.warmup_from_zero else step + 1) / self.warmup_steps
        return self.peak * self.factor(step)

    def lambda_lr(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """A ``torch.optim`` scheduler applying :meth:`factor` to the optimizer's base rate (set it to ``peak``)."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)
