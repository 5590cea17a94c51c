"""A minimal, fast supervised training loop on in-memory tensors: any loss, any ``torch.optim`` optimizer.

The whole dataset sits in one tensor; each step indexes a batch with indices from a seeded
permutation (a new one per epoch), so there is no DataLoader, no per-sample Python and no
collation. The loss (default: cross-entropy), the optimizer and an optional learning-rate
scheduler are the caller's (e.g. :class:`learnlab.core.schedules.WarmupCosine`), so the same loop
serves plain SGD, Adam, or a learned optimizer. Threads are the caller's choice too: for these
tiny models one thread per process is usually fastest (see ``benchmarks/training_loop.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from learnlab.data.splits import Split


def batch_indices(num_examples: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless stream of index batches: shuffle once per epoch (seeded), drop the ragged tail."""
    if batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples")
    while True:
        order = torch.randperm(num_examples, generator=generator)
        for start in range(0, num_examples - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SGDSettings:
    """Plain SGD. ``momentum`` 0 keeps the learning rate's meaning simple (one step moves by ``lr`` times the gradient)."""

    learning_rate: float = 0.1
    batch_size: int = 32
    weight_decay: float = 0.0
    momentum: float = 0.0


def make_optimizer(model: nn.Module, settings: SGDSettings) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=settings.learning_rate, momentum=settings.momentum,
                           weight_decay=settings.weight_decay, foreach=True)


def train_steps(
    model: nn.Module,
    train: Split,
    steps: int,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[torch.Tensor],
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    first_step: int = 1,
    loss_function: Loss = F.cross_entropy,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> None:
    """Run ``steps`` optimizer steps in train mode; ``on_step(step, loss)`` after each update.

    ``loss_function(model(x), y)`` is minimised by ``optimizer`` (any ``torch.optim`` optimizer);
    ``scheduler``, if given, steps after every update. ``batches`` is an iterator of index tensors
    (e.g. :func:`batch_indices`); keeping it (and the optimizer) outside lets a caller pause,
    snapshot and continue the same trajectory.
    """
    model.train()
    for step in range(first_step, first_step + steps):
        index = next(batches)
        loss = loss_function(model(train.x[index]), train.y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step(step, loss.detach())


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, labels: torch.Tensor | None = None, batch_size: int = 2048) -> dict[str, float]:
    """Mean cross-entropy and accuracy in eval mode (BatchNorm uses its running statistics).

    ``labels`` overrides ``split.y`` (e.g. to score the noisy training labels).
    """
    was_training = model.training
    model.eval()
    targets = split.y if labels is None else labels
    total_loss, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        logits = model(split.x[start:start + batch_size])
        target = targets[start:start + batch_size]
        total_loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == target).sum())
    model.train(was_training)
    return {"loss": total_loss / len(split), "accuracy": correct / len(split)}
