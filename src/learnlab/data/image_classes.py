"""Few-shot image classes from local folders: Omniglot in torchvision's layout, or one's own images.

Nothing is downloaded. A *class* is a folder that directly holds image files (``.png``, ``.jpg``,
``.jpeg``, ``.bmp``); folders may nest (Omniglot: ``alphabet/character/*.png``). Images are read
with Pillow, converted to grey, resized to ``size x size`` and scaled to [0, 1]; each class keeps
the same number of images (the smallest count among the classes, at least ``min_samples``).

- :func:`load_omniglot`: ``root/omniglot-py/images_background`` and ``images_evaluation`` (as
  torchvision's ``Omniglot(root)`` stores them; ``root`` may also be the ``omniglot-py`` folder),
  inverted so that strokes are 1, all 1623 classes in sorted order;
- :func:`load_image_classes`: every class folder below ``root``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from learnlab.core.errors import UserError
from learnlab.data.glyphs import ClassImages

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
OMNIGLOT_PARTS = ("images_background", "images_evaluation")


def class_folders(root: Path) -> list[Path]:
    """Folders below ``root`` (itself included) that directly hold image files, sorted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist")
    folders = sorted({path.parent for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES})
    if not folders:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found below {root}")
    return folders


def _read(path: Path, size: int, invert: bool) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            grey = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    except OSError as error:
        raise UserError(f"cannot read image {path}: {error}") from None
    pixels = np.asarray(grey, dtype=np.float32) / 255.0
    return 1.0 - pixels if invert else pixels


def _load_folders(folders: list[Path], size: int, invert: bool, min_samples: int, name: str) -> ClassImages:
    files = [sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES) for folder in folders]
    count = min(len(names) for names in files)
    if count < min_samples:
        smallest = folders[min(range(len(files)), key=lambda i: len(files[i]))]
        raise UserError(f"class folder {smallest} has {count} images; the episodes need at least {min_samples} per class")
    images = np.stack([np.stack([_read(path, size, invert) for path in names[:count]]) for names in files])
    return ClassImages(torch.from_numpy(images[:, :, None]), name=name)


def load_image_classes(root: str | Path, size: int = 28, invert: bool = False, min_samples: int = 2) -> ClassImages:
    """Every class folder below ``root`` (see the module docstring), ``(C, n, 1, size, size)``."""
    return _load_folders(class_folders(Path(root)), size, invert, min_samples, f"folders({root})")


def load_omniglot(root: str | Path, size: int = 28, min_samples: int = 2) -> ClassImages:
    """Omniglot's 1623 classes (background then evaluation alphabets, sorted) from torchvision's layout."""
    root = Path(root).expanduser()
    base = root if all((root / part).is_dir() for part in OMNIGLOT_PARTS) else root / "omniglot-py"
    missing = [part for part in OMNIGLOT_PARTS if not (base / part).is_dir()]
    if missing:
        raise UserError(f"Omniglot not found: expected {', '.join(OMNIGLOT_PARTS)} in {root} or {root / 'omniglot-py'} "
                        "(torchvision's layout; nothing is downloaded)")
    folders = [folder for part in OMNIGLOT_PARTS for folder in class_folders(base / part)]
    return _load_folders(folders, size, invert=True, min_samples=min_samples, name="omniglot")
