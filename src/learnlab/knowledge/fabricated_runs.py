"""The continued-training runs of the ``fabricated`` study: what each run injects, how it trains, its record.

Every run starts from the same model and optimizer state (the world model's pretraining AdamW
state continued at its final learning rate, or a fresh optimizer for a user's model) and sees the
same background rows step by step:

* ``control``: no injection; tracks every typed fact, so that drift without injection is measured
  at the same steps as the injected runs;
* ``<type>-<r>``: injects facts of one type (disjoint keywords and subjects; with one fact per
  keyword and type, one run per type); ``conflicting-0`` is also the unmitigated control of the
  sparse-update runs;
* ``mitigation-<variant>``: the injection of ``conflicting-0``, then (protocol ``after``) or from
  the first injection step on (protocol ``from-injection``) training through a
  :class:`SparseUpdateOptimizer`.

Until the end of the injection, a sparse-update run of protocol ``after`` trains exactly like
``conflicting-0``; that run leaves a snapshot at the end of its injection (:func:`handoff_dir`), and
the ``after`` runs start from a copy of it when it is there (the same records as training those
steps again).

Runs are items of a resumable stage (:meth:`RunContext.stage_items`), shared by worker processes;
each run checkpoints itself (:class:`retention.RetentionRun`), so a killed run resumes mid-way.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from learnlab.core.errors import UserError
from learnlab.knowledge.fact_types import fact_type, load_typed_samples, runs_by_type, world_fact_types
from learnlab.knowledge.insertion import BaseWeights, fresh_optimizer
from learnlab.knowledge.outlandish import OutlandishSample, load_probes, probe_prefixes
from learnlab.knowledge.priming_inputs import background_and_heldout, token_streams, world_of
from learnlab.knowledge.probability import pad_token_id
from learnlab.knowledge.retention import RetentionRun, TrackedFact, fact_curves
from learnlab.knowledge.sparse_updates import SparseUpdateOptimizer

Protocol = Literal["after", "from-injection"]


@dataclass(frozen=True)
class Mitigation:
    """One sparse-update variant: keep or drop the selected k% of each window's update, from when on."""

    mode: Literal["keep", "drop"]
    selection: Literal["top", "random"]
    fraction: float
    window: int
    protocol: Protocol = "after"

    @property
    def key(self) -> str:
        return f"{self.mode}-{self.selection}-{100 * self.fraction:g}-tau{self.window}-{self.protocol}"

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "selection": self.selection, "fraction": self.fraction, "window": self.window,
                "protocol": self.protocol}


def mitigation_plan(config: Any) -> list[Mitigation]:
    """The sparse-update variants of a config, for every protocol and mode.

    With ``full_grid``: every window × fraction. Otherwise the cross through the headline setting
    (every window at the headline fraction, every fraction at the headline window). Every top-k
    variant has its random-k control (same mode, window, fraction and protocol).
    """
    if config.full_grid:
        pairs = [(window, fraction) for window in config.sparse_windows for fraction in config.sparse_fractions]
    else:
        pairs = [(window, config.headline_fraction) for window in config.sparse_windows]
        pairs += [(config.headline_window, fraction) for fraction in config.sparse_fractions
                  if fraction != config.headline_fraction]
    return [Mitigation(mode, selection, fraction, window, protocol) for protocol in config.sparse_protocols
            for mode in config.sparse_modes for window, fraction in pairs for selection in ("top", "random")]


# --- data ------------------------------------------------------------------------------------------


def tracked_fact(sample: OutlandishSample, probes: list[str]) -> TrackedFact:
    extra = {key: value for key, value in sample.extra.items() if isinstance(value, (str, int, float))}
    return TrackedFact(sample.id, sample.text, sample.keyword, sample.prefix, tuple(probes),
                       {**extra, "theme": sample.theme, "type": fact_type(sample)})


@dataclass
class FabricatedData:
    """The typed facts, the facts each injected run carries (by key) and the texts."""

    facts: list[TrackedFact]
    runs: dict[str, list[TrackedFact]]
    background_texts: list[str]
    heldout_texts: list[str]

    @property
    def mitigated(self) -> list[TrackedFact]:
        """The facts of the sparse-update runs: those of the first conflicting run (one per keyword)."""
        return self.runs[UNMITIGATED]


UNMITIGATED = "conflicting-0"  # the injected run that the sparse-update runs repeat; their control


def load_data(config: Any, world: Any) -> FabricatedData:
    if config.samples:
        samples = load_typed_samples(Path(config.samples))
        probes = load_probes(Path(config.probes))
    else:
        built, probes = world.outlandish()
        samples = world_fact_types(world.world(), built, config.instances)
    facts = [tracked_fact(sample, probe_prefixes(probes, sample.theme)) for sample in samples]
    missing = sorted({fact.extra["theme"] for fact in facts if not fact.probes})
    if missing:
        raise UserError(f"no probes for theme(s) {', '.join(missing)} (every sample theme needs probes)")
    if not any(fact.extra["type"] == "conflicting" for fact in facts):
        raise UserError("no knowledge-conflicting facts (type 'conflicting') to inject")
    by_id = {fact.id: fact for fact in facts}
    runs = {f"{kind}-{index}": [by_id[sample.id] for sample in run]
            for kind, kind_runs in runs_by_type(samples).items() for index, run in enumerate(kind_runs)}
    background, heldout = background_and_heldout(config, world)
    return FabricatedData(facts, runs, background, heldout)


