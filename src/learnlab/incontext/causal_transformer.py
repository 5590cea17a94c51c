"""A causal Transformer whose layers use linear, softmax or mesa attention (von Oswald et al. 2023, §2–5).

Layer ``l`` maps ``e <- clip(e + Attn_l(LN(e)) [+ MLP(LN(e))])`` with causal attention that includes
the current token. Per head (key size ``d``, value size ``d``, as the official code)::

    linear:  out_t = sum_{t'<=t} v_t' (k_t'^T q_t)                  (no normalisation, no scaling)
    softmax: out_t = sum_{t'<=t} softmax_t'(k_t'^T q_t / sqrt(d)) v_t'
    mesa:    out_t = Phi_t q_t, the in-context ridge solution (:mod:`learnlab.incontext.mesa_layer`)

The head outputs are concatenated and projected back to the token width. The official recipe has
no biases, no LayerNorm and no MLP, weights ~ N(0, 0.0002^2), and clips activations to ±1.5 after
every layer. The prediction is read from the first ``readout_dim`` dimensions of the output tokens.
Linear attention is computed as a causally masked matrix product (no loop over positions); the
mask is a cached 0/1 float matrix multiplied into the scores (exactly the ``masked_fill`` result).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learnlab.incontext.mesa_layer import MesaLayer

ATTENTION_KINDS = ("linear", "softmax", "mesa")


class CausalAttention(nn.Module):
    """Multi-head causal linear or softmax attention (the update only, without the residual)."""

    def __init__(self, embed_dim: int, num_heads: int = 4, key_size: int = 20, softmax: bool = False,
                 init_std: float = 0.0002, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.key_size, self.softmax = embed_dim, num_heads, key_size, softmax
        factory = {"dtype": dtype, "device": device}
        self.qkv = nn.Parameter(torch.empty(3 * num_heads * key_size, embed_dim, **factory))
        self.projection = nn.Parameter(torch.empty(embed_dim, num_heads * key_size, **factory))
        self._mask_cache: dict = {}
        with torch.no_grad():
            self.qkv.normal_(0.0, init_std, generator=generator)
            self.projection.normal_(0.0, init_std, generator=generator)

    def _causal_mask(self, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Lower-triangular 0/1 float mask ``(T, T)``, cached per (length, dtype, device).

        Multiplying the scores by this mask is exactly the masked matmul (``masked_fill`` with 0):
        the kept entries are multiplied by 1.0 and the others become 0 (finite scores), and it is
        cheaper on CPU than ``masked_fill`` with a boolean mask.
        """
        key = (length, dtype, device)
        cached = self._mask_cache.get(key)
        if cached is None:
            cached = torch.ones(length, length, dtype=dtype, device=device).tril()
            self._mask_cache = {key: cached}
        return cached

    def heads(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, v)``, each ``(B, H, T, d)``: views of one fused projection, unbound along its own axis
        so that the backward writes the projection's gradient in place of a permuted copy (same numbers)."""
        b, t, _ = tokens.shape
        qkv = F.linear(tokens, self.qkv).view(b, t, 3, self.num_heads, self.key_size)
        q, k, v = (x.transpose(1, 2) for x in qkv.unbind(2))
        return q, k, v

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(tokens)
        t = tokens.shape[1]
        if self.softmax:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = (q @ k.transpose(-1, -2)).mul_(self._causal_mask(t, q.dtype, q.device)) @ v
        b, h, _, d = out.shape
        return F.linear(out.transpose(1, 2).reshape(b, t, h * d), self.projection)


class TransformerBlock(nn.Module):
    """One residual block: attention of the given kind, optional pre-LayerNorm and GELU MLP."""

    def __init__(self, kind: str, embed_dim: int, num_heads: int = 4, key_size: int = 20,
                 layer_norm: bool = False, mlp_hidden: int = 0, init_std: float = 0.0002,
                 mesa_chunk_size: int | None = None, mesa_lambda_init: float = 1.0, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, got {kind!r}")
        factory = {"dtype": dtype, "device": device}
        self.kind = kind
        if kind == "mesa":
            self.attention: nn.Module = MesaLayer(embed_dim, num_heads, key_size, chunk_size=mesa_chunk_size,
                                                  init_std=init_std, lambda_init=mesa_lambda_init, generator=generator,
                                                  **factory)
        else:
            self.attention = CausalAttention(embed_dim, num_heads, key_size, softmax=kind == "softmax",
                                             init_std=init_std, generator=generator, **factory)
        self.norm1 = nn.LayerNorm(embed_dim, **factory) if layer_norm else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dim, **factory) if layer_norm and mlp_hidden else nn.Identity()
        self.mlp: nn.Module | None = None
        if mlp_hidden:
            self.mlp = nn.Sequential(nn.Linear(embed_dim, mlp_hidden, bias=False, **factory), nn.GELU(),
                                     nn.Linear(mlp_hidden, embed_dim, bias=False, **factory))
            with torch.no_grad():
                for layer in (self.mlp[0], self.mlp[2]):
                    layer.weight.normal_(0.0, init_std, generator=generator)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attention(self.norm1(tokens))
        if self.mlp is not None:
            tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens


class CausalTransformer(nn.Module):
    """A stack of :class:`TransformerBlock`; ``layers`` names each layer's attention kind.

    Args:
        embed_dim: token width (40 for constructed tokens of D = 10).
        layers: e.g. ``("linear", "linear")`` or ``("mesa",)``.
        num_heads, key_size: per layer (official: 4 heads, key size 20).
        layer_norm, mlp_hidden: optional pre-LayerNorm and a GELU MLP of that width (0: none).
        clip: activations are clipped to ``±clip`` after every layer (0: no clipping; official 1.5).
        readout_dim: the prediction is ``output[..., :readout_dim]``.
        init_std: weights ~ N(0, init_std^2).
        mesa_chunk_size, mesa_lambda_init: chunk size (``None``: chosen per length and device) and
            initial per-head lambda of mesa layers (official code: lambda 1, ridge penalty 1 / lambda; :class:`MesaLayer`).
    """

    def __init__(self, embed_dim: int = 40, layers: Sequence[str] = ("linear", "linear"), num_heads: int = 4,
                 key_size: int = 20, layer_norm: bool = False, mlp_hidden: int = 0, clip: float = 1.5,
                 readout_dim: int = 10, init_std: float = 0.0002, mesa_chunk_size: int | None = None, mesa_lambda_init: float = 1.0, *,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if not layers:
            raise ValueError("need at least one layer")
        if not 1 <= readout_dim <= embed_dim:
            raise ValueError(f"readout_dim must be in [1, {embed_dim}], got {readout_dim}")
        self.layer_kinds = tuple(layers)
        self.clip, self.readout_dim = clip, readout_dim
        self.blocks = nn.ModuleList(
            TransformerBlock(kind, embed_dim, num_heads, key_size, layer_norm, mlp_hidden, init_std, mesa_chunk_size,
                             mesa_lambda_init, generator=generator, dtype=dtype, device=device)
            for kind in layers
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Output tokens ``(B, T, embed_dim)``."""
        for block in self.blocks:
            tokens = block(tokens)
            if self.clip > 0:
                tokens = tokens.clamp(-self.clip, self.clip)
        return tokens

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        """Predictions ``(B, T, readout_dim)``: the first dimensions of the output tokens."""
        return self(tokens)[..., : self.readout_dim]
