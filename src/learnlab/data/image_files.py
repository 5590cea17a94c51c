"""MNIST, Fashion-MNIST and CIFAR-10 from a local directory (torchvision's on-disk layouts), numpy only.

Nothing is ever downloaded. Layouts accepted (``root`` is what you would pass to torchvision):

- MNIST / Fashion-MNIST: the four IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (optionally ``.gz``) in ``root``,
  ``root/raw``, ``root/MNIST/raw`` or ``root/FashionMNIST/raw``;
- CIFAR-10: the python batches ``data_batch_1..5`` and ``test_batch`` in ``root`` or
  ``root/cifar-10-batches-py``.

A missing or malformed file raises :class:`~learnlab.core.errors.UserError` (one line, exit 2).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from learnlab.core.errors import UserError
from learnlab.data.splits import ClassificationData, make_classification_data

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _find_dir(root: Path, candidates: tuple[str, ...], names: tuple[str, ...], what: str) -> Path:
    root = Path(root).expanduser()
    for sub in candidates:
        folder = root / sub if sub else root
        if all((folder / name).exists() or (folder / f"{name}.gz").exists() for name in names):
            return folder
    looked = ", ".join(str(root / sub) if sub else str(root) for sub in candidates)
    raise UserError(f"{what} not found: expected {', '.join(names)} in one of {looked}")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) into a uint8 array of its stated shape."""
    path = Path(path)
    if not path.exists() and Path(f"{path}.gz").exists():
        path = Path(f"{path}.gz")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise UserError(f"cannot read {path}: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - offset != expected:
        raise UserError(f"{path} is truncated or malformed: header says {shape}, file has {len(data) - offset} bytes of data")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _load_idx_dataset(name: str, root: Path, subfolders: tuple[str, ...], val_fraction: float, seed: int) -> ClassificationData:
    folder = _find_dir(root, subfolders, IDX_FILES, name)
    train_x, train_y, test_x, test_y = (read_idx(folder / file) for file in IDX_FILES)
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise UserError(f"{name} in {folder}: image and label counts differ")
    scale = np.float32(1 / 255)
    return make_classification_data(
        name, train_x[:, None] * scale, train_y, 10, val_fraction, 0.0, seed, test=(test_x[:, None] * scale, test_y)
    )


def load_mnist(root: str | Path, val_fraction: float = 1 / 12, seed: int = 0) -> ClassificationData:
    """MNIST from IDX files in ``root`` (torchvision layout); official test set, val from train."""
    return _load_idx_dataset("mnist", Path(root), ("", "raw", "MNIST/raw"), val_fraction, seed)


def load_fashion_mnist(root: str | Path, val_fraction: float = 1 / 12, seed: int = 0) -> ClassificationData:
    """Fashion-MNIST from IDX files in ``root`` (torchvision layout); official test set, val from train."""
    return _load_idx_dataset("fashion-mnist", Path(root), ("", "raw", "FashionMNIST/raw"), val_fraction, seed)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")  # the official CIFAR python format is a pickle
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as error:
        raise UserError(f"{path} is not a CIFAR-10 python batch: {error}") from None
    return images, labels


def load_cifar10(root: str | Path, val_fraction: float = 0.1, seed: int = 0) -> ClassificationData:
    """CIFAR-10 from the python batches in ``root`` (torchvision layout), shape (3, 32, 32).

    The batches are pickles: only load files from a source you trust.
    """
    folder = _find_dir(Path(root), ("", "cifar-10-batches-py"), CIFAR10_FILES, "CIFAR-10")
    train = [_read_cifar_batch(folder / name) for name in CIFAR10_FILES[:-1]]
    test_x, test_y = _read_cifar_batch(folder / "test_batch")
    train_x = np.concatenate([x for x, _ in train]).astype(np.float32) / 255
    train_y = np.concatenate([y for _, y in train])
    return make_classification_data("cifar10", train_x, train_y, 10, val_fraction, 0.0, seed,
                                    test=(test_x.astype(np.float32) / 255, test_y))
