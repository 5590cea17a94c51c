"""Losses and scenario evaluations of HT, Continual HT and their baselines.

- HT with a logits head: softmax cross-entropy of the generated CNN's query logits (HT paper §3).
- Prototypical head (CHT paper §3.2): ``f_theta`` outputs an embedding; the prototype of class
  ``k`` of task ``tau`` is ``c_{tau k} = mean f_theta(x)`` over the labelled support samples of that
  class, and a query's score for it is ``-||f_theta(x) - c_{tau k}||^2``.
- Continual HT over a sequence (CHT paper §3.3): after task ``t`` the weights ``theta_t`` must still
  solve every earlier task, so the loss is ``sum_{t} sum_{tau <= t} L(theta_t; S_tau, Q_tau)``:
  *task-incremental* (softmax over the query's own task's prototypes) and *class-incremental*
  (softmax over the prototypes of all tasks so far). Old prototypes are recomputed from the stored
  supports with the newest weights (``prototypes="recomputed"``) or kept from when their task was
  learned (``"cached"``, which needs no stored supports).

Every evaluation returns per-sequence accuracies so that callers can report standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from learnlab.continual.episodes import UNLABELLED, Episode, merged
from learnlab.continual.hypertransformer import generate_chain
from learnlab.continual.meta_training import adam
from learnlab.continual.target_cnn import forward, head

OBJECTIVES = ("task", "class", "both")
PROTOTYPES = ("recomputed", "cached")


def embed(model: nn.Module, weights: list[torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The CNN with ``weights`` (one per task of the batch) on ``images (B, M, 1, S, S)`` -> ``(B, M, units)``."""
    return forward(images, weights, list(model.bn.gammas), list(model.bn.betas))


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Class means ``(B, ways, E)`` of the labelled samples (unlabelled ones are ignored)."""
    labelled = (labels != UNLABELLED).to(embeddings.dtype)
    one_hot = F.one_hot(labels.clamp(min=0), ways).to(embeddings.dtype) * labelled.unsqueeze(-1)
    return torch.einsum("bmk,bme->bke", one_hot, embeddings) / one_hot.sum(dim=1).clamp(min=1).unsqueeze(-1)


def prototype_scores(queries: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``-||q - c||^2`` for every query ``(B, Mq, E)`` and prototype ``(B, P, E)`` -> ``(B, Mq, P)``."""
    return -((queries.unsqueeze(2) - centres.unsqueeze(1)) ** 2).sum(-1)


