"""The chunkwise-parallel mesa solve: every chunk at once, with a backward made of matrix products.

The mesa-layer (von Oswald et al. 2023, §5) outputs, per head and position ``t``,
``out_t = M_t A_t^{-1} q_t`` with ``A_t = lambda^{-1} I + sum_{t'<=t} k_t' k_t'^T`` and
``M_t = sum_{t'<=t} v_t' k_t'^T``. The sequential forms (the paper's Sherman–Morrison recursion, and
the chunked form of :mod:`learnlab.incontext.mesa_layer`) carry ``A`` from chunk to chunk. Here, as
in the later parallel mesa-layer work (MesaNet, von Oswald et al. 2025, §3), the chunk-boundary
states are prefix sums that need no recursion, so all chunks are solved in one batched pass:

1. Split the sequence into ``N`` chunks of ``C`` steps (the last one zero-padded: a zero key, value
   or query changes nothing). Per chunk ``n``: ``S_n = lambda^{-1} I + sum_{m<n} K_m^T K_m`` and
   ``M_n = sum_{m<n} V_m^T K_m`` (exclusive prefix sums over chunks), ``P_n = S_n^{-1}`` by a
   Cholesky factorisation of each ``S_n`` (``d x d``; re-solved directly at every chunk, so no error
   builds up along the sequence).
2. Inside a chunk, Woodbury with the Cholesky factor ``L`` of ``G = I + K P K^T`` (``C x C``; the
   leading ``i x i`` block of ``G`` has factor ``L_{<=i}``): the rows of ``X = L^{-1} K P`` are the
   Sherman–Morrison directions of the paper's recursion, ``A_i^{-1} = P - sum_{j<=i} x_j x_j^T``, so
   ``Z = A^{-1} Q`` row by row is ``Z = Q P - tril(Q X^T) X``, and
   ``out = Z M^T + tril(Z K^T) V`` (causal linear attention inside the chunk). ``L^{-1}`` comes
   from products of doubling blocks (:func:`_inverse_lower`), not a triangular solve.

Backward (derived here, no factorisation at all, only products): with ``G_out`` the output gradient,
``dZ = G_out M + tril(G_out V^T) K``; ``dQ = A^{-1} dZ`` by the same Woodbury rows; ``dA_i = -dq_i z_i^T``
gives ``dK = tril(G_out V^T)^T Z - tril(Z K^T)^T dQ - tril(dQ K^T)^T Z`` within the chunk,
``dV = tril(Z K^T)^T G_out``, the boundary gradients ``dS_n = -dQ_n^T Z_n`` and ``dM_n = G_out,n^T Z_n``
flow to earlier chunks through suffix sums (``dK_m += K_m sum_{n>m}(dS_n + dS_n^T) + V_m sum_{n>m} dM_n``,
``dV_m += K_m (sum_{n>m} dM_n)^T``), and ``d lambda = sum_t dq_t . z_t / lambda^2``.
Saved for the backward: the inputs, ``Z`` and ``X`` (``T x d`` each) and the ``N`` pairs ``P_n, M_n``:
memory linear in ``T`` and never a per-step ``d x d`` matrix.

On the CPU, sequence-heads are solved in cache-sized blocks of batch entries, gathered straight
from the token-major input, and the blocks run on one Python thread per torch thread (the products
and factorisations are too small for torch's intra-op threads to pay off).
torch.compile was tried on the block solve and gave no gain on this CPU (forward equal, backward
slower than eager, 25 s to compile), so the eager path is the only one.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

LAMBDA_FLOOR = 1e-6


def check_mesa_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor) -> None:
    """One clear error for inputs that are not ``q, k (B, H, T, d)``, ``v (B, H, T, dv)``, ``lam (H,)``."""
    if q.dim() != 4 or q.shape != k.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"q, k must be (B, H, T, d) and v (B, H, T, dv); got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if lam.shape != (q.shape[1],):
        raise ValueError(f"lam must have shape (H,) = ({q.shape[1]},), got {tuple(lam.shape)}")


def default_chunk_size(length: int, device: torch.device) -> int:
    """The chunk size ``C`` for a sequence of ``length`` steps on ``device``.

    Measured with ``benchmarks/mesa_layer.py``'s shapes (batch 256, 4 heads, key size 20, forward +
    backward, one thread of a 2-core CPU): at T = 1024, C = 24 and 32 were fastest (1.79 and 1.75 s;
    16: 1.94, 40: 2.04, 48: 2.21, 64: 2.55); at T = 256, 32 beat 16 and 64; at T = 50, one chunk of
    50 was as fast as any split (10 to 32). So a sequence of up to 64 steps is one chunk, a longer
    one chunks of 32. On a GPU (not measured here: no GPU was at hand) per-matrix costs are lower
    and launches dearer, so one chunk up to 128 steps and chunks of 64 beyond are taken.
    """
    limit = 128 if device.type == "cuda" else 64
    if length <= limit:
        return max(length, 1)
    return 64 if device.type == "cuda" else 32


BLOCK_BYTES = 1 << 22  # CPU: rows per block so that one block's largest temporaries stay within the caches


def _rows_per_block(rows: int, chunks: int, size: int, width: int, like: torch.Tensor) -> int:
    """How many sequence-heads to solve at once: all of them on a GPU; on the CPU a block whose
    ``C x (C + d + dv)`` temporaries take about :data:`BLOCK_BYTES`, so that they stay in the caches
    and are served from the allocator's free memory instead of freshly mapped pages (measured: on a
    2-core CPU at T = 1024 the unblocked solve spent about 60% of its time in page faults)."""
    if like.device.type != "cpu":
        return rows
    per_row = chunks * size * (size + width) * like.element_size()
    return max(1, min(rows, BLOCK_BYTES // per_row))


def _exclusive_prefix(x: torch.Tensor) -> torch.Tensor:
    """``out[:, n] = sum_{m<n} x[:, m]`` over the chunk dimension 1."""
    total = torch.cumsum(x, dim=1)
    return torch.cat([torch.zeros_like(x[:, :1]), total[:, :-1]], dim=1)


def _exclusive_suffix(x: torch.Tensor) -> torch.Tensor:
    """``out[:, n] = sum_{m>n} x[:, m]`` over the chunk dimension 1."""
    return _exclusive_prefix(x.flip(1)).flip(1)


def _times_inverse(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``x P``; ``P`` is ``(G, N, d, d)``, or ``(G, 1, 1, 1)`` for ``lambda I`` when a row is one chunk."""
    return x * inverse if inverse.shape[-1] == 1 else x @ inverse


