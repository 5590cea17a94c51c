"""The task-sampler protocol: a distribution of in-context tasks that draws batches.

After the Task/Sampler split of Garg et al.'s in-context-learning code: a *sampler* is a frozen
description of a task distribution (its sizes, input law, noise) that draws a batch of
independent tasks from an explicit generator; a training loop or an evaluation takes any sampler
and never needs to know how the tasks are made. Implemented by

* :class:`learnlab.incontext.regression.RegressionTaskSpec`: scalar linear regression, tokens
  ``(x_i, y_i)`` ("Transformers learn in-context by gradient descent", §2, App. A.12)
  -> ``RegressionBatch``;
* :class:`learnlab.incontext.dynamics.DynamicsSpec`: linear dynamical systems for next-state
  prediction ("Uncovering mesa-optimization algorithms in Transformers", §3) -> ``DynamicsBatch``;
* :class:`learnlab.incontext.dynamics.FewShotRegressionSpec`: vector regression ``y = W x`` in
  the dynamics' state space, the repurposing tasks of the same paper (§6) -> ``FewShotRegressionTasks``.

Contract: ``sample(batch_size, generator, dtype=..., device=...)`` is a pure function of its
arguments and the generator's state; the same generator state gives the same batch, and the
draw order is fixed and documented by each sampler. ``dtype`` and ``device`` are those of the
returned tensors (a sampler may draw in another precision and cast, as the dynamics do).
"""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

import torch

Batch = TypeVar("Batch", covariant=True)


@runtime_checkable
class TaskSampler(Protocol[Batch]):
    """Anything with ``sample(batch_size, generator, *, dtype, device) -> batch`` (module docstring)."""

    def sample(self, batch_size: int, generator: torch.Generator | None = None, *,
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Batch:
        """Draw ``batch_size`` independent tasks with ``generator``."""
        ...