def run_keys(data: FabricatedData, config: Any) -> list[str]:
    """The no-injection control (with ``drift_control``), every injected run, and every sparse-update run."""
    control = ["control"] if config.drift_control else []
    return [*control, *data.runs, *(f"mitigation-{variant.key}" for variant in mitigation_plan(config))]


# --- the worker ------------------------------------------------------------------------------------


class FabricatedWorker:
    """Model, data and streams of one process; :meth:`__call__` runs one continued-training run by key."""

    def __init__(self, config: Any, seed: int, out: Path, run_dir: Path, device: torch.device) -> None:
        from learnlab.knowledge.models import load_causal_lm

        self.config, self.seed, self.run_dir = config, seed, run_dir
        own_model = config.model in ("", "world")
        world = world_of(config, seed, out, device.type) if own_model or not config.samples else None
        self.model, self.tokenizer = world.load(device) if own_model else load_causal_lm(config.model, device)
        self.data = load_data(config, world)
        self.background, self.heldout = token_streams(config, self.tokenizer, self.data.background_texts,
                                                      self.data.heldout_texts)
        self.factory = world.continued_optimizer(config.learning_rate) if own_model and config.warm_start else None
        self.base = BaseWeights(self.model)
        self.settings = config.retention_settings()
        self.variants = {f"mitigation-{variant.key}": variant for variant in mitigation_plan(config)}

    def optimizer(self) -> torch.optim.Optimizer:
        if self.factory is not None:
            return self.factory(self.model)
        return fresh_optimizer(self.model, self.config.insertion_settings())

    def _plan(self, key: str) -> tuple[list[TrackedFact], list[TrackedFact], Mitigation | None]:
        """(injected, tracked, mitigation) of run ``key``."""
        if key == "control":
            return [], self.data.facts, None
        if key in self.data.runs:
            return self.data.runs[key], self.data.runs[key], None
        return self.data.mitigated, self.data.mitigated, self.variants[key]

    def __call__(self, key: str) -> dict[str, Any]:
        started = time.perf_counter()
        injected, tracked, mitigation = self._plan(key)
        self.base.restore()
        settings = self.settings
        steps = None
        if key == "control":  # evaluate at every step any injected run is evaluated at, to the last one
            counts = {len(run) for run in self.data.runs.values()}
            steps = sorted({step for count in counts for step in settings.evaluation_steps(count)})
            settings = dataclasses.replace(settings, horizon=max(map(settings.injection_end, counts)) + settings.horizon)
        wrap, wrap_from = None, 0
        if mitigation is not None:
            def wrap(optimizer: torch.optim.Optimizer, variant: Mitigation = mitigation) -> torch.optim.Optimizer:
                return SparseUpdateOptimizer(optimizer, variant.window, variant.fraction, variant.mode, variant.selection,
                                             seed=self.seed)
            wrap_from = 0 if mitigation.protocol == "from-injection" else settings.injection_end(len(injected))
        directory = self.run_dir / "retention" / key
        handoff = handoff_dir(self.run_dir)
        snapshots = {}
        if key == UNMITIGATED and any(variant.protocol == "after" for variant in self.variants.values()):
            snapshots[settings.injection_end(len(injected))] = handoff
        elif mitigation is not None and mitigation.protocol == "after":
            _start_from(handoff, directory)
        run = RetentionRun(self.model, self.tokenizer, injected, self.background, self.heldout, self.optimizer(), settings,
                           self.seed, directory, tracked, pad_token_id(self.tokenizer), wrap, wrap_from, steps, snapshots)
        records = run.run()
        trained = run.total_steps
        seconds = time.perf_counter() - started
        kind = "mitigation" if mitigation else ("control" if key == "control" else "injected")
        result = {
            "kind": kind, "mitigation": mitigation.as_dict() if mitigation else None, "injected": len(injected),
            "tracked": len(tracked), "injection_end": settings.injection_end(len(injected)),
            "steps": [record["step"] for record in records],
            "background_loss": [record["background_loss"] for record in records],
            "facts": [{**curve, **fact.extra} for curve, fact in
                      zip(fact_curves(records, tracked, settings, len(injected)), tracked)],
            "seconds": seconds, "steps_per_second": trained / seconds,  # of this process (a resumed run: its part)
        }
        self.base.restore()
        shutil.rmtree(directory, ignore_errors=True)
        return result


def handoff_dir(run_dir: Path) -> Path:
    """Where ``conflicting-0`` leaves its snapshot at the end of the injection (removed after the runs)."""
    return run_dir / "retention" / f"{UNMITIGATED}-injected"


def _start_from(snapshot: Path, directory: Path) -> None:
    """Copy ``snapshot`` into a run's ``directory``, unless the run has a checkpoint of its own or there is no snapshot."""
    if not snapshot.exists() or (directory / "state.json").exists():
        return
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(snapshot, directory)


def fabricated_worker(payload: tuple[Any, str, str], ctx: Any) -> FabricatedWorker:
    """Worker factory for the runs stage (:mod:`learnlab.core.parallel`)."""
    config, out, run_dir = payload
    return FabricatedWorker(config, ctx.seed, Path(out), Path(run_dir), ctx.device)
