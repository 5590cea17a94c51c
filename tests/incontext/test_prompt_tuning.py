import pytest
import torch

from learnlab.incontext.causal_transformer import CausalTransformer
from learnlab.incontext.dynamics import FewShotRegressionSpec, constructed_tokens
from learnlab.incontext.prompt_tuning import (
    FewShotCurve,
    PromptTokens,
    TuningHistory,
    eos_prompt_states,
    few_shot_baselines,
    few_shot_curve,
    few_shot_tasks,
    pair_prompt_states,
    prompt_loss,
    prompt_predictions,
    tune_prompt_tokens,
)


@pytest.fixture(scope="module", autouse=True)
def optimizer_imports():
    # The first torch.optim optimizer of a process imports torch._dynamo (seconds, once per process).
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(dim: int = 4, layers=("linear", "linear"), seed: int = 0) -> CausalTransformer:
    return CausalTransformer(embed_dim=4 * dim, layers=layers, num_heads=2, key_size=6, readout_dim=dim, init_std=0.2,
                             generator=torch.Generator().manual_seed(seed))


def test_eos_prompt_layout():
    tasks = FewShotRegressionSpec(3, dim=4).sample(2, torch.Generator().manual_seed(0))
    assert tasks.x.shape == tasks.y.shape == tasks.target.shape == (2, 3, 4)
    assert (tasks.y - tasks.target).abs().max() < 0.1 and tasks.x.abs().max() <= 1
    tokens = PromptTokens(torch.arange(4.0), torch.full((2, 4), -1.0))
    states, positions = eos_prompt_states(tasks.x, tasks.y, tokens)
    assert states.shape == (2, 2 + 9, 4)
    assert positions.tolist() == [2, 5, 8]
    assert torch.equal(states[:, :2], tokens.prefix.expand(2, 2, 4))
    for i in range(3):
        assert torch.equal(states[:, 2 + 3 * i], tasks.x[:, i]) and torch.equal(states[:, 3 + 3 * i], tasks.y[:, i])
        assert torch.equal(states[:, 4 + 3 * i], tokens.eos.expand(2, 4))
    # Through the constructed-token map, each x carries the EOS (or the last prefix state) as previous state.
    mapped = constructed_tokens(states)
    assert torch.equal(mapped[:, 5, 12:], tokens.eos.expand(2, 4)) and torch.equal(mapped[:, 2, 12:], tokens.prefix[-1].expand(2, 4))


def test_tuning_changes_only_the_tokens_and_lowers_the_loss():
    model = _model()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    init = PromptTokens.random(4, 2, torch.Generator().manual_seed(1))  # official N(0, 1)
    evaluation = FewShotRegressionSpec(6, dim=4).sample(256, torch.Generator().manual_seed(2))
    with torch.no_grad():
        loss_before = float(prompt_loss(model, evaluation, init))
    history = TuningHistory()
    tuned = tune_prompt_tokens(model, 4, 6, steps=40, lr=0.1, prefix_length=2, batch_size=16,
                               generator=torch.Generator().manual_seed(3), init=init, history=history)
    with torch.no_grad():
        loss_after = float(prompt_loss(model, evaluation, tuned))
    assert loss_after < 0.6 * loss_before
    assert len(history.losses) == 40
    assert not torch.equal(tuned.eos, init.eos) and not torch.equal(tuned.prefix, init.prefix)
    assert not tuned.eos.requires_grad and not tuned.prefix.requires_grad
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # bit-identical weights
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_tuning_a_mesa_model_and_the_prefix_alone():
    model = _model(layers=("mesa",))
    lam = model.blocks[0].attention.lam.detach().clone()
    init = PromptTokens.random(4, 1, torch.Generator().manual_seed(4))
    tuned = tune_prompt_tokens(model, 4, 3, steps=3, lr=0.05, prefix_length=1, batch_size=4,
                               generator=torch.Generator().manual_seed(5), init=init, tune_eos=False)
    assert torch.equal(tuned.eos, init.eos) and not torch.equal(tuned.prefix, init.prefix)
    assert torch.equal(model.blocks[0].attention.lam, lam)


def test_pair_prompt_layout():
    tasks = FewShotRegressionSpec(4, dim=3).sample(2, torch.Generator().manual_seed(1))
    states = pair_prompt_states(tasks.x, tasks.y)  # [x_1, y_1, x_2, y_2, x_3, y_3, x_q]
    assert states.shape == (2, 7, 3)
    for i in range(3):
        assert torch.equal(states[:, 2 * i], tasks.x[:, i]) and torch.equal(states[:, 2 * i + 1], tasks.y[:, i])
    assert torch.equal(states[:, -1], tasks.x[:, -1])  # the query's label is left out


def _per_task_errors(predictions, tasks):
    return 0.5 * (predictions - tasks.target[:, -1]).pow(2).sum(-1).double()


