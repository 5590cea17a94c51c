"""Per-time-step baselines for autoregressive dynamics tasks (von Oswald et al. 2023, §3–4).

At position ``t`` (0-based) of observations ``s_1..s_T`` the ``t`` past transitions
``(s_t' -> s_t'+1)``, ``t' < t``, form an in-context regression problem. Two learners:

* least squares with ridge ``lambda``:
  ``W_t = (sum_{t'<t} s_{t'+1} s_t'^T)(sum_{t'<t} s_t' s_t'^T + lambda I)^{-1}``, prediction ``W_t s_t``.
  The official baseline (``LeastSquaresSequenceSolver`` in ``src/models/auxiliary_models.py``, whose
  per-t curve the official ``run_sandbox.ipynb`` reports) fits ``W_t`` on the transitions *before*
  the latest one, ``t' < t - 1``; ``skip_latest=True`` (the default) follows it,
  ``skip_latest=False`` uses every transition seen so far;
* one GD step from ``W = 0`` on ``L_t(W) = ½ sum_{t'<t} ||s_{t'+1} - W s_t'||^2``:
  prediction ``eta sum_{t'<t} s_{t'+1} (s_t'^T s_t)`` — what one linear-attention layer on
  constructed tokens computes (key slot ``s_{t-1}``, value slot ``s_t``, query slot ``s_t``).

:func:`per_step_baselines` gives both learners' per-t test curves, with ``eta`` tuned on other sequences.
"""

from __future__ import annotations

from typing import Any

import torch

from learnlab.incontext.dynamics import DynamicsBatch, per_step_loss


def least_squares_predictions(inputs: torch.Tensor, ridge: float = 1e-3, skip_latest: bool = True) -> torch.Tensor:
    """``(B, T, D)`` predictions of ``inputs[:, t + 1]`` by per-step ridge regression (float64 inside)."""
    if ridge <= 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    s = inputs.double()
    b, t, d = s.shape
    previous, current = s[:, :-1], s[:, 1:]
    zero = s.new_zeros(b, 2 if skip_latest else 1, d, d)
    gram = torch.cat([zero, torch.cumsum(previous.unsqueeze(-1) * previous.unsqueeze(-2), dim=1)], dim=1)[:, :t]
    cross = torch.cat([zero, torch.cumsum(current.unsqueeze(-1) * previous.unsqueeze(-2), dim=1)], dim=1)[:, :t]
    gram = gram + ridge * torch.eye(d, dtype=s.dtype, device=s.device)
    solved = torch.linalg.solve(gram, s.unsqueeze(-1))  # (B, T, D, 1): (G + lambda I)^{-1} s_t
    return (cross @ solved).squeeze(-1).to(inputs.dtype)


def clipped_late_loss(predictions: torch.Tensor, targets: torch.Tensor, clip: float, start: int) -> float:
    """Mean per-step loss (float64) over positions ``start`` on of ``predictions`` clipped to
    ``±clip`` (``clip`` 0: unclipped): what a model whose activations are clipped so can reach."""
    clipped = predictions.double().clamp(-clip, clip) if clip > 0 else predictions.double()
    return float(per_step_loss(clipped, targets.double())[start:].mean())


def gd_step_directions(inputs: torch.Tensor) -> torch.Tensor:
    """``sum_{t'<t} s_{t'+1} (s_t'^T s_t)`` per position, ``(B, T, D)``: the one-step-GD prediction for eta = 1."""
    s = inputs
    previous = torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1]], dim=1)  # s_{t-1}, 0 at t = 0
    scores = (s @ previous.transpose(1, 2)).tril()  # (B, T, T): s_t . s_{t'-1} for t' <= t
    return scores @ s


def gd_step_predictions(inputs: torch.Tensor, eta: float) -> torch.Tensor:
    """One GD step with step size ``eta`` on the in-context autoregressive loss."""
    return eta * gd_step_directions(inputs)


def tune_gd_step(inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The ``eta`` minimising the autoregressive loss of one GD step (closed form: the loss is quadratic)."""
    directions = gd_step_directions(inputs.double())
    targets = targets.double()
    return float((directions * targets).sum() / directions.pow(2).sum())


def per_step_baselines(test: DynamicsBatch, tuning: DynamicsBatch, ridge: float = 1e-3) -> dict[str, Any]:
    """Per-t test losses (float64) of ridge least squares and of one GD step with ``eta`` tuned on ``tuning``.

    ``lsq_curve`` skips the latest transition (the official solver), ``lsq_all_curve`` does not;
    ``gd1_eta`` is the tuned step size, ``gd1_curve`` its curve. Curves are lists over ``t``.
    """
    targets = test.targets.double()
    lsq = per_step_loss(least_squares_predictions(test.inputs, ridge).double(), targets)
    lsq_all = per_step_loss(least_squares_predictions(test.inputs, ridge, skip_latest=False).double(), targets)
    eta = tune_gd_step(tuning.inputs, tuning.targets)
    gd = per_step_loss(gd_step_predictions(test.inputs.double(), eta), targets)
    return {"lsq_curve": lsq.tolist(), "lsq_all_curve": lsq_all.tolist(), "gd1_eta": eta, "gd1_curve": gd.tolist()}
