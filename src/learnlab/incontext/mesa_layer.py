"""The mesa-layer: causal in-context ridge regression as an attention layer (von Oswald et al. 2023, §5).

Per head ``h`` and position ``t`` (keys ``k``, values ``v``, queries ``q`` of the head)::

    Phi_t = argmin_Phi ½ sum_{t'<=t} ||v_t' - Phi k_t'||^2 + 1/(2 lambda_h) ||Phi||_F^2
          = (sum_{t'<=t} v_t' k_t'^T) (sum_{t'<=t} k_t' k_t'^T + lambda_h^{-1} I)^{-1}
    out_t = Phi_t q_t

**lambda convention** (the official code's): ``lambda_h`` is the learnable per-head parameter,
initialised to 1, and the ridge penalty is ``1 / lambda_h`` (the inverse starts at ``lambda_h I``).
A large ``lambda_h`` means weak regularisation. Only the product of ``lambda_h`` and the squared
key scale matters (scaling ``k`` and ``q`` by ``a`` equals scaling ``lambda_h`` by ``a^2``), and an
optimiser such as Adam changes ``lambda_h`` by about its learning rate per step, so from the
code's init (1) and small weights the effective ridge falls only as fast as the keys grow.

Four code paths compute the same ``out`` (:func:`mesa_attention`, ``method=``):

* ``"parallel"`` (default): the chunkwise-parallel solve of :mod:`learnlab.incontext.mesa_parallel`
  (all chunks at once from prefix-summed boundary states; a backward of matrix products only).
* ``"reference"``: an explicit solve at every ``t`` from cumulative sums; stores ``T`` matrices of
  ``d x d``. For tests.
* ``"recurrent"``: the Sherman–Morrison recursion of paper §5 as a plain per-step loop,
  ``R_t = R_{t-1} - R_{t-1} k_t k_t^T R_{t-1} / (1 + k_t^T R_{t-1} k_t)``, differentiated by autograd
  (which keeps every ``R_t``). For benchmarks.
* ``"chunked"``: an exact chunked form that carries the state from chunk to chunk, with a custom
  backward that recomputes each chunk by autograd (:class:`ChunkedMesaFunction`); kept for comparison.

The chunked form (derived here; the same algebra as the Woodbury identity). Split the sequence into
chunks of ``C`` steps. At a chunk start the state is ``S = lambda^{-1} I + sum_{past} k k^T`` and
``M = sum_{past} v k^T``; let ``P = S^{-1}`` (re-solved directly from ``S`` by a Cholesky
factorisation at every chunk, so no error accumulates along the sequence). For the chunk's keys
``K`` (``C x d``), Woodbury gives ``A_i^{-1} = P - P K_{<=i}^T (I + K_{<=i} P K_{<=i}^T)^{-1} K_{<=i} P``
at chunk step ``i``. With the Cholesky factor ``L`` of ``G = I + K P K^T``, the leading ``i x i``
block of ``G`` has factor ``L_{<=i}``, so with ``W = L^{-1} K``::

    A_i^{-1} q_i = P q_i - sum_{j<=i} (P w_j) (w_j^T P q_i)
    q~ = Y - tril(Y W^T) (W P),   Y = Q P                               (all rows of the chunk)
    out = q~ M^T + tril(q~ K^T) V                                      (causal linear attention)

Only matrix products, one ``C x C`` and (after the first chunk) one ``d x d`` Cholesky factor per
chunk and head. ``G`` has eigenvalues >= 1, so the factorisation is well conditioned in float32.
The backward pass (:class:`ChunkedMesaFunction`) stores only the chunk-boundary states ``(S, M)``
(``T / C`` matrices, never the ``T`` inverses) and recomputes each chunk in reverse order. A
sequence of at most one chunk is differentiated by autograd directly (its graph is the one the
custom backward would rebuild).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learnlab.incontext.mesa_parallel import LAMBDA_FLOOR, check_mesa_shapes, mesa_parallel, mesa_parallel_packed

METHODS = ("parallel", "chunked", "reference", "recurrent")
CHUNKED_SIZE = 64  # the chunked method's chunk when none is given


def _eye(size: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(size, dtype=like.dtype, device=like.device)


def mesa_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Direct solve at every ``t`` (paper §5): ``out_t = (sum v k^T)(sum k k^T + I / lam)^{-1} q_t``."""
    check_mesa_shapes(q, k, v, lam)
    d = k.shape[-1]
    gram = torch.cumsum(k.unsqueeze(-1) * k.unsqueeze(-2), dim=2)  # (B, H, T, d, d)
    gram = gram + _eye(d, k) / lam.view(1, -1, 1, 1, 1)
    cross = torch.cumsum(v.unsqueeze(-1) * k.unsqueeze(-2), dim=2)  # (B, H, T, dv, d)
    solved = torch.linalg.solve(gram, q.unsqueeze(-1))  # (B, H, T, d, 1)
    return (cross @ solved).squeeze(-1)


