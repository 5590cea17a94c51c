"""The code version of a study: what a run remembers so that results made by other code are not
shown as current.

A study's code is the source of the study module and of every learnlab module it imports, directly
or through other modules (found by reading the ``import`` statements, including those inside
functions; ``learnlab.core`` and the CLI excepted), plus its area package's ``__init__``, all of
:mod:`learnlab.data`, which several areas share, and the learnlab version. Editing any of these
files changes the version. Editing a module the study does not import (e.g. a sibling study of the
same area) does not, and neither does the core machinery (run directories, report, CLI), since it
does not change what a study measures.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

from learnlab import __version__


def _source(root: Path, module_name: str) -> Path | None:
    """The file of ``learnlab.*`` module ``module_name`` under the package directory ``root`` (``None``
    for a name that is not a module, e.g. a function imported with ``from module import name``)."""
    relative = Path(*module_name.split(".")[1:])
    for path in (root / relative / "__init__.py", (root / relative).with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _imported_names(path: Path, module_name: str) -> set[str]:
    """Every module name ``path`` imports (``from a import b`` yields ``a`` and ``a.b``)."""
    package = module_name if path.name == "__init__.py" else module_name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


_MACHINERY = ("core", "cli")  # run machinery: it does not change what a study measures


def _root() -> Path:
    return Path(importlib.util.find_spec("learnlab").origin).parent


def study_sources(module_name: str) -> list[Path]:
    """The files whose content makes up the code version of the study module ``module_name``."""
    root, area = _root(), module_name.rpartition(".")[0] or module_name
    found: dict[str, Path] = {}
    pending = [module_name, area]
    while pending:
        name = pending.pop()
        if name in found or not name.startswith("learnlab.") or name.split(".")[1] in _MACHINERY:
            continue
        path = _source(root, name)
        if path is None:
            continue
        found[name] = path
        pending.extend(_imported_names(path, name))
    return sorted(set(found.values()) | set((root / "data").rglob("*.py")))


def code_version(module_name: str) -> str:
    """A short hash of the sources behind the study module ``module_name`` and the learnlab version."""
    digest = hashlib.sha256(__version__.encode())
    root = _root()
    for path in study_sources(module_name):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
