"""Linear (and softmax) self-attention for in-context regression (von Oswald et al. 2023, §2, eq. 6).

A layer updates every token ``e_j`` of ``E = (e_1, ..., e_N, e_query)``, the query included::

    e_j <- e_j + sum_h P_h W_V,h sum_{i in context} e_i * score_h(i, j)
    score_h(i, j) = e_i^T W_K,h^T W_Q,h e_j                          (linear self-attention, LSA)
    score_h(i, j) = softmax_i(e_i^T W_K,h^T W_Q,h e_j)               (softmax variant, App. A.9)

The context is the first ``T - 1`` tokens (keys and values exclude the query, as in the official
code's ``include_query = False``) or all ``T`` tokens when ``include_query_in_context`` is set. The
linear score is not normalised by ``N``; softmax scores are not scaled by ``1/sqrt(key_size)``.
There are no biases, no LayerNorm and no MLP (paper §2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# Haiku's VarianceScaling(distribution="truncated_normal") divides the nominal std by the std of a
# unit normal truncated to [-2, 2], so that the truncated samples have exactly the target variance.
_TRUNCATED_NORMAL_STD = 0.87962566103423978

LINEAR_ORDERS = ("auto", "covariance", "kernel")

# On CPU, token widths and key sizes are zero-padded to a multiple of this inside the layer.
_CPU_PAD_MULTIPLE = 8


class _Weights(NamedTuple):
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    projection: torch.Tensor


def _variance_scaling_(
    tensor: torch.Tensor, scale: float, fan_in: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Fill ``tensor`` like Haiku ``VarianceScaling(scale, "fan_in", "truncated_normal")``."""
    std = math.sqrt(scale / fan_in) / _TRUNCATED_NORMAL_STD
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=generator)


