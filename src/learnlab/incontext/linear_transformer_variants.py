"""Linear transformers with FULL, DIAG and GD++ attention (Vladymyrov et al. 2024, §2–§4).

A layer updates every token ``e_i = (x_i, y_i)`` (the query ``(x_t, 0)`` included) with
linear self-attention over the ``n`` context tokens only (non-causal; the query is never a key or
value), summed over heads, plus the residual::

    e_i <- e_i + sum_h P_h (sum_{j <= n} e_j e_j^T) Q_h e_i                          (§2)

There is no MLP, LayerNorm or softmax. The prediction is minus the query's y-slot after ``L`` layers.
The three parametrisations of a head (paper §4, Table 1):

* FULL: ``P`` and ``Q`` are full ``(d+1) x (d+1)`` matrices;
* DIAG: ``P = diag(p_x I_d, p_y)``, ``Q = diag(q_x I_d, q_y)``, four scalars per head;
* GD++: DIAG with ``q_y = 0``, three scalars per head.

With ``Sigma = sum_j x_j x_j^T``, ``alpha = sum_j y_j x_j``, ``lambda = sum_j y_j^2`` over the context, a
DIAG layer is the "omega form" (from the proof of Lemma A.1)::

    x_i <- x_i + omega_xx Sigma x_i + omega_xy y_i alpha
    y_i <- y_i + omega_yx <alpha, x_i> + omega_yy lambda y_i,     omega_ab = sum_h p_a q_b.

:class:`LinearTransformer` holds a batch of ``M`` independent models (leading parameter dimension),
so that many small models (noise settings, seeds) train at once with one optimiser: their
parameters do not interact, and Adam's update is element-wise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from learnlab.core.schedules import WarmupCosine

VARIANTS = ("full", "diag", "gdpp")
OMEGA_NAMES = ("omega_xx", "omega_xy", "omega_yx", "omega_yy")


def context_moments(tokens: torch.Tensor, num_context: int) -> torch.Tensor:
    """``C = sum_{j <= n} e_j e_j^T`` over the first ``num_context`` tokens: ``(..., D, D)``."""
    context = tokens[..., :num_context, :]
    return context.transpose(-1, -2) @ context


def linear_attention_update(tokens: torch.Tensor, projection: torch.Tensor, key_query: torch.Tensor) -> torch.Tensor:
    """One generic layer ``e_i + sum_h P_h C Q_h e_i`` (paper §2); the last token is the query.

    Args:
        tokens: ``(..., T, D)``; the first ``T - 1`` tokens are the context.
        projection: ``P`` per head, ``(..., H, D, D)`` (leading dimensions broadcast with the tokens').
        key_query: ``Q`` per head, ``(..., H, D, D)``.
    """
    moments = context_moments(tokens, tokens.shape[-2] - 1).unsqueeze(-3)  # (..., 1, D, D)
    combined = (projection @ moments @ key_query).sum(-3)  # sum_h P_h C Q_h: (..., D, D)
    return tokens + tokens @ combined.transpose(-1, -2)


def omega_form_update(tokens: torch.Tensor, omegas: torch.Tensor) -> torch.Tensor:
    """One DIAG layer in omega form (proof of Lemma A.1); equal to :func:`linear_attention_update`.

    Args:
        tokens: ``(..., T, d + 1)``, the last token is the query.
        omegas: ``(..., 4)`` = ``(omega_xx, omega_xy, omega_yx, omega_yy)``, broadcasting with the
            tokens' leading dimensions.
    """
    x, y = tokens[..., :-1], tokens[..., -1]
    num_context = tokens.shape[-2] - 1
    x_context, y_context = x[..., :num_context, :], y[..., :num_context]
    sigma = x_context.transpose(-1, -2) @ x_context  # (..., d, d)
    alpha = (x_context * y_context.unsqueeze(-1)).sum(-2)  # (..., d)
    lam = y_context.pow(2).sum(-1)  # (...)
    w_xx, w_xy, w_yx, w_yy = (omegas[..., k].unsqueeze(-1) for k in range(4))  # (..., 1)
    new_x = x + w_xx.unsqueeze(-1) * (x @ sigma) + (w_xy * y).unsqueeze(-1) * alpha.unsqueeze(-2)
    new_y = y + w_yx * (x @ alpha.unsqueeze(-1)).squeeze(-1) + (w_yy * lam.unsqueeze(-1)) * y
    return torch.cat([new_x, new_y.unsqueeze(-1)], dim=-1)


def diagonal_matrices(p: torch.Tensor, q: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``P = diag(p_x I_d, p_y)`` and ``Q = diag(q_x I_d, q_y)`` from ``p, q`` of shape ``(..., 2)``."""
    ones = torch.ones(dim + 1, dtype=p.dtype, device=p.device)
    ones_x, last = ones.clone(), torch.zeros_like(ones)
    ones_x[-1], last[-1] = 0.0, 1.0

    def build(pair: torch.Tensor) -> torch.Tensor:
        return torch.diag_embed(pair[..., :1] * ones_x + pair[..., 1:] * last)

    return build(p), build(q)


class LinearTransformer(nn.Module):
    """``M`` independent ``L``-layer linear transformers of one variant (paper §2, §4, Table 1).

    Parameters (``M`` models, ``L`` layers, ``H`` heads, ``D = d + 1``):

    * ``"full"``: ``projection`` (P) and ``key_query`` (Q), each ``(M, L, H, D, D)``;
    * ``"diag"``: ``p = (p_x, p_y)`` and ``q = (q_x, q_y)``, each ``(M, L, H, 2)``;
    * ``"gdpp"``: ``p = (p_x, p_y)`` ``(M, L, H, 2)`` and ``q = (q_x,)`` ``(M, L, H, 1)``; ``q_y = 0``.

    Tokens are ``(M, B, T, D)`` (or ``(B, T, D)`` when ``M = 1``), context first, query last with a
    zero y-slot. :meth:`predict` returns minus the query's y-slot after the last layer.

    Initialisation (the paper's is unknown): ``p, q ~ N(0, init_scale^2)`` per scalar; FULL starts
    from such a diagonal pair plus ``N(0, (off_diagonal_scale * init_scale)^2)`` in every entry.
    """

    def __init__(
        self,
        dim: int,
        num_layers: int,
        variant: str = "diag",
        num_heads: int = 1,
        num_models: int = 1,
        init_scale: float = 0.1,
        off_diagonal_scale: float = 0.1,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        for name, value in (("dim", dim), ("num_layers", num_layers), ("num_heads", num_heads), ("num_models", num_models)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.dim, self.num_layers, self.variant = dim, num_layers, variant
        self.num_heads, self.num_models = num_heads, num_models
        factory = {"dtype": dtype, "device": device}
        shape = (num_models, num_layers, num_heads)
        p = init_scale * torch.randn(shape + (2,), generator=generator, **factory)
        q = init_scale * torch.randn(shape + (2,), generator=generator, **factory)
        if variant == "full":
            projection, key_query = diagonal_matrices(p, q, dim)
            noise = off_diagonal_scale * init_scale
            projection = projection + noise * torch.randn(projection.shape, generator=generator, **factory)
            key_query = key_query + noise * torch.randn(key_query.shape, generator=generator, **factory)
            self.projection = nn.Parameter(projection)
            self.key_query = nn.Parameter(key_query)
        else:
            self.p = nn.Parameter(p)
            self.q = nn.Parameter(q if variant == "diag" else q[..., :1].clone())

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_layers={self.num_layers}, variant={self.variant!r}, "
                f"num_heads={self.num_heads}, num_models={self.num_models}")

    def _q_pair(self) -> torch.Tensor:
        if self.variant == "gdpp":
            return torch.cat([self.q, torch.zeros_like(self.q)], dim=-1)
        return self.q

    def omegas(self) -> torch.Tensor:
        """``(M, L, 4)``: ``(omega_xx, omega_xy, omega_yx, omega_yy) = sum_h (p_x q_x, p_x q_y, p_y q_x, p_y q_y)``.

        Only for DIAG and GD++ (a FULL layer is not of omega form).
        """
        if self.variant == "full":
            raise ValueError("omegas() needs a DIAG or GD++ model")
        p, q = self.p, self._q_pair()
        products = torch.stack([p[..., 0] * q[..., 0], p[..., 0] * q[..., 1], p[..., 1] * q[..., 0], p[..., 1] * q[..., 1]], -1)
        return products.sum(-2)

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P, Q)`` per model, layer and head, each ``(M, L, H, D, D)``, for every variant."""
        if self.variant == "full":
            return self.projection, self.key_query
        return diagonal_matrices(self.p, self._q_pair(), self.dim)

    def _omega_matrix(self) -> torch.Tensor:
        """``(M, L, D, D)`` with ``omega_xx`` in the x-x block, ``omega_xy`` in the x-y column, etc."""
        omegas, d = self.omegas(), self.dim
        column = torch.zeros(d + 1, dtype=omegas.dtype, device=omegas.device)
        column[-1] = 1.0
        row_y, col_y = column[:, None], column[None, :]  # indicator of the y row / y column
        xx = (1 - row_y) * (1 - col_y)
        return (omegas[..., 0, None, None] * xx + omegas[..., 1, None, None] * (1 - row_y) * col_y
                + omegas[..., 2, None, None] * row_y * (1 - col_y) + omegas[..., 3, None, None] * row_y * col_y)

    def layer_matrices(self, moments: torch.Tensor, index: int) -> torch.Tensor:
        """``W = sum_h P_h C Q_h`` of layer ``index`` for context moments ``C`` ``(M, B, D, D)``.

        A layer maps every token ``e -> (I + W) e``, with one ``W`` per sequence. For DIAG and GD++,
        ``W = C * Omega`` element-wise, with ``Omega`` holding the four omegas in its blocks, i.e.
        ``W = [[omega_xx Sigma, omega_xy alpha], [omega_yx alpha^T, omega_yy lambda]]``.
        """
        if self.variant == "full":
            # W is linear in C: vec(W) = K vec(C) with K[(i, k), (j, l)] = sum_h P_h[i, j] Q_h[l, k];
            # one (B, D^2) x (D^2, D^2) product per model is much faster on CPU than B tiny products.
            size = self.dim + 1
            kernel = torch.einsum("mhij,mhlk->mikjl", self.projection[:, index], self.key_query[:, index])
            kernel = kernel.reshape(self.num_models, size * size, size * size)
            flat = moments.reshape(moments.shape[0], -1, size * size)
            return torch.bmm(flat, kernel.transpose(-1, -2)).view(moments.shape)
        return moments * self._omega_matrix()[:, index].unsqueeze(1)

    def _as_model_batch(self, tensor: torch.Tensor, trailing: int) -> tuple[torch.Tensor, bool]:
        """Add the model dimension to a single model's input; check the shape."""
        squeeze = tensor.dim() == trailing + 1 and self.num_models == 1
        if squeeze:
            tensor = tensor.unsqueeze(0)
        if tensor.dim() != trailing + 2 or tensor.shape[0] != self.num_models or tensor.shape[-1] != self.dim + 1:
            raise ValueError(f"expected ({self.num_models}, B, ..., {self.dim + 1}) inputs, got {tuple(tensor.shape)}")
        return tensor, squeeze

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """All tokens after the ``L`` layers, same shape as ``tokens`` ``(M, B, T, D)`` or ``(B, T, D)``."""
        tokens, squeeze = self._as_model_batch(tokens, 2)
        if tokens.shape[-2] < 2:
            raise ValueError("need at least one context token and the query")
        for index in range(self.num_layers):
            update = self.layer_matrices(context_moments(tokens, tokens.shape[-2] - 1), index)
            tokens = tokens + tokens @ update.transpose(-1, -2)
        return tokens.squeeze(0) if squeeze else tokens

    def readout_row(self, moments: torch.Tensor) -> torch.Tensor:
        """``r = e_y^T (I + W_L) ... (I + W_1)`` ``(M, B, D)`` from the context moments ``C = sum_j e_j e_j^T``.

        Every layer applies the same map ``e -> (I + W_l) e`` to all tokens, so the context moments
        evolve as ``C <- (I + W) C (I + W)^T`` (exact, no token needed) and the prediction for a
        query token ``e_q`` is ``-<r, e_q>``: linear in the query. This is the fast path used for
        training; it costs ``O(L D^3)`` per sequence, independent of ``n``.
        """
        moments, squeeze = self._as_model_batch(moments, 2)
        eye = torch.eye(self.dim + 1, dtype=moments.dtype, device=moments.device)
        updates = []
        for index in range(self.num_layers):
            update = self.layer_matrices(moments, index)
            updates.append(update)
            if index < self.num_layers - 1:
                step = eye + update
                moments = step @ moments @ step.transpose(-1, -2)
        row = torch.zeros(moments.shape[:-1], dtype=moments.dtype, device=moments.device)
        row[..., -1] = 1.0
        for update in reversed(updates):
            row = row + (row.unsqueeze(-1) * update).sum(-2)  # row (I + W)
        return row.squeeze(0) if squeeze else row

    def effective_weights(self, moments: torch.Tensor) -> torch.Tensor:
        """The linear model ``w_eff`` ``(M, B, d)`` the network applies to a query ``(x_q, 0)``: ``y_hat = <w_eff, x_q>``."""
        return -self.readout_row(moments)[..., :-1]

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        """``-y_query`` after the last layer: ``(M, B)`` (or ``(B,)`` for ``(B, T, D)`` tokens)."""
        tokens, squeeze = self._as_model_batch(tokens, 2)
        moments = context_moments(tokens, tokens.shape[-2] - 1)
        prediction = -(self.readout_row(moments) * tokens[..., -1, :]).sum(-1)
        return prediction.squeeze(0) if squeeze else prediction


def query_averaged_loss(weights: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``E_{x_q ~ N(0, I)} ½ (<weights, x_q> - <teacher, x_q>)^2 = ½ ||weights - teacher||^2`` per sequence.

    Every model here predicts linearly in the (noise-free) query, so its expected ½·squared error
    over the query is exact in closed form: the same expectation Table 1 estimates by sampling
    queries, with less variance.
    """
    return 0.5 * (weights - teacher).pow(2).sum(-1)


@dataclass(frozen=True)
class MomentTraining:
    """Adam with a linear warm-up, then a cosine learning-rate decay (:func:`train_online`).

    The schedule is :class:`learnlab.core.schedules.WarmupCosine`: ``warmup = int(warmup_fraction *
    steps)`` steps rising from ``peak / warmup`` to the peak, then a cosine decay that reaches the
    floor at the last step.

    Attributes:
        steps: optimiser steps.
        batch_size: sequences per model and step (fresh ones online, or drawn from a pool with
            replacement by :func:`train_on_moments`).
        learning_rate: peak Adam learning rate; decays to ``final_lr_fraction`` of it (cosine).
        final_lr_fraction: the last step's learning rate over the peak.
        eval_every: steps between validation evaluations.
        warmup_fraction: share of the steps over which the learning rate rises linearly to its peak
            (keeps Adam's first, poorly normalised steps from wrecking a warm start).
        keep_best: at the end, give every model the parameters of its evaluation (step 0 included)
            with the lowest validation loss: validation-based checkpoint selection.
        clip_norm: if set, every model's gradient (over all its parameters) is rescaled to at most
            this norm before the Adam step, model by model (guards against rare heavy-tailed batches).
    """

    steps: int = 1000
    batch_size: int = 512
    learning_rate: float = 0.01
    final_lr_fraction: float = 0.01
    eval_every: int = 100
    warmup_fraction: float = 0.1
    keep_best: bool = True
    clip_norm: float | None = None


@dataclass
class MomentHistory:
    steps: list[int] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)  # per evaluation, one loss per model
    best_losses: list[float] = field(default_factory=list)  # per model, the lowest validation loss


def train_on_moments(
    model: LinearTransformer,
    moments: torch.Tensor,
    teacher: torch.Tensor,
    settings: MomentTraining,
    generator: torch.Generator,
    validation: tuple[torch.Tensor, torch.Tensor],
    on_step: Callable[[int, float], None] | None = None,
) -> MomentHistory:
    """Train the ``M`` models of ``model`` at once on fixed pools of sequences given by their moments.

    Args:
        moments: context moments ``C = sum_j e_j e_j^T`` ``(M, P, D, D)``, one pool per model
            (pools may be views of a shared one); each step draws ``batch_size`` of them with replacement.
        teacher: the pools' teachers ``w`` ``(M, P, d)``.
        validation: ``(moments, teacher)`` ``(M, V, D, D)``, ``(M, V, d)``, for the history.
        on_step: sees the step and the summed training loss (e.g. to stop on NaN).

    See :func:`train_online` for the loss and the optimiser; this variant replays a fixed pool.
    """
    pool = moments.shape[1]
    models = torch.arange(moments.shape[0], device=moments.device).unsqueeze(-1)

    def draw(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(pool, (moments.shape[0], settings.batch_size), generator=generator).to(moments.device)
        return moments[models, index], teacher[models, index]

    return train_online(model, draw, settings, validation, on_step)


def train_online(
    model: LinearTransformer,
    draw: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    settings: MomentTraining,
    validation: tuple[torch.Tensor, torch.Tensor],
    on_step: Callable[[int, float], None] | None = None,
) -> MomentHistory:
    """Train the ``M`` models of ``model`` at once, on a batch that ``draw(step)`` supplies every step.

    Args:
        draw: returns the step's context moments ``(M, B, D, D)`` and teachers ``(M, B, d)``; the
            paper's protocol draws fresh sequences every step (online training, no fixed pool).
        settings: steps, learning-rate schedule, clipping and checkpoint selection (``batch_size``
            is what ``draw`` returns).
        validation: ``(moments, teacher)`` ``(M, V, D, D)``, ``(M, V, d)``, for the history and
            the best-checkpoint selection.
        on_step: sees the step and the summed training loss (e.g. to stop on NaN).

    The loss is the sum over models of each model's mean :func:`query_averaged_loss`; since the
    models share no parameter, Adam is element-wise and clipping is per model, each trains exactly
    as if alone.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, foreach=True)  # = the per-tensor loop
    warmup = int(settings.warmup_fraction * settings.steps)
    scheduler = WarmupCosine(peak=settings.learning_rate, warmup_steps=warmup, decay_end=settings.steps - 1,
                             floor=settings.final_lr_fraction).lambda_lr(optimizer)
    history = MomentHistory()
    num_models = validation[0].shape[0]
    parameters = dict(model.named_parameters())
    best = {name: parameter.detach().clone() for name, parameter in parameters.items()}
    best_loss = torch.full((num_models,), math.inf)

    def evaluate(step: int) -> None:
        with torch.no_grad():
            losses = query_averaged_loss(model.effective_weights(validation[0]), validation[1]).mean(-1).cpu()
            improved = losses.nan_to_num(math.inf) < best_loss
            best_loss[improved] = losses[improved]
            for name, parameter in parameters.items():
                best[name][improved.to(parameter.device)] = parameter.detach()[improved.to(parameter.device)]
        history.steps.append(step)
        history.losses.append(losses.tolist())

    evaluate(0)
    for step in range(1, settings.steps + 1):
        batch_moments, batch_teacher = draw(step)
        loss = query_averaged_loss(model.effective_weights(batch_moments), batch_teacher).mean(-1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip_norm is not None:
            with torch.no_grad():
                grads = [parameter.grad for parameter in parameters.values() if parameter.grad is not None]
                norms = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(-1) for g in grads]).sum(0).sqrt()
                scale = (settings.clip_norm / (norms + 1e-12)).clamp(max=1.0)
                for g in grads:
                    g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
        optimizer.step()
        scheduler.step()
        if on_step is not None:
            on_step(step, loss.item())
        if step % settings.eval_every == 0 or step == settings.steps:
            evaluate(step)
    if settings.keep_best:
        with torch.no_grad():
            for name, parameter in parameters.items():
                parameter.copy_(best[name])
    history.best_losses = best_loss.tolist()
    return history
