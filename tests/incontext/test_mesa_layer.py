import pytest
import torch

from learnlab.incontext.mesa_layer import (
    MesaLayer,
    check_mesa_identities,
    mesa_attention,
    mesa_chunked,
    mesa_parallel,
    mesa_recurrent,
    mesa_reference,
    relative_error,
)
from learnlab.incontext import mesa_parallel as parallel_module
from learnlab.incontext.mesa_parallel import default_chunk_size, mesa_parallel_packed


def draw(b, h, t, d, dv=None, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, t, d, generator=generator, dtype=dtype) / d**0.5
    k = torch.randn(b, h, t, d, generator=generator, dtype=dtype) / d**0.5
    v = torch.randn(b, h, t, dv or d, generator=generator, dtype=dtype)
    lam = torch.linspace(0.5, 2.0, h, dtype=dtype)
    return q, k, v, lam


def ridge_solution_at(q, k, v, lam, t):
    """The closed form of paper §5 for one head and position, from scratch."""
    keys, values = k[: t + 1], v[: t + 1]
    phi = values.T @ keys @ torch.linalg.inv(keys.T @ keys + torch.eye(k.shape[-1], dtype=k.dtype) / lam)
    return phi @ q[t]


def test_reference_is_the_ridge_solution():
    q, k, v, lam = draw(1, 2, 12, 4, dv=3)
    out = mesa_reference(q, k, v, lam)
    for head in range(2):
        for t in (0, 5, 11):
            expected = ridge_solution_at(q[0, head], k[0, head], v[0, head], lam[head], t)
            assert torch.allclose(out[0, head, t], expected, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 64])
def test_chunked_and_recurrent_equal_reference_float64(chunk_size):
    q, k, v, lam = draw(2, 3, 50, 5, dv=4)
    reference = mesa_reference(q, k, v, lam)
    assert relative_error(mesa_chunked(q, k, v, lam, chunk_size=chunk_size), reference) <= 1e-10
    assert relative_error(mesa_recurrent(q, k, v, lam), reference) <= 1e-10


