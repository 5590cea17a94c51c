"""Fine-tuning tasks for learned optimizers: a body pretrained on classes 0-4, fine-tuned on 5-9.

Kristiansen et al. (2024, §4) meta-train on fine-tuning a pretrained network; here the analogue
at CPU scale is scikit-learn's 8x8 digits (shipped with the package, nothing downloaded):

- pretraining: an MLP on classes 0-4 (Adam), one body per *pretraining seed*;
- a task: that body with a fresh 5-way head (initialised from the *task seed*), trained on
  classes 5-9 with batches drawn from the task seed; the validation loss is the meta-loss and
  the test loss scores the claims;
- held-out variants: an unseen body (a pretraining seed never used in meta-training), an unseen
  fine-tuning dataset (the 5-9 images rotated by 90 degrees), and twice the horizon.

The fine-tuning images are split once (fixed seed) into halves for training and quarters for
validation and test; inputs are scaled by the pixel statistics of the pretraining images. A
:class:`TaskSource` names the dataset (``digits``, or MNIST / Fashion-MNIST / CIFAR-10 from a local
directory) and the model (any of :func:`learnlab.data.models.build_model`, e.g. a ResNet).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional as F

from learnlab.data.datasets import load_dataset
from learnlab.data.models import build_model
from learnlab.data.offline import digits_arrays
from learnlab.data.training import batch_indices

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
VARIANTS = ("in-distribution", "unseen-init", "unseen-dataset", "long-horizon")


@dataclass(frozen=True)
class TaskData:
    """The fine-tuning split: ``train``/``val``/``test`` inputs ``(n, 1, 8, 8)`` and labels 0-4."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass(frozen=True)
class TaskSource:
    """Where tasks come from: ``dataset`` (``digits``; ``mnist``, ``fashion-mnist``, ``cifar10`` read
    from ``root``) and the fine-tuned ``model`` of ``width``."""

    dataset: str = "digits"
    root: str = ""
    model: str = "mlp"
    width: int = 8


@lru_cache(maxsize=2)
def _scaled_images(dataset: str, root: str) -> tuple[torch.Tensor, torch.Tensor]:
    if dataset == "digits":
        images, labels = digits_arrays()
        images = images[:, None]
    else:
        data = load_dataset(dataset, root or None)
        images = torch.cat([data.train.x, data.val.x, data.test.x]).numpy()
        labels = torch.cat([data.train.y, data.val.y, data.test.y]).numpy()
    pretrain = np.isin(labels, PRETRAIN_CLASSES)
    mean, std = images[pretrain].mean(), images[pretrain].std()
    return torch.from_numpy((images - mean) / std).float(), torch.from_numpy(labels)


def pretraining_data(source: TaskSource = TaskSource()) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _scaled_images(source.dataset, source.root)
    keep = y < len(PRETRAIN_CLASSES)
    return x[keep], y[keep]


def finetune_data(source: TaskSource = TaskSource(), rotated: bool = False) -> TaskData:
    """Classes 5-9 relabelled 0-4, split 50 / 25 / 25 with a fixed seed; ``rotated``: images turned 90 degrees."""
    x, y = _scaled_images(source.dataset, source.root)
    keep = y >= len(PRETRAIN_CLASSES)
    x, y = x[keep], y[keep] - len(PRETRAIN_CLASSES)
    if rotated:
        x = torch.rot90(x, 1, dims=(2, 3)).contiguous()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    half, three_quarters = len(y) // 2, 3 * len(y) // 4
    parts = [order[:half], order[half:three_quarters], order[three_quarters:]]
    return TaskData(*(tensor for part in parts for tensor in (x[part], y[part])))


def pretrain_body(source: TaskSource, seed: int, steps: int, learning_rate: float = 3e-3,
                  batch_size: int = 64) -> dict[str, torch.Tensor]:
    """The source's model (e.g. an MLP with hidden 8·width) trained with Adam on classes 0-4: its weights by name."""
    x, y = pretraining_data(source)
    model = build_model(source.model, tuple(x.shape[1:]), len(PRETRAIN_CLASSES), source.width,
                        torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, foreach=True)
    batches = batch_indices(len(y), batch_size, torch.Generator().manual_seed(seed + 1))
    for _ in range(steps):
        index = next(batches)
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {name: value.detach().clone() for name, value in model.named_parameters()}


def task_start(source: TaskSource, body: dict[str, torch.Tensor], task_seed: int) -> dict[str, torch.Tensor]:
    """The pretrained body with a fresh head (the last layer re-initialised from ``task_seed``)."""
    fresh = structure(source, torch.Generator().manual_seed(10_000 + task_seed))
    params = dict(body)
    head = list(body)[-2:]  # the last Linear: weight and bias
    for name, value in fresh.named_parameters():
        if name in head:
            params[name] = value.detach().clone()
    return params


def task_batches(num_train: int, batch_size: int, steps: int, task_seed: int) -> list[torch.Tensor]:
    stream = batch_indices(num_train, batch_size, torch.Generator().manual_seed(20_000 + task_seed))
    return [next(stream) for _ in range(steps)]


def structure(source: TaskSource, generator: torch.Generator | None = None) -> torch.nn.Module:
    """The fine-tuned model's structure (its weights come from :func:`task_start`)."""
    x, _ = _scaled_images(source.dataset, source.root)
    return build_model(source.model, tuple(x.shape[1:]), len(PRETRAIN_CLASSES), source.width, generator)
