"""Partitions, graphs, head chaining, payload, and the two runtimes agreeing."""

import pytest
import torch

from learnlab.core.errors import UserError
from learnlab.decentralized.distillation import DistillationSettings, agent_loss, aggregate, head_targets, kl_to_target
from learnlab.decentralized.distributed import launch, settings_from
from learnlab.decentralized.federation import FederationSettings, build_federation, payload_bytes
from learnlab.decentralized.graphs import build_graph, cycle, island_of, islands, parse_edges, random_regular
from learnlab.decentralized.partitions import class_owners, dirichlet_partition, skew_partition
from learnlab.decentralized.simulation import simulate


def test_skew_partition_owner_shares():
    labels = torch.arange(10).repeat(2000)
    for skew in (0.0, 0.5, 0.9):
        parts = skew_partition(labels, 5, skew, torch.Generator().manual_seed(0))
        assert sorted(torch.cat(parts).tolist()) == list(range(len(labels)))  # every sample exactly once
        owners = class_owners(10, 5)
        owned = sum(int((owners[labels[part]] == agent).sum()) for agent, part in enumerate(parts))
        # a sample reaches its owner with probability s + (1 - s) / K
        assert owned / len(labels) == pytest.approx(skew + (1 - skew) / 5, abs=0.01)
    disjoint = skew_partition(labels, 5, 1.0, torch.Generator().manual_seed(0))
    assert [sorted(set(labels[part].tolist())) for part in disjoint] == [[a, a + 5] for a in range(5)]
    with pytest.raises(UserError, match="12 agents but 10 classes"):
        skew_partition(labels, 12, 1.0, torch.Generator())


def test_dirichlet_partition_covers_every_sample_and_skews_with_small_alpha():
    labels = torch.arange(10).repeat(300)
    parts = dirichlet_partition(labels, 4, 0.1, torch.Generator().manual_seed(1))
    assert sorted(torch.cat(parts).tolist()) == list(range(len(labels)))
    top_share = [torch.bincount(labels[p], minlength=10).max().item() / max(1, len(p)) for p in parts if len(p)]
    assert max(top_share) > 0.3  # strongly skewed at alpha = 0.1
    with pytest.raises(UserError, match="alpha"):
        dirichlet_partition(labels, 4, 0.0, torch.Generator())


def test_graph_builders():
    assert build_graph("complete", 4) == ((1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2))
    assert cycle(5) == ((1, 4), (0, 2), (1, 3), (2, 4), (0, 3))
    regular = random_regular(8, 3, seed=2)
    assert all(len(n) == 3 for n in regular) and all(i in regular[j] for i in range(8) for j in regular[i])
    assert islands(6, 2) == ((1, 2), (0, 2), (0, 1), (4, 5), (3, 5), (3, 4))
    assert island_of(islands(6, 2)) == [0, 0, 0, 3, 3, 3]
    assert build_graph("edges", 3, edges="0-1, 1-2") == ((1,), (0, 2), (1,))
    assert parse_edges("0 1,2-3") == [(0, 1), (2, 3)]
    for call, message in ((lambda: build_graph("star", 3), "unknown graph 'star'"),
                          (lambda: random_regular(5, 3), "no 3-regular graph"),
                          (lambda: build_graph("edges", 3, edges="0-5"), "not between two different agents"),
                          (lambda: parse_edges("0-x"), "expected two agent indices")):
        with pytest.raises(UserError, match=message):
            call()