def _inverse_lower(factor: torch.Tensor) -> torch.Tensor:
    """The inverse of lower-triangular ``factor (..., n, n)`` from matrix products only.

    Blocks of doubling size: ``[[A, 0], [B, D]]^{-1} = [[A^{-1}, 0], [-D^{-1} B A^{-1}, D^{-1}]]``,
    all blocks of one size at once (``log2 n`` levels; ``n`` padded to a power of two with an identity
    block). Replaces a batched triangular solve, whose per-matrix LAPACK calls cost several times
    more on the CPU (measured: 1 ms against 0.5 ms for 384 factors of 32 x 32 on one thread, 4.5 ms
    on two).
    """
    n, batch = factor.shape[-1], factor.shape[:-2]
    size = 1 << (n - 1).bit_length()
    if size != n:
        factor = F.pad(factor, (0, size - n, 0, size - n))
        factor.diagonal(dim1=-2, dim2=-1)[..., n:] = 1.0
    blocks = factor.diagonal(dim1=-2, dim2=-1).reciprocal().unsqueeze(-1).unsqueeze(-1)  # (..., n, 1, 1)
    width = 1
    while width < size:
        pairs = size // (2 * width)
        grid = factor.reshape(*batch, pairs, 2, width, pairs, 2, width)
        lower = grid.diagonal(dim1=-6, dim2=-3)[..., 1, :, 0, :, :].movedim(-1, -3)  # (..., pairs, w, w)
        first, second = blocks[..., 0::2, :, :], blocks[..., 1::2, :, :]
        corner = -(second @ lower @ first)
        blocks = torch.cat([torch.cat([first, torch.zeros_like(first)], -1), torch.cat([corner, second], -1)], -2)
        width *= 2
    return blocks[..., 0, :n, :n]


def _woodbury_rows(r: torch.Tensor, inverse: torch.Tensor, x: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """Rows ``A_i^{-1} r_i`` inside each chunk: ``R P - tril(R X^T) X`` (module docstring).

    ``xt`` is ``X^T`` stored row-major: on the CPU a product with a transposed view runs at about
    half the speed of one with a contiguous operand.
    """
    return _times_inverse(r, inverse) - (r @ xt).tril_() @ x


def _forward_block(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor
                   ) -> tuple[torch.Tensor, ...]:
    """Chunked rows ``(G, N, C, e)``, per-row ``scale (G,)`` -> ``(out, Z, X, P, M)``.

    A row of one chunk has ``S = I / lambda`` and ``M = 0``: ``P = lambda I`` needs no factorisation.
    """
    kt = k.mT.contiguous()
    if k.shape[1] == 1:
        inverse, cross = scale.view(-1, 1, 1, 1), None
    else:
        eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
        state = _exclusive_prefix(kt @ k) + eye / scale.view(-1, 1, 1, 1)
        cross = _exclusive_prefix(v.mT @ k)
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(state)).mT  # symmetric; .mT is row-major
    keys_inverse = _times_inverse(k, inverse)  # K P
    gram = keys_inverse @ kt
    gram.diagonal(dim1=-2, dim2=-1).add_(1.0)
    factor = torch.linalg.cholesky(gram)
    x = _inverse_lower(factor) @ keys_inverse  # X = L^{-1} K P
    solved = _woodbury_rows(q, inverse, x, x.mT.contiguous())
    out = (solved @ kt).tril_() @ v
    if cross is not None:
        out += solved @ cross.mT.contiguous()
    return out, solved, x, inverse, cross


