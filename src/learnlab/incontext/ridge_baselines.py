"""Closed-form baselines for noisy in-context regression (Vladymyrov et al. 2024, §4, §6, Table 1).

All sums are unnormalised (paper §4): ``Sigma = sum_i x_i x_i^T``, ``alpha = sum_i y_i x_i`` over the
``n`` context examples, and a ridge solution with penalty ``lam`` is ``w = (Sigma + lam I)^-1 alpha``,
predicting ``<w, x_query>``.

* oracle ridge: ``lam = sigma_tau^2`` with each sequence's true noise level (the Bayes-optimal
  predictor for ``w ~ N(0, I)``); the *adjusted loss* of a predictor is its ½·MSE minus the oracle's
  ½·MSE on the same sequences (§6);
* ConstRR: one ``lam`` tuned per noise distribution;
* AdaRR: ``lam = sigma_hat^2 = ||y - X w_OLS||^2 / (n - d)`` (needs ``n > d``);
* TunedRR: ``lam = multiplier * min(sigma_hat^2, threshold)``, both tuned per noise distribution on a
  grid (the paper's procedure is unknown; the grid is an argument);
* one-step GD from ``w = 0``: ``w = eta alpha``; the optimal ``eta`` is a 1-D least-squares fit.

:class:`SpectralRidge` diagonalises ``Sigma`` once per sequence, after which a prediction for any
per-sequence ``lam`` costs ``O(d)``; tuning uses it. :class:`RidgeBaselines` tunes them all for one noise
distribution and gives their query-averaged losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from learnlab.incontext.linear_transformer_variants import query_averaged_loss
from learnlab.incontext.regression import RegressionBatch


def context_statistics(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Sigma, alpha) = (sum_i x_i x_i^T, sum_i y_i x_i)`` for ``x (..., n, d)``, ``y (..., n)``."""
    return x.transpose(-1, -2) @ x, (x * y.unsqueeze(-1)).sum(-2)


def ridge_predictions(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, ridge: torch.Tensor | float) -> torch.Tensor:
    """``<(Sigma + ridge I)^-1 alpha, x_query>`` by a batched solve; ``ridge`` is a number or ``(...,)``."""
    sigma, alpha = context_statistics(x, y)
    ridge = torch.as_tensor(ridge, dtype=x.dtype, device=x.device)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    weights = torch.linalg.solve(sigma + ridge[..., None, None] * eye, alpha.unsqueeze(-1)).squeeze(-1)
    return (weights * x_query).sum(-1)


def ols_noise_variance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """AdaRR's estimate ``sigma_hat^2 = ||y - X w_OLS||^2 / (n - d)`` per sequence (§6)."""
    n, d = x.shape[-2:]
    if n <= d:
        raise ValueError(f"the OLS noise estimate needs n > d, got n = {n}, d = {d}")
    weights = torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.squeeze(-1)
    residual = y - (x @ weights.unsqueeze(-1)).squeeze(-1)
    return residual.pow(2).sum(-1) / (n - d)


def oracle_ridge_predictions(batch: RegressionBatch) -> torch.Tensor:
    """Ridge with each sequence's true ``lam = sigma_tau^2`` (the adjusted loss's reference)."""
    if batch.noise_std is None:
        raise ValueError("the oracle needs per-sequence noise levels (batch.noise_std)")
    return ridge_predictions(batch.x, batch.y, batch.x_query, batch.noise_std.pow(2))


def adaptive_ridge_predictions(
    x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, threshold: float = math.inf, multiplier: float = 1.0
) -> torch.Tensor:
    """AdaRR (defaults) and TunedRR: ridge with ``lam = multiplier * min(sigma_hat^2, threshold)``."""
    noise = ols_noise_variance(x, y).clamp(max=threshold)
    return ridge_predictions(x, y, x_query, multiplier * noise)


def one_step_gd_predictions(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, eta: float) -> torch.Tensor:
    """One GD step from ``w = 0`` on ``½ sum_i (y_i - <w, x_i>)^2``: ``eta <alpha, x_query>``."""
    _, alpha = context_statistics(x, y)
    return eta * (alpha * x_query).sum(-1)