class LinearSelfAttention(nn.Module):
    """One residual self-attention layer without normalisation (paper §2, eq. 6; App. A.9 for softmax).

    Parameters (``H`` heads, key size ``k``, token width ``D``)::

        query: (H, k, D)   W_Q per head
        key: (H, k, D)     W_K per head
        value: (H, D, D)   W_V per head (value size = D)
        projection: (H, D, D)  P per head; the head outputs are summed

    Only the products ``W_K^T W_Q`` and ``P W_V`` are identifiable (see :meth:`weight_products`).

    The linear case never forms the ``T x T`` score matrix. Two exact orders are available:

    * ``"covariance"``: ``update_j = sum_h (P_h W_V,h) C (W_K,h^T W_Q,h) e_j`` with the context
      covariance ``C = E_c^T E_c`` (``D x D``), computed once for all heads. Cheapest when
      ``key_size`` is not much smaller than ``D`` (the paper's setting, ``k = D = 11``).
    * ``"kernel"``: per head ``KV_h = K_c^T V_c`` (``k x D``), then ``P_h KV_h^T q_j``; cheaper for
      small key sizes.

    ``linear_order="auto"`` picks the order with fewer multiply-adds for the input's shape.
    :meth:`forward_query` updates only the query token (all a readout needs). On CPU the token
    width and key size are zero-padded to a multiple of 8 inside the layer, which is exact and
    avoids slow BLAS paths for odd widths such as 11.

    Args:
        token_dim: ``D``.
        num_heads: ``H``.
        key_size: ``k``; defaults to ``token_dim``.
        softmax: use softmax scores over the context instead of linear scores.
        include_query_in_context: let the query token also act as key/value.
        init_scale: Haiku ``VarianceScaling`` scale: truncated normal with std
            ``sqrt(init_scale / fan_in)``, fan-in ``D`` for W_Q, W_K, W_V and ``H * D`` for P.
            (A K-layer :class:`InContextRegressor` passes ``0.002 / K``, as the official code.)
        linear_order: ``"auto"``, ``"covariance"`` or ``"kernel"`` (linear case only).
        generator, dtype, device: for the initial parameters.
    """

    def __init__(
        self,
        token_dim: int,
        num_heads: int = 1,
        key_size: int | None = None,
        softmax: bool = False,
        include_query_in_context: bool = False,
        init_scale: float = 0.002,
        linear_order: str = "auto",
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if token_dim < 1 or num_heads < 1:
            raise ValueError(f"token_dim and num_heads must be >= 1, got {token_dim}, {num_heads}")
        key_size = token_dim if key_size is None else key_size
        if key_size < 1:
            raise ValueError(f"key_size must be >= 1, got {key_size}")
        if linear_order not in LINEAR_ORDERS:
            raise ValueError(f"linear_order must be one of {LINEAR_ORDERS}, got {linear_order!r}")
        self.token_dim = token_dim
        self.num_heads = num_heads
        self.key_size = key_size
        self.softmax = softmax
        self.include_query_in_context = include_query_in_context
        self.init_scale = init_scale
        self.linear_order = linear_order
        factory = {"dtype": dtype, "device": device}
        h, k, d = num_heads, key_size, token_dim
        self.query = nn.Parameter(torch.empty(h, k, d, **factory))
        self.key = nn.Parameter(torch.empty(h, k, d, **factory))
        self.value = nn.Parameter(torch.empty(h, d, d, **factory))
        self.projection = nn.Parameter(torch.empty(h, d, d, **factory))
        self.reset_parameters(generator)

    def extra_repr(self) -> str:
        return (
            f"token_dim={self.token_dim}, num_heads={self.num_heads}, key_size={self.key_size}, "
            f"softmax={self.softmax}, include_query_in_context={self.include_query_in_context}"
        )

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw all parameters with the variance-scaling init described in the class docstring."""
        d = self.token_dim
        _variance_scaling_(self.query, self.init_scale, d, generator)
        _variance_scaling_(self.key, self.init_scale, d, generator)
        _variance_scaling_(self.value, self.init_scale, d, generator)
        _variance_scaling_(self.projection, self.init_scale, self.num_heads * d, generator)

    @torch.no_grad()
    def set_weights(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        projection: torch.Tensor,
    ) -> "LinearSelfAttention":
        """Load explicit matrices, e.g. the GD construction of paper Prop. 1.

        Each argument is either per-head ``(H, rows, D)`` or, for a single head, ``(rows, D)``.
        Values are cast to the parameters' dtype and device. Returns ``self``.
        """
        for name, tensor in (("query", query), ("key", key), ("value", value), ("projection", projection)):
            parameter = getattr(self, name)
            tensor = torch.as_tensor(tensor)
            if tensor.dim() == 2:
                tensor = tensor.unsqueeze(0)
            if tensor.shape != parameter.shape:
                raise ValueError(f"{name} must have shape {tuple(parameter.shape)}, got {tuple(tensor.shape)}")
            parameter.copy_(tensor.to(parameter))
        return self

    def weight_products(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_K^T W_Q, P W_V)`` per head, each ``(H, D, D)`` — the identifiable quantities (paper §3)."""
        key_query = self.key.transpose(-1, -2) @ self.query
        projection_value = self.projection @ self.value
        return key_query, projection_value

    # ----------------------------------------------------------------------------------------
    # Internals. On CPU the layer works on tokens whose width is zero-padded to a multiple of 8
    # (and with key sizes padded likewise): zero features and zero key rows change no score and
    # no update, and the padded features of the output stay exactly zero, but CPU BLAS kernels
    # are several times slower for widths such as 11 than for 16 (MKL, torch 2.13). A stack pads
    # once at its input and strips the padding once at its output.

    def padded_width(self, device: torch.device | str) -> int:
        """The internal token width used on ``device`` (``token_dim`` off CPU)."""
        if torch.device(device).type != "cpu":
            return self.token_dim
        return self.token_dim + (-self.token_dim) % _CPU_PAD_MULTIPLE

    def _padded_weights(self, width: int) -> _Weights:
        pad_d = width - self.token_dim
        pad_k = 0 if pad_d == 0 else (-self.key_size) % _CPU_PAD_MULTIPLE
        if pad_d == 0 and pad_k == 0:
            return _Weights(self.query, self.key, self.value, self.projection)
        return _Weights(
            query=F.pad(self.query, (0, pad_d, 0, pad_k)),
            key=F.pad(self.key, (0, pad_d, 0, pad_k)),
            value=F.pad(self.value, (0, pad_d, 0, pad_d)),
            projection=F.pad(self.projection, (0, pad_d, 0, pad_d)),
        )

    def _num_context(self, tokens: torch.Tensor, width: int) -> int:
        if tokens.dim() != 3 or tokens.shape[-1] != width:
            raise ValueError(f"tokens must be (B, T, {self.token_dim}), got {tuple(tokens.shape)}")
        num_context = tokens.shape[1] - (0 if self.include_query_in_context else 1)
        if num_context < 1:
            raise ValueError("need at least one context token")
        return num_context

    def _choose_linear_order(self, num_tokens: int, num_context: int) -> str:
        if self.linear_order != "auto":
            return self.linear_order
        h, k, d = self.num_heads, self.key_size, self.token_dim
        t, n = num_tokens, num_context
        covariance = n * d * d + 3 * t * h * d * d
        kernel = 2 * t * h * k * d + 2 * n * h * k * d + n * h * d * d + t * h * d * d
        return "covariance" if covariance <= kernel else "kernel"

    @staticmethod
    def _linear_update_covariance(tokens: torch.Tensor, context: torch.Tensor, w: _Weights) -> torch.Tensor:
        b, t, d = tokens.shape
        h = w.query.shape[0]
        key_query = w.key.transpose(-1, -2) @ w.query  # (H, D, D)
        projection_value = w.projection @ w.value  # (H, D, D)
        covariance = context.transpose(1, 2) @ context  # (B, D, D), symmetric
        # u_{j,h} = M_h e_j for all heads at once: columns [M_1^T | ... | M_H^T].
        u = (tokens @ key_query.permute(2, 0, 1).reshape(d, h * d)).reshape(b, t * h, d)
        z = (u @ covariance).reshape(b, t, h * d)  # rows (C u_{j,h})^T, using C = C^T
        return z @ projection_value.transpose(-1, -2).reshape(h * d, d)

    @staticmethod
    def _linear_update_kernel(tokens: torch.Tensor, context: torch.Tensor, w: _Weights) -> torch.Tensor:
        b, t, d = tokens.shape
        h, k = w.query.shape[:2]
        n = context.shape[1]
        queries = (tokens @ w.query.reshape(h * k, d).T).reshape(b, t, h, k)
        keys = (context @ w.key.reshape(h * k, d).T).reshape(b, n, h, k)
        values = (context @ w.value.reshape(h * d, d).T).reshape(b, n, h, d)
        key_value = torch.einsum("bnhk,bnhd->bhkd", keys, values)  # (B, H, k, D): K_c^T V_c
        heads = torch.einsum("bthk,bhkd->bthd", queries, key_value).reshape(b, t, h * d)
        return heads @ w.projection.permute(1, 0, 2).reshape(d, h * d).T

    @staticmethod
    def _softmax_update(tokens: torch.Tensor, context: torch.Tensor, w: _Weights) -> torch.Tensor:
        b, t, d = tokens.shape
        h, k = w.query.shape[:2]
        n = context.shape[1]
        queries = (tokens @ w.query.reshape(h * k, d).T).reshape(b, t, h, k).transpose(1, 2)
        keys = (context @ w.key.reshape(h * k, d).T).reshape(b, n, h, k).transpose(1, 2)
        values = (context @ w.value.reshape(h * d, d).T).reshape(b, n, h, d).transpose(1, 2)
        weights = torch.softmax(queries @ keys.transpose(-1, -2), dim=-1)  # (B, H, T, N)
        heads = (weights @ values).transpose(1, 2).reshape(b, t, h * d)
        return heads @ w.projection.permute(1, 0, 2).reshape(d, h * d).T

    def _forward_padded(self, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on tokens already padded to :meth:`padded_width`."""
        num_context = self._num_context(tokens, tokens.shape[-1])
        w = self._padded_weights(tokens.shape[-1])
        context = tokens[:, :num_context]
        if self.softmax:
            update = self._softmax_update(tokens, context, w)
        elif self._choose_linear_order(tokens.shape[1], num_context) == "covariance":
            update = self._linear_update_covariance(tokens, context, w)
        else:
            update = self._linear_update_kernel(tokens, context, w)
        return tokens + update

    def _forward_query_padded(self, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_query` on tokens already padded to :meth:`padded_width`."""
        num_context = self._num_context(tokens, tokens.shape[-1])
        w = self._padded_weights(tokens.shape[-1])
        b, _, d = tokens.shape
        h, k = w.query.shape[:2]
        context = tokens[:, :num_context]
        query_token = tokens[:, -1]
        queries = (query_token @ w.query.reshape(h * k, d).T).reshape(b, h, k)
        directions = torch.einsum("bhk,hkd->bhd", queries, w.key)  # u_h = W_K^T W_Q e_q
        # Broadcast products rather than batched matrix-vector products: their backward passes
        # would be batched outer products (inner size 1), which CPU BLAS runs very slowly.
        scores = (context.unsqueeze(2) * directions.unsqueeze(1)).sum(-1)  # (B, N, H)
        if self.softmax:
            scores = torch.softmax(scores, dim=1)
        mixed = (scores.unsqueeze(-1) * context.unsqueeze(2)).sum(1)  # (B, H, D): sum_i score e_i
        projection_value = w.projection @ w.value  # (H, D, D)
        return query_token + mixed.reshape(b, h * d) @ projection_value.transpose(-1, -2).reshape(h * d, d)

    def _pad(self, tokens: torch.Tensor) -> torch.Tensor:
        self._num_context(tokens, self.token_dim)
        return F.pad(tokens, (0, self.padded_width(tokens.device) - self.token_dim))

    # ----------------------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Apply the residual attention update to tokens ``(B, T, D)``; the last token is the query."""
        return self._forward_padded(self._pad(tokens))[..., : self.token_dim]

    def forward_query(self, tokens: torch.Tensor) -> torch.Tensor:
        """The updated query token ``(B, D)`` only: the last row of ``forward(tokens)``.

        Uses the query's scores against the context directly, ``score_h(i, q) = e_i^T u_h`` with
        ``u_h = W_K,h^T W_Q,h e_q``, then ``sum_h P_h W_V,h sum_i e_i score_h(i, q)``: ``O(N D H)``
        work per task instead of ``O(T D^2 H)``. This is all a readout of the last layer needs.
        """
        return self._forward_query_padded(self._pad(tokens))[:, : self.token_dim]


class InContextRegressor(nn.Module):
    """A stack of :class:`LinearSelfAttention` layers read out at the query (paper §2–3).

    ``predict`` returns minus the query token's last (``y``) coordinate after the stack, the
    readout of the paper and the official code. The caller provides tokens whose query y-slot is
    0 (as :meth:`RegressionBatch.tokens` does).

    Args:
        token_dim: ``D``.
        num_layers: ``K`` applications of attention.
        num_heads, key_size, include_query_in_context: per layer, see :class:`LinearSelfAttention`.
        softmax: one flag for every layer, or one per layer (e.g. ``(True, False)`` for the
            interleaved-token model of §4; needs ``recurrent=False``).
        recurrent: share one layer's weights across all ``K`` applications (weight-tied, the
            code's ``deq = True``); then ``layers`` has length 1.
        token_clip: if ``> 0``, clamp tokens to ``[-token_clip, token_clip]`` after every layer
            (the code uses 10 for deep models).
        init_scale: total variance-scaling scale, divided by ``K`` per layer (code: 0.002 / K).
        generator, dtype, device: for the initial parameters.
    """

    def __init__(
        self,
        token_dim: int,
        num_layers: int = 1,
        num_heads: int = 1,
        key_size: int | None = None,
        softmax: bool | Sequence[bool] = False,
        recurrent: bool = False,
        token_clip: float = 0.0,
        include_query_in_context: bool = False,
        init_scale: float = 0.002,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if token_clip < 0:
            raise ValueError(f"token_clip must be >= 0, got {token_clip}")
        num_modules = 1 if recurrent else num_layers
        if isinstance(softmax, bool):
            softmax_flags = [softmax] * num_modules
        else:
            softmax_flags = [bool(flag) for flag in softmax]
            if len(softmax_flags) != num_modules:
                raise ValueError(
                    f"softmax needs {num_modules} flags (one per distinct layer), got {len(softmax_flags)}"
                )
        self.token_dim = token_dim
        self.num_layers = num_layers
        self.recurrent = recurrent
        self.token_clip = token_clip
        self.layers = nn.ModuleList(
            LinearSelfAttention(
                token_dim,
                num_heads=num_heads,
                key_size=key_size,
                softmax=flag,
                include_query_in_context=include_query_in_context,
                init_scale=init_scale / num_layers,
                generator=generator,
                dtype=dtype,
                device=device,
            )
            for flag in softmax_flags
        )

    def layer_at(self, index: int) -> LinearSelfAttention:
        """The module applied at depth ``index`` (always the shared one when recurrent)."""
        return self.layers[0 if self.recurrent else index]

    def _pad(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 3 or tokens.shape[-1] != self.token_dim:
            raise ValueError(f"tokens must be (B, T, {self.token_dim}), got {tuple(tokens.shape)}")
        return F.pad(tokens, (0, self.layers[0].padded_width(tokens.device) - self.token_dim))

    def _clip(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.token_clip > 0:
            return tokens.clamp(-self.token_clip, self.token_clip)
        return tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, T, D)`` after all ``K`` layers (and token clipping if enabled)."""
        padded = self._pad(tokens)
        for index in range(self.num_layers):
            padded = self._clip(self.layer_at(index)._forward_padded(padded))
        return padded[..., : self.token_dim]

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        """Predictions ``(B,)``: minus the query's y-slot after the stack.

        Equal to ``-self(tokens)[:, -1, -1]``, but the last layer only updates the query token
        (:meth:`LinearSelfAttention.forward_query`), since no other token is read out.
        """
        padded = self._pad(tokens)
        for index in range(self.num_layers - 1):
            padded = self._clip(self.layer_at(index)._forward_padded(padded))
        query = self._clip(self.layer_at(self.num_layers - 1)._forward_query_padded(padded))
        return -query[:, self.token_dim - 1]