def _backward_block(grad: torch.Tensor, k: torch.Tensor, v: torch.Tensor, solved: torch.Tensor, x: torch.Tensor,
                    inverse: torch.Tensor, cross: torch.Tensor | None, scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients ``(dq, dk, dv, d scale per row)`` of chunked rows (module docstring)."""
    kt = k.mT.contiguous()
    grad_values = (grad @ v.mT.contiguous()).tril_()  # tril(G V^T)
    keys_solved = (solved @ kt).tril_()  # tril(Z K^T)
    grad_solved = grad_values @ k
    if cross is not None:
        grad_solved += grad @ cross
    grad_q = _woodbury_rows(grad_solved, inverse, x, x.mT.contiguous())
    grad_k = (grad_values - (grad_q @ kt).tril_()).mT @ solved - keys_solved.mT @ grad_q
    grad_v = keys_solved.mT @ grad
    if cross is not None:  # gradients of the boundary states, to the earlier chunks' keys and values
        grad_state = grad_q.mT @ solved
        later_state = _exclusive_suffix(grad_state + grad_state.mT)
        later_cross = _exclusive_suffix(grad.mT @ solved)
        grad_k += v @ later_cross - k @ later_state
        grad_v += k @ later_cross.mT
    grad_scale = (grad_q * solved).sum(dim=(1, 2, 3)) / scale ** 2
    return grad_q, grad_k, grad_v, grad_scale


def _gather_chunks(block: torch.Tensor, size: int) -> torch.Tensor:
    """Token-major ``(g, T, ..., H, e)`` -> contiguous head-major chunks ``(..., g*H, N, C, e)``, zero-padded."""
    length, heads, width = block.shape[1], block.shape[-2], block.shape[-1]
    x = block.movedim(1, -2)  # (g, ..., H, T, e)
    x = x.movedim(0, -4) if x.dim() == 5 else x  # (..., g, H, T, e)
    pad = -length % size
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(*x.shape[:-4], x.shape[-4] * heads, -1, size, width)


def _scatter_chunks(chunks: torch.Tensor, target: torch.Tensor) -> None:
    """Write head-major chunks ``(g*H, N, C, e)`` into the token-major view ``target (g, T, H, e)``."""
    batch, length, heads, width = target.shape
    target.copy_(chunks.view(batch, heads, -1, width)[:, :, :length].transpose(1, 2))


def _for_each_block(firsts: range, solve: Callable[[int], None], device: torch.device) -> None:
    """Run ``solve(first)`` for every block; on a multi-threaded CPU, blocks run concurrently.

    The blocks write disjoint slices, so the result is the same bit for bit. Threads over blocks
    use the cores far better than torch's intra-op threads inside each small product or per-matrix
    factorisation (measured on 2 cores, T = 1024: the solve ran 2-3x faster this way).
    """
    workers = min(torch.get_num_threads(), len(firsts)) if device.type == "cpu" else 1

    def guarded(first: int) -> None:
        with torch.no_grad():  # grad mode is per thread; the solve records nothing
            solve(first)

    if workers <= 1:
        for first in firsts:
            guarded(first)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(guarded, firsts):
            pass


class ParallelMesaFunction(torch.autograd.Function):
    """The chunkwise-parallel mesa solve with its product-only backward (module docstring).

    Input ``qkv (B, T, 3, H, d)`` (queries, keys, values of every head, token-major: the layout a
    fused projection produces) and ``lam (H,)``; output ``(B, T, H, d)``. Sequence-heads are
    independent, so they are solved in blocks of batch entries (:func:`_rows_per_block`), each
    gathered into chunks on its own: no full-size copy of the inputs, the output or the gradient.
    """

    @staticmethod
    def forward(ctx, qkv, lam, chunk_size: int):  # type: ignore[override]
        batch, length, _, heads, d = qkv.shape
        chunks = -(-length // chunk_size)
        rows = batch * heads
        scale = lam.clamp_min(LAMBDA_FLOOR).repeat(batch)  # row b * H + h has head h's lambda
        out = qkv.new_empty(batch, length, heads, d)
        solved, x = (qkv.new_empty(rows, chunks, chunk_size, d) for _ in range(2))
        inverse = qkv.new_empty((rows, chunks, d, d) if chunks > 1 else (rows, 1, 1, 1))
        cross = qkv.new_empty(rows, chunks, d, d) if chunks > 1 else None
        step = max(1, _rows_per_block(rows, chunks, chunk_size, 2 * d, qkv) // heads)

        def solve(first: int) -> None:
            entries, part = slice(first, first + step), slice(first * heads, (first + step) * heads)
            q, k, v = _gather_chunks(qkv[entries], chunk_size).unbind(0)
            found = _forward_block(q, k, v, scale[part])
            _scatter_chunks(found[0], out[entries])
            for target, value in zip((solved, x, inverse, cross), found[1:]):
                if target is not None:
                    target[part] = value

        _for_each_block(range(0, batch, step), solve, qkv.device)
        ctx.save_for_backward(qkv, solved, x, inverse, cross, lam)
        ctx.chunk_size, ctx.step = chunk_size, step
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        qkv, solved, x, inverse, cross, lam = ctx.saved_tensors
        batch, heads = qkv.shape[0], qkv.shape[3]
        scale = lam.clamp_min(LAMBDA_FLOOR).repeat(batch)
        grad_qkv, grad_scale = torch.empty_like(qkv), torch.empty_like(scale)
        def solve(first: int) -> None:
            entries, part = slice(first, first + ctx.step), slice(first * heads, (first + ctx.step) * heads)
            _, k, v = _gather_chunks(qkv[entries], ctx.chunk_size).unbind(0)
            grad = _gather_chunks(grad_out[entries], ctx.chunk_size)
            *grads, grad_scale[part] = _backward_block(
                grad, k, v, solved[part], x[part], inverse[part], None if cross is None else cross[part], scale[part])
            for index, value in enumerate(grads):
                _scatter_chunks(value, grad_qkv[entries, :, index])

        _for_each_block(range(0, batch, ctx.step), solve, qkv.device)
        grad_lam = grad_scale.view(batch, heads).sum(0) * (lam >= LAMBDA_FLOOR).to(grad_scale.dtype)
        return grad_qkv, grad_lam, None


def _chunk_size_for(length: int, device: torch.device, chunk_size: int | None) -> int:
    if chunk_size is None:
        return default_chunk_size(length, device)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


def mesa_parallel_packed(qkv: torch.Tensor, lam: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Causal mesa attention ``(B, T, H, d)`` from token-major ``qkv (B, T, 3, H, d)`` (module docstring).

    The fast entry point for a layer whose fused projection yields queries, keys and values
    together: nothing is copied at full size. ``chunk_size`` ``None`` picks :func:`default_chunk_size`.
    """
    if qkv.dim() != 5 or qkv.shape[2] != 3:
        raise ValueError(f"qkv must be (B, T, 3, H, d), got {tuple(qkv.shape)}")
    if lam.shape != (qkv.shape[3],):
        raise ValueError(f"lam must have shape (H,) = ({qkv.shape[3]},), got {tuple(lam.shape)}")
    return ParallelMesaFunction.apply(qkv, lam, _chunk_size_for(qkv.shape[1], qkv.device, chunk_size))


def mesa_parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor,
                  chunk_size: int | None = None) -> torch.Tensor:
    """Causal mesa attention ``(B, H, T, dv)`` by the chunkwise-parallel solve (module docstring).

    Packs ``q, k (B, H, T, d)`` and ``v (B, H, T, dv)`` for :func:`mesa_parallel_packed`; when
    ``d != dv`` the narrower ones are zero-padded, which is exact (a zero key or query coordinate
    adds an independent ``lambda^{-1}`` block to ``A``; a zero value coordinate gives a zero output).
    """
    check_mesa_shapes(q, k, v, lam)
    d, dv = k.shape[-1], v.shape[-1]
    width = max(d, dv)
    qkv = torch.stack([F.pad(x, (0, width - x.shape[-1])) for x in (q, k, v)], dim=3)  # (B, H, T, 3, e)
    out = mesa_parallel_packed(qkv.permute(0, 2, 3, 1, 4), lam, chunk_size)
    return out.transpose(1, 2)[..., :dv]


__all__ = ["LAMBDA_FLOOR", "ParallelMesaFunction", "check_mesa_shapes", "default_chunk_size", "mesa_parallel",
           "mesa_parallel_packed"]
