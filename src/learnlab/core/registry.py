"""The study registry: which studies exist and how to load them.

Studies are listed by module path and imported only when asked for, so ``learnlab list`` stays
fast and no study does work at import time. Each module exposes ``STUDY``, a :class:`Study`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from learnlab.core.claims import Claim
from learnlab.core.errors import UserError

STUDY_MODULES: tuple[str, ...] = (
    "learnlab.incontext.icl_gd",
    "learnlab.incontext.mesa",
    "learnlab.incontext.noisy_icl",
    "learnlab.optim.trajectories",
    "learnlab.knowledge.world_model",
    "learnlab.knowledge.priming",
)
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
    figures: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        missing = [name for name in PRESETS if name not in self.presets]
        if missing:
            raise ValueError(f"study {self.name} lacks presets {missing}")

    def config(self, preset: str) -> Any:
        if preset not in self.presets:
            raise UserError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        return self.presets[preset]


def load_studies(modules: tuple[str, ...] = STUDY_MODULES) -> dict[str, Study]:
    """Import every registered study module and return its studies by name, in registry order."""
    studies: dict[str, Study] = {}
    for module_name in modules:
        study = importlib.import_module(module_name).STUDY
        studies[study.name] = study
    return studies


def get_study(name: str, modules: tuple[str, ...] = STUDY_MODULES) -> Study:
    studies = load_studies(modules)
    if name not in studies:
        raise UserError(f"unknown study {name!r}; valid studies: {', '.join(studies)}")
    return studies[name]
