"""The code version of a study: what a run remembers so that results made by other code are not
shown as current.

A study's code is the source of its area package (the package that holds the study module: its
components, figures and claims) and of :mod:`learnlab.data`, which several areas share, plus the
learnlab version. Editing any of these files changes the version; the core machinery (run
directories, report, CLI) does not enter it, since it does not change what a study measures.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

from learnlab import __version__


def _package_dirs(module_name: str) -> list[Path]:
    package = module_name.rpartition(".")[0] or module_name
    dirs = [Path(path) for path in importlib.import_module(package).__path__]
    data = Path(importlib.import_module("learnlab.data").__path__[0])
    return sorted(set(dirs) | {data})


def code_version(module_name: str) -> str:
    """A short hash of the sources behind the study module ``module_name`` and the learnlab version."""
    digest = hashlib.sha256(__version__.encode())
    for directory in _package_dirs(module_name):
        for path in sorted(directory.rglob("*.py")):
            digest.update(str(path.relative_to(directory.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
