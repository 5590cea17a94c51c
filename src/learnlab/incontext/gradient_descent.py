"""Gradient descent as in-context learning: the LSA constructions and explicit GD / GD++.

* Prop. 1 (paper §2): one linear self-attention layer with weights
  ``W_K = W_Q = [[I, 0], [0, 0]]``, ``W_V = [[0, 0], [W_0, -1]]``, ``P = (eta/N) I`` maps every
  token ``e_j = (x_j, y_j)`` to ``(x_j, y_j - dW x_j)`` with the gradient-descent step
  ``dW = -(eta/N) sum_i (W_0 x_i - y_i) x_i^T`` on ``L(W) = 1/(2N) sum_i ||W x_i - y_i||^2``.
* GD++ (paper §3, App. A.10): ``W_V = [[I, 0], [0, -1]]``, ``P = [[-gamma I, 0], [0, eta/N]]``
  also transforms the inputs, ``x_j <- (I - gamma X X^T) x_j``, a curvature correction.

Token conventions follow :mod:`learnlab.incontext.regression`: the last token is the query, the
first ``T - 1`` tokens are the context, the last coordinate is the ``y``-slot, and the prediction
is minus the query's ``y``-slot after the steps (the query slot starts at ``-W_0 x_query``, which is
0 for ``W_0 = 0``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from learnlab.incontext.regression import (
    RegressionBatch,
    RegressionTaskSpec,
    half_mse,
    sample_regression_tasks,
)


def _x_block_identity(dim: int, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    matrix = torch.zeros(dim + 1, dim + 1, dtype=dtype, device=device)
    matrix[:dim, :dim] = torch.eye(dim, dtype=dtype, device=device)
    return matrix


def gd_layer_weights(
    dim: int,
    eta: float,
    num_context: int,
    initial_weights: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_Q, W_K, W_V, P)``, each ``(d+1, d+1)``, of the Prop. 1 construction (paper §2).

    ``W_K = W_Q = [[I_d, 0], [0, 0]]``, ``W_V = [[0, 0], [W_0, -1]]`` and ``P = (eta/N) I``
    (the full identity, as in Prop. 1; the code scales only P's y-row, which gives the same
    product ``P W_V`` because the x-rows of ``W_V`` are zero). ``initial_weights`` is ``W_0``,
    shape ``(d,)`` (one output); default 0. The order matches
    :meth:`LinearSelfAttention.set_weights` ``(query, key, value, projection)``.
    """
    size = dim + 1
    query = _x_block_identity(dim, dtype, device)
    key = query.clone()
    value = torch.zeros(size, size, dtype=dtype, device=device)
    if initial_weights is not None:
        value[dim, :dim] = torch.as_tensor(initial_weights, dtype=dtype, device=device).reshape(dim)
    value[dim, dim] = -1.0
    projection = (eta / num_context) * torch.eye(size, dtype=dtype, device=device)
    return query, key, value, projection


