"""Atomic file writes and tensor checkpoints (safetensors).

Every result file is written to a temporary file in the same directory and renamed into place,
so a crash or kill never leaves a partial file behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

WEIGHTS_PREFIX = "weights."


def plain(value: Any) -> Any:
    """Convert tensors, NumPy values and tuples to JSON-ready Python values."""
    if isinstance(value, torch.Tensor):
        return plain(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        os.chmod(temp, 0o644)  # mkstemp creates 0600; results are meant to be shared like any file
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda temp: temp.write_text(text))


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by strings so the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def jsonl_records(path: Path, what: str = "data") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file; a missing file, a line that is not
    JSON or not an object is a :class:`UserError` naming ``file:line`` (``what`` names the file's kind)."""
    from learnlab.core.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Save named tensors with safetensors, atomically."""
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    atomic_write(path, lambda temp: save_file(contiguous, str(temp)))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def module_weights(module: torch.nn.Module, prefix: str = WEIGHTS_PREFIX) -> dict[str, torch.Tensor]:
    """A module's state as ``{prefix + name: tensor}`` (CPU copies), ready to be returned by a stage."""
    return {f"{prefix}{name}": value.detach().cpu().clone() for name, value in module.state_dict().items()}


def restore_module_weights(module: torch.nn.Module, stage: Mapping[str, Any], prefix: str = WEIGHTS_PREFIX) -> torch.nn.Module:
    """Load the weights that :func:`module_weights` put into a stage's result back into ``module``."""
    module.load_state_dict({key.removeprefix(prefix): value for key, value in stage.items() if key.startswith(prefix)})
    return module


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use, not at import time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(figure)
