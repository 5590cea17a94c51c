import pytest
import torch

from learnlab.optim.nqm import (
    ema_variance_factor,
    predict_noisy_quadratic,
    sgd_stationary_variance,
    simulate_noisy_quadratic,
    two_point_variance_factor,
    uniform_average_variance_factor,
)


def test_reference_numbers_of_the_notes():
    h = torch.logspace(-2, 0, 200, dtype=torch.float64)
    prediction = predict_noisy_quadratic(h, 1.0, 0.5, 0.99, 2000)
    assert prediction.sgd == pytest.approx(3.340, abs=1e-3)
    assert prediction.ema == pytest.approx(0.1016, abs=1e-4)
    assert prediction.two_point == pytest.approx(1.670, abs=1e-3)
    assert prediction.sgd_half_learning_rate == pytest.approx(1.511, abs=1e-3)


def test_factor_limits():
    a = torch.tensor([0.5, 0.999], dtype=torch.float64)
    assert two_point_variance_factor(a, 200)[0] == pytest.approx(0.5)
    assert ema_variance_factor(a, 0.0) == pytest.approx(torch.ones(2))
    assert uniform_average_variance_factor(a, 1) == pytest.approx(torch.ones(2))
    # brute force: (1/N²) Σ_{s,t} a^{|s−t|}
    n, value = 7, 0.8
    brute = sum(value ** abs(s - t) for s in range(n) for t in range(n)) / n**2
    assert float(uniform_average_variance_factor(torch.tensor(value, dtype=torch.float64), n)) == pytest.approx(brute)


def test_simulation_matches_the_formulas_on_a_tiny_case():
    h = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    s = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    prediction = predict_noisy_quadratic(h, s, 0.4, 0.9, 50)
    simulation = simulate_noisy_quadratic(h, s, 0.4, 0.9, 50, steps=4000, chains=512,
                                          generator=torch.Generator().manual_seed(0))
    assert simulation.sgd == pytest.approx(prediction.sgd, rel=0.02)
    assert simulation.ema == pytest.approx(prediction.ema, rel=0.02)
    assert simulation.two_point == pytest.approx(prediction.two_point, rel=0.02)
    with pytest.raises(ValueError):
        sgd_stationary_variance(h, s, 3.0)
