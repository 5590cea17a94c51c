import math

import pytest
import torch

import learnlab.incontext.attention as attention_module
from learnlab.incontext.attention import InContextRegressor, LinearSelfAttention


def _random_tokens(batch=5, tokens=7, dim=6, seed=0, dtype=torch.float64):
    return torch.randn(batch, tokens, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _random_layer(dim=6, heads=1, key_size=None, seed=1, **kwargs):
    layer = LinearSelfAttention(dim, num_heads=heads, key_size=key_size, dtype=torch.float64, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) / 3)
    return layer


def _naive_forward(layer, tokens):
    """Explicit loops over tasks, heads and tokens (paper eq. 6)."""
    out = tokens.clone()
    num_tokens = tokens.shape[1]
    context = range(num_tokens if layer.include_query_in_context else num_tokens - 1)
    for b in range(tokens.shape[0]):
        for j in range(num_tokens):
            for h in range(layer.num_heads):
                scores = torch.stack([
                    (layer.key[h] @ tokens[b, i]) @ (layer.query[h] @ tokens[b, j]) for i in context
                ])
                if layer.softmax:
                    scores = torch.softmax(scores, dim=0)
                mixed = sum(score * tokens[b, i] for score, i in zip(scores, context))
                out[b, j] = out[b, j] + layer.projection[h] @ (layer.value[h] @ mixed)
    return out


@pytest.mark.parametrize("order", ["auto", "covariance", "kernel"])
@pytest.mark.parametrize("heads,key_size", [(1, None), (3, None), (2, 3)])
@pytest.mark.parametrize("include_query", [False, True])
def test_linear_attention_matches_naive_loops(order, heads, key_size, include_query):
    layer = _random_layer(heads=heads, key_size=key_size, linear_order=order,
                          include_query_in_context=include_query)
    tokens = _random_tokens()
    with torch.no_grad():
        torch.testing.assert_close(layer(tokens), _naive_forward(layer, tokens), rtol=0, atol=1e-12)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("include_query", [False, True])
def test_softmax_attention_matches_naive_loops(heads, include_query):
    layer = _random_layer(heads=heads, softmax=True, include_query_in_context=include_query)
    tokens = _random_tokens()
    with torch.no_grad():
        torch.testing.assert_close(layer(tokens), _naive_forward(layer, tokens), rtol=0, atol=1e-12)


def test_softmax_weights_sum_to_one():
    # With W_V = P = I, the update of token j is the attention-weighted average of the context.
    dim = 4
    layer = _random_layer(dim=dim, softmax=True)
    with torch.no_grad():
        layer.value.copy_(torch.eye(dim))
        layer.projection.copy_(torch.eye(dim))
        constant = torch.ones(3, 6, dim, dtype=torch.float64)
        torch.testing.assert_close(layer(constant), 2 * constant)


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("include_query", [False, True])
def test_forward_query_is_last_row_of_forward(softmax, include_query):
    layer = _random_layer(heads=2, softmax=softmax, include_query_in_context=include_query)
    tokens = _random_tokens()
    with torch.no_grad():
        torch.testing.assert_close(layer.forward_query(tokens), layer(tokens)[:, -1], rtol=0, atol=1e-12)


def test_padding_does_not_change_results(monkeypatch):
    layer = _random_layer(dim=11, heads=2, key_size=5)
    tokens = _random_tokens(dim=11)
    with torch.no_grad():
        padded = layer(tokens), layer.forward_query(tokens)
        monkeypatch.setattr(attention_module, "_CPU_PAD_MULTIPLE", 1)
        assert layer.padded_width("cpu") == 11
        plain = layer(tokens), layer.forward_query(tokens)
    for a, b in zip(padded, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("recurrent", [False, True])
def test_stack_applies_layers_in_order_and_predict_reads_the_query(recurrent):
    model = InContextRegressor(6, num_layers=3, num_heads=2, recurrent=recurrent, token_clip=2.0,
                               dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(300.0)  # large enough that clipping is active
    assert len(model.layers) == (1 if recurrent else 3)
    tokens = _random_tokens(dim=6)
    expected = tokens
    with torch.no_grad():
        for index in range(3):
            expected = model.layer_at(index)(expected).clamp(-2.0, 2.0)
        out = model(tokens)
        assert (out.abs() == 2.0).any()
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(model.predict(tokens), -expected[:, -1, -1], rtol=0, atol=1e-12)


def test_mixed_softmax_layers():
    model = InContextRegressor(6, num_layers=2, softmax=(True, False))
    assert model.layers[0].softmax and not model.layers[1].softmax
    with pytest.raises(ValueError):
        InContextRegressor(6, num_layers=2, softmax=(True, False), recurrent=True)


def test_init_is_variance_scaling_and_seeded():
    dim, scale = 64, 0.5
    layer = LinearSelfAttention(dim, num_heads=2, init_scale=scale, generator=torch.Generator().manual_seed(0))
    again = LinearSelfAttention(dim, num_heads=2, init_scale=scale, generator=torch.Generator().manual_seed(0))
    assert torch.equal(layer.query, again.query) and torch.equal(layer.projection, again.projection)
    for name, fan_in in [("query", dim), ("key", dim), ("value", dim), ("projection", 2 * dim)]:
        weights = getattr(layer, name)
        std = math.sqrt(scale / fan_in)
        assert weights.std().item() == pytest.approx(std, rel=0.05)
        assert weights.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-6
    model = InContextRegressor(11, num_layers=4)
    assert all(layer.init_scale == pytest.approx(0.0005) for layer in model.layers)


def test_set_weights_and_weight_products():
    layer = LinearSelfAttention(3, dtype=torch.float64)
    q, k, v, p = (torch.randn(3, 3, dtype=torch.float64) for _ in range(4))
    layer.set_weights(q, k, v, p)
    key_query, projection_value = layer.weight_products()
    assert key_query.shape == projection_value.shape == (1, 3, 3)
    torch.testing.assert_close(key_query[0], k.T @ q)
    torch.testing.assert_close(projection_value[0], p @ v)
    with pytest.raises(ValueError):
        layer.set_weights(q[:2], k, v, p)


def test_gradients_flow_and_are_finite():
    model = InContextRegressor(11, num_layers=2, num_heads=2)
    tokens = torch.randn(8, 11, 11)
    model.predict(tokens).pow(2).mean().backward()
    for parameter in model.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
        assert parameter.grad.abs().sum() > 0


def test_bad_token_shape_raises():
    layer = LinearSelfAttention(5)
    with pytest.raises(ValueError):
        layer(torch.randn(2, 4, 6))
    with pytest.raises(ValueError):
        layer(torch.randn(2, 1, 5))  # no context token