@pytest.mark.parametrize("tuned", [False, True])
def test_few_shot_curve_is_the_error_of_the_model_on_its_format(tuned):
    model = _model()
    tokens = PromptTokens.random(4, 2, torch.Generator().manual_seed(6)) if tuned else None
    curve = few_shot_curve(model, (1, 3), tasks=40, seed=7, dim=4, tokens=tokens, batch_size=16)
    assert curve.counts == (1, 3) and len(curve.errors) == len(curve.standard_errors) == 2
    for index, (count, tasks) in enumerate(few_shot_tasks((1, 3), 40, 7, dim=4)):
        assert tasks.x.shape == (40, count + 1, 4)
        with torch.no_grad():
            if tuned:
                predictions = prompt_predictions(model, tasks, tokens)[:, -1]
            else:
                predictions = model.predict(constructed_tokens(pair_prompt_states(tasks.x, tasks.y)))[:, -1]
        errors = _per_task_errors(predictions, tasks)
        assert curve.errors[index] == pytest.approx(float(errors.mean()), rel=1e-5)
        assert curve.standard_errors[index] == pytest.approx(float(errors.std() / 40 ** 0.5), rel=1e-4)
    again = few_shot_curve(model, (1, 3), tasks=40, seed=7, dim=4, tokens=tokens, batch_size=40)
    assert again.errors == pytest.approx(curve.errors, rel=1e-5)  # batching does not change the tasks
    other = few_shot_curve(model, (1, 3), tasks=40, seed=8, dim=4, tokens=tokens)
    assert other.errors != pytest.approx(curve.errors, rel=1e-3)  # the seed chooses the tasks


def test_formats_differ_and_an_untrained_model_does_not_learn_from_examples():
    model = _model()
    untuned = few_shot_curve(model, (1, 10), tasks=256, seed=0, dim=4)
    tokens = PromptTokens.random(4, 1, torch.Generator().manual_seed(1))
    tuned = few_shot_curve(model, (1, 10), tasks=256, seed=0, dim=4, tokens=tokens)
    assert untuned.errors != pytest.approx(tuned.errors, rel=1e-3)
    assert untuned.ratio(10, 1) > 0.5  # no in-context learning without training


def test_few_shot_baselines_on_the_same_tasks():
    counts = (1, 3, 8)
    baselines = few_shot_baselines(counts, tasks=200, seed=3, dim=4, noise=0.01, ridge=1e-6)
    lsq, gd1 = baselines["lsq"].errors, baselines["gd1"].errors
    # With at least D = 4 examples, least squares recovers W up to the label noise (½ D sigma^2-scale error).
    assert lsq[2] < 1e-3 and lsq[0] > 0.1
    assert all(later < earlier for earlier, later in zip(gd1, gd1[1:]))  # one GD step improves with examples
    assert gd1[2] > 10 * lsq[2]  # but one step is far from least squares
    # The same tasks as the model curves: the clean answer W x_q from the tasks of few_shot_tasks.
    (_, tasks), = few_shot_tasks((1,), 200, 3, dim=4)
    x, y, query = tasks.x[:, :1].double(), tasks.y[:, :1].double(), tasks.x[:, 1].double()
    step = (y.transpose(1, 2) @ (x @ query.unsqueeze(-1))).squeeze(-1)
    target = tasks.target[:, 1].double()
    eta = float((step * target).sum() / (step * step).sum())
    assert gd1[0] == pytest.approx(float(0.5 * (eta * step - target).pow(2).sum(-1).mean()), rel=1e-12)


def test_curve_ratio_and_its_standard_error():
    curve = FewShotCurve((1, 10), [2.0, 0.5], [0.2, 0.1])
    assert curve.ratio(10, 1) == 0.25
    assert curve.ratio_standard_error(10, 1) == pytest.approx(0.25 * (0.1 ** 2 + 0.2 ** 2) ** 0.5)
    metrics = curve.metrics("m")
    assert metrics == {"m_errors": [2.0, 0.5], "m_error_standard_errors": [0.2, 0.1], "m_ratio_10_to_1": 0.25,
                       "m_ratio_10_to_1_standard_error": curve.ratio_standard_error(10, 1)}
    samples = [torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([2.0, 2.0], dtype=torch.float64)]
    from_tasks = FewShotCurve.from_per_task((1, 2), samples)
    assert from_tasks.errors == [2.0, 2.0]
    assert from_tasks.standard_errors == pytest.approx([1.0, 0.0])  # std of [1, 3] is sqrt 2, over sqrt 2 tasks


def test_tuning_history_windows():
    history = TuningHistory(list(map(float, range(10))))  # window: a fifth of 10 steps = 2
    assert history.first_and_last() == (0.5, 8.5)
    assert TuningHistory([4.0]).first_and_last() == (4.0, 4.0)


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError):
        tune_prompt_tokens(model, 4, 3, steps=1, lr=0.0)
    with pytest.raises(ValueError):
        tune_prompt_tokens(model, 4, 3, steps=1, lr=0.1, prefix_length=2, init=PromptTokens.zeros(4, 1))
