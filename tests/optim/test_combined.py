"""The layer-wise combination of base optimizers: exactness against torch.optim, state, save/load, vmap."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from learnlab.core.errors import UserError
from learnlab.optim.combined import (
    CombinedOptimizer,
    RuleSpec,
    combined_step,
    initial_meta_parameters,
    initial_state,
    load_rule,
    save_rule,
    stacked_combined_step,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 6, pass_loss: bool = True) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 5, generator=generator, dtype=next(model.parameters()).dtype)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        if pass_loss and isinstance(optimizer, CombinedOptimizer):
            optimizer.step(loss=loss)
        else:
            optimizer.step()


@pytest.mark.parametrize("base, reference", [
    ("sgd", lambda params: torch.optim.SGD(params, lr=0.05)),
    ("momentum", lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)),
    ("adam", lambda params: torch.optim.Adam(params, lr=0.05)),
])
def test_one_base_with_coefficient_one_equals_that_optimizer(base, reference):
    """Unnormalised form, one base optimizer, coefficient = its learning rate (direction x 1)."""
    ours, theirs = _model(), _model()
    spec = RuleSpec(num_layers=4, bases=(base,), form="sum", model="fixed")
    optimizer = CombinedOptimizer(ours.parameters(), spec, {"coefficients": torch.full((4, 1), 0.05, dtype=torch.float64)},
                                  horizon=6)
    _train(ours, optimizer)
    _train(theirs, reference(theirs.parameters()))
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_normalised_form_moves_each_layer_by_its_learning_rate():
    spec = RuleSpec(num_layers=2, bases=("sgd", "adam"), initial_lr=0.01)
    meta = initial_meta_parameters(spec, torch.Generator().manual_seed(0))
    params = [torch.randn(4, 3), torch.randn(3)]
    grads = [torch.randn(4, 3), torch.randn(3)]
    new, _, coefficient = combined_step(spec, meta, params, grads, torch.tensor(1.0), initial_state(spec, params), 1, 10)
    torch.testing.assert_close(coefficient.sum(dim=1), torch.full((2,), 0.01))  # uniform mixture at exp(log_lr)
    for before, after in zip(params, new):  # both directions have RMS 1, so the RMS step is <= λ
        assert 0 < (after - before).pow(2).mean().sqrt() <= 0.01 + 1e-7


def test_state_dict_round_trip_continues_the_same_trajectory():
    spec = RuleSpec(num_layers=4)
    meta = initial_meta_parameters(spec, torch.Generator().manual_seed(3))
    meta["w2"] = torch.randn_like(meta["w2"]) * 0.5  # a rule whose output depends on the features
    model = _model().float()
    optimizer = CombinedOptimizer(model.parameters(), spec, meta, horizon=12)
    _train(model, optimizer, steps=3)
    saved_model, saved_state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    _train(model, optimizer, steps=3)
    resumed = _model().float()
    resumed.load_state_dict(saved_model)
    other = CombinedOptimizer(resumed.parameters(), spec, meta, horizon=12)
    other.load_state_dict(saved_state)
    _train(resumed, other, steps=3)
    for a, b in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_loss_hook_feeds_the_loss_and_a_missing_loss_is_an_error():
    spec = RuleSpec(num_layers=4)
    model = _model().float()
    optimizer = CombinedOptimizer(model.parameters(), spec, initial_meta_parameters(spec), horizon=5)
    criterion = nn.MSELoss()
    criterion.register_forward_hook(optimizer.loss_hook)
    loss = criterion(model(torch.randn(4, 5)), torch.zeros(4, 3))
    loss.backward()
    optimizer.step()  # the hook supplied the loss
    assert optimizer.state["rule"]["step"] == 1
    loss = model(torch.randn(4, 5)).sum()
    loss.backward()
    with pytest.raises(ValueError, match="needs the loss"):
        optimizer.step()


def test_vmap_over_a_population_equals_member_by_member():
    spec = RuleSpec(num_layers=2)
    generator = torch.Generator().manual_seed(0)
    metas = [initial_meta_parameters(spec, generator) for _ in range(3)]
    for meta in metas:
        meta["w2"] = torch.randn(meta["w2"].shape, generator=generator)
    params = [torch.randn(3, 4, 2, generator=generator), torch.randn(3, 2, generator=generator)]
    grads = [torch.randn(3, 4, 2, generator=generator), torch.randn(3, 2, generator=generator)]
    stacked = {name: torch.stack([m[name] for m in metas]) for name in metas[0]}
    states = torch.func.vmap(lambda p: initial_state(spec, p))(params)

    def one(meta, p, g, state):
        new, _, coefficient = combined_step(spec, meta, p, g, torch.tensor(2.0), state, 1, 10)
        return new, coefficient

    batched, coefficients = torch.func.vmap(one)(stacked, params, grads, states)
    for member, meta in enumerate(metas):
        p, g = [t[member] for t in params], [t[member] for t in grads]
        new, _, coefficient = combined_step(spec, meta, p, g, torch.tensor(2.0), initial_state(spec, p), 1, 10)
        torch.testing.assert_close(coefficients[member], coefficient)
        for a, b in zip(new, batched):
            torch.testing.assert_close(a, b[member])


def test_save_and_load_a_rule(tmp_path):
    spec = RuleSpec(num_layers=6, bases=("momentum", "adam"))
    meta = initial_meta_parameters(spec, torch.Generator().manual_seed(0))
    path = save_rule(tmp_path / "rule", spec, meta, extra={"meta_iterations": 3})
    loaded_spec, loaded = load_rule(path)
    assert loaded_spec == spec and set(loaded) == set(meta)
    for name in meta:
        torch.testing.assert_close(loaded[name], meta[name])
    assert json.loads((tmp_path / "rule.json").read_text())["meta_iterations"] == 3


def test_a_file_that_is_not_a_rule_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_rule(tmp_path / "missing")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="is not a meta-trained optimizer"):
        load_rule(tmp_path / "bad.safetensors")
    spec = RuleSpec(num_layers=2)
    save_rule(tmp_path / "good", spec, initial_meta_parameters(spec))
    (tmp_path / "good.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="is not a meta-trained optimizer"):
        load_rule(tmp_path / "good")


def test_unknown_base_optimizer_and_layer_mismatch():
    with pytest.raises(ValueError, match="unknown base optimizer 'lion'"):
        RuleSpec(num_layers=2, bases=("sgd", "lion"))
    spec = RuleSpec(num_layers=3)
    with pytest.raises(ValueError, match="made for 3 layers"):
        CombinedOptimizer(_model().parameters(), spec, initial_meta_parameters(spec), horizon=5)


def test_population_training_equals_the_optimizer_member_by_member():
    """The vmap-ed population loop (meta-training's inner loop) equals CombinedOptimizer, member by member."""
    from torch.nn import functional as F

    from learnlab.optim.population import stacked, train_population

    spec = RuleSpec(num_layers=4, bases=("momentum", "adam"), initial_lr=0.02)
    generator = torch.Generator().manual_seed(5)
    metas = [initial_meta_parameters(spec, generator) for _ in range(3)]
    for meta in metas:
        meta["w2"] = torch.randn(meta["w2"].shape, generator=generator) * 0.3
    metas = [{name: value.double() for name, value in meta.items()} for meta in metas]
    model = _model()
    x = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=generator)
    batches = [torch.randperm(40, generator=generator)[:8] for _ in range(5)]
    params = dict(model.named_parameters())
    run = train_population(model, stacked(params, 3), spec, {n: torch.stack([m[n] for m in metas]) for n in metas[0]},
                           x, y, x, y, batches, horizon=5, record_coefficients=True)
    assert run.coefficients.shape == (3, 5, 4, 2) and run.curve_steps == [0, 5]
    for member, meta in enumerate(metas):
        single = _model()
        optimizer = CombinedOptimizer(single.parameters(), spec, meta, horizon=5)
        for index in batches:
            loss = F.cross_entropy(single(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step(loss=loss)
        with torch.no_grad():
            final = F.cross_entropy(single(x), y)
        torch.testing.assert_close(run.final_loss[member], final, rtol=1e-10, atol=1e-10)


def test_members_on_tasks_of_their_own_equal_separate_runs():
    """Batches of shape [members, batch] (each member its own start and batch order) give every member
    exactly what training it alone on its task gives."""
    from learnlab.optim.population import stacked, train_population

    spec = RuleSpec(num_layers=4, bases=("momentum", "adam"), initial_lr=0.02)
    generator = torch.Generator().manual_seed(7)
    metas = {name: torch.stack([value.double()] * 2) for name, value in initial_meta_parameters(spec, generator).items()}
    first = {name: value.detach() for name, value in _model().named_parameters()}
    starts = [first, {name: value + 0.1 * torch.randn(value.shape, generator=generator, dtype=value.dtype)
                      for name, value in first.items()}]
    x = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=generator)
    orders = [[torch.randperm(40, generator=generator)[:8] for _ in range(4)] for _ in range(2)]
    params = {name: torch.stack([start[name] for start in starts]) for name in first}
    together = train_population(_model(), params, spec, metas, x, y, x, y,
                                [torch.stack(rows) for rows in zip(*orders)], horizon=4)
    for member in range(2):
        alone = train_population(_model(), stacked(starts[member], 1), spec, {n: v[:1] for n, v in metas.items()},
                                 x, y, x, y, orders[member], horizon=4)
        assert torch.equal(together.curve[member], alone.curve[0])
    assert not torch.equal(together.curve[0], together.curve[1])


@pytest.mark.parametrize("spec", [
    RuleSpec(num_layers=4), RuleSpec(num_layers=4, form="sum"), RuleSpec(num_layers=4, model="constant"),
    RuleSpec(num_layers=4, bases=("adam",), form="sum", model="global"), RuleSpec(num_layers=4, model="global"),
    RuleSpec(num_layers=4, bases=("momentum",), form="sum", model="fixed"),
])
def test_a_members_stacked_step_is_its_own_step_bit_for_bit(spec):
    """A population update gives every member exactly the update it gets alone (CombinedOptimizer's path)."""
    generator, members, shapes = torch.Generator().manual_seed(0), 3, [(7, 5), (7,), (3, 7), (3,)]
    if spec.model == "fixed":
        metas = {"coefficients": torch.rand(members, 4, 4, 1, generator=generator) * 0.01}
    else:
        metas = {name: value.unsqueeze(0) + 0.3 * torch.randn(members, *value.shape, generator=generator)
                 for name, value in initial_meta_parameters(spec, generator).items()}
    params = [torch.randn(members, *shape, generator=generator) for shape in shapes]
    stacked = (params, initial_state(spec, params))
    alone = [([p[member] for p in params], initial_state(spec, [p[member] for p in params])) for member in range(members)]
    for step in range(1, 6):
        grads = [torch.randn(members, *shape, generator=generator) for shape in shapes]
        losses = torch.rand(members, generator=generator) + 0.5
        *stacked, coefficient = stacked_combined_step(spec, metas, stacked[0], grads, losses, stacked[1], step, 4)
        for member in range(members):
            meta = {name: value[member] for name, value in metas.items()}
            *alone[member], expected = combined_step(spec, meta, alone[member][0], [g[member] for g in grads],
                                                     losses[member], alone[member][1], step, 4)
            assert torch.equal(coefficient[member], expected)
            assert all(torch.equal(a[member], b) for a, b in zip(stacked[0], alone[member][0]))
            for key, value in alone[member][1].items():
                other = stacked[1][key]
                assert (torch.equal(other[member], value) if torch.is_tensor(value)
                        else all(torch.equal(o[member], v) for o, v in zip(other, value)))