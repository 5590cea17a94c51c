import pytest
import torch

from learnlab.knowledge.update_pruning import drop_mask, entries_to_drop, ignore_topk, parameter_snapshot, prune_update


def test_top_k_resets_exactly_the_largest_magnitudes_and_keeps_the_rest_unscaled():
    base = {"w": torch.zeros(10)}
    delta = torch.tensor([0.1, -5.0, 0.2, 3.0, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8])
    pruned = prune_update(base, {"w": base["w"] + delta}, fraction=0.2)["w"]
    # |delta| top-2 are -5.0 (index 1) and 3.0 (index 3): reset to base; the rest kept as is (no rescaling).
    expected = delta.clone()
    expected[[1, 3]] = 0.0
    assert torch.equal(pruned, expected)


def test_bottom_and_random_selections_and_counts():
    delta = torch.arange(1.0, 11.0)
    assert drop_mask(delta, 0.3, "bottom").nonzero().flatten().tolist() == [0, 1, 2]
    random_mask = drop_mask(delta, 0.3, "random", torch.Generator().manual_seed(0))
    assert int(random_mask.sum()) == 3
    assert entries_to_drop(1000, 0.08) == 80 and entries_to_drop(7, 0.0) == 0
    with pytest.raises(ValueError):
        drop_mask(delta, 1.5)
    with pytest.raises(ValueError):
        drop_mask(delta, 0.1, "largest")


def test_per_tensor_and_global_scopes_differ():
    base = {"a": torch.zeros(4), "b": torch.zeros(4)}
    tuned = {"a": torch.tensor([10.0, 20.0, 30.0, 40.0]), "b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    per_tensor = prune_update(base, tuned, 0.25, scope="tensor")
    assert per_tensor["a"].tolist() == [10.0, 20.0, 30.0, 0.0] and per_tensor["b"].tolist() == [1.0, 2.0, 3.0, 0.0]
    global_scope = prune_update(base, tuned, 0.25, scope="global")  # 2 of 8 entries: both in "a"
    assert global_scope["a"].tolist() == [10.0, 20.0, 0.0, 0.0] and torch.equal(global_scope["b"], tuned["b"])


def test_ignore_topk_on_a_module_in_place():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 4)
    base = parameter_snapshot(model)
    with torch.no_grad():
        model.weight.add_(torch.randn(4, 5))
        model.bias.add_(torch.tensor([0.0, 9.0, 0.0, 0.1]))
    tuned = parameter_snapshot(model)
    stats = ignore_topk(model, base, 0.25)
    assert model.bias[1] == base["bias"][1]  # the largest bias update is undone
    assert model.bias[3] == tuned["bias"][3]
    assert int(((model.weight - base["weight"]) == 0).sum()) == 5  # 25% of 20 weight entries reset
    assert 0.0 < stats["dropped_update_share"] < 1.0
    assert ignore_topk(model, parameter_snapshot(model), 0.5)["dropped_update_share"] == 0.0  # no update, nothing to drop
