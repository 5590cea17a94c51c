"""One entry point for every dataset of :mod:`learnlab.data`, by name."""

from __future__ import annotations

from pathlib import Path

from learnlab.core.errors import UserError
from learnlab.data.splits import ClassificationData

DATASET_NAMES = ("mnist1d", "digits", "mnist", "fashion-mnist", "cifar10")


def load_dataset(name: str, root: str | Path | None = None, num_samples: int = 5000, seed: int = 0,
                 label_noise: float = 0.0) -> ClassificationData:
    """Load ``name`` with deterministic splits (``seed``) and optional symmetric training-label noise.

    ``mnist1d`` and ``digits`` need nothing on disk; ``mnist``, ``fashion-mnist`` and ``cifar10``
    read ``root`` (torchvision's layout) and raise :class:`UserError` when it is missing.
    """
    from learnlab.data import image_files, offline

    if name == "mnist1d":
        data = offline.load_mnist1d(num_samples, seed=seed)
    elif name == "digits":
        data = offline.load_digits(seed=seed)
    elif name in ("mnist", "fashion-mnist", "cifar10"):
        if root is None:
            raise UserError(f"dataset {name} needs a local directory (root); nothing is downloaded")
        loader = {"mnist": image_files.load_mnist, "fashion-mnist": image_files.load_fashion_mnist,
                  "cifar10": image_files.load_cifar10}[name]
        data = loader(root, seed=seed)
    else:
        raise UserError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASET_NAMES)}")
    return data.with_label_noise(label_noise, seed + 1) if label_noise > 0 else data