def gd_plus_plus_layer_weights(
    dim: int,
    eta: float,
    gamma: float,
    num_context: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_Q, W_K, W_V, P)`` of the GD++ layer (paper §3, App. A.10), with ``W_0 = 0``.

    ``W_K = W_Q = [[I_d, 0], [0, 0]]``, ``W_V = [[I_d, 0], [0, -1]]``,
    ``P = [[-gamma I_d, 0], [0, eta/N]]``.
    """
    size = dim + 1
    query = _x_block_identity(dim, dtype, device)
    key = query.clone()
    value = query.clone()
    value[dim, dim] = -1.0
    projection = torch.zeros(size, size, dtype=dtype, device=device)
    projection[:dim, :dim] = -gamma * torch.eye(dim, dtype=dtype, device=device)
    projection[dim, dim] = eta / num_context
    return query, key, value, projection


def _split(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if tokens.dim() != 3 or tokens.shape[1] < 2 or tokens.shape[2] < 2:
        raise ValueError(f"tokens must be (B, T >= 2, d + 1 >= 2), got {tuple(tokens.shape)}")
    return tokens[..., :-1], tokens[..., -1]


def gd_step_on_tokens(
    tokens: torch.Tensor,
    eta: float | torch.Tensor,
    initial_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One explicit GD step on the context's regression loss, written into the tokens (Prop. 1).

    With context ``(x_i, y_i)``, ``i = 1..N`` (all tokens but the last)::

        dW = -(eta/N) sum_i (W_0 x_i - y_i) x_i^T
        (x_j, y_j) -> (x_j, y_j - dW x_j)          for every token j, the query included

    This is the update the Prop. 1 layer (:func:`gd_layer_weights`) produces. For the readout
    ``-y_query = (W_0 + dW) x_query`` the caller sets the query's y-slot to ``-W_0 x_query``
    beforehand (0 when ``W_0 = 0``).

    Args:
        tokens: ``(B, T, d + 1)``.
        eta: step size (float or scalar tensor; may require grad).
        initial_weights: ``W_0``, ``(d,)`` or per task ``(B, d)``; default 0.
    """
    x, y = _split(tokens)
    x_context, residual = x[:, :-1], y[:, :-1]
    if initial_weights is not None:
        w0 = torch.as_tensor(initial_weights, dtype=tokens.dtype, device=tokens.device)
        if w0.dim() == 1:
            residual = residual - x_context @ w0
        else:
            residual = residual - torch.einsum("bnd,bd->bn", x_context, w0)
    num_context = x_context.shape[1]
    delta_w = (eta / num_context) * torch.einsum("bn,bnd->bd", residual, x_context)
    y_new = y - torch.einsum("btd,bd->bt", x, delta_w)
    return torch.cat([x, y_new.unsqueeze(-1)], dim=-1)


def gd_plus_plus_step_on_tokens(
    tokens: torch.Tensor,
    eta: float | torch.Tensor,
    gamma: float | torch.Tensor,
) -> torch.Tensor:
    """One GD++ step (paper §3, App. A.10), all from the pre-step tokens::

        x_j -> x_j - gamma (sum_i x_i x_i^T) x_j                 every token, query included
        y_j -> y_j - (eta/N) sum_i y_i x_i^T x_j

    (``W_0 = 0``.) This is the update of the layer :func:`gd_plus_plus_layer_weights`.
    """
    x, y = _split(tokens)
    x_context, y_context = x[:, :-1], y[:, :-1]
    num_context = x_context.shape[1]
    covariance = x_context.transpose(1, 2) @ x_context  # (B, d, d)
    label_moment = torch.einsum("bn,bnd->bd", y_context, x_context)
    x_new = x - gamma * (x @ covariance)
    y_new = y - (eta / num_context) * torch.einsum("btd,bd->bt", x, label_moment)
    return torch.cat([x_new, y_new.unsqueeze(-1)], dim=-1)


def _as_vector(value: float | Sequence[float] | torch.Tensor, length: int, dtype, device) -> torch.Tensor:
    vector = torch.as_tensor(value, dtype=dtype, device=device).flatten()
    if vector.numel() == 1:
        vector = vector.expand(length)
    if vector.numel() != length:
        raise ValueError(f"expected 1 or {length} values, got {vector.numel()}")
    return vector.clone()