def test_chunked_gradients_match_reference_autograd_float64():
    q, k, v, lam = draw(2, 2, 40, 4, dv=3, seed=1)
    weights = torch.randn(2, 2, 40, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    leaves_ref = [x.clone().requires_grad_() for x in (q, k, v, lam)]
    leaves = [x.clone().requires_grad_() for x in (q, k, v, lam)]
    expected = torch.autograd.grad((mesa_reference(*leaves_ref) * weights).sum(), leaves_ref)
    found = torch.autograd.grad((mesa_chunked(*leaves, chunk_size=8) * weights).sum(), leaves)
    for a, b in zip(found, expected):
        assert relative_error(a, b) <= 1e-10


@pytest.mark.parametrize("length, chunk_size", [(50, 1), (50, 7), (50, 16), (50, 50), (50, 64), (37, 8), (65, 32)])
def test_parallel_equals_reference_float64_values_and_gradients(length, chunk_size):
    """Several chunk sizes, ragged last chunks (50 = 7 * 7 + 1), one chunk, a chunk longer than T."""
    q, k, v, lam = draw(2, 3, length, 5, dv=4, seed=length + chunk_size)
    weights = torch.randn(2, 3, length, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    leaves_ref = [x.clone().requires_grad_() for x in (q, k, v, lam)]
    leaves = [x.clone().requires_grad_() for x in (q, k, v, lam)]
    reference = mesa_reference(*leaves_ref)
    expected = torch.autograd.grad((reference * weights).sum(), leaves_ref)
    out = mesa_parallel(*leaves, chunk_size=chunk_size)
    assert out.shape == reference.shape
    assert relative_error(out, reference) <= 1e-10
    found = torch.autograd.grad((out * weights).sum(), leaves)
    for a, b in zip(found, expected):
        assert relative_error(a, b) <= 1e-10


def test_parallel_gradcheck_and_lambda_floor():
    q, k, v, lam = draw(1, 2, 9, 3, dv=2, seed=5)
    inputs = tuple(x.clone().requires_grad_() for x in (q, k, v, lam))
    assert torch.autograd.gradcheck(lambda *a: mesa_parallel(*a, chunk_size=4), inputs)
    below = torch.tensor([1e-9, 1.0], dtype=torch.float64, requires_grad=True)  # clamped head: no gradient
    mesa_parallel(q, k, v, below, chunk_size=4).sum().backward()
    assert below.grad[0] == 0 and below.grad[1] != 0


def test_parallel_float32_at_4096_tokens():
    q, k, v, lam = draw(1, 2, 4096, 8, seed=6)
    with torch.no_grad():
        reference = mesa_reference(q, k, v, lam)
        found = mesa_parallel(q.float(), k.float(), v.float(), lam.float())
    assert found.dtype == torch.float32
    assert relative_error(found, reference) <= 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_parallel_on_cuda_equals_the_cpu_reference():
    q, k, v, lam = draw(4, 2, 300, 6, seed=8)
    leaves = [x.cuda().requires_grad_() for x in (q, k, v, lam)]
    out = mesa_parallel(*leaves)
    assert relative_error(out.detach().cpu(), mesa_reference(q, k, v, lam)) <= 1e-10
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in leaves)


def test_default_chunk_size_per_length_and_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_chunk_size(50, cpu) == 50 and default_chunk_size(1, cpu) == 1  # one chunk, no padding
    assert default_chunk_size(1024, cpu) == 32 and default_chunk_size(1024, cuda) == 64
    with pytest.raises(ValueError, match="chunk_size"):
        mesa_parallel(*draw(1, 1, 4, 2), chunk_size=0)


def test_parallel_unequal_value_width_and_threads_give_identical_results(monkeypatch):
    monkeypatch.setattr(parallel_module, "BLOCK_BYTES", 1)  # every batch entry its own block: 3 blocks on 2 threads
    q, k, v, lam = draw(3, 2, 70, 4, dv=6)
    expected = mesa_reference(q, k, v, lam)
    assert relative_error(mesa_parallel(q, k, v, lam, chunk_size=16), expected) < 1e-12
    packed = torch.stack([q, k, draw(3, 2, 70, 4, seed=1)[2]], dim=3).permute(0, 2, 3, 1, 4)  # (B, T, 3, H, d)
    threads, results = torch.get_num_threads(), []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            leaf = packed.clone().requires_grad_()
            out = mesa_parallel_packed(leaf, lam, chunk_size=8)
            out.pow(2).sum().backward()
            assert torch.get_num_threads() == count  # the intra-op thread count set aside for the blocks is back
            results.append((out, leaf.grad))
    finally:
        torch.set_num_threads(threads)
    (serial, serial_grad), (concurrent, concurrent_grad) = results
    assert torch.equal(serial, concurrent) and torch.equal(serial_grad, concurrent_grad)  # disjoint slices per block
    with pytest.raises(ValueError, match="qkv must be"):
        mesa_parallel_packed(packed[:, :, :2], lam)


def test_custom_backward_gradcheck():
    q, k, v, lam = draw(1, 2, 5, 2, seed=3)
    inputs = tuple(x.clone().requires_grad_() for x in (q, k, v, lam))
    assert torch.autograd.gradcheck(lambda *a: mesa_chunked(*a, chunk_size=2), inputs, fast_mode=True)


def test_float32_long_sequence_matches_float64_reference():
    q, k, v, lam = draw(1, 2, 1024, 6, seed=4)
    with torch.no_grad():
        reference = mesa_reference(q, k, v, lam)
        chunked = mesa_chunked(q.float(), k.float(), v.float(), lam.float(), chunk_size=64)
    assert chunked.dtype == torch.float32
    assert relative_error(chunked, reference) <= 1e-4


def test_mesa_layer_paths_agree_and_lambda_learns():
    assert MesaLayer(8).method == "parallel"
    layer = MesaLayer(8, num_heads=2, key_size=4, chunk_size=5, init_std=0.3, generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)
    tokens = torch.randn(3, 17, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = layer(tokens)
    assert out.shape == (3, 17, 8)
    for method in ("reference", "chunked", "recurrent"):
        assert relative_error(out, layer(tokens, method=method)) <= 1e-10
    out.pow(2).sum().backward()
    assert layer.lam.grad is not None and layer.lam.grad.abs().sum() > 0


def test_bad_input_raises():
    q, k, v, lam = draw(1, 2, 5, 3)
    with pytest.raises(ValueError):
        mesa_attention(q, k, v, lam, method="nope")
    with pytest.raises(ValueError):
        mesa_chunked(q, k, v, lam[:1])


def test_identity_check_reports_float_precision_errors():
    measured = check_mesa_identities(torch.Generator().manual_seed(0), long_length=160)
    assert measured["mesa_identity_length_float32"] == 160
    assert measured["mesa_forward_relative_error_float64"] < 1e-10
    assert max(measured["mesa_input_grad_relative_error_float64"], measured["mesa_lambda_grad_relative_error_float64"]) < 1e-8
    assert 0 < measured["mesa_forward_relative_error_float32"] < 1e-4  # float32 is measured, not float64 again
    assert 0 < measured["mesa_grad_relative_error_float32"] < 1e-3
    assert measured["mesa_grad_relative_error_float32"] == max(measured["mesa_input_grad_relative_error_float32"],
                                                               measured["mesa_lambda_grad_relative_error_float32"])
