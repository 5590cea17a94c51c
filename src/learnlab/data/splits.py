"""In-memory classification data: deterministic splits, symmetric label noise, standardisation.

Every dataset of :mod:`learnlab.data` ends up as a :class:`ClassificationData`: float32 inputs of
shape ``(n, channels, length)`` (1-D signals) or ``(n, channels, height, width)`` (images) and
int64 labels, split into ``train``, ``val`` and ``test``. Splits are a pure function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """One split: inputs ``x`` (float32) and integer labels ``y`` (int64)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class ClassificationData:
    """Train / validation / test splits of one dataset.

    Attributes:
        name: the dataset's name.
        train, val, test: the splits. With label noise, ``train.y`` holds the noisy labels.
        clean_train_y: the true training labels (equal to ``train.y`` without label noise).
        num_classes: number of classes.
        label_noise: the fraction of training labels that were replaced (0 when none).
    """

    name: str
    train: Split
    val: Split
    test: Split
    clean_train_y: torch.Tensor
    num_classes: int
    label_noise: float = 0.0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(channels, length)`` or ``(channels, height, width)``."""
        return tuple(self.train.x.shape[1:])

    def to(self, device: torch.device | str) -> ClassificationData:
        """A copy with every tensor on ``device``."""
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device),
                       clean_train_y=self.clean_train_y.to(device))

    def with_label_noise(self, fraction: float, seed: int) -> ClassificationData:
        """A copy whose training labels carry symmetric noise (see :func:`symmetric_label_noise`).

        Only the train split is changed; validation and test keep their clean labels.
        """
        noisy = symmetric_label_noise(self.clean_train_y, fraction, self.num_classes, seed)
        return replace(self, train=Split(self.train.x, noisy), label_noise=fraction)


def split_indices(num_examples: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic disjoint train / val / test index arrays from one permutation of ``seed``."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val, test fractions and val + test < 1, got {val_fraction}, {test_fraction}")
    order = np.random.default_rng(seed).permutation(num_examples)
    num_val = int(round(val_fraction * num_examples))
    num_test = int(round(test_fraction * num_examples))
    return order[num_val + num_test:], order[:num_val], order[num_val:num_val + num_test]


def symmetric_label_noise(labels: torch.Tensor, fraction: float, num_classes: int, seed: int) -> torch.Tensor:
    """Symmetric label noise: exactly ``round(fraction * n)`` labels, chosen uniformly at random,
    are replaced by a label drawn uniformly from the *other* ``num_classes - 1`` classes.

    So exactly that fraction of labels is wrong, and a wrong label is equally likely to be any other
    class. This creates the noise floor that averaging needs (SGD noise, not bias, dominates the loss).
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"label noise fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    noisy = labels.clone()
    count = int(round(fraction * len(labels)))
    chosen = torch.from_numpy(rng.choice(len(labels), size=count, replace=False)).long()
    shift = torch.from_numpy(rng.integers(1, num_classes, size=count)).long()
    noisy[chosen] = (labels[chosen] + shift) % num_classes
    return noisy


def standardise(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Scale every tensor by the per-channel mean and standard deviation of ``train`` (dim 1)."""
    dims = [0] + list(range(2, train.dim()))
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return tuple((tensor - mean) / std for tensor in (train, *others))


def make_classification_data(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> ClassificationData:
    """Split arrays into a standardised :class:`ClassificationData`.

    Without ``test``, the examples are split three ways; with an official ``test`` set, only the
    validation split is carved out of ``x`` (``test_fraction`` is then ignored).
    """
    x_all = torch.as_tensor(np.asarray(x, dtype=np.float32))
    y_all = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if test is None:
        train_index, val_index, test_index = split_indices(len(y_all), val_fraction, test_fraction, seed)
        test_x, test_y = x_all[test_index], y_all[test_index]
    else:
        train_index, val_index, _ = split_indices(len(y_all), val_fraction, 0.0, seed)
        test_x = torch.as_tensor(np.asarray(test[0], dtype=np.float32))
        test_y = torch.as_tensor(np.asarray(test[1], dtype=np.int64))
    train_x, val_x, test_x = standardise(x_all[train_index], x_all[val_index], test_x)
    train_y = y_all[train_index]
    return ClassificationData(
        name=name,
        train=Split(train_x.contiguous(), train_y),
        val=Split(val_x.contiguous(), y_all[val_index]),
        test=Split(test_x.contiguous(), test_y),
        clean_train_y=train_y,
        num_classes=num_classes,
    )
