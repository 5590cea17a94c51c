"""Continual-learning metrics with Avalanche's definitions (avalanche-lib, ``evaluation.metrics``).

``accuracy[t][tau]`` is the accuracy on task ``tau`` after learning tasks ``0..t`` (NaN for ``tau > t``):

- forgetting of task ``tau`` (``ExperienceForgetting``): its accuracy right after it was learned
  minus its accuracy now, ``A[tau][tau] - A[last][tau]``; the stream value averages it over the
  tasks learned before the last one;
- backward transfer (``ExperienceBWT``): minus the forgetting, ``A[last][tau] - A[tau][tau]``
  (Lopez-Paz & Ranzato 2017); positive when later tasks improved an earlier one;
- average accuracy after task ``t``: the mean of ``A[t][tau]`` over ``tau <= t``.
"""

from __future__ import annotations

import numpy as np


def _matrix(accuracy) -> np.ndarray:
    matrix = np.asarray(accuracy, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"the accuracy matrix must be square (tasks x tasks), got shape {matrix.shape}")
    return matrix


def forgetting(accuracy, after: int | None = None) -> float:
    """Mean forgetting over tasks ``0 .. after-1`` measured after task ``after`` (default: the last task)."""
    matrix = _matrix(accuracy)
    last = len(matrix) - 1 if after is None else after
    if last < 1:
        return 0.0
    return float(np.mean([matrix[tau, tau] - matrix[last, tau] for tau in range(last)]))


def backward_transfer(accuracy, after: int | None = None) -> float:
    """Mean backward transfer, ``-forgetting``."""
    return -forgetting(accuracy, after)


def average_accuracy(accuracy) -> list[float]:
    """Mean accuracy over the tasks learned so far, after each task."""
    matrix = _matrix(accuracy)
    return [float(np.mean(matrix[t, :t + 1])) for t in range(len(matrix))]
