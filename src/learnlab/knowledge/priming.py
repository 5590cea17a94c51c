"""Study ``priming``: "How new data permeates LLM knowledge and how to dilute it" (Sun et al., ICLR 2025).

For every Outlandish-format sample (the tiny world's built-in set by default, or the user's
files) the study measures the keyword's probability before learning, inserts the sample into the
model (one minibatch row for K steps, as the paper's insertion protocol), and measures
memorization S_mem and priming S_prime; also the spaced variant, ignore-k update pruning at
several k with a random-k control (§5.1, Eq. 3), and stepping-stone rewrites with a
length-matched plain control and a keyword lead-in (§5, Fig. 5). It then checks the paper's claims: keyword probability
predicts priming (Spearman, against other predictors), priming is large below a probability
threshold (paper: about 1e-3), ignore-top-8% cuts priming while keeping memorization and
background loss, and stepping stones cut priming while a plain rewrite does not.

Any Hugging Face causal LM can be measured with ``model=PATH`` (plus ``background=`` text, and
``samples=``/``probes=`` files for data about the real world); see the README.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from learnlab.core import (Claim, RunContext, Study, StudyConfig, above, at_least, below, is_true, nonnegative, positive,
                           ranged)
from learnlab.knowledge import priming_analysis as analysis
from learnlab.knowledge.insertion import InsertionSettings
from learnlab.knowledge.outlandish import OutlandishSample
from learnlab.knowledge.priming_figures import plot_pruning, plot_rewrites, plot_scatter
from learnlab.knowledge.priming_inputs import PrimingData, build_session
from learnlab.knowledge.priming_session import PrimingSession, PrimingSettings

HEADLINE_FRACTION = 0.08  # ignore-top-8%, the paper's headline setting (App. A.6)
REDUCTION_BOUND = 0.5  # the low end of the abstract's median reductions (50-95% and 50-75%)
KEPT_BOUND = 0.5  # "keeping at least 50% of median memorization"
BACKGROUND_BOUND = 0.01  # "raising held-out background loss by less than 1%"
P_VALUE_BOUND = 0.01
STONE_GAIN_BOUND = 1.0  # P_before rises by (at least) an order of magnitude: the mechanism stepping stones rely on


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every knob of the priming study; the defaults are the ``quick`` preset.

    Attributes:
        model: ``""`` for the tiny world model of ``world_preset``, else a local directory or hub
            name of a Hugging Face causal LM (never downloaded unless the hub is reachable).
        samples, probes: Outlandish-format JSONL files (``""``: the world's built-in set).
        background: text file, one document per line, for the insertion minibatches' other rows
            (``""``: the world's training corpus; required for other models).
        heldout: text file of held-out documents for the background loss (``""``: the world's held-out split).
        stepping_stones, controls: rewrite files in the samples format, keyed by sample id
            (``""``: built from the world's relations between attribute words, and neutral phrases of
            matched length at the same place; the world's samples also get a keyword lead-in).
        world_preset: preset of the ``world`` study whose model and data are used.
        presentations, batch_size, sequence_length, optimizer, learning_rate: the insertion
            (the paper's protocol: one row of each minibatch for 20 steps, fixed learning rate; the
            sample is one row of ``batch_size``).
        warm_start: for the world model, continue its pretraining optimizer (AdamW with its
            moment estimates, at ``learning_rate``) as in continued training with one row
            replaced; ``False`` (and for other models): a fresh ``optimizer``.
        spaced_presentations, spacing: the spaced variant (3 presentations, 20 steps apart).
        spaced_every: measure the spaced variant on every n-th sample (0: never).
        ablation_optimizer, ablation_learning_rate, ablation_every: on every n-th sample (0: never),
            also insert with a fresh optimizer of this kind and measure ignore-8% (and random-8%) on
            its update: how much ignore-k depends on the shape of the update.
        prune_fractions: ignore-k fractions k (0 = unpruned); ``prune_scope`` per tensor or global.
        background_documents: documents of the background text used (the first n).
        heldout_windows, heldout_length: held-out windows for the background loss.
        threshold: P_before split for claim 2 (the paper's knee, about 1e-3).
        bootstrap: resamples for the confidence interval of rho.
        max_samples: measure only this many samples, evenly spread over the set (0: all).
        workers: processes that share the samples (1 thread each on CPU; 1 on a GPU).
        eval_batch_size: prompts per evaluation forward pass.
    """

    model: str = ""
    samples: str = ""
    probes: str = ""
    background: str = ""
    heldout: str = ""
    stepping_stones: str = ""
    controls: str = ""
    world_preset: Literal["smoke", "quick", "full"] = "quick"
    presentations: int = positive(20)
    batch_size: int = ranged(16, ge=2)  # one row is the sample: an honest share of each minibatch
    sequence_length: int = positive(32)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    learning_rate: float = positive(3e-4)
    warm_start: bool = True
    spaced_presentations: int = positive(3)
    spacing: int = positive(20)
    spaced_every: int = nonnegative(6)
    ablation_optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    ablation_learning_rate: float = positive(0.1)
    ablation_every: int = nonnegative(6)
    prune_fractions: tuple[float, ...] = ranged((0.0, 0.01, 0.02, 0.04, 0.08, 0.16), ge=0, lt=1)
    prune_scope: Literal["tensor", "global"] = "tensor"
    background_documents: int = positive(4000)
    heldout_windows: int = positive(8)
    heldout_length: int = positive(64)
    threshold: float = ranged(1e-3, gt=0, lt=1)
    bootstrap: int = nonnegative(1000)
    max_samples: int = nonnegative(0)
    workers: int = positive(2)
    eval_batch_size: int = positive(64)

    def validate(self) -> None:
        if 0.0 not in self.prune_fractions or HEADLINE_FRACTION not in self.prune_fractions:
            raise ValueError(f"prune_fractions must include 0 and {HEADLINE_FRACTION}, got {self.prune_fractions}")
        if self.model not in ("", "world") and not self.background:
            raise ValueError("a model other than the world model needs background=PATH (text, one document per line)")
        if bool(self.samples) != bool(self.probes):
            raise ValueError("samples= and probes= go together (both files, or neither for the built-in set)")

    def settings(self) -> PrimingSettings:
        insertion = InsertionSettings(self.presentations, 1, 0, self.batch_size, self.sequence_length,
                                      self.optimizer, self.learning_rate)
        spaced = InsertionSettings(self.spaced_presentations, self.spacing, 0, self.batch_size, self.sequence_length,
                                   self.optimizer, self.learning_rate) if self.spaced_every else None
        ablation = InsertionSettings(self.presentations, 1, 0, self.batch_size, self.sequence_length,
                                     self.ablation_optimizer, self.ablation_learning_rate) if self.ablation_every else None
        return PrimingSettings(insertion, spaced, ablation, (0.0, HEADLINE_FRACTION), tuple(sorted(self.prune_fractions)),
                               ("random",), self.prune_scope, self.eval_batch_size)


