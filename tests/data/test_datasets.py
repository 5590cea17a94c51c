import gzip
import socket

import numpy as np
import pytest
import torch

from learnlab.core.errors import UserError
from learnlab.data.datasets import load_dataset
from learnlab.data.image_files import load_cifar10, load_fashion_mnist, load_mnist, read_idx
from learnlab.data.offline import generate_mnist1d, load_digits
from learnlab.data.splits import split_indices, symmetric_label_noise


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_mnist1d_is_generated_offline_and_deterministic(offline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = np.random.get_state()[1].copy()
    x1, y1 = generate_mnist1d(200, seed=3)
    x2, y2 = generate_mnist1d(200, seed=3)
    assert x1.shape == (200, 40) and set(np.unique(y1)) == set(range(10))
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(generate_mnist1d(200, seed=4)[0], x1)
    assert np.array_equal(np.random.get_state()[1], state)  # global NumPy stream untouched
    assert list(tmp_path.iterdir()) == []  # nothing cached or downloaded


def test_digits_splits_are_deterministic_disjoint_and_standardised(offline):
    a, b = load_digits(seed=1), load_digits(seed=1)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(load_digits(seed=2).train.y, a.train.y)
    assert abs(float(a.train.x.mean())) < 1e-5 and abs(float(a.train.x.std()) - 1) < 1e-3
    train, val, test = split_indices(100, 0.1, 0.2, seed=0)
    assert len(set(train) | set(val) | set(test)) == 100 and (len(train), len(val), len(test)) == (70, 10, 20)


def test_label_noise_changes_exactly_the_fraction_and_only_train(offline):
    clean = load_dataset("mnist1d", num_samples=500, seed=0)
    noisy = load_dataset("mnist1d", num_samples=500, seed=0, label_noise=0.2)
    assert noisy.input_shape == (1, 40)
    wrong = (noisy.train.y != noisy.clean_train_y).float().mean().item()
    assert wrong == pytest.approx(0.2, abs=1 / len(noisy.train))
    assert torch.equal(noisy.clean_train_y, clean.train.y)
    assert torch.equal(noisy.test.y, clean.test.y) and torch.equal(noisy.val.y, clean.val.y)
    labels = torch.arange(10).repeat(100)
    flipped = symmetric_label_noise(labels, 0.3, 10, seed=5)
    assert torch.equal(flipped, symmetric_label_noise(labels, 0.3, 10, seed=5))
    assert int((flipped != labels).sum()) == 300


def test_missing_dataset_directory_is_a_user_error(tmp_path):
    for loader in (load_mnist, load_fashion_mnist, load_cifar10):
        with pytest.raises(UserError, match="not found"):
            loader(tmp_path / "nowhere")
    with pytest.raises(UserError, match="needs a local directory"):
        load_dataset("cifar10")
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("imagenet")


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(f"{path}.gz", "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_files_are_read(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (24, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(24) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (6, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(6) % 10)
    data = load_mnist(tmp_path, val_fraction=0.25)
    assert data.input_shape == (1, 28, 28) and (len(data.train), len(data.val), len(data.test)) == (18, 6, 6)
    assert read_idx(raw / "t10k-labels-idx1-ubyte").tolist() == [0, 1, 2, 3, 4, 5]
    (raw / "bad-idx").write_bytes(b"\x01\x02")
    with pytest.raises(UserError, match="magic"):
        read_idx(raw / "bad-idx")
