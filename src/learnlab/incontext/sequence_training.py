"""Online autoregressive training on fresh dynamics sequences, with the mesa paper's optimiser recipe.

The official code (``configs/config.py``, ``src/optim.py``): AdamW (weight decay 0.05),
element-wise gradient clipping at 1 (``optax.clip``, i.e. :func:`torch.nn.utils.clip_grad_value_`),
and a warmup-cosine schedule rising linearly from 0 to 3e-4 over 1000 steps and decaying by a
cosine to 1e-5 at step 20 000 (``optax.warmup_cosine_decay_schedule``,
:class:`learnlab.core.schedules.WarmupCosine` with ``warmup_from_zero``). The sequences come from a
task sampler (:mod:`learnlab.incontext.tasks`), e.g. a :class:`DynamicsSpec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from learnlab.core.schedules import WarmupCosine
from learnlab.incontext.dynamics import DynamicsBatch, autoregressive_loss, make_tokens, per_step_loss
from learnlab.incontext.tasks import TaskSampler


@dataclass(frozen=True)
class SequenceTrainingSettings:
    """Optimiser settings of the official code (``configs/config.py``).

    ``micro_batch`` splits each batch into parts whose gradients are accumulated before the step
    (the same gradient as the whole batch; smaller parts keep the activations in the CPU cache,
    which is faster here). 0 means the whole batch at once.
    """

    steps: int = 2500
    batch_size: int = 256
    peak_lr: float = 3e-4
    warmup_steps: int = 1000
    schedule_steps: int = 20000
    end_lr: float = 1e-5
    weight_decay: float = 0.05
    grad_clip_value: float = 1.0
    eval_every: int = 100
    micro_batch: int = 64

    @property
    def schedule(self) -> WarmupCosine:
        """The learning rate per 0-based step, like ``optax.warmup_cosine_decay_schedule`` (rate 0 at step 0)."""
        return WarmupCosine(peak=self.peak_lr, warmup_steps=self.warmup_steps, decay_end=self.schedule_steps,
                            floor=self.end_lr / self.peak_lr, warmup_from_zero=True)


@dataclass
class SequenceHistory:
    """Test-loss history; ``final_curve`` is the per-position test loss ``(T,)`` after the last step."""

    steps: list[int] = field(default_factory=list)
    test_losses: list[float] = field(default_factory=list)
    final_curve: torch.Tensor | None = None


def evaluate_per_step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, token_format: str = "constructed",
                      batch_size: int = 512) -> torch.Tensor:
    """Per-position test loss ``(T,)`` of ``model.predict`` (evaluated in batches)."""
    losses = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            chunk = inputs[start:start + batch_size]
            prediction = model.predict(make_tokens(chunk, token_format))
            losses.append(per_step_loss(prediction, targets[start:start + batch_size]) * chunk.shape[0])
    return torch.stack(losses).sum(0) / inputs.shape[0]


def train_autoregressive(
    model: nn.Module,
    sampler: TaskSampler[DynamicsBatch],
    settings: SequenceTrainingSettings,
    test_inputs: torch.Tensor,
    test_targets: torch.Tensor,
    generator: torch.Generator,
    token_format: str = "constructed",
    on_step: Callable[[int, float], None] | None = None,
    on_eval: Callable[[int, float], None] | None = None,
) -> SequenceHistory:
    """Train ``model`` (``predict(tokens) -> (B, T, D)``) on fresh sequences from ``sampler``; returns test-loss history."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    # foreach: the same update as the per-tensor loop (bit for bit on the CPU), in fewer kernel calls
    optimizer = torch.optim.AdamW(parameters, lr=0.0, weight_decay=settings.weight_decay, foreach=True)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    history = SequenceHistory()
    schedule = settings.schedule
    pool_batches = max(1, 4096 // settings.batch_size)  # sample several batches at once (cheaper per sequence)
    pool = None
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        if step % pool_batches == 0:
            pool = sampler.sample(settings.batch_size * pool_batches, generator, dtype=dtype, device=device)
        rows = slice((step % pool_batches) * settings.batch_size, (step % pool_batches + 1) * settings.batch_size)
        inputs, targets = pool.inputs[rows], pool.targets[rows]
        optimizer.zero_grad(set_to_none=True)
        part = settings.micro_batch if settings.micro_batch > 0 else settings.batch_size
        loss = 0.0
        for start in range(0, settings.batch_size, part):
            piece = slice(start, start + part)
            share = inputs[piece].shape[0] / settings.batch_size
            piece_loss = autoregressive_loss(model.predict(make_tokens(inputs[piece], token_format)), targets[piece]) * share
            piece_loss.backward()
            loss = loss + piece_loss.detach()
        if settings.grad_clip_value > 0:
            nn.utils.clip_grad_value_(parameters, settings.grad_clip_value)
        optimizer.step()
        if on_step is not None:
            on_step(step + 1, loss.item())
        if (step + 1) % settings.eval_every == 0 or step + 1 == settings.steps:
            curve = evaluate_per_step(model, test_inputs, test_targets, token_format)
            test_loss = float(curve.mean())
            history.final_curve = curve
            history.steps.append(step + 1)
            history.test_losses.append(test_loss)
            if on_eval is not None:
                on_eval(step + 1, test_loss)
    return history
