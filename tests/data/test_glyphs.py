"""Procedural glyphs and few-shot image folders: deterministic, offline, disjoint splits, clear errors."""

import numpy as np
import pytest
import torch

from learnlab.core.errors import UserError
from learnlab.data.glyphs import generate_glyphs, glyph_class, split_classes
from learnlab.data.image_classes import load_image_classes, load_omniglot


def test_glyphs_are_deterministic_and_vary_within_a_class():
    first, again = generate_glyphs(12, 6, 16, seed=3), generate_glyphs(12, 6, 16, seed=3)
    assert first.images.shape == (12, 6, 1, 16, 16) and first.images.dtype == torch.float32
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, generate_glyphs(12, 6, 16, seed=4).images)
    assert 0.0 <= float(first.images.min()) and float(first.images.max()) <= 1.0
    assert float(first.images.mean()) > 0.02  # strokes are drawn
    # a class is a character: its samples differ, but are closer to each other than to other classes
    flat = first.images.flatten(2)
    within = torch.cdist(flat[0], flat[0]).sum() / (6 * 5)
    between = torch.cdist(flat[0], flat[1:].flatten(0, 1)).mean()
    assert within > 0 and within < between
    # a class does not depend on how many classes are generated
    assert np.array_equal(glyph_class(3, 5, 6, 16), first.images[5, :, 0].numpy())


def test_split_is_disjoint_and_follows_the_shuffled_class_order():
    classes = generate_glyphs(30, 3, 12)
    splits = split_classes(classes, train_classes=20, test_start=24, seed=2022)
    assert splits.train.num_classes == 20 and splits.test.num_classes == 6
    train = {tuple(image.flatten().tolist()) for image in splits.train.images[:, 0]}
    test = {tuple(image.flatten().tolist()) for image in splits.test.images[:, 0]}
    assert not train & test
    order = np.random.default_rng(2022).permutation(30)
    assert torch.equal(splits.test.images, classes.images[torch.from_numpy(order[24:])])
    with pytest.raises(UserError, match="train_classes"):
        split_classes(classes, train_classes=25, test_start=24)


def _write_folders(root, classes, per_class, size=10):
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(classes):
        folder = root / f"alphabet{index % 2}" / f"character{index}"
        folder.mkdir(parents=True)
        for sample in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / f"{sample}.png")


def test_image_folders_and_omniglot_layout(tmp_path):
    _write_folders(tmp_path / "mine", classes=5, per_class=4)
    classes = load_image_classes(tmp_path / "mine", size=8)
    assert classes.images.shape == (5, 4, 1, 8, 8)
    for part in ("images_background", "images_evaluation"):
        _write_folders(tmp_path / "omni" / "omniglot-py" / part, classes=3, per_class=2)
    omniglot = load_omniglot(tmp_path / "omni", size=8)
    assert omniglot.images.shape == (6, 2, 1, 8, 8)
    plain = load_image_classes(tmp_path / "omni" / "omniglot-py" / "images_background", size=8)
    assert torch.allclose(omniglot.images[:3], 1 - plain.images)  # strokes become 1


def test_missing_or_empty_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="Omniglot not found"):
        load_omniglot(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_image_classes(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_image_classes(tmp_path / "empty")
    _write_folders(tmp_path / "few", classes=2, per_class=1)
    with pytest.raises(UserError, match="at least 2 per class"):
        load_image_classes(tmp_path / "few")
