"""Episodes and task sequences for few-shot and continual few-shot learning.

An :class:`Episode` is a batch of ``B`` independent N-way K-shot tasks: a support set (with
optional unlabelled samples, label ``UNLABELLED``) and a query set, drawn from a
:class:`~learnlab.data.glyphs.ClassImages` pool. Labels are task-local, ``0 .. N-1``.

Task sequences (Vladymyrov et al. 2024, §3 and §5) come in two kinds:

- ``novel``: the T tasks of a sequence use disjoint classes (task- and class-incremental
  learning);
- ``minibatches``: every task is a fresh mini-batch of support samples of the *same* N classes
  (learning one task from a stream of mini-batches), with one shared query set.

Every draw takes an explicit ``torch.Generator``; the same generator state gives the same tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnlab.core.errors import UserError
from learnlab.data.glyphs import ClassImages

UNLABELLED = -1


@dataclass(frozen=True)
class Episode:
    """``B`` tasks: support ``(B, Ms, 1, S, S)`` with labels ``(B, Ms)``, query ``(B, Mq, 1, S, S)`` with labels."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor  # (B, N) class indices in the pool

    @property
    def ways(self) -> int:
        return int(self.classes.shape[1])

    def to(self, device: torch.device | str) -> "Episode":
        return Episode(*(tensor.to(device) for tensor in (self.support_x, self.support_y, self.query_x, self.query_y,
                                                        self.classes)))


def check_pool(pool: ClassImages, ways: int, samples_needed: int, what: str = "episodes") -> None:
    """One clear error when ``pool`` has too few classes or samples per class."""
    if ways > pool.num_classes:
        raise UserError(f"{what} need {ways} classes but {pool.name or 'the dataset'} has only {pool.num_classes}")
    if samples_needed > pool.samples_per_class:
        raise UserError(f"{what} need {samples_needed} samples per class but {pool.name or 'the dataset'} has only "
                        f"{pool.samples_per_class}")


def _random_subsets(batch: int, population: int, size: int, generator: torch.Generator, lead: tuple[int, ...] = ()
                    ) -> torch.Tensor:
    """``size`` distinct indices out of ``population`` for each of ``batch * prod(lead)`` draws."""
    return torch.rand((batch, *lead, population), generator=generator).argsort(dim=-1)[..., :size]


def _rotate_classes(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random multiple of 90° per (task, class), the same for all its images (HT's Omniglot augmentation)."""
    turns = torch.randint(0, 4, images.shape[:2], generator=generator)
    rotated = images.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        rotated[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    return rotated


def _episode(images: torch.Tensor, classes: torch.Tensor, shots: int, unlabelled: int) -> Episode:
    """Split ``images (B, N, shots + unlabelled + queries, 1, S, S)`` into support and query."""
    batch, ways = images.shape[:2]
    labels = torch.arange(ways).view(1, ways, 1)
    support = images[:, :, :shots + unlabelled]
    support_y = labels.expand(batch, ways, shots + unlabelled).clone()
    support_y[:, :, shots:] = UNLABELLED
    query = images[:, :, shots + unlabelled:]
    queries = query.shape[2]
    return Episode(support.reshape(batch, ways * (shots + unlabelled), *images.shape[3:]),
                   support_y.reshape(batch, -1),
                   query.reshape(batch, ways * queries, *images.shape[3:]),
                   labels.expand(batch, ways, queries).reshape(batch, -1).clone(), classes)


def sample_episodes(pool: ClassImages, batch: int, ways: int, shots: int, queries: int, generator: torch.Generator,
                    unlabelled: int = 0, rotate: bool = False) -> Episode:
    """``batch`` N-way K-shot tasks with ``queries`` query and ``unlabelled`` unlabelled samples per class."""
    needed = shots + unlabelled + queries
    check_pool(pool, ways, needed)
    classes = _random_subsets(batch, pool.num_classes, ways, generator)
    samples = _random_subsets(batch, pool.samples_per_class, needed, generator, lead=(ways,))
    images = pool.images[classes[..., None], samples]
    if rotate:
        images = _rotate_classes(images, generator)
    return _episode(images, classes, shots, unlabelled)


def sample_sequences(pool: ClassImages, batch: int, tasks: int, ways: int, shots: int, queries: int,
                     generator: torch.Generator, kind: str = "novel", unlabelled: int = 0, rotate: bool = False
                     ) -> list[Episode]:
    """``batch`` sequences of ``tasks`` tasks each, as one :class:`Episode` per position in the sequence."""
    if kind == "novel":
        check_pool(pool, tasks * ways, shots + unlabelled + queries, what=f"sequences of {tasks} {ways}-way tasks")
        classes = _random_subsets(batch, pool.num_classes, tasks * ways, generator).view(batch, tasks, ways)
        samples = _random_subsets(batch, pool.samples_per_class, shots + unlabelled + queries, generator,
                                  lead=(tasks, ways))
        images = pool.images[classes[..., None], samples]  # (B, T, N, n, 1, S, S)
        if rotate:
            images = _rotate_classes(images.flatten(1, 2), generator).view(images.shape)
        return [_episode(images[:, t], classes[:, t], shots, unlabelled) for t in range(tasks)]
    if kind == "minibatches":
        per_task = shots + unlabelled
        check_pool(pool, ways, tasks * per_task + queries, what=f"{tasks} mini-batches of a {ways}-way task")
        classes = _random_subsets(batch, pool.num_classes, ways, generator)
        samples = _random_subsets(batch, pool.samples_per_class, tasks * per_task + queries, generator, lead=(ways,))
        images = pool.images[classes[..., None], samples]
        if rotate:
            images = _rotate_classes(images, generator)
        query = images[:, :, tasks * per_task:]
        return [_episode(torch.cat([images[:, :, t * per_task:(t + 1) * per_task], query], dim=2), classes, shots,
                         unlabelled) for t in range(tasks)]
    raise UserError(f"unknown sequence kind {kind!r}; valid kinds: novel, minibatches")


def merged(tasks: list[Episode]) -> Episode:
    """The union of the supports (and queries) of ``tasks`` as one task, labels offset by ``N`` per task."""
    ways = tasks[0].ways

    def offset(labels: torch.Tensor, t: int) -> torch.Tensor:
        return torch.where(labels == UNLABELLED, labels, labels + t * ways)

    return Episode(torch.cat([task.support_x for task in tasks], dim=1),
                   torch.cat([offset(task.support_y, t) for t, task in enumerate(tasks)], dim=1),
                   torch.cat([task.query_x for task in tasks], dim=1),
                   torch.cat([offset(task.query_y, t) for t, task in enumerate(tasks)], dim=1),
                   torch.cat([task.classes for task in tasks], dim=1))
