"""Seeding, device choice and CPU threads."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from learnlab.core.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; asking for a missing CUDA is a user error."""
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; valid devices: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def derive_seed(seed: int, *names: str) -> int:
    """A stable 63-bit seed for a named stream, so that stages draw independent numbers."""
    digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators (components prefer explicit generators)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def set_threads(threads: int) -> int:
    """Set torch's intra-op CPU threads; ``0`` keeps torch's default. Returns the count in use."""
    if threads < 0:
        raise UserError(f"--threads must be >= 0, got {threads}")
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@contextmanager
def preserved_runtime() -> Iterator[None]:
    """Restore torch's CPU thread count and the global Python, NumPy and torch random states on exit.

    A run seeds the global generators and sets its own thread count; a study that runs another
    (e.g. ``priming`` training the ``world`` model) must find both as it left them.
    """
    threads = torch.get_num_threads()
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