def half_mse_per_sequence(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * (prediction - target).pow(2)


def adjusted_loss(prediction: torch.Tensor, batch: RegressionBatch, oracle: torch.Tensor | None = None) -> float:
    """Adjusted evaluation loss (§6): ½·MSE of ``prediction`` minus the oracle ridge's, same sequences."""
    oracle = oracle_ridge_predictions(batch) if oracle is None else oracle
    target = batch.y_query.to(prediction.dtype)
    difference = half_mse_per_sequence(prediction, target) - half_mse_per_sequence(oracle.to(prediction.dtype), target)
    return difference.mean().item()


class SpectralRidge:
    """Ridge solutions for many penalties at once, from the context statistics alone.

    ``Sigma = V diag(e) V^T`` is diagonalised once per sequence (float64); then
    ``w(lam) = V diag(1 / (e + lam)) V^T alpha`` costs ``O(d)`` per sequence for any penalty,
    and so do its prediction ``<w(lam), x_query>`` and its query-averaged loss
    ``½ ||w(lam) - w_teacher||^2`` (the expected ½·squared error over ``x_query ~ N(0, I)``).

    Args:
        sigma, alpha: ``Sigma (B, d, d)`` and ``alpha (B, d)``; see :func:`context_statistics`.
        sum_y2: ``lambda = sum_i y_i^2`` ``(B,)``, needed only for :meth:`ols_noise_variance`.
        num_context: ``n``, needed only for :meth:`ols_noise_variance`.
    """

    def __init__(self, sigma: torch.Tensor, alpha: torch.Tensor, sum_y2: torch.Tensor | None = None,
                 num_context: int | None = None) -> None:
        self.eigenvalues, self.vectors = torch.linalg.eigh(sigma.double())
        self.rotated_alpha = (self.vectors.transpose(-1, -2) @ alpha.double().unsqueeze(-1)).squeeze(-1)
        self.sum_y2 = None if sum_y2 is None else sum_y2.double()
        self.num_context = num_context

    @classmethod
    def from_data(cls, x: torch.Tensor, y: torch.Tensor) -> "SpectralRidge":
        sigma, alpha = context_statistics(x, y)
        return cls(sigma, alpha, y.pow(2).sum(-1), x.shape[-2])

    @classmethod
    def from_moments(cls, moments: torch.Tensor, num_context: int | None = None) -> "SpectralRidge":
        """From token moments ``C = sum_i e_i e_i^T = [[Sigma, alpha], [alpha^T, lambda]]`` ``(B, d + 1, d + 1)``."""
        return cls(moments[..., :-1, :-1], moments[..., :-1, -1], moments[..., -1, -1], num_context)

    def _ridge(self, ridge: torch.Tensor | float) -> torch.Tensor:
        ridge = torch.as_tensor(ridge, dtype=torch.float64, device=self.eigenvalues.device)
        return ridge.reshape(ridge.shape + (1,))

    def rotate(self, vector: torch.Tensor) -> torch.Tensor:
        """``V^T v`` per sequence."""
        return (self.vectors.transpose(-1, -2) @ vector.double().unsqueeze(-1)).squeeze(-1)

    def weights(self, ridge: torch.Tensor | float) -> torch.Tensor:
        """``(Sigma + ridge I)^-1 alpha`` ``(B, d)``; ``ridge`` a number or ``(B,)``."""
        return (self.vectors @ (self.rotated_alpha / (self.eigenvalues + self._ridge(ridge))).unsqueeze(-1)).squeeze(-1)

    def predict(self, x_query: torch.Tensor, ridge: torch.Tensor | float) -> torch.Tensor:
        return (self.rotated_alpha * self.rotate(x_query) / (self.eigenvalues + self._ridge(ridge))).sum(-1)

    def query_averaged_loss(self, rotated_teacher: torch.Tensor, ridge: torch.Tensor | float) -> torch.Tensor:
        """``½ ||w(ridge) - w||^2`` per sequence, given ``rotate(w)`` (rotate once, then try many penalties)."""
        return 0.5 * (self.rotated_alpha / (self.eigenvalues + self._ridge(ridge)) - rotated_teacher).pow(2).sum(-1)

    def ols_noise_variance(self) -> torch.Tensor:
        """AdaRR's ``sigma_hat^2 = (lambda - alpha^T Sigma^-1 alpha) / (n - d)`` (the OLS residual)."""
        if self.sum_y2 is None:
            raise ValueError("the noise estimate needs sum_y2")
        n, d = self.num_context, self.eigenvalues.shape[-1]
        if n is None or n <= d:
            raise ValueError(f"the OLS noise estimate needs n > d, got n = {n}, d = {d}")
        residual = self.sum_y2 - (self.rotated_alpha.pow(2) / self.eigenvalues).sum(-1)
        return residual.clamp(min=0.0) / (n - d)


def tune_constant_ridge(spectral: SpectralRidge, teacher: torch.Tensor, bounds: tuple[float, float] = (1e-4, 1e3)) -> float:
    """ConstRR's ``lam``: the constant penalty minimising the mean query-averaged ½·MSE (log-scale search)."""
    rotated = spectral.rotate(teacher)

    def loss(log_ridge: float) -> float:
        return spectral.query_averaged_loss(rotated, math.exp(log_ridge)).mean().item()

    grid = np.linspace(math.log(bounds[0]), math.log(bounds[1]), 41)
    best = int(np.argmin([loss(value) for value in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    result = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(result.x))


@dataclass(frozen=True)
class TunedRidge:
    """TunedRR's tuned ``threshold`` and ``multiplier`` and its loss on the tuning sequences."""

    threshold: float
    multiplier: float
    tuning_loss: float


DEFAULT_THRESHOLDS = tuple(float(v) for v in np.geomspace(0.05, 100.0, 24)) + (math.inf,)
DEFAULT_MULTIPLIERS = tuple(float(v) for v in np.geomspace(0.25, 4.0, 33))


def tune_tuned_ridge(
    spectral: SpectralRidge,
    teacher: torch.Tensor,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
) -> TunedRidge:
    """Grid-search TunedRR's threshold on ``sigma_hat^2`` and its multiplier (mean query-averaged ½·MSE)."""
    rotated = spectral.rotate(teacher)
    noise = spectral.ols_noise_variance()
    best = TunedRidge(math.inf, 1.0, math.inf)
    for threshold in thresholds:
        clipped = noise.clamp(max=threshold)
        for multiplier in multipliers:
            loss = spectral.query_averaged_loss(rotated, multiplier * clipped).mean().item()
            if loss < best.tuning_loss:
                best = TunedRidge(float(threshold), float(multiplier), loss)
    return best


def tune_one_step_gd(alpha: torch.Tensor, teacher: torch.Tensor) -> float:
    """The step size minimising the query-averaged ½·MSE of ``w = eta alpha``: ``<alpha, w> / ||alpha||^2`` pooled."""
    alpha, teacher = alpha.double(), teacher.double()
    return float((alpha * teacher).sum() / alpha.pow(2).sum())


@dataclass(frozen=True)
class RidgeBaselines:
    """The baselines of Table 1 tuned for one noise distribution (§6): ConstRR, AdaRR, TunedRR, 1-step GD.

    Attributes:
        constant_ridge: ConstRR's ``lam``.
        tuned: TunedRR's threshold and multiplier.
        eta: one-step GD's step size.
    """

    constant_ridge: float
    tuned: TunedRidge
    eta: float

    @classmethod
    def tune(cls, spectral: SpectralRidge, teacher: torch.Tensor, alpha: torch.Tensor) -> "RidgeBaselines":
        """Tune every baseline on sequences given by ``spectral``, their teachers and ``alpha (B, d)``."""
        return cls(tune_constant_ridge(spectral, teacher), tune_tuned_ridge(spectral, teacher),
                   tune_one_step_gd(alpha, teacher))

    def tuned_values(self) -> dict[str, float]:
        """The tuned values by name: ``constrr_lambda``, ``tunedrr_threshold``, ``tunedrr_multiplier``, ``gd1_eta``."""
        return {"constrr_lambda": self.constant_ridge, "tunedrr_threshold": self.tuned.threshold,
                "tunedrr_multiplier": self.tuned.multiplier, "gd1_eta": self.eta}

    def query_averaged_losses(self, spectral: SpectralRidge, teacher: torch.Tensor,
                              alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each baseline's ``½ ||w - w_teacher||^2`` per sequence, by name."""
        rotated = spectral.rotate(teacher)
        estimate = spectral.ols_noise_variance()
        return {
            "constrr": spectral.query_averaged_loss(rotated, self.constant_ridge),
            "adarr": spectral.query_averaged_loss(rotated, estimate),
            "tunedrr": spectral.query_averaged_loss(rotated, self.tuned.multiplier * estimate.clamp(max=self.tuned.threshold)),
            "gd1": query_averaged_loss(self.eta * alpha, teacher),
        }
