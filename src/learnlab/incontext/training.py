"""Online training of in-context regressors on freshly sampled tasks (paper App. A.12).

Every step draws a new batch of tasks (the official code's ``cycle_data = 0``) from a task
sampler (:mod:`learnlab.incontext.tasks`, e.g. a :class:`RegressionTaskSpec`), so the model can
only lower the loss by learning an algorithm that works in context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from learnlab.incontext.regression import RegressionBatch, half_mse
from learnlab.incontext.tasks import TaskSampler


@dataclass(frozen=True)
class TrainingSettings:
    """Optimiser settings of the official code: Adam(0.9, 0.98), no weight decay.

    ``grad_clip_norm`` is the global-norm clip; the code uses 0.001 for models of at most two
    layers (with Adam this acts as per-step gradient normalisation) and 10 otherwise.
    """

    steps: int = 5000
    batch_size: int = 2048
    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    grad_clip_norm: float = 0.001
    eval_every: int = 100


@dataclass
class TrainingHistory:
    """Test loss at every evaluation step, and the final test loss."""

    steps: list[int] = field(default_factory=list)
    test_losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.test_losses[-1]


def evaluate_loss(model: nn.Module, batch: RegressionBatch, tokens: torch.Tensor | None = None) -> float:
    """½·MSE of ``model.predict`` on the query labels of ``batch``."""
    with torch.no_grad():
        prediction = model.predict(batch.tokens() if tokens is None else tokens)
        return half_mse(prediction, batch.y_query).item()


def train_in_context(
    model: nn.Module,
    sampler: TaskSampler[RegressionBatch],
    settings: TrainingSettings,
    test_batch: RegressionBatch,
    generator: torch.Generator,
    on_step: Callable[[int, float], None] | None = None,
    on_eval: Callable[[int, float], None] | None = None,
) -> TrainingHistory:
    """Train ``model`` (anything with ``predict(tokens) -> (B,)``) with Adam on fresh tasks from ``sampler``.

    ``on_step(step, loss)`` sees every training loss (the run uses it to stop on NaN/inf and to
    move its progress bar); ``on_eval(step, test_loss)`` sees each evaluation.
    """
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(
        parameters, lr=settings.learning_rate, betas=(settings.beta1, settings.beta2), eps=settings.eps
    )
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    test_tokens = test_batch.tokens()
    history = TrainingHistory()
    for step in range(1, settings.steps + 1):
        batch = sampler.sample(settings.batch_size, generator, dtype=dtype, device=device)
        loss = half_mse(model.predict(batch.tokens()), batch.y_query)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip_norm > 0:
            nn.utils.clip_grad_norm_(parameters, settings.grad_clip_norm)
        optimizer.step()
        if on_step is not None:
            on_step(step, loss.item())
        if step % settings.eval_every == 0 or step == settings.steps:
            test_loss = evaluate_loss(model, test_batch, test_tokens)
            history.steps.append(step)
            history.test_losses.append(test_loss)
            if on_eval is not None:
                on_eval(step, test_loss)
    return history
