"""Procedural glyphs: an Omniglot-like few-shot dataset generated locally in seconds.

Each class is a character made of 1-4 pen strokes (quadratic Bézier curves through random control
points); a sample of the class redraws the character with jittered control points, a small
rotation, scaling and shift, and a random pen thickness, drawn with soft edges into a ``size x size``
image (strokes 1, background 0, like inverted Omniglot). Everything is a pure function of
``(seed, class index, sample index)``: the same seed gives the same images on every machine.

Classes are split like the HyperTransformer's Omniglot split (Zhmoginov et al. 2022, §5.1 and
its training scripts): class order shuffled by a seed, the first ``train_classes`` for
meta-training and classes from ``test_start`` on for meta-testing, with a gap between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from learnlab.core.errors import UserError

CURVE_POINTS = 40  # pen positions per Bézier stroke (about one per pixel at 28 x 28)


@dataclass(frozen=True)
class ClassImages:
    """Images grouped by class: ``images[c, i]`` is sample ``i`` of class ``c``, ``(C, n, 1, S, S)`` float32 in [0, 1]."""

    images: torch.Tensor
    name: str = ""

    @property
    def num_classes(self) -> int:
        return int(self.images.shape[0])

    @property
    def samples_per_class(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


@dataclass(frozen=True)
class FewShotSplits:
    """Disjoint meta-training and meta-test classes of one dataset."""

    train: ClassImages
    test: ClassImages


def _character(rng: np.random.Generator) -> list[np.ndarray]:
    """A class: 1-4 strokes, each three control points (start, pull, end) in the unit square."""
    strokes = []
    for _ in range(int(rng.integers(1, 5))):
        start = rng.uniform(0.15, 0.85, size=2)
        end = np.clip(start + rng.normal(0.0, 0.3, size=2), 0.1, 0.9)
        pull = np.clip((start + end) / 2 + rng.normal(0.0, 0.2, size=2), 0.05, 0.95)
        strokes.append(np.stack([start, pull, end]))
    return strokes


_T = np.linspace(0.0, 1.0, CURVE_POINTS)[:, None]
BEZIER = ((1 - _T) ** 2, 2 * (1 - _T) * _T, _T ** 2)  # the weights of the three control points along a stroke


def _sample_points(strokes: list[np.ndarray], rng: np.random.Generator, samples: int, jitter: float,
                   rotation_degrees: float) -> np.ndarray:
    """``samples`` redraws' pen positions ``(samples, strokes, CURVE_POINTS, 2)`` after jitter, rotation,
    scaling and shift.

    The random numbers are drawn sample by sample, in the order of a per-sample loop (angle, scale,
    shift, then every stroke's jitter); the curves of all samples are then computed at once.
    """
    control = np.stack(strokes)  # (strokes, 3, 2)
    rotations, shifts, jitters = [], [], []
    for _ in range(samples):
        angle = np.deg2rad(rng.uniform(-rotation_degrees, rotation_degrees))
        scale = rng.uniform(0.85, 1.1)
        shifts.append(rng.normal(0.0, 0.04, size=2))
        rotations.append(np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale)
        jitters.append(rng.normal(0.0, jitter, size=control.shape))
    points = (control + np.stack(jitters))[..., None, :]  # (samples, strokes, 3, 1, 2)
    curves = BEZIER[0] * points[:, :, 0] + BEZIER[1] * points[:, :, 1] + BEZIER[2] * points[:, :, 2]
    rotate = np.stack(rotations).transpose(0, 2, 1)[:, None]  # (samples, 1, 2, 2), each transposed
    return (curves - 0.5) @ rotate + 0.5 + np.stack(shifts)[:, None, None]


def _rasterise(curves: np.ndarray, width: np.ndarray, size: int) -> np.ndarray:
    """Images ``(n, size, size)`` of pen curves ``(n, strokes, points, 2)`` (unit square), pen width in pixels.

    Each pen position is a Gaussian dot weighted by the arc length it covers, so a stroke has the
    same ink along its length; a separable kernel makes the image one matrix product per sample.
    """
    points = curves * size - 0.5  # pixel coordinates
    step = np.linalg.norm(np.diff(points, axis=2), axis=-1)  # (n, strokes, points - 1)
    weight = np.concatenate([step[..., :1], (step[..., 1:] + step[..., :-1]), step[..., -1:]], axis=-1) / 2
    sigma = (width / 2.5)[:, None, None]
    n = len(points)
    points, weight = points.reshape(n, -1, 2), (weight / (np.sqrt(2 * np.pi) * sigma)).reshape(n, -1)
    grid = np.arange(size, dtype=np.float64)
    column = np.exp(-(grid[None, None] - points[..., :1]) ** 2 / (2 * sigma.reshape(n, 1, 1) ** 2))  # (n, P, size)
    row = np.exp(-(grid[None, None] - points[..., 1:]) ** 2 / (2 * sigma.reshape(n, 1, 1) ** 2))
    ink = np.einsum("npy,npx->nyx", row * weight[..., None], column)
    return np.clip(1.6 * ink, 0.0, 1.0).astype(np.float32)


def glyph_class(seed: int, index: int, samples: int, size: int = 28, jitter: float = 0.03,
                rotation_degrees: float = 12.0) -> np.ndarray:
    """The ``samples`` images ``(samples, size, size)`` of glyph class ``index`` for ``seed``."""
    character = _character(np.random.default_rng([seed, index, 0]))
    rng = np.random.default_rng([seed, index, 1])
    curves = _sample_points(character, rng, samples, jitter, rotation_degrees)
    width = rng.uniform(1.2, 2.6, size=samples) * size / 28
    return _rasterise(curves, width, size)


def generate_glyphs(num_classes: int = 1623, samples: int = 20, size: int = 28, seed: int = 0) -> ClassImages:
    """``num_classes`` glyph classes of ``samples`` images each (Omniglot's default counts: 1623 x 20)."""
    if num_classes < 1 or samples < 1 or size < 8:
        raise UserError(f"glyphs need num_classes >= 1, samples >= 1 and size >= 8 (got {num_classes}, {samples}, {size})")
    images = np.stack([glyph_class(seed, index, samples, size) for index in range(num_classes)])
    return ClassImages(torch.from_numpy(images[:, :, None]), name=f"glyphs(seed={seed})")


def split_classes(classes: ClassImages, train_classes: int, test_start: int, seed: int = 2022) -> FewShotSplits:
    """Shuffle the class order with ``seed``; classes ``[0, train_classes)`` meta-train, ``[test_start, C)`` meta-test."""
    total = classes.num_classes
    if not 0 < train_classes <= test_start < total:
        raise UserError(f"the class split needs 0 < train_classes <= test_start < {total} classes "
                        f"(got train_classes={train_classes}, test_start={test_start})")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(total))
    return FewShotSplits(train=ClassImages(classes.images[order[:train_classes]], f"{classes.name}:train"),
                         test=ClassImages(classes.images[order[test_start:]], f"{classes.name}:test"))