def mesa_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Sherman–Morrison recursion (paper §5) as a plain per-step loop; autograd keeps every step."""
    check_mesa_shapes(q, k, v, lam)
    b, h, t, d = k.shape
    inverse = _eye(d, k).expand(b, h, d, d) * lam.view(1, -1, 1, 1)
    cross = torch.zeros(b, h, v.shape[-1], d, dtype=k.dtype, device=k.device)
    outputs = []
    for step in range(t):
        key = k[:, :, step]
        direction = (inverse * key.unsqueeze(-2)).sum(-1)  # R k (R symmetric)
        denominator = 1.0 + (key * direction).sum(-1, keepdim=True)
        inverse = inverse - direction.unsqueeze(-1) * (direction / denominator).unsqueeze(-2)
        cross = cross + v[:, :, step].unsqueeze(-1) * key.unsqueeze(-2)
        solved = (inverse * q[:, :, step].unsqueeze(-2)).sum(-1)
        outputs.append((cross * solved.unsqueeze(-2)).sum(-1))
    return torch.stack(outputs, dim=2)


def _mesa_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: torch.Tensor | None,
    cross: torch.Tensor | None,
    lam: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk of the chunked form (module docstring); differentiable by autograd.

    ``state`` (``S``) and ``cross`` (``M``) are the sums before the chunk; ``None`` means the first
    chunk, where ``S = I / lam`` and ``P = lam I`` need no factorisation. Returns
    ``(out, S_next, M_next)``.
    """
    c, d = k.shape[-2], k.shape[-1]
    scale = lam.clamp_min(LAMBDA_FLOOR).view(1, -1, 1, 1)
    if state is None:
        gram = _eye(c, k) + scale * (k @ k.transpose(-1, -2))
        factor = torch.linalg.cholesky(gram)
        w = torch.linalg.solve_triangular(factor, k, upper=False)
        y = scale * q
        x = scale * w
        state = _eye(d, k).expand(*k.shape[:2], d, d) / scale
        cross = torch.zeros(*k.shape[:2], v.shape[-1], d, dtype=k.dtype, device=k.device)
    else:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(state))  # P = S^{-1}, re-solved directly
        z = k @ inverse  # K P
        gram = _eye(c, k) + z @ k.transpose(-1, -2)  # I + K P K^T (lower triangle read)
        factor = torch.linalg.cholesky(gram)
        w = torch.linalg.solve_triangular(factor, k, upper=False)
        y = q @ inverse  # Q P
        x = w @ inverse  # W P
    mask = torch.ones(c, c, dtype=torch.bool, device=k.device).tril()
    solved = y - (y @ w.transpose(-1, -2)).masked_fill(~mask, 0.0) @ x  # rows A_i^{-1} q_i
    out = solved @ cross.transpose(-1, -2) + (solved @ k.transpose(-1, -2)).masked_fill(~mask, 0.0) @ v
    next_state = state + k.transpose(-1, -2) @ k
    next_cross = cross + v.transpose(-1, -2) @ k
    return out, next_state, next_cross


class ChunkedMesaFunction(torch.autograd.Function):
    """The chunked mesa forward with a memory-lean custom backward.

    Forward runs without autograd and saves the inputs plus the chunk-boundary states ``(S, M)``.
    Backward walks the chunks in reverse: it recomputes one chunk with autograd from its saved
    boundary state and pulls the output gradient and the gradients of the next boundary state back
    through it. Peak extra memory is one chunk's graph plus ``T / C`` boundary states; the ``T``
    per-step inverses are never stored.
    """

    @staticmethod
    def forward(ctx, q, k, v, lam, chunk_size: int):  # type: ignore[override]
        outputs, states, crosses = [], [], []
        state = cross = None
        for start in range(0, q.shape[2], chunk_size):
            stop = start + chunk_size
            states.append(state)
            crosses.append(cross)
            out, state, cross = _mesa_chunk(q[:, :, start:stop], k[:, :, start:stop], v[:, :, start:stop], state, cross, lam)
            outputs.append(out)
        boundary = [s for s in states[1:]] + [m for m in crosses[1:]]
        ctx.save_for_backward(q, k, v, lam, *boundary)
        ctx.chunk_size = chunk_size
        ctx.num_chunks = len(outputs)
        return torch.cat(outputs, dim=2)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, lam, *boundary = ctx.saved_tensors
        n = ctx.num_chunks
        states = [None] + list(boundary[: n - 1])
        crosses = [None] + list(boundary[n - 1 :])
        size = ctx.chunk_size
        grad_q, grad_k, grad_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        grad_lam = torch.zeros_like(lam)
        grad_state = grad_cross = None
        for index in reversed(range(n)):
            sl = slice(index * size, (index + 1) * size)
            with torch.enable_grad():
                leaves = [q[:, :, sl].detach().requires_grad_(), k[:, :, sl].detach().requires_grad_(),
                          v[:, :, sl].detach().requires_grad_(), lam.detach().requires_grad_()]
                state, cross = states[index], crosses[index]
                if state is not None:
                    state, cross = state.detach().requires_grad_(), cross.detach().requires_grad_()
                    leaves += [state, cross]
                out, next_state, next_cross = _mesa_chunk(*leaves[:3], state, cross, leaves[3])
                targets, grads = [out], [grad_out[:, :, sl]]
                if grad_state is not None:
                    targets += [next_state, next_cross]
                    grads += [grad_state, grad_cross]
                found = torch.autograd.grad(targets, leaves, grads, allow_unused=True)
            found = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, found)]
            grad_q[:, :, sl], grad_k[:, :, sl], grad_v[:, :, sl] = found[0], found[1], found[2]
            grad_lam += found[3]
            if state is not None:
                grad_state, grad_cross = found[4], found[5]
        return grad_q, grad_k, grad_v, grad_lam, None


