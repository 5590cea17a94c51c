import pytest
import torch

from learnlab.incontext.causal_transformer import CausalTransformer
from learnlab.incontext.dynamics import constructed_tokens
from learnlab.incontext.prompt_tuning import (
    PromptTokens,
    TuningHistory,
    eos_prompt_states,
    few_shot_curve,
    prompt_loss,
    sample_regression_tasks,
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
    tasks = sample_regression_tasks(3, 2, dim=4, generator=torch.Generator().manual_seed(0))
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
    evaluation = sample_regression_tasks(6, 256, dim=4, generator=torch.Generator().manual_seed(2))
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


def test_few_shot_curve_shapes_and_no_prefix():
    model = _model()
    tokens = PromptTokens.zeros(4)
    errors, standard_errors = few_shot_curve(model, tokens, (1, 3), tasks=40, seed=0, batch_size=16)
    assert len(errors) == len(standard_errors) == 2 and all(e > 0 for e in errors) and all(s > 0 for s in standard_errors)
    again, _ = few_shot_curve(model, tokens, (1, 3), tasks=40, seed=0, batch_size=40)
    assert errors == pytest.approx(again, rel=1e-5)  # batching does not change the tasks


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError):
        tune_prompt_tokens(model, 4, 3, steps=1, lr=0.0)
    with pytest.raises(ValueError):
        tune_prompt_tokens(model, 4, 3, steps=1, lr=0.1, prefix_length=2, init=PromptTokens.zeros(4, 1))