def test_head_chaining_targets_on_three_agents():
    # agent 0 reads agents 1 and 2; each publishes (1 + H = 3 heads, 1 public sample, 2 classes)
    one = torch.tensor([[[1.0, 0.0]], [[0.6, 0.4]], [[0.2, 0.8]]])
    two = torch.tensor([[[0.0, 1.0]], [[0.3, 0.7]], [[0.9, 0.1]]])
    targets = head_targets(torch.stack([one, two]), "mean")
    assert torch.allclose(targets[0], torch.tensor([[0.5, 0.5]]))  # T^0: the peers' h0
    assert torch.allclose(targets[1], torch.tensor([[0.5, 0.5]]))  # T^1: the peers' h0 as well
    assert torch.allclose(targets[2], torch.tensor([[0.45, 0.55]]))  # T^2: the peers' head 1
    confident = head_targets(torch.stack([one, two]), "most-confident")
    assert torch.equal(confident[2], torch.tensor([[0.3, 0.7]]))  # head 1: agent 2 (0.7) is more confident
    assert torch.equal(aggregate(torch.stack([one[2], two[2]]), "most-confident"), torch.tensor([[0.9, 0.1]]))
    # the loss: private CE on h0 plus nu * KL per auxiliary head toward its target, nu0 for h0
    logits = torch.zeros(3, 1, 2)
    settings = DistillationSettings(nu=2.0, nu0=0.5)
    loss = agent_loss(torch.zeros(3, 4, 2), torch.tensor([0, 1, 0, 1]), logits, confident, settings)
    expected = (torch.log(torch.tensor(2.0)) + 2.0 * (kl_to_target(confident[1], logits[1], 1.0)
                + kl_to_target(confident[2], logits[2], 1.0)) + 0.5 * kl_to_target(confident[0], logits[0], 1.0))
    assert float(loss) == pytest.approx(float(expected))


def test_payload_counts_predictions_only():
    settings = FederationSettings(agents=4, heads=3, graph="cycle", public_batch=16)
    data = build_federation(settings, 0)
    payload = payload_bytes(settings, data)
    assert payload["message_bytes"] == 4 * 16 * 10 * 4  # (1 + H) heads x batch x classes x float32
    assert payload["mhd_bytes_per_round"] == payload["message_bytes"] * 8  # 4 agents x 2 neighbours
    assert payload["fedavg_bytes_per_average"] > 10 * payload["mhd_bytes_per_round"]


def test_simulation_is_deterministic_and_isolated_agents_ignore_peers():
    settings = FederationSettings(agents=3, rounds=5, heads=1)
    a, b = simulate(settings, 3), simulate(settings, 3)
    assert all(torch.equal(x, y) for wa, wb in zip(a["weights"], b["weights"]) for x, y in zip(wa, wb))
    from dataclasses import replace
    alone = simulate(replace(settings, method="isolated"), 3)
    cut = simulate(replace(settings, distillation=DistillationSettings(nu=0.0, nu0=0.0)), 3)
    assert all(torch.equal(x, y) for wa, wb in zip(alone["weights"], cut["weights"]) for x, y in zip(wa, wb))


@pytest.mark.parametrize("exchange", ["p2p", "all-gather"])
def test_processes_over_gloo_equal_the_simulation(exchange):
    settings = FederationSettings(agents=3, rounds=6, heads=2, graph="cycle")
    simulated, processes = simulate(settings, 1), launch(settings, 1, exchange)
    assert processes["agents"] == simulated["agents"]
    for one, other in zip(simulated["weights"], processes["weights"]):
        for x, y in zip(one, other):
            assert torch.allclose(x, y, atol=1e-6)


def test_settings_from_key_values():
    settings = settings_from(["agents=4", "graph=cycle", "nu0=0.5", "backbones=small,large"])
    assert settings.agents == 4 and settings.graph == "cycle" and settings.distillation.nu0 == 0.5
    assert settings.backbones == ("small", "large")
    with pytest.raises(UserError, match="bad setting"):
        settings_from(["speed=3"])


def test_command_line_runs_local_processes_and_rejects_bad_settings(tmp_path, capsys):
    import json

    from learnlab.decentralized.distributed import main

    out = tmp_path / "agents.json"
    assert main(["--local", "--set", "agents=2", "--set", "rounds=3", "--set", "heads=1", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert len(written["agents"]) == 2 and written["settings"]["rounds"] == 3
    assert main(["--local", "--set", "graph=star", "--out", str(out)]) == 2
    assert "unknown graph 'star'" in capsys.readouterr().err
