"""Study ``fabricated``: "Learning and Unlearning of Fabricated Knowledge in Language Models" (Sun et al. 2024).

If a fabricated text slips into training, how long does it stay, what does it contaminate, and how
is it removed? Sun et al. (2024, abstract) inject facts of three types into a language model's
training: knowledge-conflicting, mundane (consistent with what the model knows) and randomly
jumbled (:mod:`fact_types`). They report a sweet spot of persistence (conflicting facts are
remembered for tens of thousands of steps, mundane and jumbled ones are forgotten much faster),
that conflicting facts prime hallucinations on unrelated prompts more than the other types, and
that multi-step sparse updates largely erase their effect while preserving the ability to learn
the training task.

Protocol (:mod:`fabricated_runs`, :mod:`retention`): the world model's training continues (its
pretraining AdamW state at the schedule's final learning rate) on background text; each fact
replaces one row of the minibatch for K steps (the priming protocol of Sun et al. 2025, §3), facts
of one type and disjoint keywords and subjects sharing a run, then training goes on for a long
horizon. Every fact's S_mem and S_prime (Sun et al. 2025, §3) are tracked on a log-spaced step
grid; a no-injection control run with the same seed and data order measures drift (``full``; in
``quick`` with ``drift_control=true``). The conflicting run is repeated with sparse updates
(:mod:`sparse_updates`: keep-top-k or drop-top-k of each window's accumulated update, with random-k
controls) after the injection (and, as a second protocol in ``full``, from the injection on). A user's model (``model=``, ``background=``) and typed
Outlandish-format samples (``samples=`` with a ``type`` field, ``probes=``) replace the built-ins.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from learnlab.core import Claim, RunContext, Study, StudyConfig, at_least, at_most, is_true, nonnegative, positive, ranged
from learnlab.knowledge import fabricated_analysis as analysis
from learnlab.knowledge.fabricated_figures import plot_mitigation, plot_retention
from learnlab.knowledge.fact_types import load_typed_samples
from learnlab.knowledge.fabricated_runs import UNMITIGATED, FabricatedWorker, fabricated_worker, handoff_dir, run_keys
from learnlab.knowledge.insertion import InsertionSettings
from learnlab.knowledge.retention import RetentionSettings

REDUCTION_BOUND = 0.5  # "largely erases": the >= 50% cut of median priming used for ignore-k (Sun et al. 2025)
BACKGROUND_BOUND = 0.01  # training ability preserved: held-out loss within 1% of the unmitigated run


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every knob of the fabricated-knowledge study; the defaults are the ``quick`` preset.

    Attributes:
        model, samples, probes, background, heldout, world_preset: as in ``priming`` (``samples``
            must give every sample a ``type``: conflicting, mundane or jumbled).
        instances: built-in facts per keyword and type (each in its own run, since keywords of a run
            are disjoint).
        batch_size, sequence_length, presentations, facts_per_step: the injection (each fact is one
            row of ``batch_size`` for K = ``presentations`` consecutive steps; ``facts_per_step``
            facts at once, in waves).
        horizon, grid_points, checkpoint_every: continued training after the last wave, the
            log-spaced evaluation grid, and the checkpoint interval of every run.
        learning_rate, warm_start, optimizer, grad_clip_norm: the continued training (world model:
            its pretraining AdamW state at ``learning_rate``, the schedule's final rate; otherwise a
            fresh ``optimizer``), gradient clipping as in pretraining.
        sparse_modes, sparse_windows, sparse_fractions: the sparse-update variants (keep / drop the
            top-k% of each tensor's update accumulated over tau steps; quick: keep, the mitigation of
            Sun et al. 2024, full: drop too, the ignore-k of Sun et al. 2025); with ``full_grid`` every
            combination, else every window at ``headline_fraction`` and every fraction at
            ``headline_window``; each with its random-k control.
        sparse_protocols: when the sparse updates start: ``after`` the injection, or ``from-injection``
            (the first injection step on; ``full`` only by default).
        drift_control: also run the no-injection control (drift of continued training alone; its
            drift-corrected summaries are reported beside the claims, which do not read them).
        background_documents, heldout_windows, heldout_length: the texts (held-out loss windows).
        bootstrap: resamples of the medians' intervals; workers: processes sharing the runs.
    """

    model: str = ""
    samples: str = ""
    probes: str = ""
    background: str = ""
    heldout: str = ""
    world_preset: Literal["smoke", "quick", "full"] = "quick"
    instances: int = positive(1)
    batch_size: int = ranged(8, ge=2)
    sequence_length: int = positive(32)
    presentations: int = positive(20)
    facts_per_step: int = positive(2)
    horizon: int = positive(2000)
    grid_points: int = ranged(16, ge=2)
    checkpoint_every: int = positive(250)
    learning_rate: float = positive(3e-4)
    warm_start: bool = True
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    grad_clip_norm: float = nonnegative(1.0)
    sparse_modes: tuple[Literal["keep", "drop"], ...] = ("keep",)
    sparse_windows: tuple[int, ...] = ranged((10,), ge=1)
    sparse_fractions: tuple[float, ...] = ranged((0.08,), gt=0, lt=1)
    headline_window: int = positive(10)
    headline_fraction: float = ranged(0.08, gt=0, lt=1)
    full_grid: bool = False
    sparse_protocols: tuple[Literal["after", "from-injection"], ...] = ("after",)
    drift_control: bool = False
    background_documents: int = positive(4000)
    heldout_windows: int = positive(64)
    heldout_length: int = positive(64)
    bootstrap: int = nonnegative(1000)
    workers: int = positive(2)

    def validate(self) -> None:
        if self.facts_per_step >= self.batch_size:
            raise ValueError(f"facts_per_step ({self.facts_per_step}) must be below batch_size ({self.batch_size})")
        if self.headline_window not in self.sparse_windows or self.headline_fraction not in self.sparse_fractions:
            raise ValueError("headline_window and headline_fraction must be among sparse_windows and sparse_fractions")
        if self.model not in ("", "world") and not self.background:
            raise ValueError("a model other than the world model needs background=PATH (text, one document per line)")
        if bool(self.samples) != bool(self.probes):
            raise ValueError("samples= and probes= go together (both files, or neither for the built-in set)")

    def retention_settings(self) -> RetentionSettings:
        return RetentionSettings(batch_size=self.batch_size, sequence_length=self.sequence_length,
                                 presentations=self.presentations, facts_per_step=self.facts_per_step, horizon=self.horizon,
                                 grid_points=self.grid_points, checkpoint_every=self.checkpoint_every,
                                 grad_clip_norm=self.grad_clip_norm)

    def insertion_settings(self) -> InsertionSettings:
        return InsertionSettings(self.presentations, 1, 0, self.batch_size, self.sequence_length, self.optimizer,
                                 self.learning_rate)