def mesa_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
    """The chunked form with the custom backward (module docstring)."""
    check_mesa_shapes(q, k, v, lam)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if q.shape[2] <= chunk_size:
        # One chunk: its autograd graph is exactly what the custom backward would rebuild, so
        # differentiate it directly and skip the recomputation.
        return _mesa_chunk(q, k, v, None, None, lam)[0]
    return ChunkedMesaFunction.apply(q, k, v, lam, chunk_size)


def mesa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor, method: str = "parallel",
    chunk_size: int | None = None
) -> torch.Tensor:
    """Causal mesa attention ``(B, H, T, dv)`` from ``q, k (B, H, T, d)``, ``v (B, H, T, dv)``, ``lam (H,)``.

    ``chunk_size`` (``parallel`` and ``chunked`` only) ``None``: chosen per length and device for
    ``parallel`` (:func:`~learnlab.incontext.mesa_parallel.default_chunk_size`), 64 for ``chunked``.
    """
    if method == "parallel":
        return mesa_parallel(q, k, v, lam, chunk_size)
    if method == "chunked":
        return mesa_chunked(q, k, v, lam, CHUNKED_SIZE if chunk_size is None else chunk_size)
    if method == "reference":
        return mesa_reference(q, k, v, lam)
    if method == "recurrent":
        return mesa_recurrent(q, k, v, lam)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