PRESETS = {
    "smoke": Config(world_preset="smoke", presentations=3, batch_size=2, sequence_length=16, spaced_presentations=2,
                    spacing=2, spaced_every=2, prune_fractions=(0.0, 0.08), background_documents=200, heldout_windows=4,
                    heldout_length=16, bootstrap=50, max_samples=16, workers=1),
    "quick": Config(max_samples=42),  # 42 of the 504 built-in samples, evenly spread over keywords and categories
    "full": Config(world_preset="full", workers=1),
}


# --- data and session ------------------------------------------------------------------------------


def _measure(session: PrimingSession, data: PrimingData, config: Config) -> Any:
    """The per-sample step of the sweep: which samples also get the spaced and optimizer variants."""
    index = {sample.id: position for position, sample in enumerate(data.samples)}

    def process(sample: OutlandishSample) -> dict[str, Any]:
        position = index[sample.id]
        spaced = config.spaced_every > 0 and position % config.spaced_every == 0
        ablation = config.ablation_every > 0 and position % config.ablation_every == 0
        return session.measure(sample, data.rewrites.get(sample.id, ()), spaced=spaced, ablation=ablation)

    return process


def priming_worker(payload: tuple[Config, str], ctx: Any) -> Any:
    """Worker factory for the sweep (:mod:`learnlab.core.parallel`): a session of its own, one sample per item."""
    config, out = payload
    session, data = build_session(config, ctx.seed, Path(out), ctx.device)
    measure, by_id = _measure(session, data, config), {sample.id: sample for sample in data.samples}
    return lambda key: measure(by_id[key])


