"""The noisy quadratic model (NQM) of SGD and its closed-form stationary losses (a reference model for
Sandler et al. 2023's averages-as-learning-rates statement).

In H's eigenbasis (eigenvalues h_i), with u = θ − θ*, a_i = 1 − λ h_i and per-direction noise s_i:

    u_{t+1,i} = a_i u_{t,i} + λ h_i ε_{t,i},        ε ~ N(0, s_i²)
    Var(u_i)  = λ h_i s_i² / (2 − λ h_i)                              (stationary SGD)
    excess    = E[L(θ) − L*] = ½ Σ_i h_i Var_i

Averages scale the stationary variance per direction:

    two-point (θ_t + θ_{t−k})/2:   (1 + a_i^k) / 2
    EMA with decay β:              (1 − β)(1 + β a_i) / ((1 + β)(1 − β a_i))
    uniform (SWA) over N steps:    [(1 + a)/(1 − a) − 2a(1 − a^N) / (N (1 − a)²)] / N

:func:`simulate_noisy_quadratic` runs the recursion vectorised over directions and independent
chains and measures the same excess losses, to check the formulas (claim 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def sgd_stationary_variance(curvatures: torch.Tensor, noise_std: torch.Tensor | float, learning_rate: float) -> torch.Tensor:
    """Var(u_i) = λ h_i s_i² / (2 − λ h_i) (requires 0 < λ h_i < 2)."""
    step = learning_rate * curvatures
    if bool((step <= 0).any() or (step >= 2).any()):
        raise ValueError("need 0 < learning_rate * h < 2 in every direction for a stationary distribution")
    return step * torch.as_tensor(noise_std, dtype=curvatures.dtype) ** 2 / (2 - step)


def two_point_variance_factor(contraction: torch.Tensor, spacing: int) -> torch.Tensor:
    """Var((u_t + u_{t−k}) / 2) / Var(u) = (1 + a^k) / 2."""
    return (1 + contraction**spacing) / 2


def ema_variance_factor(contraction: torch.Tensor, decay: float) -> torch.Tensor:
    """Var(EMA) / Var(u) = (1 − β)(1 + β a) / ((1 + β)(1 − β a)) for the stationary EMA."""
    return (1 - decay) * (1 + decay * contraction) / ((1 + decay) * (1 - decay * contraction))


def uniform_average_variance_factor(contraction: torch.Tensor, window: int) -> torch.Tensor:
    """Var(mean of N consecutive iterates) / Var(u) = (1/N²) Σ_{s,t} a^{|s−t|} (SWA window N)."""
    a, n = contraction, window
    return ((1 + a) / (1 - a) - 2 * a * (1 - a**n) / (n * (1 - a) ** 2)) / n


def excess_loss(curvatures: torch.Tensor, variances: torch.Tensor) -> float:
    """E[L(θ) − L*] = ½ Σ_i h_i Var_i."""
    return float(0.5 * (curvatures * variances).sum())


@dataclass(frozen=True)
class NoisyQuadraticPrediction:
    """Closed-form stationary excess losses of SGD, its EMA, its two-point average and SGD at λ/2."""

    sgd: float
    ema: float
    two_point: float
    sgd_half_learning_rate: float


def predict_noisy_quadratic(curvatures: torch.Tensor, noise_std: torch.Tensor | float, learning_rate: float,
                            decay: float, spacing: int) -> NoisyQuadraticPrediction:
    variance = sgd_stationary_variance(curvatures, noise_std, learning_rate)
    contraction = 1 - learning_rate * curvatures
    return NoisyQuadraticPrediction(
        sgd=excess_loss(curvatures, variance),
        ema=excess_loss(curvatures, variance * ema_variance_factor(contraction, decay)),
        two_point=excess_loss(curvatures, variance * two_point_variance_factor(contraction, spacing)),
        sgd_half_learning_rate=excess_loss(curvatures, sgd_stationary_variance(curvatures, noise_std, learning_rate / 2)),
    )


@dataclass(frozen=True)
class NoisyQuadraticSimulation:
    """Time- and chain-averaged excess losses measured by simulation."""

    sgd: float
    ema: float
    two_point: float
    steps: int
    chains: int


@torch.no_grad()
def simulate_noisy_quadratic(
    curvatures: torch.Tensor,
    noise_std: torch.Tensor | float,
    learning_rate: float,
    decay: float,
    spacing: int,
    steps: int,
    chains: int,
    generator: torch.Generator,
    burn_in: int | None = None,
    record_every: int = 10,
) -> NoisyQuadraticSimulation:
    """Simulate u_{t+1} = a u_t + λ h ε_t for ``chains`` independent chains (float64, vectorised).

    Chains start from the exact stationary distribution of u; the EMA starts at u_0 and is measured
    after ``burn_in`` steps (default max(spacing, 20/(1 − β))). Losses are averaged over every
    ``record_every``-th step after burn-in; the two-point average pairs u_t with the u_{t−k} kept in
    a ring of snapshots (``record_every`` must divide ``spacing``).
    """
    if spacing % record_every:
        raise ValueError("record_every must divide spacing")
    h = curvatures.to(torch.float64)
    s = torch.as_tensor(noise_std, dtype=torch.float64).expand_as(h)
    burn_in = max(spacing, int(20 / (1 - decay))) if burn_in is None else burn_in
    contraction, noise_scale = 1 - learning_rate * h, learning_rate * h * s
    std = sgd_stationary_variance(h, s, learning_rate).sqrt()
    u = torch.randn(chains, h.numel(), generator=generator, dtype=torch.float64) * std
    ema = u.clone()
    ring: list[torch.Tensor] = []
    ring_length = spacing // record_every
    totals = {"sgd": 0.0, "ema": 0.0, "two_point": 0.0}
    counts = {"sgd": 0, "two_point": 0}
    for step in range(1, burn_in + steps + 1):
        u = contraction * u + noise_scale * torch.randn(chains, h.numel(), generator=generator, dtype=torch.float64)
        ema.lerp_(u, 1 - decay)
        if step % record_every:
            continue
        ring.append(u)
        if len(ring) > ring_length + 1:
            ring.pop(0)
        if step <= burn_in:
            continue
        totals["sgd"] += float(0.5 * (h * u * u).sum(dim=1).mean())
        totals["ema"] += float(0.5 * (h * ema * ema).sum(dim=1).mean())
        counts["sgd"] += 1
        if len(ring) == ring_length + 1:
            pair = (u + ring[0]) / 2
            totals["two_point"] += float(0.5 * (h * pair * pair).sum(dim=1).mean())
            counts["two_point"] += 1
    return NoisyQuadraticSimulation(
        sgd=totals["sgd"] / counts["sgd"],
        ema=totals["ema"] / counts["sgd"],
        two_point=totals["two_point"] / max(counts["two_point"], 1),
        steps=steps,
        chains=chains,
    )


def equivalent_learning_rate_fraction(step_curvature: float, variance_factor: float) -> float:
    """The learning rate, as a fraction of λ, at which plain SGD has the stationary variance of an average.

    In one direction of curvature h with λh = ``step_curvature``, an average whose variance is
    ``variance_factor`` times SGD's (e.g. :func:`ema_variance_factor`) equals SGD at λ' where
    λ'h / (2 − λ'h) = f · λh / (2 − λh), i.e. λ'h = 2q / (1 + q) with q = f λh / (2 − λh).
    """
    if not 0 < step_curvature < 2:
        raise ValueError("need 0 < learning_rate * h < 2 for a stationary distribution")
    q = variance_factor * step_curvature / (2 - step_curvature)
    return 2 * q / ((1 + q) * step_curvature)
