"""One agent code path for both runtimes: the data an agent holds, its local step and its metrics.

A round (Zhmoginov et al. 2023, §3): every agent scores the *same* public batch with all its heads
and publishes the probabilities; then each agent combines its neighbours' predictions into targets
(:mod:`learnlab.decentralized.distillation`), takes one Adam step on its private batch plus the
distillation terms, and nothing else leaves it. The public batch of round ``r`` and agent ``i``'s
private batch are pure functions of ``(seed, r)`` and ``(seed, i, r)``, so the single-process
simulation and one process per agent run the same computation.

Data: scikit-learn's 8x8 digits (shipped with the package), split into a private pool (42%), an
unlabelled public pool (28%) and a uniform test set (30%); the private pool is shared out among the
agents with the owner-probability skew or a Dirichlet split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from learnlab.core.errors import UserError
from learnlab.core.runtime import derive_seed
from learnlab.data.offline import load_digits
from learnlab.decentralized.agents import BACKBONES, MultiHeadNet
from learnlab.decentralized.distillation import DistillationSettings, agent_loss, head_targets, predictions
from learnlab.decentralized.graphs import Graph, build_graph
from learnlab.decentralized.partitions import dirichlet_partition, label_distribution, skew_partition

METHODS = ("mhd", "isolated", "central", "fedavg")
BYTES_PER_FLOAT = 4


@dataclass(frozen=True)
class FederationSettings:
    """Everything a federated run needs; the same object drives both runtimes."""

    agents: int = 5
    skew: float = 0.9
    dirichlet_alpha: float = 0.0  # > 0: a Dirichlet split instead of the skew
    heads: int = 3  # auxiliary heads H (besides h0)
    graph: str = "complete"
    degree: int = 2
    groups: int = 2
    edges: str = ""
    backbones: tuple[str, ...] = ("large", "small")  # cycled over the agents
    rounds: int = 1000
    private_batch: int = 32
    public_batch: int = 64
    learning_rate: float = 1e-3
    distillation: DistillationSettings = field(default_factory=DistillationSettings)
    method: str = "mhd"
    fedavg_every: int = 10

    def validate(self) -> None:
        if self.agents < 1:
            raise UserError(f"agents must be >= 1, got {self.agents}")
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; valid methods: {', '.join(METHODS)}")
        unknown = [name for name in self.backbones if name not in BACKBONES]
        if unknown or not self.backbones:
            raise UserError(f"unknown backbone {unknown[0] if unknown else ''!r}; valid backbones: {', '.join(BACKBONES)}")
        try:
            self.distillation.validate()
        except ValueError as error:
            raise UserError(str(error)) from None

    def backbone_of(self, agent: int) -> str:
        return self.backbones[agent % len(self.backbones)]


@dataclass(frozen=True)
class FederationData:
    """Private pools (per agent), the public pool and the test set, as tensors."""

    private_x: list[torch.Tensor]
    private_y: list[torch.Tensor]
    public_x: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    distributions: list[torch.Tensor]  # each agent's private label distribution
    graph: Graph


def build_federation(settings: FederationSettings, seed: int) -> FederationData:
    settings.validate()
    data = load_digits(val_fraction=0.28, test_fraction=0.30, seed=seed)
    pool_x, pool_y = data.train.x, data.train.y
    generator = torch.Generator().manual_seed(derive_seed(seed, "partition"))
    if settings.dirichlet_alpha > 0:
        parts = dirichlet_partition(pool_y, settings.agents, settings.dirichlet_alpha, generator)
    else:
        parts = skew_partition(pool_y, settings.agents, settings.skew, generator, data.num_classes)
    if any(len(part) == 0 for part in parts):
        raise UserError(f"an agent received no private data ({settings.agents} agents for {len(pool_y)} samples)")
    graph = build_graph(settings.graph, settings.agents, settings.degree, settings.groups, settings.edges, seed)
    return FederationData([pool_x[part] for part in parts], [pool_y[part] for part in parts], data.val.x, data.test.x,
                          data.test.y, data.num_classes,
                          [label_distribution(pool_y, part, data.num_classes) for part in parts], graph)


def new_agent(settings: FederationSettings, data: FederationData, agent: int, seed: int
              ) -> tuple[MultiHeadNet, torch.optim.Optimizer]:
    generator = torch.Generator().manual_seed(derive_seed(seed, "agent", str(agent)))
    model = MultiHeadNet(data.public_x[0].numel(), data.num_classes, settings.heads, settings.backbone_of(agent),
                         generator)
    return model, torch.optim.Adam(model.parameters(), lr=settings.learning_rate, foreach=True)


def public_indices(settings: FederationSettings, data: FederationData, seed: int, round_index: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(derive_seed(seed, "public", str(round_index)))
    return torch.randint(0, len(data.public_x), (settings.public_batch,), generator=generator)


def private_indices(settings: FederationSettings, data: FederationData, seed: int, agent: int, round_index: int
                    ) -> torch.Tensor:
    generator = torch.Generator().manual_seed(derive_seed(seed, "private", str(agent), str(round_index)))
    return torch.randint(0, len(data.private_y[agent]), (settings.private_batch,), generator=generator)


def publish(model: MultiHeadNet, public_x: torch.Tensor, settings: FederationSettings
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The agent's public logits (with gradient, for its own loss) and the probabilities it sends."""
    logits = model(public_x)
    return logits, predictions(logits, settings.distillation.temperature)


def local_update(model: MultiHeadNet, optimizer: torch.optim.Optimizer, settings: FederationSettings,
                 data: FederationData, agent: int, public_logits: torch.Tensor | None, neighbour_messages: list[torch.Tensor],
                 seed: int, round_index: int) -> float:
    """One step of agent ``agent`` from its neighbours' messages (each ``(1 + H, m, C)``)."""
    index = private_indices(settings, data, seed, agent, round_index)
    targets = None
    distil = settings.method == "mhd" and neighbour_messages and (settings.distillation.nu > 0
                                                                  or settings.distillation.nu0 > 0)
    if distil:
        targets = head_targets(torch.stack(neighbour_messages), settings.distillation.aggregation)
    loss = agent_loss(model(data.private_x[agent][index]), data.private_y[agent][index], public_logits, targets,
                      settings.distillation)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def payload_bytes(settings: FederationSettings, data: FederationData) -> dict[str, int]:
    """Bytes that cross the wire per round: predictions (MHD) or weights (FedAvg, for reference)."""
    message = (1 + settings.heads) * settings.public_batch * data.num_classes * BYTES_PER_FLOAT
    edges = sum(len(neighbours) for neighbours in data.graph)
    weights = sum(p.numel() for p in new_agent(settings, data, 0, 0)[0].parameters()) * BYTES_PER_FLOAT
    return {"message_bytes": message, "mhd_bytes_per_round": message * edges,
            "fedavg_bytes_per_average": 2 * weights * settings.agents}


@torch.no_grad()
def agent_metrics(model: MultiHeadNet, data: FederationData, agent: int) -> dict[str, list[float]]:
    """Shared accuracy (uniform test set) and private accuracy (per-class accuracy weighted by the
    agent's own label distribution) of every head."""
    predicted = model(data.test_x).argmax(-1)  # (1 + H, n)
    correct = (predicted == data.test_y).float()
    shared = correct.mean(dim=1)
    per_class = torch.stack([correct[:, data.test_y == c].mean(dim=1) for c in range(data.num_classes)], dim=1)
    private = per_class @ data.distributions[agent]
    return {"shared": shared.tolist(), "private": private.tolist()}
