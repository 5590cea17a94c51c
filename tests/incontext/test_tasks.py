"""The task-sampler protocol: every sampler draws exactly what the function it wraps draws."""

import pytest
import torch

from learnlab.incontext.attention import InContextRegressor
from learnlab.incontext.causal_transformer import CausalTransformer
from learnlab.incontext.dynamics import DynamicsSpec, FewShotRegressionSpec, random_orthogonal, sample_dynamics
from learnlab.incontext.regression import RegressionTaskSpec, sample_regression_tasks
from learnlab.incontext.sequence_training import SequenceTrainingSettings, train_autoregressive
from learnlab.incontext.tasks import TaskSampler
from learnlab.incontext.training import TrainingSettings, train_in_context


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fields(batch) -> dict:
    return {name: value for name, value in vars(batch).items() if isinstance(value, torch.Tensor)}


@pytest.mark.parametrize("spec", [RegressionTaskSpec(dim=3, num_context=5), RegressionTaskSpec(noise_std=0.3),
                                  RegressionTaskSpec(input_distribution="normal", input_range=2.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_regression_spec_samples_the_batches_of_sample_regression_tasks(spec, dtype):
    assert isinstance(spec, TaskSampler)
    expected = sample_regression_tasks(spec, 16, _generator(3), dtype=dtype)
    drawn = spec.sample(16, _generator(3), dtype=dtype)
    assert drawn.x.dtype == dtype and drawn.x.shape == (16, spec.num_context, spec.dim)
    assert _fields(drawn).keys() == _fields(expected).keys()
    for name, value in _fields(expected).items():
        assert torch.equal(getattr(drawn, name), value), name
    assert not torch.equal(spec.sample(16, _generator(4), dtype=dtype).x, drawn.x)


@pytest.mark.parametrize("spec", [DynamicsSpec(seq_len=12), DynamicsSpec(kind="contracting", seq_len=8),
                                  DynamicsSpec(kind="partial", obs_dim=4, obs_noise=0.1, seq_len=6)])
def test_dynamics_spec_samples_the_batches_of_sample_dynamics(spec):
    assert isinstance(spec, TaskSampler)
    expected = sample_dynamics(spec, 8, _generator(5), dtype=torch.float64)
    drawn = spec.sample(8, _generator(5), dtype=torch.float64)
    for name in ("inputs", "targets", "teacher"):
        assert torch.equal(getattr(drawn, name), getattr(expected, name)), name
    assert drawn.inputs.shape == (8, spec.seq_len, spec.observed_dim)


def test_few_shot_regression_spec_draw_order_and_laws():
    spec = FewShotRegressionSpec(num_points=7, dim=5, noise=0.01)
    assert isinstance(spec, TaskSampler)
    tasks = spec.sample(300, _generator(6), dtype=torch.float64)
    assert tasks.x.shape == tasks.y.shape == tasks.target.shape == (300, 7, 5) and tasks.x.dtype == torch.float64
    # Draw order: teachers, inputs, then label noise, from the one generator.
    generator = _generator(6)
    teacher = random_orthogonal(300, 5, generator)
    x = 2 * torch.rand(300, 7, 5, generator=generator) - 1
    noise = torch.randn(300, 7, 5, generator=generator)
    assert torch.equal(tasks.x, x.double())
    assert torch.equal(tasks.target, (x @ teacher.transpose(-1, -2)).double())
    assert torch.equal(tasks.y, (x @ teacher.transpose(-1, -2) + 0.01 * noise).double())
    assert tasks.x.abs().max() <= 1 and (tasks.y - tasks.target).abs().max() < 0.06
    # W orthogonal: the clean labels keep the inputs' norms.
    torch.testing.assert_close(tasks.target.norm(dim=-1), tasks.x.norm(dim=-1), rtol=1e-5, atol=1e-6)
    assert torch.equal(tasks[2:5].y, tasks.y[2:5])
    with pytest.raises(ValueError):
        FewShotRegressionSpec(num_points=0)


class RecordingSampler:
    """A sampler that wraps another one and records what it was asked for."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def sample(self, batch_size, generator=None, *, dtype=torch.float32, device="cpu"):
        self.calls.append((batch_size, dtype))
        return self.inner.sample(batch_size, generator, dtype=dtype, device=device)


def test_train_in_context_draws_from_its_sampler():
    spec = RegressionTaskSpec(dim=3, num_context=4)
    test_batch = spec.sample(64, _generator(0))
    settings = TrainingSettings(steps=5, batch_size=32, eval_every=5)
    histories = []
    for sampler in (spec, RecordingSampler(spec)):
        model = InContextRegressor(spec.token_dim, generator=_generator(1))
        histories.append(train_in_context(model, sampler, settings, test_batch, _generator(2)))
    assert sampler.calls == [(32, torch.float32)] * 5
    assert histories[0].test_losses == histories[1].test_losses  # the same draws through the wrapper


def test_train_autoregressive_draws_from_its_sampler():
    spec = DynamicsSpec(dim=3, seq_len=10)
    test = spec.sample(16, _generator(0))
    settings = SequenceTrainingSettings(steps=3, batch_size=8, warmup_steps=1, schedule_steps=3, eval_every=3, micro_batch=4)
    histories = []
    for sampler in (spec, RecordingSampler(spec)):
        model = CausalTransformer(embed_dim=12, layers=("linear",), num_heads=1, key_size=4, readout_dim=3, init_std=0.1,
                                  generator=_generator(1))
        histories.append(train_autoregressive(model, sampler, settings, test.inputs, test.targets, _generator(2)))
    assert sampler.calls == [(8 * (4096 // 8), torch.float32)]  # one pool of batches drawn at once
    assert histories[0].test_losses == histories[1].test_losses
