import copy

import pytest
import torch
from torch import nn

from learnlab.data.models import build_model
from learnlab.optim.averaging import (
    average_parameters,
    averaged_module_parameters,
    debiased_ema_weight,
    ema_model,
    model_with_parameters,
    refresh_batch_norm,
    swa_model,
    two_point_average,
)


def test_two_point_average_of_known_tensors():
    later = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(4.0)}
    earlier = {"w": torch.tensor([3.0, -2.0]), "b": torch.tensor(0.0)}
    average = two_point_average(later, earlier)
    assert torch.equal(average["w"], torch.tensor([2.0, 0.0])) and float(average["b"]) == 2.0
    weighted = average_parameters([later, earlier], [0.75, 0.25])
    assert torch.allclose(weighted["w"], torch.tensor([1.5, 1.0]))


def _scalar_model(value):
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_ema_is_zero_initialised_and_debiased_on_a_known_sequence():
    decay, sequence = 0.9, [1.0, 2.0, 4.0, -1.0, 3.0]
    model = _scalar_model(sequence[0])
    ema = ema_model(model, decay)
    biased = 0.0
    for t, value in enumerate(sequence, start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update_parameters(model)
        biased = decay * biased + (1 - decay) * value  # v_t = β v_{t−1} + (1−β) θ_t, v_0 = 0
        expected = biased / (1 - decay**t)              # debiased v̂_t
        assert float(ema.module.weight.detach()) == pytest.approx(expected, rel=1e-6)
    assert debiased_ema_weight(decay, 1) == pytest.approx(1.0)


def test_swa_is_the_uniform_average():
    model = _scalar_model(0.0)
    swa = swa_model(model)
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            model.weight.fill_(value)
        swa.update_parameters(model)
    assert float(averaged_module_parameters(swa)["weight"]) == pytest.approx(3.0)


def test_batchnorm_statistics_are_recomputed_for_averaged_weights():
    model = build_model("cnn_bn", (1, 8, 8), 10, width=4, generator=torch.Generator().manual_seed(0))
    inputs = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 3 + 1
    params = {name: p.detach() * 2 for name, p in model.named_parameters()}
    averaged = model_with_parameters(model, params)
    assert torch.equal(averaged[1].running_mean, torch.zeros(4))  # stale statistics of the source model
    with torch.no_grad():
        first_conv = averaged[0](inputs)
    refresh_batch_norm(averaged, inputs, batch_size=16)  # equal batches: the mean of batch means is exact
    assert torch.allclose(averaged[1].running_mean, first_conv.mean(dim=(0, 2, 3)), atol=1e-5)
    refresh_batch_norm(averaged, inputs, batch_size=64)  # one batch: the (unbiased) variance is exact too
    assert torch.allclose(averaged[1].running_var, first_conv.var(dim=(0, 2, 3)), rtol=1e-4)
    untouched = copy.deepcopy(model)
    refresh_batch_norm(untouched, inputs)  # a model without averaged weights works too
