"""Episodic meta-training with Adam, checkpointed so that a killed run resumes exactly.

Each step draws its episodes from a generator seeded by ``(seed, step)``, so the episode stream
does not depend on where a run was interrupted: a resumed run continues with the same episodes,
the same optimizer state and the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from learnlab.core.io import atomic_write
from learnlab.core.runtime import derive_seed

LossFunction = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]  # generator -> (loss, accuracy)


def step_generator(seed: int, step: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, "step", str(step)))
    return generator


def adam(parameters: Iterable[torch.Tensor], learning_rate: float) -> torch.optim.Adam:
    """Adam with its multi-tensor update: on the CPU it applies the same elementwise kernels, parameter by
    parameter, as the default single-tensor loop (the same numbers), without the loop's Python overhead,
    which is a large share of a step for generators with a hundred small parameter tensors."""
    return torch.optim.Adam(parameters, lr=learning_rate, foreach=True)


def learning_rate_factor(step: int, steps: int, warmup_fraction: float, final_fraction: float) -> float:
    warmup = int(warmup_fraction * steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def meta_train(model: nn.Module, loss_of: LossFunction, steps: int, learning_rate: float, seed: int,
               checkpoint: Path | None = None, checkpoint_every: int = 100,
               on_step: Callable[[int, float], None] | None = None, final_fraction: float = 0.1,
               warmup_fraction: float = 0.1) -> list[dict]:
    """Train ``model`` for ``steps`` Adam steps: linear warm-up over ``warmup_fraction`` of the steps (the
    generators are post-LayerNorm transformers, which need it), then cosine decay to ``final_fraction``.

    Returns the history ``[{"step", "loss", "accuracy"}]`` every ``checkpoint_every`` steps.
    """
    optimizer = adam(model.parameters(), learning_rate)
    start, history = 0, []
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
    running_loss, running_accuracy, count = 0.0, 0.0, 0
    for step in range(start, steps):
        rate = learning_rate * learning_rate_factor(step, steps, warmup_fraction, final_fraction)
        for group in optimizer.param_groups:
            group["lr"] = rate
        loss, accuracy = loss_of(step_generator(seed, step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        value = float(loss.detach())
        running_loss, running_accuracy, count = running_loss + value, running_accuracy + float(accuracy.mean()), count + 1
        if on_step is not None:
            on_step(step, value)
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            history.append({"step": step + 1, "loss": running_loss / count, "accuracy": running_accuracy / count})
            running_loss, running_accuracy, count = 0.0, 0.0, 0
            if checkpoint is not None:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                         "history": history}
                atomic_write(Path(checkpoint), lambda temp: torch.save(state, temp))
    return history
