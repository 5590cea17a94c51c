"""Linear dynamical-system sequence tasks (von Oswald et al. 2023, §3; the official code's data).

Every sequence has its own teacher ``W*``; a model can only predict well by learning ``W*`` in
context. Variants (``DynamicsSpec.kind``):

* ``"full"``: fully observed, ``s_{t+1} = W* s_t + sigma eps_t`` with ``W*`` random orthogonal,
  ``s_1 ~ U(-range, range)^D``, states clipped to ``±state_clip``; the observations are the states.
* ``"partial"``: the same hidden states seen through ``o_t = C s_t + sigma_obs xi_t`` with
  ``C = 0.5 N(0, 1)`` of shape ``obs_dim x D`` per sequence.
* ``"contracting"``: ``W* = Q diag(lambda) Q^T`` with ``Q`` random orthogonal and eigenvalues
  uniform in ``[0.3, 0.9]``, the largest fixed to 0.9.

The model sees observations ``o_1..o_T`` and predicts the next one at every position (the
autoregressive loss sums squared errors over dimensions and averages over batch and positions,
divided by 2). Token formats: :func:`constructed_tokens` ``e_t = [0, o_t, o_t, o_{t-1}]`` (the
prediction slot first, ``o_0 = 0``) and :func:`plain_tokens` ``e_t = o_t``.

:class:`FewShotRegressionSpec` draws the regression tasks in the same state space with which a
model trained on the dynamics is prompted in the repurposing experiment (§6,
:mod:`learnlab.incontext.prompt_tuning`). Both specs are task samplers (:mod:`learnlab.incontext.tasks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

DynamicsKind = Literal["full", "partial", "contracting"]


@dataclass(frozen=True)
class DynamicsSpec:
    """A distribution over linear dynamical systems (defaults: the official code's); a task sampler."""

    dim: int = 10
    seq_len: int = 50
    noise: float = 0.01
    init_range: float = 1.0
    state_clip: float = 10.0
    kind: DynamicsKind = "full"
    obs_dim: int = 10
    obs_noise: float = 0.0
    min_eigenvalue: float = 0.3
    max_eigenvalue: float = 0.9

    def __post_init__(self) -> None:
        if min(self.dim, self.seq_len, self.obs_dim) < 1:
            raise ValueError("dim, seq_len and obs_dim must be >= 1")
        if self.kind not in ("full", "partial", "contracting"):
            raise ValueError(f"kind must be full, partial or contracting, got {self.kind!r}")
        if min(self.noise, self.obs_noise) < 0 or self.init_range <= 0 or self.state_clip <= 0:
            raise ValueError("noise levels must be >= 0, init_range and state_clip > 0")
        if not 0 < self.min_eigenvalue <= self.max_eigenvalue:
            raise ValueError("need 0 < min_eigenvalue <= max_eigenvalue")

    @property
    def observed_dim(self) -> int:
        return self.obs_dim if self.kind == "partial" else self.dim

    def sample(self, batch_size: int, generator: torch.Generator | None = None, *,
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> "DynamicsBatch":
        """Draw ``batch_size`` sequences with :func:`sample_dynamics` (the ``TaskSampler`` protocol)."""
        return sample_dynamics(self, batch_size, generator, dtype=dtype, device=device)


@dataclass
class DynamicsBatch:
    """``inputs`` (B, T, obs) are o_1..o_T, ``targets`` (B, T, obs) are o_2..o_{T+1}; ``teacher`` is W*."""

    inputs: torch.Tensor
    targets: torch.Tensor
    teacher: torch.Tensor

    def to(self, device: torch.device | str) -> "DynamicsBatch":
        return DynamicsBatch(self.inputs.to(device), self.targets.to(device), self.teacher.to(device))


def random_orthogonal(batch: int, dim: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """Haar-random orthogonal matrices ``(batch, dim, dim)`` (QR of a Gaussian with sign fix)."""
    gaussian = torch.randn(batch, dim, dim, generator=generator, dtype=torch.float64, device=device)
    q, r = torch.linalg.qr(gaussian)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs[signs == 0] = 1.0
    return (q * signs.unsqueeze(-2)).to(dtype)


def sample_dynamics(spec: DynamicsSpec, batch_size: int, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> DynamicsBatch:
    """Draw ``batch_size`` sequences of ``seq_len + 1`` states and their observations."""
    d = spec.dim
    gen_device = generator.device if generator is not None else torch.device(device)
    teacher = random_orthogonal(batch_size, d, generator, torch.float64, gen_device)
    if spec.kind == "contracting":
        eigenvalues = spec.min_eigenvalue + (spec.max_eigenvalue - spec.min_eigenvalue) * torch.rand(
            batch_size, d, generator=generator, dtype=torch.float64, device=gen_device)
        eigenvalues[:, 0] = spec.max_eigenvalue
        teacher = (teacher * eigenvalues.unsqueeze(-2)) @ teacher.transpose(-1, -2)
    state = (2 * torch.rand(batch_size, d, generator=generator, dtype=torch.float64, device=gen_device) - 1) * spec.init_range
    noise = torch.randn(batch_size, spec.seq_len, d, generator=generator, dtype=torch.float64, device=gen_device) * spec.noise
    states = [state]
    for step in range(spec.seq_len):
        state = ((teacher @ state.unsqueeze(-1)).squeeze(-1) + noise[:, step]).clamp(-spec.state_clip, spec.state_clip)
        states.append(state)
    sequence = torch.stack(states, dim=1)  # (B, T + 1, D)
    if spec.kind == "partial":
        observation = 0.5 * torch.randn(batch_size, spec.obs_dim, d, generator=generator, dtype=torch.float64, device=gen_device)
        sequence = sequence @ observation.transpose(-1, -2)
        sequence = sequence + spec.obs_noise * torch.randn(sequence.shape, generator=generator, dtype=torch.float64, device=gen_device)
    sequence = sequence.to(dtype=dtype, device=device)
    return DynamicsBatch(sequence[:, :-1], sequence[:, 1:], teacher.to(dtype=dtype, device=device))


def constructed_tokens(observations: torch.Tensor) -> torch.Tensor:
    """``e_t = [0, o_t, o_t, o_{t-1}]`` (``o_0 = 0``), shape ``(B, T, 4 obs)``; prediction slot first."""
    previous = torch.cat([torch.zeros_like(observations[:, :1]), observations[:, :-1]], dim=1)
    return torch.cat([torch.zeros_like(observations), observations, observations, previous], dim=-1)


def plain_tokens(observations: torch.Tensor) -> torch.Tensor:
    """``e_t = o_t``: the model's output tokens are read out as the prediction directly."""
    return observations


def make_tokens(observations: torch.Tensor, token_format: str) -> torch.Tensor:
    if token_format == "constructed":
        return constructed_tokens(observations)
    if token_format == "plain":
        return plain_tokens(observations)
    raise ValueError(f"token_format must be constructed or plain, got {token_format!r}")


def per_step_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(T,)``: ½ squared error summed over dimensions, averaged over the batch, per position."""
    return 0.5 * (predictions - targets).pow(2).sum(-1).mean(0)


def autoregressive_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``sum_{b,t,dims} (target - pred)^2 / (2 B T)`` (the official code's loss)."""
    b, t = targets.shape[:2]
    return (predictions - targets).pow(2).sum() / (2 * b * t)


@dataclass
class FewShotRegressionTasks:
    """Few-shot vector regression tasks: ``x`` (B, n, D), noisy ``y = W x + noise`` and clean ``target = W x``."""

    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor

    def __getitem__(self, rows: slice) -> "FewShotRegressionTasks":
        """The tasks ``rows`` of the batch."""
        return FewShotRegressionTasks(self.x[rows], self.y[rows], self.target[rows])


@dataclass(frozen=True)
class FewShotRegressionSpec:
    """Linear regression in the dynamics' state space, for repurposing a dynamics model (paper §6).

    Each task draws ``W`` random orthogonal (the law of the dynamics' ``W*``), ``num_points``
    inputs ``x ~ U(-1, 1)^D`` (the law of ``s_1``; ``W x`` then has the norm of a state) and labels
    ``y = W x + noise`` with noise 0.01, the official ``ICLSingleGenerator``'s default. A task
    sampler (:mod:`learnlab.incontext.tasks`); draw order: ``W``, the inputs, the label noise.
    """

    num_points: int
    dim: int = 10
    noise: float = 0.01

    def __post_init__(self) -> None:
        if self.num_points < 1 or self.dim < 1 or self.noise < 0:
            raise ValueError("num_points and dim must be >= 1 and noise >= 0")

    def sample(self, batch_size: int, generator: torch.Generator | None = None, *,
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> FewShotRegressionTasks:
        """Draw ``batch_size`` tasks (on the CPU, then cast and moved)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        teacher = random_orthogonal(batch_size, self.dim, generator)
        x = 2 * torch.rand(batch_size, self.num_points, self.dim, generator=generator) - 1
        target = x @ teacher.transpose(-1, -2)
        y = target + self.noise * torch.randn(x.shape, generator=generator)
        return FewShotRegressionTasks(*(t.to(dtype=dtype, device=device) for t in (x, y, target)))
