"""Datasets that need no download: MNIST-1D (generated locally) and scikit-learn's 8x8 digits.

- MNIST-1D (Greydanus 2020, package ``mnist1d``): ten 1-D templates, padded, scaled, translated,
  sheared and noised into length-40 signals. We call the package's procedural ``make_dataset``
  with its default arguments (changing only ``num_samples`` and ``seed``); its ``get_dataset``,
  which may fetch a pickle from a URL, is never used.
- Digits: the 1797 8x8 handwritten digits that ship inside scikit-learn (``load_digits``).

Inputs are ``(n, 1, 40)`` and ``(n, 1, 8, 8)`` float32, standardised with training statistics.
"""

from __future__ import annotations

import random

import numpy as np

from learnlab.data.splits import ClassificationData, make_classification_data

MNIST1D_LENGTH = 40


def generate_mnist1d(num_samples: int = 5000, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Generate MNIST-1D locally: ``(x, y)`` with ``x`` of shape ``(n, 40)``.

    ``n = 10 * (num_samples // 10)`` (the package draws ``num_samples // 10`` per class). The package
    seeds NumPy's and Python's global generators; their states are restored afterwards, so calling
    this has no effect on other random streams.
    """
    if num_samples < 10:
        raise ValueError(f"num_samples must be >= 10, got {num_samples}")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    args.train_split = 1.0  # we split ourselves (deterministically, see make_classification_data)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        dataset = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return np.asarray(dataset["x"], dtype=np.float32), np.asarray(dataset["y"], dtype=np.int64)


def load_mnist1d(
    num_samples: int = 5000,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    generation_seed: int = 42,
) -> ClassificationData:
    """MNIST-1D with ``num_samples`` examples, split deterministically by ``seed``; shape (1, 40)."""
    x, y = generate_mnist1d(num_samples, generation_seed)
    return make_classification_data("mnist1d", x[:, None, :], y, 10, val_fraction, test_fraction, seed)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8x8 digits ``(images (n, 8, 8) in 0..16, labels)`` shipped with scikit-learn.

    Reads the CSV that ``sklearn.datasets.load_digits`` reads (``sklearn/datasets/data/digits.csv.gz``,
    64 pixel columns then the label) straight from the installed package, which avoids importing
    scikit-learn (seconds); falls back to ``load_digits`` if that file is not where expected.
    """
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.exists():
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return np.asarray(bunch.images, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)


def load_digits(val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> ClassificationData:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package), shape (1, 8, 8)."""
    images, labels = digits_arrays()
    return make_classification_data("digits", images[:, None, :, :] / 16.0, labels, 10, val_fraction, test_fraction, seed)
