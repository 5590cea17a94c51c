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
   ``out = Z M^T + tril(Z K^T) V`` (causal linear attention inside the chunk); ``X`` is one batched
   triangular solve.

Backward (derived here, no factorisation at all, only products): with ``G_out`` the output gradient,
``dZ = G_out M + tril(G_out V^T) K``; ``dQ = A^{-1} dZ`` by the same Woodbury rows; ``dA_i = -dq_i z_i^T``
gives ``dK = tril(G_out V^T)^T Z - tril(Z K^T)^T dQ - tril(dQ K^T)^T Z`` within the chunk,
``dV = tril(Z K^T)^T G_out``, the boundary gradients ``dS_n = -dQ_n^T Z_n`` and ``dM_n = G_out,n^T Z_n``
flow to earlier chunks through suffix sums (``dK_m += K_m sum_{n>m}(dS_n + dS_n^T) + V_m sum_{n>m} dM_n``,
``dV_m += K_m (sum_{n>m} dM_n)^T``), and ``d lambda = sum_t dq_t . z_t / lambda^2``.
Saved for the backward: the inputs, ``Z`` and ``X`` (``T x d`` each) and the ``N`` pairs ``P_n, M_n``:
memory linear in ``T`` and never a per-step ``d x d`` matrix.

On the CPU, sequence-heads are solved in cache-sized blocks of batch entries, gathered straight
from the token-major input, and the blocks run on one Python thread per torch thread
(:func:`_for_each_block`).
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
    backward of the solve, 1 / 2 threads of a 2-core CPU, seconds): at T = 1024, C = 16: 2.90 / 1.48,
    24: 2.81 / 1.49, 32: 2.68 / 1.45, 48: 2.88 / 1.49; at T = 256, 16: 0.60 / 0.25, 24: 0.58 / 0.27,
    32: 0.55 / 0.25, 48: 0.72 / 0.35, 64: 0.76 / 0.36; at T = 50, one chunk of 50: 0.089 / 0.077,
    25: 0.087 / 0.079, 17: 0.097 / 0.099, 13: 0.117 / 0.116. So a sequence of up to 64 steps is one
    chunk (no padding, no boundary states), a longer one chunks of 32. On a GPU (not measured here: no GPU was at hand) per-matrix costs are lower
    and launches dearer, so one chunk up to 128 steps and chunks of 64 beyond are taken.
    """
    limit = 128 if device.type == "cuda" else 64
    if length <= limit:
        return max(length, 1)
    return 64 if device.type == "cuda" else 32


BLOCK_BYTES = 1 << 22  # CPU: rows per block so that one block's largest temporaries stay within the caches


def _entries_per_block(batch: int, heads: int, chunks: int, size: int, width: int, like: torch.Tensor) -> int:
    """How many batch entries (``heads`` sequence-heads each) to solve at once.

    All of them on a GPU. On the CPU, a block whose ``C x (C + d + dv)`` temporaries take about
    :data:`BLOCK_BYTES`, so that they stay in the caches and are served from the allocator's free
    memory instead of freshly mapped pages (measured: on a 2-core CPU at T = 1024 the unblocked
    solve spent about 60% of its time in page faults), and a number of blocks that the block
    threads (:func:`_for_each_block`) share evenly (at T = 50 on two threads, 5 blocks took 20%
    longer than 6).
    """
    if like.device.type != "cpu":
        return batch
    per_entry = heads * chunks * size * (size + width) * like.element_size()
    blocks = -(-batch // max(1, BLOCK_BYTES // per_entry))
    workers = torch.get_num_threads()
    if blocks > 1 and workers > 1:
        blocks = -(-blocks // workers) * workers
    return -(-batch // min(blocks, batch))


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


def _woodbury_rows(r: torch.Tensor, inverse: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Rows ``A_i^{-1} r_i`` inside each chunk: ``R P - tril(R X^T) X`` (module docstring).

    Products take transposed operands as views: at these shapes (C x C x d, d = 20) a transposed
    view multiplies as fast as a contiguous copy, so copying first only costs time.
    """
    return _times_inverse(r, inverse) - (r @ x.mT).tril_() @ x


def _forward_block(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor
                   ) -> tuple[torch.Tensor, ...]:
    """Chunked rows ``(G, N, C, e)``, per-row ``scale (G,)`` -> ``(out, Z, X, P, M)``.

    A row of one chunk has ``S = I / lambda`` and ``M = 0``: ``P = lambda I`` needs no factorisation.
    """
    kt = k.mT
    if k.shape[1] == 1:
        inverse, cross = scale.view(-1, 1, 1, 1), None
    else:
        eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
        state = _exclusive_prefix(kt @ k) + eye / scale.view(-1, 1, 1, 1)
        cross = _exclusive_prefix(v.mT @ k)
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(state))
    keys_inverse = _times_inverse(k, inverse)  # K P
    gram = keys_inverse @ kt
    gram.diagonal(dim1=-2, dim2=-1).add_(1.0)
    # X = L^{-1} K P, solved as X^T L^T = (K P)^T: on the CPU this form takes 40% less time at C = 50
    factor = torch.linalg.cholesky(gram)
    x = torch.linalg.solve_triangular(factor.mT, keys_inverse.mT, upper=True, left=False).mT
    solved = _woodbury_rows(q, inverse, x)
    out = (solved @ kt).tril_() @ v
    if cross is not None:
        out += solved @ cross.mT
    return out, solved, x, inverse, cross


def _backward_block(grad: torch.Tensor, k: torch.Tensor, v: torch.Tensor, solved: torch.Tensor, x: torch.Tensor,
                    inverse: torch.Tensor, cross: torch.Tensor | None, scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients ``(dq, dk, dv, d scale per row)`` of chunked rows (module docstring)."""
    kt = k.mT
    grad_values = (grad @ v.mT).tril_()  # tril(G V^T)
    keys_solved = (solved @ kt).tril_()  # tril(Z K^T)
    grad_solved = grad_values @ k
    if cross is not None:
        grad_solved += grad @ cross
    grad_q = _woodbury_rows(grad_solved, inverse, x)
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
    use the cores better than torch's intra-op threads, which leave the per-matrix Cholesky
    factorisations on one core. While the blocks run, torch's intra-op thread count (a process-wide
    setting) is one, so that each block thread does not start a team of its own; it is restored
    afterwards. Measured on 2 cores, forward + backward at batch 256 (T = 50 / 256): 0.061 / 0.27 s
    this way, 0.115 / 0.38 s with the block threads' intra-op teams, 0.071 / 0.32 s with the blocks
    in sequence on intra-op threads.
    """
    threads = torch.get_num_threads()
    workers = min(threads, len(firsts)) if device.type == "cpu" else 1

    def guarded(first: int) -> None:
        with torch.no_grad():  # grad mode is per thread; the solve records nothing
            solve(first)

    if workers <= 1:
        for first in firsts:
            guarded(first)
        return
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(guarded, firsts):
                pass
    finally:
        torch.set_num_threads(threads)


class ParallelMesaFunction(torch.autograd.Function):
    """The chunkwise-parallel mesa solve with its product-only backward (module docstring).

    Input ``qkv (B, T, 3, H, d)`` (queries, keys, values of every head, token-major: the layout a
    fused projection produces) and ``lam (H,)``; output ``(B, T, H, d)``. Sequence-heads are
    independent, so they are solved in blocks of batch entries (:func:`_entries_per_block`), each
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
        step = _entries_per_block(batch, heads, chunks, chunk_size, 2 * d, qkv)

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