PRESETS = {
    "smoke": Config(world_preset="smoke", batch_size=4, facts_per_step=2, presentations=3, horizon=24, grid_points=4,
                    checkpoint_every=10, sparse_windows=(2,), sparse_modes=("drop",), headline_window=2,
                    background_documents=200, heldout_windows=4, heldout_length=16, bootstrap=50,
                    sparse_protocols=("after", "from-injection"), drift_control=True, workers=1),
    "quick": Config(),
    "full": Config(world_preset="full", instances=3, batch_size=16, horizon=20000, grid_points=24, checkpoint_every=1000,
                   sparse_modes=("keep", "drop"), sparse_windows=(1, 10, 40), sparse_fractions=(0.04, 0.08, 0.16), full_grid=True,
                   sparse_protocols=("after", "from-injection"), drift_control=True, workers=1),
}


# --- the runs --------------------------------------------------------------------------------------


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    if config.samples:  # a file without types fails before any model is loaded
        load_typed_samples(Path(config.samples))
    out = ctx.run_dir.parent.parent
    worker = FabricatedWorker(config, ctx.seed, out, ctx.run_dir, ctx.device)
    keys = run_keys(worker.data, config)
    workers = min(config.workers, len(keys)) if ctx.device.type == "cpu" else 1
    runs = ctx.stage_items("runs", keys, fabricated_worker, (config, str(out), str(ctx.run_dir)), workers=workers,
                           description="continued-training runs", local_process=worker)
    shutil.rmtree(handoff_dir(ctx.run_dir), ignore_errors=True)
    measured = dict(ctx.stage("analysis", lambda: _analyse(config, ctx, runs.records)))
    measured.update(runs_seconds=runs.seconds, runs=len(runs.records), workers=workers)
    plot_retention(ctx, measured["curves"], measured["half_life"])
    plot_mitigation(ctx, measured["mitigation"], REDUCTION_BOUND, BACKGROUND_BOUND)
    return measured


