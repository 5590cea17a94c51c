import pytest
import torch

from learnlab.incontext.regression import (
    RegressionBatch,
    RegressionTaskSpec,
    half_mse,
    sample_regression_tasks,
)


def _sample(spec=RegressionTaskSpec(), batch_size=64, seed=0, **kwargs):
    return sample_regression_tasks(spec, batch_size, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_shapes_and_dtype():
    spec = RegressionTaskSpec(dim=7, num_context=5)
    batch = _sample(spec, 13, dtype=torch.float64)
    assert batch.x.shape == (13, 5, 7)
    assert batch.y.shape == (13, 5)
    assert batch.x_query.shape == (13, 7)
    assert batch.y_query.shape == (13,)
    assert batch.w.shape == (13, 7)
    assert batch.tokens().shape == (13, 6, 8)
    assert all(t.dtype == torch.float64 for t in (batch.x, batch.y, batch.x_query, batch.y_query, batch.w))
    assert batch.batch_size == 13


def test_same_seed_same_batch_and_different_seed_differs():
    a, b, c = _sample(seed=3), _sample(seed=3), _sample(seed=4)
    assert torch.equal(a.tokens(), b.tokens()) and torch.equal(a.w, b.w)
    assert not torch.equal(a.x, c.x)


def test_uniform_inputs_follow_the_code_convention():
    batch = _sample(RegressionTaskSpec(), 4096)
    inputs = torch.cat([batch.x.flatten(), batch.x_query.flatten()])
    assert inputs.min() >= -0.5 and inputs.max() <= 0.5
    assert inputs.min() < -0.49 and inputs.max() > 0.49
    assert inputs.var().item() == pytest.approx(1 / 12, rel=0.03)
    wide = _sample(RegressionTaskSpec(input_range=2.0), 4096).x
    assert wide.min() >= -1 and wide.max() <= 1 and wide.min() < -0.98


def test_normal_inputs_and_weight_scale():
    batch = _sample(RegressionTaskSpec(input_distribution="normal", input_range=2.0, weight_scale=3.0), 4096)
    assert batch.x.std().item() == pytest.approx(1.0, rel=0.03)
    assert batch.w.std().item() == pytest.approx(3.0, rel=0.03)


def test_labels_are_linear_without_noise():
    batch = _sample(dtype=torch.float64)
    torch.testing.assert_close(batch.y, torch.einsum("bnd,bd->bn", batch.x, batch.w))
    torch.testing.assert_close(batch.y_query, (batch.x_query * batch.w).sum(-1))


def test_noise_only_on_context_labels():
    batch = _sample(RegressionTaskSpec(noise_std=0.5), 4096, dtype=torch.float64)
    residual = batch.y - torch.einsum("bnd,bd->bn", batch.x, batch.w)
    assert residual.std().item() == pytest.approx(0.5, rel=0.03)
    torch.testing.assert_close(batch.y_query, (batch.x_query * batch.w).sum(-1))


def test_tokens_layout_and_query_slot_is_zero():
    batch = _sample(RegressionTaskSpec(dim=3, num_context=4), 5)
    tokens = batch.tokens()
    torch.testing.assert_close(tokens[:, :4, :3], batch.x)
    torch.testing.assert_close(tokens[:, :4, 3], batch.y)
    torch.testing.assert_close(tokens[:, 4, :3], batch.x_query)
    assert torch.all(tokens[:, 4, 3] == 0)


def test_to_casts_every_field():
    batch = _sample().to(dtype=torch.float64)
    assert isinstance(batch, RegressionBatch) and batch.x.dtype == torch.float64


def test_half_mse():
    assert half_mse(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])).item() == pytest.approx(2.5)


@pytest.mark.parametrize(
    "kwargs",
    [{"dim": 0}, {"num_context": 0}, {"input_range": 0.0}, {"input_distribution": "laplace"},
     {"weight_scale": -1.0}, {"noise_std": -0.1}],
)
def test_invalid_spec_raises(kwargs):
    with pytest.raises(ValueError):
        RegressionTaskSpec(**kwargs)
