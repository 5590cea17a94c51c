"""A tiny study used to test the run machinery: two stages, an optional divergence and hang."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Literal

import torch

from learnlab.core.io import pyplot

from learnlab.core import Claim, Study, StudyConfig, at_least, at_most, positive

HANG_VARIABLE = "LEARNLAB_TOY_HANG"


@dataclass(frozen=True)
class Config(StudyConfig):
    steps: int = positive(20)
    scale: float = 1.0
    diverge: bool = False
    mode: Literal["fast", "slow"] = "fast"
    sizes: tuple[int, ...] = positive((1, 2))


def run(config: Config, ctx) -> dict:
    first = ctx.stage("first", lambda: _first(config, ctx))
    if os.environ.get(HANG_VARIABLE):
        time.sleep(600)
    second = ctx.stage("second", lambda: {"mean": float(first["draws"].mean())})
    if config.diverge:
        ctx.check_finite(float("nan"), "toy loss")
    figure, axis = pyplot().subplots()
    axis.plot(first["draws"].numpy())
    ctx.save_figure(figure, "draws")
    return {"mean": second["mean"], "total": float(first["draws"].sum()) * config.scale}


def _first(config: Config, ctx) -> dict:
    draws = torch.rand(config.steps, generator=ctx.generator("first"))
    for step in range(config.steps):
        ctx.log(step=step, value=float(draws[step]))
    return {"draws": draws}


STUDY = Study(
    name="toy",
    title="A toy study",
    paper="Nobody (2026)",
    presets={"smoke": Config(steps=5), "quick": Config(), "full": Config(steps=100)},
    run=run,
    figures=("draws",),
    claims=(
        Claim("C1", "the mean is at most one", "none", "1", (at_most("mean", 1.0),)),
        Claim("C2", "the total is large", "none", "1e9", (at_least("total", 1e9),)),
        Claim("C3", "a metric nobody measures", "none", "-", (at_least("absent", 0.0),)),
    ),
)


def square_worker(payload: dict, ctx):
    """An item worker for the parallel-items tests: squares the item's number, draws from its stream."""
    def process(key: str) -> dict:
        if key == payload.get("diverge_on"):
            ctx.check_finite(float("inf"), f"item {key} loss")
        time.sleep(payload.get("seconds", {}).get(key, 0.0))
        draw = float(torch.rand(1, generator=ctx.generator("item", key)))
        ctx.log(item_value=int(key) ** 2)
        return {"square": int(key) ** 2 * payload["scale"], "draw": draw, "pid": os.getpid()}

    return process