class MesaLayer(nn.Module):
    """Multi-head mesa self-attention, the update added to the residual stream (paper §5).

    ``Delta e_t = sum_h P_h Phi_{h,t} q_{h,t}`` with per-head projections ``k = W_K e``,
    ``v = W_V e``, ``q = W_Q e`` (key size ``d`` for all three, as the official code) and the
    output projection ``P`` from ``H * d`` back to the token width. ``lam`` (``(H,)``, init 1) is
    the per-head ``lambda``; the ridge penalty is ``1 / lambda`` (module docstring).

    Args:
        embed_dim: token width.
        num_heads, key_size: ``H`` and ``d``.
        method: ``"parallel"`` (default), ``"chunked"``, ``"reference"`` or ``"recurrent"``; all give
            the same output.
        chunk_size: ``C`` of the parallel or chunked form (``None``: see :func:`mesa_attention`).
        init_std: weights ~ N(0, init_std^2) (official code: 0.0002).
        lambda_init: initial ``lambda`` of every head (official code: 1).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int = 4,
        key_size: int = 20,
        method: str = "parallel",
        chunk_size: int | None = None,
        init_std: float = 0.0002,
        lambda_init: float = 1.0,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if min(embed_dim, num_heads, key_size, chunk_size or 1) < 1 or lambda_init <= 0:
            raise ValueError("embed_dim, num_heads, key_size, chunk_size must be >= 1 and lambda_init > 0")
        self.embed_dim, self.num_heads, self.key_size = embed_dim, num_heads, key_size
        self.method, self.chunk_size = method, chunk_size
        factory = {"dtype": dtype, "device": device}
        self.qkv = nn.Parameter(torch.empty(3 * num_heads * key_size, embed_dim, **factory))
        self.projection = nn.Parameter(torch.empty(embed_dim, num_heads * key_size, **factory))
        self.lam = nn.Parameter(torch.full((num_heads,), float(lambda_init), **factory))
        with torch.no_grad():
            self.qkv.normal_(0.0, init_std, generator=generator)
            self.projection.normal_(0.0, init_std, generator=generator)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, key_size={self.key_size}, method={self.method!r}"

    def packed_heads(self, tokens: torch.Tensor) -> torch.Tensor:
        """Queries, keys and values of every head, token-major: ``(B, T, 3, H, d)``."""
        b, t, _ = tokens.shape
        return F.linear(tokens, self.qkv).view(b, t, 3, self.num_heads, self.key_size)

    def heads(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, v)``, each ``(B, H, T, d)``."""
        q, k, v = self.packed_heads(tokens).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def forward(self, tokens: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """The attention update ``(B, T, embed_dim)`` (without the residual)."""
        method = method or self.method
        b, t, _ = tokens.shape
        if method == "parallel":  # token-major all the way: no full-size copies around the solve
            out = mesa_parallel_packed(self.packed_heads(tokens), self.lam, self.chunk_size)
        else:
            out = mesa_attention(*self.heads(tokens), self.lam, method, self.chunk_size).transpose(1, 2)
        return F.linear(out.reshape(b, t, -1), self.projection)


def relative_error(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """``||estimate - reference|| / ||reference||`` in float64."""
    reference = reference.detach().double()
    return float((estimate.detach().double() - reference).norm() / reference.norm().clamp_min(1e-300))


def check_mesa_identities(generator: torch.Generator, long_length: int = 1024) -> dict[str, float]:
    """Relative errors of the default path (``parallel``, custom backward) against the direct solve (paper §5).

    Three checks on random heads (``q, k ~ N(0, 1/d)``, ``v ~ N(0, 1)``, lambdas spread over
    ``[0.5, 2]``): float64 values and gradients (inputs and lambda) over several chunks; float32
    gradients on the same problem against the float64 reference; float32 values on a sequence of
    ``long_length`` tokens (the numerical safety of the re-solved chunks).
    """
    def draw(b: int, h: int, t: int, d: int) -> tuple[torch.Tensor, ...]:
        q = torch.randn(b, h, t, d, generator=generator, dtype=torch.float64) / d ** 0.5
        k = torch.randn(b, h, t, d, generator=generator, dtype=torch.float64) / d ** 0.5
        v = torch.randn(b, h, t, d, generator=generator, dtype=torch.float64)
        return q, k, v, torch.linspace(0.5, 2.0, h, dtype=torch.float64)

    measured: dict[str, float] = {}
    q, k, v, lam = draw(4, 3, 200, 8)
    weights = torch.randn(4, 3, 200, 8, generator=generator, dtype=torch.float64)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, lam)]
    reference = mesa_reference(*leaves)
    ref_grads = torch.autograd.grad((reference * weights).sum(), leaves)
    leaves64 = [x.clone().requires_grad_() for x in (q, k, v, lam)]
    chunked = mesa_parallel(*leaves64, chunk_size=32)
    grads64 = torch.autograd.grad((chunked * weights).sum(), leaves64)
    measured["mesa_forward_relative_error_float64"] = relative_error(chunked, reference)
    measured["mesa_input_grad_relative_error_float64"] = max(relative_error(a, b) for a, b in zip(grads64[:3], ref_grads[:3]))
    measured["mesa_lambda_grad_relative_error_float64"] = relative_error(grads64[3], ref_grads[3])
    leaves32 = [x.float().clone().requires_grad_() for x in (q, k, v, lam)]
    chunked32 = mesa_parallel(*leaves32, chunk_size=32)
    grads32 = torch.autograd.grad((chunked32 * weights.float()).sum(), leaves32)
    measured["mesa_input_grad_relative_error_float32"] = max(relative_error(a, b) for a, b in zip(grads32[:3], ref_grads[:3]))
    measured["mesa_lambda_grad_relative_error_float32"] = relative_error(grads32[3], ref_grads[3])
    measured["mesa_grad_relative_error_float32"] = max(measured["mesa_input_grad_relative_error_float32"],
                                                       measured["mesa_lambda_grad_relative_error_float32"])
    q, k, v, lam = draw(2, 2, long_length, 8)
    with torch.no_grad():
        reference = mesa_reference(q, k, v, lam)
        chunked32 = mesa_parallel(q.float(), k.float(), v.float(), lam.float())
    measured["mesa_forward_relative_error_float32"] = relative_error(chunked32, reference)
    measured["mesa_identity_length_float32"] = long_length
    return measured


__all__ = ["METHODS", "ChunkedMesaFunction", "MesaLayer", "check_mesa_identities", "mesa_attention", "mesa_chunked",
           "mesa_parallel", "mesa_recurrent", "mesa_reference", "relative_error"]
