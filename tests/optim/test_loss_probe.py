import numpy as np
import pytest
import torch
from torch import nn

from learnlab.data.models import build_model
from learnlab.optim.loss_probe import fit_parabola, probe_fixed_batch


def test_parabola_fit_is_exact_on_a_quadratic():
    steps = np.linspace(0, 2, 9)
    fit = fit_parabola(steps, 3.0 - 2.0 * steps + 0.5 * steps**2)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-12)
    assert (fit.a, fit.b, fit.c) == pytest.approx((3.0, 2.0, 0.5))
    assert fit.minimiser == pytest.approx(2.0)


class Quadratic(nn.Module):
    """Output whose 'loss' is ½ (θ − θ_B)ᵀ H (θ − θ_B): φ(λ) is an exact parabola (notes §4)."""

    def __init__(self, curvatures):
        super().__init__()
        self.theta = nn.Parameter(torch.ones(len(curvatures), dtype=torch.float64))
        self.register_buffer("curvatures", torch.as_tensor(curvatures, dtype=torch.float64))

    def forward(self, x):
        return 0.5 * (self.curvatures * (self.theta - x) ** 2).sum()


def test_probe_recovers_the_closed_form_best_step():
    curvatures = torch.tensor([1.0, 0.2, 0.05], dtype=torch.float64)
    model = Quadratic(curvatures)
    target = torch.zeros(3, dtype=torch.float64)
    result = probe_fixed_batch(model, target, torch.zeros(()), learning_rate=0.1, loss_fn=lambda out, _: out)
    gradient = curvatures * 1.0
    best = float((gradient @ gradient) / (gradient @ (curvatures * gradient)))  # λ* = ‖g‖² / gᵀHg
    assert result.fit.r_squared == pytest.approx(1.0, abs=1e-10)
    assert result.best_step == pytest.approx(best, rel=1e-8)
    assert result.best_step_over_learning_rate == pytest.approx(best / 0.1, rel=1e-8)
    assert 0 < result.one_step_ratio < 1
    assert torch.equal(model.theta.detach(), torch.ones(3, dtype=torch.float64))  # untouched


def test_probe_does_not_mutate_a_batchnorm_model():
    model = build_model("resnet_bn", (1, 8, 8), 10, width=4, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    result = probe_fixed_batch(model, x, y, learning_rate=0.05, num_points=7)
    assert result.losses.shape == (7,) and result.fit.r_squared > 0.5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