def _sweep(config: Config, ctx: RunContext, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure every sample (resumable per sample; shared by ``workers`` processes on CPU)."""
    session, data = build_session(config, ctx.seed, out, ctx.device)
    measure, by_id = _measure(session, data, config), {sample.id: sample for sample in data.samples}
    workers = min(config.workers, len(data.samples)) if ctx.device.type == "cpu" else 1
    sweep = ctx.stage_items("sweep", list(by_id), priming_worker, (config, str(out)), workers=workers,
                            description="insert samples", local_process=lambda key: measure(by_id[key]))
    summary = {
        "samples": len(sweep.records), "rewritten_samples": len(data.rewrites), "probes": len(data.probes),
        "background_loss_base": session.base_background_loss, "sweep_seconds": sweep.seconds, "workers": workers,
        "samples_per_minute": 60 * sweep.computed / sweep.seconds if sweep.computed else None,
    }
    return sweep.records, summary


# --- analysis --------------------------------------------------------------------------------------


def _analyse(config: Config, ctx: RunContext, records: list[dict[str, Any]]) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    measured.update(analysis.correlations(records, config.bootstrap, ctx.seed))
    measured.update(analysis.threshold_split(records, config.threshold, config.bootstrap, ctx.seed))
    measured.update(analysis.within_prior_levels(records, config.threshold))
    headline = f"{100 * HEADLINE_FRACTION:g}"
    measured.update(analysis.pruning_summary(records, headline))
    ablation = analysis.pruning_summary(records, headline, field="ablation_pruning")
    if ablation:
        measured["ablation_variants"] = ablation.pop("variants")
        measured.update({f"ablation_{key}": value for key, value in ablation.items()})
    measured.update(analysis.rewrite_summary(records))
    measured.update(analysis.theme_summary(records))
    measured.update(analysis.spaced_summary(records))
    measured["by_category"] = analysis.group_medians(records, "category")
    measured["by_prior"] = analysis.group_medians(records, "prior")
    measured["median_log10_s_mem"] = statistics.median(record["log_s_mem"] for record in records) / analysis.LN10
    measured["median_log10_s_prime"] = statistics.median(record["log_s_prime"] for record in records) / analysis.LN10
    return measured


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    out = ctx.run_dir.parent.parent
    records, sweep = _sweep(config, ctx, out)
    measured = dict(ctx.stage("analysis", lambda: _analyse(config, ctx, records)))
    measured.update(sweep)
    plot_scatter(ctx, config.threshold, records, measured)
    plot_pruning(ctx, measured, BACKGROUND_BOUND)
    if measured.get("rewritten_samples"):
        plot_rewrites(ctx, records)
    return measured


# --- claims ----------------------------------------------------------------------------------------

CLAIMS = (
    Claim(
        "C1",
        "Keyword probability before learning predicts priming: Spearman rho(log P_before, log S_prime) < 0 with "
        "p < 0.01, and it is the strongest of the predictors tried (text length, loss, entropy); rho within each "
        "prior level is reported beside the pooled value (rho_p_before_prior_<level>)",
        "Sun et al. 2025 abstract, §4 (Fig. 2)",
        "negative, strongest",
        (below("rho_p_before", 0.0), below("rho_p_before_p_value", P_VALUE_BOUND),
         is_true("p_before_strongest_predictor")),
    ),
    Claim(
        "C2",
        "Samples whose keyword has P_before below the threshold (paper: about 1e-3) prime more: median log10 "
        "S_prime below minus above the threshold > 0 (the fitted knee, and the gap within each prior level that "
        "spans the threshold, are reported)",
        "Sun et al. 2025 Fig. 2b",
        "below > above",
        (above("log10_s_prime_gap_at_threshold", 0.0),),
    ),
    Claim(
        "C3",
        "Ignore-top-8% update pruning cuts median log S_prime by >= 50%, keeps >= 50% of median log S_mem, raises "
        "held-out loss (vs the base model) by < 1%, and random-8% cuts priming less",
        "Sun et al. 2025 abstract, §5.1, Eq. 3 / App. A.6 (50-95%)",
        ">= 50% cut",
        (at_least("ignore8_priming_reduction", REDUCTION_BOUND), at_least("ignore8_memorization_kept", KEPT_BOUND),
         below("ignore8_background_loss_increase", BACKGROUND_BOUND), is_true("random8_cuts_less")),
    ),
    Claim(
        "C4",
        "Stepping-stone rewrites raise P_before of the keyword (median, >= 1 order of magnitude), cut median log "
        "S_prime by >= 50% and keep >= 50% of median log S_mem (original context); the length-matched plain "
        "control cuts priming at most half as much",
        "Sun et al. 2025 abstract, §5 (Fig. 5: 50-75%)",
        ">= 50% cut",
        (at_least("stone_log10_p_before_gain", STONE_GAIN_BOUND), at_least("stone_priming_reduction", REDUCTION_BOUND),
         at_least("stone_memorization_kept", KEPT_BOUND), is_true("control_cuts_much_less")),
    ),
)

STUDY = Study(
    name="priming",
    title="How new data permeates LLM knowledge and how to dilute it",
    paper="Sun et al., ICLR 2025 (arXiv:2504.09522)",
    presets=PRESETS,
    run=run,
    claims=CLAIMS,
    summary="Priming after learning one text, predicted by keyword probability; ignore-k pruning and stepping stones.",
    requires=("world",),
    figures=("priming_scatter", "ignore_k", "rewrites"),
    reference_seconds={"quick": 119},
)
