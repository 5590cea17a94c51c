"""Private, non-iid data for each agent: the owner-probability skew and a Dirichlet split.

- :func:`skew_partition` (Zhmoginov et al. 2023, §4): every class ``c`` has an owner agent
  (``c mod K``); each private sample of class ``c`` goes to its owner with probability ``s`` and
  otherwise to an agent drawn uniformly. ``s = 0`` is iid, ``s = 1`` gives disjoint label sets.
- :func:`dirichlet_partition` (common in federated learning): each class's samples are shared out
  in proportions drawn from ``Dirichlet(alpha)``; small ``alpha`` is strong skew.

Both return one index tensor per agent (sorted), a pure function of the generator.
"""

from __future__ import annotations

import numpy as np
import torch

from learnlab.core.errors import UserError


def class_owners(num_classes: int, agents: int) -> torch.Tensor:
    """The owner agent of every class: ``c mod K``."""
    return torch.arange(num_classes) % agents


def skew_partition(labels: torch.Tensor, agents: int, skew: float, generator: torch.Generator,
                   num_classes: int | None = None) -> list[torch.Tensor]:
    """Share the samples out among ``agents``: a sample goes to its class's owner with probability ``skew``."""
    if not 0.0 <= skew <= 1.0:
        raise UserError(f"skew must be within [0, 1], got {skew}")
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if skew == 1.0 and agents > classes:
        raise UserError(f"with skew 1 every agent needs a class of its own: {agents} agents but {classes} classes")
    owners = class_owners(classes, agents)[labels]
    uniform = torch.randint(0, agents, labels.shape, generator=generator)
    to_owner = torch.rand(labels.shape, generator=generator) < skew
    assignment = torch.where(to_owner, owners, uniform)
    return [torch.nonzero(assignment == agent).flatten() for agent in range(agents)]


def dirichlet_partition(labels: torch.Tensor, agents: int, alpha: float, generator: torch.Generator) -> list[torch.Tensor]:
    """Share each class's samples out in ``Dirichlet(alpha)`` proportions (drawn per class)."""
    if alpha <= 0:
        raise UserError(f"the Dirichlet alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (), generator=generator)))
    parts: list[list[torch.Tensor]] = [[] for _ in range(agents)]
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cuts = np.round(np.cumsum(rng.dirichlet(np.full(agents, float(alpha)))) * len(members)).astype(int)
        for agent, (start, stop) in enumerate(zip([0, *cuts[:-1]], cuts)):
            parts[agent].append(members[start:stop])
    return [torch.sort(torch.cat(chunks)).values for chunks in parts]


def label_distribution(labels: torch.Tensor, indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """An agent's class frequencies (its private label distribution)."""
    counts = torch.bincount(labels[indices], minlength=num_classes).float()
    return counts / counts.sum().clamp(min=1)
