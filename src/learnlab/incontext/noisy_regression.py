"""Noisy in-context regression with one noise level per sequence (Vladymyrov et al. 2024, §2, §6).

Each sequence ``tau`` draws a teacher ``w_tau ~ N(0, I_d)``, ``n`` context inputs and one query
``x ~ N(0, I_d)``, a noise level ``sigma_tau`` and labels ``y_i = <w_tau, x_i> + N(0, sigma_tau^2)``;
the query label is noise-free, ``y_t = <w_tau, x_t>``. The paper uses ``d = 10``, ``n = 20`` and three
noise regimes:

* fixed noise: ``sigma_tau = sigma`` for every sequence;
* uniform mixed noise: ``sigma_tau ~ U(0, sigma_max)``;
* categorical mixed noise: ``sigma_tau`` uniform over a set such as ``{1, 3}`` or ``{1, 3, 5}``.

The tasks are the ``"normal"`` inputs of :mod:`learnlab.incontext.regression` (``input_range = 2``
makes the standard deviation 1) with per-sequence noise. :class:`NoisySet` keeps a fixed set of such
sequences as what the moment-based models and the ridge baselines need, with the oracle ridge's loss
that the adjusted loss subtracts (§6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from learnlab.incontext.linear_transformer_variants import context_moments
from learnlab.incontext.regression import RegressionBatch, RegressionTaskSpec, sample_regression_tasks
from learnlab.incontext.ridge_baselines import SpectralRidge

NOISE_KINDS = ("fixed", "uniform", "categorical")


@dataclass(frozen=True)
class NoiseDistribution:
    """The distribution of the per-sequence noise level ``sigma_tau`` (paper §6).

    Attributes:
        kind: ``"fixed"`` (``sigma_tau = levels[0]``), ``"uniform"`` (``sigma_tau ~ U(0, levels[0])``)
            or ``"categorical"`` (``sigma_tau`` uniform over ``levels``).
        levels: ``(sigma,)``, ``(sigma_max,)`` or the categorical set.
    """

    kind: str
    levels: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {self.kind!r}")
        if not self.levels or min(self.levels) < 0:
            raise ValueError(f"noise levels must be a non-empty list of numbers >= 0, got {self.levels}")
        if self.kind != "categorical" and len(self.levels) != 1:
            raise ValueError(f"{self.kind} noise takes one level, got {self.levels}")

    @classmethod
    def uniform(cls, sigma_max: float) -> "NoiseDistribution":
        return cls("uniform", (float(sigma_max),))

    @classmethod
    def categorical(cls, levels: tuple[float, ...]) -> "NoiseDistribution":
        return cls("categorical", tuple(float(level) for level in levels))

    @classmethod
    def parse_categorical(cls, text: str) -> "NoiseDistribution":
        """A categorical set written like ``"1/3"`` or ``"1/3/5"``."""
        try:
            levels = tuple(float(part) for part in text.split("/"))
        except ValueError:
            levels = ()
        if not levels or not all(level >= 0 for level in levels):
            raise ValueError(f"categorical noise sets are written like 1/3, with levels >= 0, got {text!r}")
        return cls.categorical(levels)

    @classmethod
    def fixed(cls, sigma: float) -> "NoiseDistribution":
        return cls("fixed", (float(sigma),))

    @property
    def name(self) -> str:
        """Short label, e.g. ``sigma_max=3`` or ``sigma in {1,3}`` (the paper's Table 1 columns)."""
        text = ",".join(f"{level:g}" for level in self.levels)
        return {"fixed": f"sigma={text}", "uniform": f"sigma_max={text}", "categorical": f"sigma in {{{text}}}"}[self.kind]

    @property
    def key(self) -> str:
        """An identifier usable in metric names, e.g. ``u3`` or ``c1_3``."""
        text = "_".join(f"{level:g}".replace(".", "p") for level in self.levels)
        return {"fixed": "f", "uniform": "u", "categorical": "c"}[self.kind] + text

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """``batch_size`` noise levels ``sigma_tau``."""
        if self.kind == "fixed":
            return torch.full((batch_size,), self.levels[0], dtype=dtype, device=device)
        if self.kind == "uniform":
            return self.levels[0] * torch.rand((batch_size,), generator=generator, dtype=dtype, device=device)
        choice = torch.randint(len(self.levels), (batch_size,), generator=generator, device=device)
        return torch.tensor(self.levels, dtype=dtype, device=device)[choice]


def noisy_task_spec(dim: int = 10, num_context: int = 20) -> RegressionTaskSpec:
    """The paper's task spec: ``x, w ~ N(0, I_d)`` (``input_range = 2`` gives unit variance)."""
    return RegressionTaskSpec(dim=dim, num_context=num_context, input_range=2.0, input_distribution="normal")


def sample_noisy_tasks(
    noise: NoiseDistribution,
    batch_size: int,
    generator: torch.Generator | None = None,
    dim: int = 10,
    num_context: int = 20,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> RegressionBatch:
    """Draw ``batch_size`` noisy sequences (paper §2); ``batch.noise_std`` holds each ``sigma_tau``.

    Draw order: noise levels, then teachers, inputs and label noise (see ``sample_regression_tasks``).
    """
    sigma = noise.sample(batch_size, generator, dtype=dtype, device=device)
    return sample_regression_tasks(
        noisy_task_spec(dim, num_context), batch_size, generator, dtype=dtype, device=device, noise_std=sigma
    )


def sample_noisy_moments(
    noises: Sequence[NoiseDistribution],
    batch_size: int,
    generator: torch.Generator | None = None,
    dim: int = 10,
    num_context: int = 20,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh sequences for several noise settings at once, as what the moment-based models need.

    Returns the context moments ``C = sum_{j <= n} e_j e_j^T`` ``(S, B, d+1, d+1)`` and the teachers
    ``w`` ``(S, B, d)``, one row of ``batch_size`` sequences per setting (paper §2: ``x, w ~ N(0, I)``,
    ``y_i = <w, x_i> + N(0, sigma_tau^2)``). The query is not drawn: every model here is linear in it,
    and the loss is its closed-form average (see ``query_averaged_loss``). This is the online-training
    sampler (the paper draws a fresh batch at every step); one call draws all settings together.
    """
    if batch_size < 1 or not noises:
        raise ValueError(f"need batch_size >= 1 and at least one noise setting, got {batch_size}, {len(noises)}")
    sigma = torch.stack([noise.sample(batch_size, generator, dtype=dtype, device=device) for noise in noises])
    shape = (len(noises), batch_size)
    w = torch.randn(shape + (dim,), generator=generator, dtype=dtype, device=device)
    x = torch.randn(shape + (num_context, dim), generator=generator, dtype=dtype, device=device)
    noise = torch.randn(shape + (num_context,), generator=generator, dtype=dtype, device=device)
    y = (x @ w.unsqueeze(-1)).squeeze(-1) + sigma.unsqueeze(-1) * noise
    tokens = torch.cat([x, y.unsqueeze(-1)], dim=-1)
    return tokens.transpose(-1, -2) @ tokens, w


@dataclass
class NoisySet:
    """Fixed sequences of one noise setting, kept as what the models and the baselines need.

    Attributes:
        moments: ``C = sum_j e_j e_j^T`` over the context, ``(N, d+1, d+1)`` (float64).
        teacher: ``w`` ``(N, d)``.
        oracle_loss: the oracle ridge's (``lam = sigma_tau^2``) query-averaged ½·MSE ``(N,)``: what the
            adjusted loss subtracts (§6).
        spectral: the sequences' :class:`SpectralRidge`.
    """

    moments: torch.Tensor
    teacher: torch.Tensor
    oracle_loss: torch.Tensor
    spectral: SpectralRidge

    @property
    def alpha(self) -> torch.Tensor:
        """``alpha = sum_j y_j x_j`` ``(N, d)``."""
        return self.moments[:, :-1, -1]


def sample_noisy_set(
    noise: NoiseDistribution,
    size: int,
    generator: torch.Generator,
    dim: int = 10,
    num_context: int = 20,
    chunk_size: int = 50000,
) -> NoisySet:
    """Draw ``size`` float64 sequences (in chunks of ``chunk_size``, see :func:`sample_noisy_tasks`) as a :class:`NoisySet`."""
    chunks_m, chunks_w, chunks_s = [], [], []
    for start in range(0, size, chunk_size):
        batch = sample_noisy_tasks(noise, min(chunk_size, size - start), generator, dim, num_context, dtype=torch.float64)
        chunks_m.append(context_moments(batch.tokens(), num_context))
        chunks_w.append(batch.w)
        chunks_s.append(batch.noise_std)
    moments, teacher, sigma = torch.cat(chunks_m), torch.cat(chunks_w), torch.cat(chunks_s)
    spectral = SpectralRidge.from_moments(moments, num_context)
    oracle = spectral.query_averaged_loss(spectral.rotate(teacher), sigma.pow(2))
    return NoisySet(moments, teacher, oracle, spectral)
