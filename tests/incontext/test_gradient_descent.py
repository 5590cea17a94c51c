import pytest
import torch

from learnlab.incontext.attention import InContextRegressor, LinearSelfAttention
from learnlab.incontext.gradient_descent import (
    GradientDescentLearner,
    SpectralTaskSummary,
    gd_layer_weights,
    gd_plus_plus_layer_weights,
    gd_plus_plus_step_on_tokens,
    gd_step_on_tokens,
    optimal_one_step_eta,
    tune_gradient_descent,
)
from learnlab.incontext.regression import RegressionTaskSpec, half_mse, sample_regression_tasks

DIM, NUM_CONTEXT = 10, 10
SPEC = RegressionTaskSpec(dim=DIM, num_context=NUM_CONTEXT)


def _batch(size=256, seed=0, dtype=torch.float64, spec=SPEC):
    return sample_regression_tasks(spec, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gd_layer(eta, initial_weights=None, dtype=torch.float64):
    layer = LinearSelfAttention(DIM + 1, dtype=dtype)
    return layer.set_weights(*gd_layer_weights(DIM, eta, NUM_CONTEXT, initial_weights, dtype=dtype))


def test_construction_shapes():
    query, key, value, projection = gd_layer_weights(3, 2.0, 4, initial_weights=torch.ones(3))
    assert all(m.shape == (4, 4) and m.dtype == torch.float64 for m in (query, key, value, projection))
    torch.testing.assert_close(value[3], torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(projection, 0.5 * torch.eye(4, dtype=torch.float64))
    _, _, value, projection = gd_plus_plus_layer_weights(3, 2.0, 0.1, 4)
    torch.testing.assert_close(value, torch.diag(torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=torch.float64)))
    torch.testing.assert_close(projection, torch.diag(torch.tensor([-0.1, -0.1, -0.1, 0.5], dtype=torch.float64)))


@pytest.mark.parametrize("nonzero_w0", [False, True])
def test_prop1_layer_is_one_gd_step_on_every_token_float64(nonzero_w0):
    batch, eta = _batch(), 4.5
    tokens = batch.tokens()
    w0 = torch.randn(DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64) if nonzero_w0 else None
    if w0 is not None:
        tokens[:, -1, -1] = -(batch.x_query @ w0)  # the caller sets the query y-slot to -W0 x_q
    with torch.no_grad():
        layer_out = _gd_layer(eta, w0)(tokens)
    gd_out = gd_step_on_tokens(tokens, eta, initial_weights=w0)
    assert (layer_out - gd_out).abs().max().item() <= 1e-10
    # and the readout is the prediction of W0 + dW, with dW from explicit least-squares GD
    w0 = torch.zeros(DIM, dtype=torch.float64) if w0 is None else w0
    residual = batch.y - batch.x @ w0
    weights = w0 + (eta / NUM_CONTEXT) * torch.einsum("bn,bnd->bd", residual, batch.x)
    torch.testing.assert_close(-layer_out[:, -1, -1], (weights * batch.x_query).sum(-1), rtol=0, atol=1e-10)
    torch.testing.assert_close(layer_out[..., :-1], tokens[..., :-1], rtol=0, atol=0)


def test_gd_plus_plus_layer_is_one_gd_plus_plus_step_float64():
    tokens, eta, gamma = _batch().tokens(), 3.0, 0.2
    layer = LinearSelfAttention(DIM + 1, dtype=torch.float64)
    layer.set_weights(*gd_plus_plus_layer_weights(DIM, eta, gamma, NUM_CONTEXT))
    with torch.no_grad():
        assert (layer(tokens) - gd_plus_plus_step_on_tokens(tokens, eta, gamma)).abs().max().item() <= 1e-10


def test_identities_in_float32():
    batch = _batch(dtype=torch.float32)
    tokens, eta, gamma = batch.tokens(), 4.5, 0.2
    w0 = torch.randn(DIM, generator=torch.Generator().manual_seed(1))
    tokens[:, -1, -1] = -(batch.x_query @ w0)
    with torch.no_grad():
        gd_gap = _gd_layer(eta, w0, dtype=torch.float32)(tokens) - gd_step_on_tokens(tokens, eta, w0)
        plus = LinearSelfAttention(DIM + 1)
        plus.set_weights(*gd_plus_plus_layer_weights(DIM, eta, gamma, NUM_CONTEXT, dtype=torch.float32))
        plus_gap = plus(tokens) - gd_plus_plus_step_on_tokens(tokens, eta, gamma)
    scale = tokens.abs().max()
    assert gd_gap.abs().max() / scale <= 1e-5
    assert plus_gap.abs().max() / scale <= 1e-5


def test_gd_step_on_tokens_matches_explicit_regression_gradient():
    batch, eta = _batch(8), 2.0
    w0 = torch.randn(8, DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)  # per task
    weights = w0.clone().requires_grad_(True)
    loss = 0.5 * (torch.einsum("bnd,bd->bn", batch.x, weights) - batch.y).pow(2).mean(1).sum()
    (gradient,) = torch.autograd.grad(loss, weights)
    delta_w = -eta * gradient
    out = gd_step_on_tokens(batch.tokens(), eta, initial_weights=w0)
    expected = batch.tokens()[..., -1] - torch.einsum("btd,bd->bt", batch.tokens()[..., :-1], delta_w)
    torch.testing.assert_close(out[..., -1], expected, rtol=0, atol=1e-12)


def test_two_gd_layers_are_two_gd_steps():
    tokens, etas = _batch().tokens(), (5.0, 2.5)
    model = InContextRegressor(DIM + 1, num_layers=2, dtype=torch.float64)
    for layer, eta in zip(model.layers, etas):
        layer.set_weights(*gd_layer_weights(DIM, eta, NUM_CONTEXT))
    explicit = gd_step_on_tokens(gd_step_on_tokens(tokens, etas[0]), etas[1])
    learner = GradientDescentLearner(2, eta=etas)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), explicit, rtol=0, atol=1e-10)
        torch.testing.assert_close(model.predict(tokens), -explicit[:, -1, -1], rtol=0, atol=1e-10)
        torch.testing.assert_close(learner.predict(tokens), model.predict(tokens), rtol=0, atol=1e-10)


