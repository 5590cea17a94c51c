"""The single-process runtime: every agent in one list, rounds in lock step (fast and deterministic).

``simulate(settings, seed)`` runs one federated training and returns every agent's metrics, the
payload per round and, for the runtime comparison, the final weights. Methods:

- ``mhd``: multi-headed distillation over the graph;
- ``isolated``: each agent alone on its private data (the lower bound);
- ``central``: one model on all private data pooled (the upper bound; one agent, batch ``K x``
  the private batch, private accuracy weighted by agent 0's distribution);
- ``fedavg``: local steps with the weights averaged over all agents every ``fedavg_every`` rounds
  (for reference: what the method avoids sending; every agent gets the first backbone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from learnlab.decentralized.federation import (FederationData, FederationSettings, agent_metrics, build_federation,
                                               local_update, new_agent, payload_bytes, public_indices, publish)


def _central(settings: FederationSettings, data: FederationData) -> tuple[FederationSettings, FederationData]:
    pooled = replace(data, private_x=[torch.cat(data.private_x)], private_y=[torch.cat(data.private_y)],
                     distributions=[data.distributions[0]], graph=((),))
    return replace(settings, agents=1, private_batch=settings.private_batch * settings.agents), pooled


def _average_weights(models: list[torch.nn.Module]) -> None:
    with torch.no_grad():
        for parameters in zip(*(model.parameters() for model in models)):
            mean = torch.stack(parameters).mean(dim=0)
            for parameter in parameters:
                parameter.copy_(mean)


def simulate(settings: FederationSettings, seed: int, on_round: Callable[[int], None] | None = None) -> dict[str, Any]:
    data = build_federation(settings, seed)
    payload = payload_bytes(settings, data)
    if settings.method == "central":
        settings, data = _central(settings, data)
    if settings.method == "fedavg":
        settings = replace(settings, backbones=settings.backbones[:1])
    agents = [new_agent(settings, data, agent, seed) for agent in range(settings.agents)]
    exchange = settings.method == "mhd"  # only multi-headed distillation reads the public batch
    for round_index in range(settings.rounds):
        public_x = data.public_x[public_indices(settings, data, seed, round_index)]
        published = [publish(model, public_x, settings) if exchange else (None, None) for model, _ in agents]
        for agent, (model, optimizer) in enumerate(agents):
            neighbours = [published[j][1] for j in data.graph[agent]] if exchange else []
            local_update(model, optimizer, settings, data, agent, published[agent][0], neighbours, seed, round_index)
        if settings.method == "fedavg" and (round_index + 1) % settings.fedavg_every == 0:
            _average_weights([model for model, _ in agents])
        if on_round is not None:
            on_round(round_index)
    return {"agents": [agent_metrics(model, data, agent) for agent, (model, _) in enumerate(agents)],
            "payload": payload, "weights": [[p.detach().clone() for p in model.parameters()] for model, _ in agents]}
