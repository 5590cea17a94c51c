"""The study registry: which studies exist and how to load them.

A study is a module that assigns ``STUDY = Study(...)`` at top level. Studies are found without
an edit of this package:

- every module below the ``learnlab`` package (any area package, new ones included) whose source
  has such a line; the source is scanned as text, so nothing is imported until studies are loaded;
- modules named by the ``learnlab.studies`` entry-point group of installed packages (a study
  that lives outside learnlab).

Studies are ordered by module path, each after the studies it ``requires`` (e.g. ``priming``
after ``world``, whose model it uses).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from learnlab.core.claims import Claim
from learnlab.core.errors import UserError

ENTRY_POINT_GROUP = "learnlab.studies"
_STUDY_LINE = re.compile(r"^STUDY\s*=\s*Study\(", re.MULTILINE)
PRESETS: tuple[str, ...] = ("smoke", "quick", "full")


@dataclass(frozen=True)
class Study:
    """The study contract (DESIGN.md): a config with three presets, ``run`` and its claims."""

    name: str
    title: str
    paper: str
    presets: Mapping[str, Any]
    run: Callable[[Any, Any], dict[str, Any]]
    claims: tuple[Claim, ...]
    summary: str = ""
    threads: int = 1  # CPU threads that suit the study's model sizes; `--threads` overrides it
    figures: tuple[str, ...] = field(default_factory=tuple)  # figures (names without .png) every run saves
    requires: tuple[str, ...] = ()  # studies whose runs this one uses (run first by `reproduce`)
    # Run time (seconds) per preset on the 2-core reference machine, alongside other studies under
    # `reproduce`: the order `reproduce` starts studies in until a run of this machine is recorded.
    reference_seconds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [name for name in PRESETS if name not in self.presets]
        if missing:
            raise ValueError(f"study {self.name} lacks presets {missing}")

    def config(self, preset: str) -> Any:
        if preset not in self.presets:
            raise UserError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        return self.presets[preset]


def _module_names(package: str = "learnlab") -> list[str]:
    """Modules below ``package`` whose source assigns ``STUDY = Study(...)`` at top level."""
    names = []
    for root in importlib.import_module(package).__path__:
        for path in sorted(Path(root).rglob("*.py")):
            if _STUDY_LINE.search(path.read_text(encoding="utf-8")):
                parts = path.relative_to(root).with_suffix("").parts
                names.append(".".join((package, *parts)))
    return names


def discover_modules(package: str = "learnlab") -> list[str]:
    """Study modules: those found below ``package`` and those of the ``learnlab.studies`` entry points."""
    found = _module_names(package)
    found += [point.value for point in entry_points(group=ENTRY_POINT_GROUP) if point.value not in found]
    return found


def _dependency_order(studies: dict[str, Study]) -> dict[str, Study]:
    ordered: dict[str, Study] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in path:
            raise ValueError(f"studies require each other in a cycle: {' -> '.join(path + (name,))}")
        for required in studies[name].requires:
            if required not in studies:
                raise ValueError(f"study {name} requires unknown study {required}")
            visit(required, path + (name,))
        ordered[name] = studies[name]

    for name in studies:
        visit(name, ())
    return ordered


def load_studies(modules: Iterable[str] | None = None) -> dict[str, Study]:
    """Import every study module (default: :func:`discover_modules`) and return the studies by name,
    in module order with each study after those it requires."""
    studies: dict[str, Study] = {}
    for module_name in discover_modules() if modules is None else modules:
        study = importlib.import_module(module_name).STUDY
        if study.name in studies:
            raise ValueError(f"two studies are named {study.name!r}")
        studies[study.name] = study
    return _dependency_order(studies)


def get_study(name: str, modules: Iterable[str] | None = None) -> Study:
    studies = load_studies(modules)
    if name not in studies:
        raise UserError(f"unknown study {name!r}; valid studies: {', '.join(studies)}")
    return studies[name]