def test_gd_plus_plus_with_zero_gamma_is_gd():
    tokens = _batch().tokens()
    plain = GradientDescentLearner(3, eta=[3.0, 2.0, 1.0])
    plus = GradientDescentLearner(3, plus_plus=True, eta=[3.0, 2.0, 1.0], gamma=0.0)
    with torch.no_grad():
        torch.testing.assert_close(plain.predict(tokens), plus.predict(tokens), rtol=0, atol=1e-12)


def test_learner_ignores_query_label_slot_and_ties_parameters():
    tokens = _batch().tokens()
    learner = GradientDescentLearner(3, plus_plus=True, tied=True, eta=2.0, gamma=0.1)
    assert learner.eta.shape == learner.gamma.shape == (1,)
    assert learner.step_sizes().shape == (3,)
    dirty = tokens.clone()
    dirty[:, -1, -1] = 123.0
    with torch.no_grad():
        torch.testing.assert_close(learner.predict(dirty), learner.predict(tokens))
    with pytest.raises(ValueError):
        GradientDescentLearner(2, eta=1.0, gamma=0.5)  # plain GD has no gamma


@pytest.mark.parametrize("plus_plus", [False, True])
def test_spectral_summary_matches_token_steps(plus_plus):
    batch = _batch()
    learner = GradientDescentLearner(3, plus_plus=plus_plus, eta=[5.0, 3.0, 7.0],
                                     gamma=[0.2, 0.1, 0.3] if plus_plus else 0.0)
    summary = SpectralTaskSummary.from_batch(batch)
    with torch.no_grad():
        expected = learner.predict(batch.tokens())
        got = summary.predict(learner.step_sizes(), learner.curvature_corrections())
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
        several = summary.predict(torch.stack([learner.step_sizes()] * 2, 1),
                                  torch.stack([learner.curvature_corrections()] * 2, 1))
        assert several.shape == (2, batch.batch_size)
        torch.testing.assert_close(several[1], expected, rtol=0, atol=1e-10)


def test_optimal_one_step_eta_is_the_least_squares_step():
    batch = _batch(4096)
    eta = optimal_one_step_eta(batch)
    tokens = batch.tokens()
    loss = lambda e: half_mse(GradientDescentLearner(1, eta=e).predict(tokens), batch.y_query).item()  # noqa: E731
    assert loss(eta) < loss(eta * 1.01) and loss(eta) < loss(eta * 0.99)


# ---- reference computations on the official code's task distribution (§3, App. A.12): d = N = 10, U(-0.5, 0.5),
# w ~ N(0, I), ½MSE; optimal GD losses 0.2062 (one step, analytic), 0.141 and 0.110 (two and three steps)


@pytest.fixture(scope="module")
def test_tasks():
    # The per-task loss is heavy-tailed (tasks with large eigenvalues of X^T X): the relative
    # standard error of the mean is ~1.7% at 10k tasks, ~0.5% at the 100k used here.
    batch = _batch(100_000, seed=12345)
    return batch.tokens(), batch.y_query


def _test_loss(learner, tasks):
    tokens, targets = tasks
    with torch.no_grad():
        return half_mse(learner.predict(tokens), targets).item()


def test_tuned_one_step_gd_matches_reference(test_tasks):
    learner, train_loss = tune_gradient_descent(1, generator=torch.Generator().manual_seed(0))
    assert learner.eta.item() == pytest.approx(6.06, rel=0.02)
    assert _test_loss(learner, test_tasks) == pytest.approx(0.2062, rel=0.02)
    assert train_loss == pytest.approx(0.2062, rel=0.05)


@pytest.mark.parametrize("num_steps,reference", [(2, 0.141), (3, 0.110)])
def test_tuned_multi_step_gd_matches_reference(test_tasks, num_steps, reference):
    learner, _ = tune_gradient_descent(num_steps, generator=torch.Generator().manual_seed(0))
    assert _test_loss(learner, test_tasks) == pytest.approx(reference, rel=0.03)


def test_tuned_two_step_gd_plus_plus_beats_reference_bound(test_tasks):
    learner, _ = tune_gradient_descent(2, plus_plus=True, generator=torch.Generator().manual_seed(0))
    assert _test_loss(learner, test_tasks) <= 0.104
    tied, _ = tune_gradient_descent(2, plus_plus=True, tied=True, generator=torch.Generator().manual_seed(0))
    plain, _ = tune_gradient_descent(2, tied=True, generator=torch.Generator().manual_seed(0))
    subset = tuple(t[:20_000] for t in test_tasks)
    assert _test_loss(tied, subset) < 0.95 * _test_loss(plain, subset)
    # App. A.10: the learned gamma of a recurrent 2-layer model at N = 10 is 0.179
    assert 0.179 / 1.5 <= tied.gamma.item() <= 0.179 * 1.5


def test_tuning_accepts_a_given_batch_and_dtype():
    batch = _batch(2000, dtype=torch.float32)
    learner, loss = tune_gradient_descent(1, batch=batch, dtype=torch.float32)
    assert learner.eta.dtype == torch.float32
    assert loss == pytest.approx(half_mse(learner.predict(batch.tokens()), batch.y_query).item(), rel=1e-4)