class GradientDescentLearner(nn.Module):
    """K explicit steps of GD or GD++ run in context, as a predictor (paper §2–3, Fig. 3).

    Starting from ``W_0 = 0`` (the query's y-slot is set to 0), step ``k`` applies
    :func:`gd_step_on_tokens` with ``eta[k]`` or, if ``plus_plus``, :func:`gd_plus_plus_step_on_tokens`
    with ``(eta[k], gamma[k])``; the prediction is minus the query's y-slot. After step ``k`` the
    context y-slots hold the residuals ``y_i - W_k x_i``, so K steps are K GD steps on the context.

    ``eta`` and ``gamma`` are plain (not log-) parameters; ``gamma`` is a zero buffer for plain GD.
    With ``tied`` one ``(eta, gamma)`` is shared by all steps (shape ``(1,)``).
    """

    def __init__(
        self,
        num_steps: int,
        plus_plus: bool = False,
        tied: bool = False,
        eta: float | Sequence[float] | torch.Tensor = 1.0,
        gamma: float | Sequence[float] | torch.Tensor = 0.0,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_steps = num_steps
        self.plus_plus = plus_plus
        self.tied = tied
        length = 1 if tied else num_steps
        self.eta = nn.Parameter(_as_vector(eta, length, dtype, device))
        gamma_vector = _as_vector(gamma, length, dtype, device)
        if plus_plus:
            self.gamma = nn.Parameter(gamma_vector)
        else:
            if torch.any(gamma_vector != 0):
                raise ValueError("gamma must be 0 for plain GD (plus_plus=False)")
            self.register_buffer("gamma", gamma_vector)

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, plus_plus={self.plus_plus}, tied={self.tied}"

    def step_sizes(self) -> torch.Tensor:
        """``eta`` per step, ``(K,)``."""
        return self.eta.expand(self.num_steps) if self.tied else self.eta

    def curvature_corrections(self) -> torch.Tensor:
        """``gamma`` per step, ``(K,)`` (zeros for plain GD)."""
        return self.gamma.expand(self.num_steps) if self.tied else self.gamma

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens after K steps; the query's y-slot is first set to 0 (``W_0 = 0``)."""
        tokens = tokens.clone()
        tokens[:, -1, -1] = 0
        etas = self.step_sizes().to(tokens.dtype)
        gammas = self.curvature_corrections().to(tokens.dtype)
        for k in range(self.num_steps):
            if self.plus_plus:
                tokens = gd_plus_plus_step_on_tokens(tokens, etas[k], gammas[k])
            else:
                tokens = gd_step_on_tokens(tokens, etas[k])
        return tokens

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        """Predictions ``(B,)``: minus the query's y-slot after K steps."""
        return -self(tokens)[:, -1, -1]


def optimal_one_step_eta(batch: RegressionBatch) -> float:
    """Least-squares step size of one GD step from ``W_0 = 0`` on ``batch`` (paper §2).

    The prediction is ``eta * a`` with ``a = (1/N) sum_i y_i x_i^T x_query``, so the half-MSE is
    minimised by ``eta* = E[y_query a] / E[a^2]`` (about 6.06 for d = N = 10, U(-0.5, 0.5)).
    """
    num_context = batch.x.shape[1]
    a = torch.einsum("bn,bnd,bd->b", batch.y, batch.x, batch.x_query) / num_context
    return float((batch.y_query * a).mean() / (a * a).mean())


@dataclass
class SpectralTaskSummary:
    """Per-task quantities that determine K-step GD / GD++ predictions from ``W_0 = 0``.

    With ``X^T X = U diag(lambda) U^T`` (context inputs ``X``, ``N x d``), every matrix in K steps
    of GD++ (paper App. A.10) is a polynomial in ``X^T X``, so the steps act on each eigenvalue
    separately: the learned weights are ``U diag(h_K(lambda)) U^T X^T y`` with, per eigenvalue,
    ``h_0 = 0``, ``s_0 = 1`` and::

        h_{k+1} = h_k + (eta_k / N) s_k (1 - lambda h_k)     (a GD step on the transformed inputs)
        s_{k+1} = s_k (1 - gamma_k s_k lambda)^2              (s_k lambda: eigenvalue after k GD++ steps)

    so the prediction is ``sum_m c_m h_K(lambda_m)`` with ``c = (U^T X^T y) * (U^T x_query)``.
    (``gamma = 0`` is plain GD; one GD++ step maps ``lambda -> lambda (1 - gamma lambda)^2``.)
    This equals :meth:`GradientDescentLearner.predict` but costs ``O(K d)`` per task instead of
    ``O(K T d^2)``, which makes fitting the step sizes on many tasks cheap.

    Attributes:
        eigenvalues: ``lambda``, ``(B, d)``.
        coefficients: ``c``, ``(B, d)``.
        target: ``y_query``, ``(B,)``.
        num_context: ``N``.
    """

    eigenvalues: torch.Tensor
    coefficients: torch.Tensor
    target: torch.Tensor
    num_context: int

    @classmethod
    def from_batch(cls, batch: RegressionBatch) -> "SpectralTaskSummary":
        covariance = batch.x.transpose(1, 2) @ batch.x
        eigenvalues, basis = torch.linalg.eigh(covariance)
        moment = torch.einsum("bde,bn,bnd->be", basis, batch.y, batch.x)
        query = torch.einsum("bde,bd->be", basis, batch.x_query)
        return cls(eigenvalues, moment * query, batch.y_query, batch.x.shape[1])

    def predict(self, etas: torch.Tensor, gammas: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions after ``K = etas.shape[0]`` steps with per-step ``etas`` and ``gammas``.

        ``etas`` (and ``gammas``) have shape ``(K,)``, giving predictions ``(B,)``, or
        ``(K, *S)`` for ``S`` parameter settings at once, giving ``(*S, B)``.
        """
        eigenvalues = self.eigenvalues
        response = torch.zeros_like(eigenvalues)  # h_k
        scale = torch.ones_like(eigenvalues)  # s_k
        for k in range(etas.shape[0]):
            eta = etas[k][..., None, None] / self.num_context
            response = response + eta * scale * (1 - eigenvalues * response)
            if gammas is not None and k + 1 < etas.shape[0]:
                scale = scale * (1 - gammas[k][..., None, None] * scale * eigenvalues) ** 2
        return (response * self.coefficients).sum(-1)

    def subset(self, count: int) -> "SpectralTaskSummary":
        """The first ``count`` tasks."""
        return SpectralTaskSummary(
            self.eigenvalues[:count], self.coefficients[:count], self.target[:count], self.num_context
        )


def tune_gradient_descent(
    num_steps: int,
    plus_plus: bool = False,
    tied: bool = False,
    spec: RegressionTaskSpec | None = None,
    num_tasks: int = 20_000,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    batch: RegressionBatch | None = None,
    max_iter: int = 500,
    num_refined: int = 3,
) -> tuple[GradientDescentLearner, float]:
    """Fit the step sizes (and GD++ corrections) of a :class:`GradientDescentLearner`.

    Minimises the half-MSE on one fixed set of ``num_tasks`` freshly sampled training tasks (or
    on ``batch`` if given), evaluating predictions through :class:`SpectralTaskSummary` (exactly
    the learner's predictions, far cheaper). The paper fits these meta-parameters by
    masked-gradient training instead (official code ``pre_train_gd_hps``); both minimise the same
    loss over the same few parameters.

    The loss is not convex in ``(eta, gamma)`` and has several local minima (for 2-step GD++,
    e.g., at train loss 0.107 and 0.094), so the fit is global-then-local: a grid of starts,
    ``eta in eta* x {1/4, 1, 4, 16, 64} / K`` per step (``eta*``: the closed-form one-step
    optimum, :func:`optimal_one_step_eta`; for plain GD distinct values of ``eta* 2^p / K``,
    ``p = -2..5``, since its loss is symmetric in the steps) and ``gamma in {0, 0.1, 0.3, 1, 3} /
    lambda_mean`` per step (``lambda_mean``: the mean eigenvalue of ``X^T X``), is screened on
    1 000 tasks; the ``num_refined`` best starts are refined on all tasks with L-BFGS
    (strong-Wolfe line search), and the lowest training loss wins. The last step's ``gamma`` does
    not affect the prediction and is kept at 0.

    Note: the optimal untied GD++ with K >= 3 uses large late step sizes (e.g. eta_3 ~ 260) whose
    loss is heavy-tailed over tasks; fit it on >= 100k tasks for a stable population loss.

    Returns:
        ``(learner, train_loss)`` with the learner in ``dtype`` on ``device``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    spec = RegressionTaskSpec() if spec is None else spec
    if batch is None:
        batch = sample_regression_tasks(spec, num_tasks, generator=generator, dtype=dtype, device=device)
    else:
        batch = batch.to(dtype=dtype, device=device)
    summary = SpectralTaskSummary.from_batch(batch)
    length = 1 if tied else num_steps
    num_gammas = (1 if tied else num_steps - 1) if plus_plus and num_steps > 1 else 0

    eta_star = optimal_one_step_eta(batch)
    if length == 1:
        eta_tuples = [(eta_star / num_steps,)]
    elif plus_plus:
        levels = [eta_star * factor / num_steps for factor in (0.25, 1.0, 4.0, 16.0, 64.0)]
        eta_tuples = list(itertools.product(levels, repeat=length))
    else:
        # Plain GD is symmetric under permuting the steps, and equal step sizes stay equal under
        # gradient descent on a symmetric loss: screen distinct, ordered step sizes only.
        levels = [eta_star * 2.0**power / num_steps for power in range(-2, 6)]
        eta_tuples = list(itertools.combinations(levels, length))
    gamma_unit = 1.0 / float(summary.eigenvalues.mean())
    gamma_tuples = list(
        itertools.product([gamma_unit * factor for factor in (0.0, 0.1, 0.3, 1.0, 3.0)], repeat=num_gammas)
    )
    starts = torch.tensor(
        [etas + gammas for etas in eta_tuples for gammas in gamma_tuples], dtype=dtype, device=device
    )  # (S, length + num_gammas)

    def expand(parameters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(..., length + num_gammas) -> per-step etas and gammas, each (K, ...)."""
        etas = parameters[..., :length].movedim(-1, 0).expand(num_steps, *parameters.shape[:-1])
        if num_gammas == 0:
            return etas, None
        gammas = parameters[..., length:].movedim(-1, 0)
        if not tied:
            gammas = torch.cat([gammas, torch.zeros_like(gammas[:1])], dim=0)
        return etas, gammas.expand(num_steps, *parameters.shape[:-1])

    screen = summary.subset(1000)
    with torch.no_grad():
        screen_losses = torch.cat([
            (0.5 * (screen.predict(*expand(chunk)) - screen.target).pow(2).mean(-1))
            for chunk in starts.split(256)
        ]).nan_to_num(nan=math.inf)
    order = screen_losses.argsort()[: max(1, num_refined)]

    best: tuple[float, torch.Tensor] | None = None
    for start in starts[order]:
        parameters = start.clone().requires_grad_(True)
        loss = fit_lbfgs(lambda: half_mse(summary.predict(*expand(parameters)), summary.target), parameters, max_iter)
        if math.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, parameters.detach())
    if best is None:
        raise RuntimeError("tuning gradient descent diverged from every start")
    train_loss, parameters = best
    etas, gammas = expand(parameters)
    learner = GradientDescentLearner(
        num_steps, plus_plus=plus_plus, tied=tied,
        eta=etas[:length],
        gamma=0.0 if gammas is None else gammas[:length],
        dtype=dtype, device=device,
    )
    return learner, train_loss


def fit_lbfgs(loss_fn, parameters: torch.Tensor | Iterable[torch.Tensor], max_iter: int, history_size: int = 20,
              tolerance_change: float = 1e-13) -> float:
    """Minimise ``loss_fn()`` over ``parameters`` (in place) with full-batch L-BFGS and a strong-Wolfe
    line search; return the final loss."""
    optimizer = torch.optim.LBFGS(
        [parameters] if isinstance(parameters, torch.Tensor) else list(parameters),
        lr=1.0,
        max_iter=max_iter,
        history_size=history_size,
        tolerance_grad=1e-10,
        tolerance_change=tolerance_change,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(loss_fn())