def _accuracy(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (scores.argmax(-1) == targets).float().mean(dim=-1)


def _loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(scores.flatten(0, 1), targets.flatten())


def logits_episode(model: nn.Module, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
    """HT with a logits head: ``(query cross-entropy, per-task accuracy (B,))``."""
    weights = model.generate(episode.support_x, episode.support_y)
    logits = embed(model, weights, episode.query_x)
    return _loss(logits, episode.query_y), _accuracy(logits, episode.query_y)


def prototype_episode(model: nn.Module, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
    """A prototypical head (ProtoNet, HT or MergedHT with an embedding head): ``(loss, accuracy (B,))``."""
    weights = model.generate(episode.support_x, episode.support_y)
    centres = prototypes(embed(model, weights, episode.support_x), episode.support_y, episode.ways)
    scores = prototype_scores(embed(model, weights, episode.query_x), centres)
    return _loss(scores, episode.query_y), _accuracy(scores, episode.query_y)


@dataclass
class SequenceOutcome:
    """Accuracies ``[t][tau]`` as tensors ``(T, T, B)`` (NaN where ``tau > t``) and the summed training loss."""

    task_accuracy: torch.Tensor
    class_accuracy: torch.Tensor
    loss: torch.Tensor


def sequence_outcome(model: nn.Module, tasks: list[Episode], objective: str = "both",
                     prototype_mode: str = "recomputed", loss_tasks: list[int] | None = None,
                     chain: list[list[torch.Tensor]] | None = None) -> SequenceOutcome:
    """Run CHT (or any ``generate``-er: ProtoNet ignores the chain) over a task sequence and score every
    ``theta_t`` on every task so far; ``loss_tasks`` restricts the loss to some ``t`` (default: all);
    ``chain`` passes weights generated beforehand (:func:`generate_chain`)."""
    count, batch = len(tasks), tasks[0].support_x.shape[0]
    if chain is None:
        chain = generate_chain(model, [(task.support_x, task.support_y) for task in tasks])
    nan = torch.full((count, count, batch), float("nan"))
    task_accuracy, class_accuracy = nan.clone(), nan.clone()
    losses = []
    cached: list[torch.Tensor] = []
    for t, weights in enumerate(chain):
        cached.append(prototypes(embed(model, weights, tasks[t].support_x), tasks[t].support_y, tasks[t].ways))
        centres = cached if prototype_mode == "cached" else [
            cached[t] if tau == t else prototypes(embed(model, weights, tasks[tau].support_x), tasks[tau].support_y,
                                                  tasks[tau].ways) for tau in range(t + 1)]
        everything = torch.cat(centres[:t + 1], dim=1)
        for tau in range(t + 1):
            ways = tasks[tau].ways
            queries = embed(model, weights, tasks[tau].query_x)
            own = prototype_scores(queries, centres[tau])
            every = prototype_scores(queries, everything)
            targets = tasks[tau].query_y + tau * ways
            task_accuracy[t, tau] = _accuracy(own, tasks[tau].query_y).detach().cpu()
            class_accuracy[t, tau] = _accuracy(every, targets).detach().cpu()
            if loss_tasks is None or t in loss_tasks:
                if objective in ("task", "both"):
                    losses.append(_loss(own, tasks[tau].query_y))
                if objective in ("class", "both"):
                    losses.append(_loss(every, targets))
    loss = torch.stack(losses).mean() if losses else torch.zeros(())
    return SequenceOutcome(task_accuracy, class_accuracy, loss)


def merged_outcome(model: nn.Module, tasks: list[Episode]) -> torch.Tensor:
    """MergedHT: after task ``t`` the HT sees the union of the supports of tasks ``0..t`` at once.

    Returns class-incremental accuracies ``(T, T, B)`` (NaN where ``tau > t``).
    """
    count, batch = len(tasks), tasks[0].support_x.shape[0]
    accuracy = torch.full((count, count, batch), float("nan"))
    for t in range(count):
        union = merged(tasks[:t + 1])
        weights = model.generate(union.support_x, union.support_y)
        centres = prototypes(embed(model, weights, union.support_x), union.support_y, union.ways)
        for tau in range(t + 1):
            scores = prototype_scores(embed(model, weights, tasks[tau].query_x), centres)
            accuracy[t, tau] = _accuracy(scores, tasks[tau].query_y + tau * tasks[tau].ways).cpu()
    return accuracy


def minibatch_accuracy(model: nn.Module, batches: list[Episode]) -> torch.Tensor:
    """Learning one task from a stream of support mini-batches (CHT paper §5.1): after batch ``t`` the
    weights are ``theta_t`` and each class's prototype averages its samples of batches ``0..t``.

    Returns the accuracy on the task's (shared) query set after each batch, ``(T, B)``.
    """
    chain = generate_chain(model, [(batch.support_x, batch.support_y) for batch in batches])
    accuracy = []
    for t, weights in enumerate(chain):
        seen = merged(batches[:t + 1])
        labels = torch.where(seen.support_y == UNLABELLED, seen.support_y, seen.support_y % batches[0].ways)
        centres = prototypes(embed(model, weights, seen.support_x), labels, batches[0].ways)
        scores = prototype_scores(embed(model, weights, batches[0].query_x), centres)
        accuracy.append(_accuracy(scores, batches[0].query_y).cpu())
    return torch.stack(accuracy)


def finetune_outcome(body: nn.Module, tasks: list[Episode], steps: int, learning_rate: float) -> torch.Tensor:
    """Naive fine-tuning, task by task: the trained CNN ``body`` (its embedding as features) and a shared
    linear head over every class seen so far are trained with cross-entropy on each task's support only.

    All ``B`` sequences train independent copies at once (their weights are a batch dimension).
    Returns class-incremental accuracies ``(T, T, B)``.
    """
    count, batch, ways = len(tasks), tasks[0].support_x.shape[0], tasks[0].ways
    weights = [w.detach().clone().requires_grad_(True) for w in body.generate(tasks[0].support_x)]
    gammas = [g.detach().expand(batch, -1).clone().requires_grad_(True) for g in body.bn.gammas]
    betas = [b.detach().expand(batch, -1).clone().requires_grad_(True) for b in body.bn.betas]
    units = body.spec.head_units
    classifier = torch.zeros(batch, count * ways, units + 1, requires_grad=True)
    optimizer = adam([*weights, *gammas, *betas, classifier], learning_rate)

    def logits(images: torch.Tensor, seen: int) -> torch.Tensor:
        return head(forward(images, weights, gammas, betas), classifier[:, :seen])

    accuracy = torch.full((count, count, batch), float("nan"))
    for t, task in enumerate(tasks):
        seen = (t + 1) * ways
        for _ in range(steps):
            optimizer.zero_grad()
            loss = _loss(logits(task.support_x, seen), task.support_y + t * ways) * batch
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            for tau in range(t + 1):
                accuracy[t, tau] = _accuracy(logits(tasks[tau].query_x, seen), tasks[tau].query_y + tau * ways)
    return accuracy

