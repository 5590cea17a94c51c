"""Linear-regression tasks for in-context learning (von Oswald et al. 2023, §2 and App. A.12).

Each task draws a teacher ``w ~ N(0, weight_scale^2 I_d)``, ``N`` context inputs and one query input,
and labels ``y = <w, x>``. A batch is turned into tokens ``e_i = (x_i, y_i)`` for the context and
``(x_query, 0)`` for the query (paper §2: "the query token's y-slot is initialised to 0").

Input convention: the paper's text says ``x ~ U(-1, 1)^d`` but the official code, and every number
the paper reports, use ``x ~ U(-input_range/2, input_range/2)^d`` with ``input_range = 1``, i.e.
``U(-0.5, 0.5)``. This module follows the code. Losses differ by a factor 4 between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INPUT_DISTRIBUTIONS = ("uniform", "normal")


@dataclass(frozen=True)
class RegressionTaskSpec:
    """The distribution of linear-regression tasks; a task sampler (:mod:`learnlab.incontext.tasks`).

    Attributes:
        dim: input dimension ``d`` (paper: ``n_I = 10``).
        num_context: number of context examples ``N`` per task (paper: ``N = 10``).
        input_range: width of the input box. ``"uniform"`` draws ``x ~ U(-input_range/2,
            input_range/2)^d`` (the official code's convention; ``input_range = 1`` reproduces the
            paper's numbers). ``"normal"`` draws ``x ~ N(0, (input_range/2)^2 I_d)``, i.e. the
            half-width of the uniform box becomes one standard deviation (an out-of-distribution
            probe, paper App. A.2; its variance is 3x that of the uniform case).
        input_distribution: ``"uniform"`` or ``"normal"``.
        weight_scale: teacher ``w ~ N(0, weight_scale^2 I_d)``.
        noise_std: standard deviation of Gaussian label noise added to the *context* labels only;
            the query label stays noiseless.
    """

    dim: int = 10
    num_context: int = 10
    input_range: float = 1.0
    input_distribution: str = "uniform"
    weight_scale: float = 1.0
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.num_context < 1:
            raise ValueError(f"num_context must be >= 1, got {self.num_context}")
        if self.input_range <= 0:
            raise ValueError(f"input_range must be > 0, got {self.input_range}")
        if self.input_distribution not in INPUT_DISTRIBUTIONS:
            raise ValueError(
                f"input_distribution must be one of {INPUT_DISTRIBUTIONS}, "
                f"got {self.input_distribution!r}"
            )
        if self.weight_scale < 0:
            raise ValueError(f"weight_scale must be >= 0, got {self.weight_scale}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

    @property
    def token_dim(self) -> int:
        """Token width ``D = d + 1`` (input plus one label slot)."""
        return self.dim + 1

    def sample(self, batch_size: int, generator: torch.Generator | None = None, *,
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> "RegressionBatch":
        """Draw ``batch_size`` tasks with :func:`sample_regression_tasks` (the ``TaskSampler`` protocol)."""
        return sample_regression_tasks(self, batch_size, generator, dtype=dtype, device=device)


@dataclass
class RegressionBatch:
    """A batch of ``B`` regression tasks.

    Attributes:
        x: context inputs, ``(B, N, d)``.
        y: context labels (noisy if the spec has noise), ``(B, N)``.
        x_query: query inputs, ``(B, d)``.
        y_query: noiseless query labels ``<w, x_query>``, ``(B,)``.
        w: teachers, ``(B, d)``.
        noise_std: per-task label-noise standard deviation ``(B,)`` when the tasks were drawn with
            one noise level per sequence (``sample_regression_tasks(..., noise_std=...)``), else None.
    """

    x: torch.Tensor
    y: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    w: torch.Tensor
    noise_std: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    def tokens(self) -> torch.Tensor:
        """Tokens ``(B, N + 1, d + 1)``: rows ``(x_i, y_i)`` then the query row ``(x_query, 0)``."""
        context = torch.cat([self.x, self.y.unsqueeze(-1)], dim=-1)
        query = torch.cat([self.x_query, torch.zeros_like(self.y_query).unsqueeze(-1)], dim=-1)
        return torch.cat([context, query.unsqueeze(1)], dim=1)

    def to(self, *args, **kwargs) -> "RegressionBatch":
        """Return a copy moved/cast like ``torch.Tensor.to``."""
        return RegressionBatch(
            *(t.to(*args, **kwargs) for t in (self.x, self.y, self.x_query, self.y_query, self.w)),
            noise_std=None if self.noise_std is None else self.noise_std.to(*args, **kwargs),
        )


def _sample_inputs(
    spec: RegressionTaskSpec,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device | str,
) -> torch.Tensor:
    half_width = spec.input_range / 2
    if spec.input_distribution == "uniform":
        unit = torch.rand(shape, generator=generator, dtype=dtype, device=device)
        return (2 * unit - 1) * half_width
    return torch.randn(shape, generator=generator, dtype=dtype, device=device) * half_width


def sample_regression_tasks(
    spec: RegressionTaskSpec,
    batch_size: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    noise_std: torch.Tensor | None = None,
) -> RegressionBatch:
    """Draw ``batch_size`` independent tasks from ``spec`` (paper §2, App. A.12).

    Draw order (fixed, so a seeded generator gives reproducible batches): teachers, then all
    ``N + 1`` inputs per task (the last one is the query), then label noise if any.

    ``noise_std``, if given, is one noise level per task ``(batch_size,)`` and replaces
    ``spec.noise_std`` (mixed-noise tasks of Vladymyrov et al. 2024, §2); it is kept on the batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    d, n = spec.dim, spec.num_context
    w = torch.randn((batch_size, d), generator=generator, dtype=dtype, device=device)
    w = w * spec.weight_scale
    inputs = _sample_inputs(spec, (batch_size, n + 1, d), generator, dtype, device)
    labels = torch.einsum("bnd,bd->bn", inputs, w)
    x, x_query = inputs[:, :n], inputs[:, n]
    y, y_query = labels[:, :n], labels[:, n]
    if noise_std is not None:
        noise_std = torch.as_tensor(noise_std, dtype=dtype, device=device)
        if noise_std.shape != (batch_size,):
            raise ValueError(f"noise_std must have shape ({batch_size},), got {tuple(noise_std.shape)}")
        noise = torch.randn((batch_size, n), generator=generator, dtype=dtype, device=device)
        y = y + noise_std.unsqueeze(-1) * noise
    elif spec.noise_std > 0:
        noise = torch.randn((batch_size, n), generator=generator, dtype=dtype, device=device)
        y = y + spec.noise_std * noise
    return RegressionBatch(
        x=x.contiguous(), y=y.contiguous(), x_query=x_query.contiguous(),
        y_query=y_query.contiguous(), w=w, noise_std=noise_std,
    )


def half_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.5 * mean((prediction - target)^2)``: the official code's loss (paper eq. 5 without the ½)."""
    return 0.5 * (prediction - target).pow(2).mean()
