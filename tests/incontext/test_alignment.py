import pytest
import torch

from learnlab.incontext.alignment import (
    input_sensitivities,
    prediction_difference,
    scale_corrected_products,
    sensitivity_cosine,
    sensitivity_distance,
    state_jacobians,
    state_sensitivity_cosine,
)
from learnlab.incontext.attention import InContextRegressor, LinearSelfAttention
from learnlab.incontext.gradient_descent import GradientDescentLearner, gd_layer_weights
from learnlab.incontext.least_squares import gd_step_directions, gd_step_predictions
from learnlab.incontext.regression import RegressionTaskSpec, sample_regression_tasks

DIM, NUM_CONTEXT, ETA = 10, 10, 6.0


def _batch(size=128, seed=0):
    spec = RegressionTaskSpec(dim=DIM, num_context=NUM_CONTEXT)
    return sample_regression_tasks(spec, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _gd_model():
    model = InContextRegressor(DIM + 1, dtype=torch.float64)
    model.layers[0].set_weights(*gd_layer_weights(DIM, ETA, NUM_CONTEXT))
    return model


def test_prediction_difference_is_mean_absolute_difference():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 4.0, 2.0])
    assert prediction_difference(a, b).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        prediction_difference(a, b[:2])


def test_gd_sensitivity_is_its_implicit_linear_model():
    # With W0 = 0 one GD step predicts (eta/N) sum_i y_i x_i^T x_q: linear in x_q.
    batch = _batch()
    expected = (ETA / NUM_CONTEXT) * torch.einsum("bn,bnd->bd", batch.y, batch.x)
    for predictor in (_gd_model().predict, GradientDescentLearner(1, eta=ETA).predict):
        torch.testing.assert_close(input_sensitivities(predictor, batch.tokens()), expected, rtol=0, atol=1e-12)


def test_sensitivities_of_the_sum_equal_per_task_jacobians():
    model = InContextRegressor(DIM + 1, num_layers=2, num_heads=2, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(20.0)
    tokens = _batch(4).tokens()
    got = input_sensitivities(model.predict, tokens)
    for b in range(4):
        def predict_one(query_x, b=b):
            one = tokens[b : b + 1].clone()
            one[0, -1, :-1] = query_x
            return model.predict(one)[0]

        jacobian = torch.autograd.functional.jacobian(predict_one, tokens[b, -1, :-1])
        torch.testing.assert_close(got[b], jacobian, rtol=0, atol=1e-12)
    assert all(parameter.grad is None for parameter in model.parameters())


def test_cosine_and_distance_of_a_model_with_itself():
    tokens = _batch().tokens()
    model = _gd_model()
    assert sensitivity_cosine(model.predict, model.predict, tokens).item() == pytest.approx(1.0, abs=1e-12)
    assert sensitivity_distance(model.predict, model.predict, tokens).item() == pytest.approx(0.0, abs=1e-12)
    other = GradientDescentLearner(2, eta=[ETA, ETA])
    assert sensitivity_cosine(model.predict, other.predict, tokens).item() < 0.999


def test_scale_correction_recovers_the_construction():
    scale = 0.37
    query, key, value, projection = gd_layer_weights(DIM, ETA, NUM_CONTEXT)
    layer = LinearSelfAttention(DIM + 1, dtype=torch.float64)
    layer.set_weights(query * scale, key, value, projection / scale)
    corrected = scale_corrected_products(layer, DIM)
    assert corrected.scale == pytest.approx(scale)
    assert corrected.eta_over_n == pytest.approx(ETA / NUM_CONTEXT)
    assert corrected.relative_error_to_construction(ETA / NUM_CONTEXT) == pytest.approx(0.0, abs=1e-12)
    assert corrected.relative_error_to_construction() == pytest.approx(0.0, abs=1e-12)
    assert corrected.relative_error_to_construction(1.1 * ETA / NUM_CONTEXT) > 0.01
    # products given directly, and irrelevant entries (x-rows of P W_V, the y-column of M) ignored
    key_query, value_projection = layer.weight_products()
    key_query, value_projection = key_query[0].clone(), value_projection[0].clone()
    key_query[:, DIM] = 5.0
    value_projection[:DIM] = 7.0
    assert scale_corrected_products((key_query, value_projection), DIM).relative_error_to_construction() == (
        pytest.approx(0.0, abs=1e-12)
    )
    key_query[0, 1] = 0.1 * scale
    assert scale_corrected_products((key_query, value_projection), DIM).relative_error_to_construction() > 0.01


def test_scale_correction_rejects_multi_head_layers():
    with pytest.raises(ValueError):
        scale_corrected_products(LinearSelfAttention(DIM + 1, num_heads=2), DIM)


def test_state_jacobians_of_a_linear_next_state_map():
    matrix = torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    states = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    jacobians = state_jacobians(lambda s: s @ matrix.T, states, position=4)
    assert jacobians.shape == (5, 3, 3)
    torch.testing.assert_close(jacobians, matrix.expand(5, 3, 3))


def test_state_jacobian_of_one_gd_step_matches_finite_differences():
    """One GD step's prediction at t, eta sum_{t'<=t} s_t' (s_{t'-1}^T s_t), differentiated in s_t (every role)."""
    states = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    position, eta = 3, 0.7
    jacobians = state_jacobians(lambda s: gd_step_predictions(s, eta), states, position)
    numeric = torch.zeros(4, 3, 3, dtype=torch.float64)
    for column in range(3):  # central differences in s_t, one coordinate at a time
        step = torch.zeros_like(states)
        step[:, position, column] = 1e-6
        difference = gd_step_directions(states + step)[:, position] - gd_step_directions(states - step)[:, position]
        numeric[:, :, column] = eta * difference / 2e-6
    torch.testing.assert_close(jacobians, numeric, rtol=1e-6, atol=1e-8)


def test_state_sensitivity_cosine_of_matching_and_opposite_predictors():
    states = torch.randn(6, 8, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    gd = lambda s: gd_step_predictions(s, 0.3)  # noqa: E731
    assert state_sensitivity_cosine(gd, lambda s: 5.0 * gd(s), states, (2, 5, 7)) == pytest.approx(1.0)
    assert state_sensitivity_cosine(gd, lambda s: -gd(s), states, (2, 5, 7)) == pytest.approx(-1.0)
    assert abs(state_sensitivity_cosine(gd, lambda s: s.flip(-1), states, (2, 5, 7))) < 0.9
