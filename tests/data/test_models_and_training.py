import pytest
import torch

from learnlab.data.models import MODEL_NAMES, build_model, has_batch_norm
from learnlab.data.splits import Split
from learnlab.data.training import SGDSettings, batch_indices, evaluate, make_optimizer, train_steps


@pytest.mark.parametrize("shape", [(1, 40), (1, 8, 8), (3, 32, 32)])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_models_accept_1d_and_2d_inputs(name, shape):
    model = build_model(name, shape, 10, width=4, generator=torch.Generator().manual_seed(0))
    assert model(torch.randn(5, *shape)).shape == (5, 10)
    assert has_batch_norm(model) == name.endswith("_bn")


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = build_model("cnn", (1, 8, 8), 10, generator=torch.Generator().manual_seed(1))
    b = build_model("cnn", (1, 8, 8), 10, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(torch.get_rng_state(), state)


def test_training_loop_learns_a_separable_problem():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 10, generator=generator)
    y = (x[:, 0, 0] > 0).long()
    split = Split(x, y)
    model = build_model("mlp", (1, 10), 2, width=4, generator=generator)
    optimizer = make_optimizer(model, SGDSettings(learning_rate=0.5, batch_size=32))
    losses = []
    train_steps(model, split, 100, optimizer, batch_indices(256, 32, generator), lambda s, l: losses.append(float(l)))
    assert len(losses) == 100 and evaluate(model, split)["accuracy"] > 0.95


def test_training_loop_takes_any_loss_optimizer_and_schedule():
    from learnlab.core.schedules import WarmupCosine

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 4, generator=generator)
    y = x[:, 0, :2].sum(-1, keepdim=True).expand(-1, 2).contiguous()  # regression targets
    split = Split(x, y)
    model = build_model("mlp", (1, 4), 2, width=8, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    schedule = WarmupCosine(peak=0.05, warmup_steps=5, decay_end=59, floor=0.1)
    rates, losses = [], []

    def on_step(step, loss):
        rates.append(optimizer.param_groups[0]["lr"])
        losses.append(float(loss))

    train_steps(model, split, 60, optimizer, batch_indices(128, 16, generator), on_step,
                loss_function=torch.nn.functional.mse_loss, scheduler=schedule.lambda_lr(optimizer))
    assert rates[0] == pytest.approx(schedule(1)) and rates[-1] == pytest.approx(0.005)
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])


def test_batch_indices_cover_each_epoch_once():
    stream = batch_indices(10, 3, torch.Generator().manual_seed(0))
    epoch = torch.cat([next(stream) for _ in range(3)])
    assert len(set(epoch.tolist())) == 9
