"""The runs of the ``mhd`` study: every (setting, seed) is one item of a resumable stage.

Settings (item ids ``<setting>@<seed>``), built from the study config by :func:`settings_of`:

- ``isolated``, ``mhd``, ``central``, ``fedavg``: ``agents`` agents, skew ``skew``, complete graph;
- ``cycle``, ``complete10``: ``cycle_agents`` agents with ``cycle_heads`` heads on a cycle / complete graph;
- ``isolated-s1``, ``chain-s1``, ``h0-s1``: disjoint label sets (skew 1), chained heads alone and with
  h0 distillation (``nu0_recovery``);
- ``islands``: ``island_agents`` agents in ``island_groups`` disconnected complete graphs, skew 1,
  h0 distillation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from learnlab.decentralized.distillation import DistillationSettings
from learnlab.decentralized.federation import FederationSettings, build_federation
from learnlab.decentralized.graphs import island_of
from learnlab.decentralized.simulation import simulate

SETTINGS = ("isolated", "mhd", "central", "fedavg", "cycle", "complete10", "isolated-s1", "chain-s1", "h0-s1",
            "islands")


def base_settings(config: Any) -> FederationSettings:
    distillation = DistillationSettings(nu=config.nu, nu0=config.nu0, aggregation=config.aggregation,
                                        temperature=config.temperature)
    return FederationSettings(agents=config.agents, skew=config.skew, dirichlet_alpha=config.dirichlet_alpha,
                              heads=config.heads, graph=config.graph, degree=config.degree, edges=config.edges,
                              backbones=config.backbones, rounds=config.rounds, private_batch=config.private_batch,
                              public_batch=config.public_batch, learning_rate=config.learning_rate,
                              distillation=distillation, fedavg_every=config.fedavg_every)


def settings_of(config: Any, name: str) -> FederationSettings:
    base = base_settings(config)
    recovery = replace(base.distillation, nu0=config.nu0_recovery)
    if name in ("isolated", "mhd", "central", "fedavg"):
        return replace(base, method=name)
    if name in ("cycle", "complete10"):
        return replace(base, agents=config.cycle_agents, heads=config.cycle_heads, dirichlet_alpha=0.0,
                       graph="cycle" if name == "cycle" else "complete")
    if name == "isolated-s1":
        return replace(base, skew=1.0, dirichlet_alpha=0.0, method="isolated")
    if name == "chain-s1":
        return replace(base, skew=1.0, dirichlet_alpha=0.0, distillation=replace(base.distillation, nu0=0.0))
    if name == "h0-s1":
        return replace(base, skew=1.0, dirichlet_alpha=0.0, distillation=recovery)
    if name == "islands":
        return replace(base, agents=config.island_agents, skew=1.0, dirichlet_alpha=0.0, graph="islands",
                       groups=config.island_groups, distillation=recovery)
    raise ValueError(f"unknown setting {name!r}")


def item_keys(config: Any) -> list[str]:
    return [f"{name}@{seed}" for seed in config.seeds for name in SETTINGS]


def run_worker(config: Any, ctx: Any) -> Callable[[str], dict[str, Any]]:
    """Worker factory: item ``setting@seed`` simulates that federation and records every agent's metrics."""

    def process(key: str) -> dict[str, Any]:
        name, seed = key.split("@")
        settings = settings_of(config, name)
        with ctx.progress(f"{key} (rounds)", settings.rounds) as bar:
            result = simulate(settings, int(seed), on_round=lambda r: bar.advance(1))
        record = {"agents": result["agents"], "payload": result["payload"]}
        if name == "islands":
            data = build_federation(settings, int(seed))
            islands = island_of(data.graph)
            record["island"] = islands
            record["coverage"] = [island_coverage(data, islands, agent) for agent in range(settings.agents)]
        return record

    return process


def island_coverage(data: Any, islands: list[int], agent: int) -> float:
    """The fraction of the uniform test set whose class occurs in the private data of the agent's island."""
    labels = torch.cat([data.private_y[j] for j in range(len(islands)) if islands[j] == islands[agent]])
    seen = torch.isin(data.test_y, torch.unique(labels))
    return float(seen.float().mean())