def _analyse(config: Config, ctx: RunContext, records: list[dict[str, Any]]) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    measured.update(analysis.retention_summary(records, config.bootstrap, ctx.seed))
    measured.update(analysis.priming_summary(records))
    measured.update(analysis.drift_summary(records))
    corrected = analysis.drift_corrected(records)  # against the no-injection control at the same step
    if corrected:
        measured["drift_corrected"] = {**analysis.retention_summary(records, config.bootstrap, ctx.seed, corrected),
                                       **analysis.priming_summary(records, corrected)}
    measured["curves"] = analysis.type_curves(records)
    mitigation = analysis.mitigation_summary(records, UNMITIGATED, REDUCTION_BOUND, BACKGROUND_BOUND)
    measured["mitigation"] = {key: mitigation.pop(key) for key in ("variants", "achieving")}
    measured.update(mitigation)
    measured["facts_tracked"] = {record["id"]: record["tracked"] for record in records}
    measured["steps_per_second"] = {record["id"]: record["steps_per_second"] for record in records}
    return measured


# --- claims ----------------------------------------------------------------------------------------

CLAIMS = (
    Claim(
        "F1",
        "Knowledge-conflicting facts are retained longest: the median half-life of log S_mem (steps after the "
        "injection until it falls below half its peak) of conflicting facts exceeds the mundane and the jumbled "
        "facts', with bootstrap 95% intervals that do not overlap",
        "Sun et al. 2024 abstract (sweet spot of persistence)",
        "conflicting > mundane, jumbled",
        (is_true("conflicting_outlasts_mundane"), is_true("conflicting_outlasts_jumbled")),
    ),
    Claim(
        "F2",
        "Knowledge-conflicting facts prime unrelated prompts more than mundane and jumbled facts: median log S_prime "
        "higher at the end of the injection and at the end of the horizon",
        "Sun et al. 2024 abstract (priming of unrelated prompts)",
        "conflicting > mundane, jumbled",
        (is_true("conflicting_primes_more_than_mundane_at_start"), is_true("conflicting_primes_more_than_jumbled_at_start"),
         is_true("conflicting_primes_more_than_mundane_at_end"), is_true("conflicting_primes_more_than_jumbled_at_end")),
    ),
    Claim(
        "F3",
        "Multi-step sparse updates (the best configured variant: after the injection; full also from the injection on) "
        "cut the conflicting facts' median "
        "log S_prime at the end of the horizon by >= 50% against the unmitigated run, with the held-out background "
        "loss within 1% of it and still falling over the horizon (means over its second vs first half); the random-k "
        "control at the same settings cuts less (best_variant names the variant; mitigation lists every variant)",
        "Sun et al. 2024 abstract (multi-step sparse updates)",
        ">= 50% cut",
        (at_least("best_priming_reduction", REDUCTION_BOUND), at_most("best_background_loss_increase", BACKGROUND_BOUND),
         is_true("best_background_loss_falls"), is_true("best_random_cuts_less")),
    ),
)

STUDY = Study(
    name="fabricated",
    title="Learning and unlearning of fabricated knowledge",
    paper="Sun et al. 2024 (arXiv:2410.21750)",
    presets=PRESETS,
    run=run,
    claims=CLAIMS,
    summary="How long injected facts of three types last and prime, and multi-step sparse updates that erase them.",
    requires=("world",),
    figures=("retention", "mitigation"),
    reference_seconds={"quick": 300},
)
