"""Study ``priming``: "How new data permeates LLM knowledge and how to dilute it" (Sun et al., ICLR 2025).

For every Outlandish-format sample (the tiny world's built-in set by default, or the user's
files) the study measures the keyword's probability before learning, inserts the sample into the
model (one minibatch row for K steps, priming.md §3.2), and measures memorization S_mem and
priming S_prime (§4); also the spaced variant, ignore-k update pruning at several k with a
random-k control (§4 "Ignore-k"), and stepping-stone rewrites with a length-matched plain control
(§4 "Stepping-stone augmentation"). It then checks the paper's claims: keyword probability
predicts priming (Spearman, against other predictors), priming is large below a probability
threshold (paper: about 1e-3), ignore-top-8% cuts priming while keeping memorization and
background loss, and stepping stones cut priming while a plain rewrite does not.

Any Hugging Face causal LM can be measured with ``model=PATH`` (plus ``background=`` text, and
``samples=``/``probes=`` files for data about the real world); see the README.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from learnlab.core import Claim, RunContext, Study, at_least, at_most, is_true
from learnlab.core.errors import UserError
from learnlab.core.io import pyplot
from learnlab.knowledge import priming_analysis as analysis
from learnlab.knowledge.insertion import InsertionSettings
from learnlab.knowledge.outlandish import OutlandishSample, Probe, load_probes, load_samples
from learnlab.knowledge.pretraining import pack_documents
from learnlab.knowledge.priming_session import PrimingSession, PrimingSettings, heldout_windows
from learnlab.knowledge.stepping_stones import length_matched_control, load_rewrites, world_stepping_stone
from learnlab.knowledge.sweep import read_records, recorded_ids, run_sweep
from learnlab.knowledge.world_model import WorldModel, ensure_world_model

HEADLINE_FRACTION = 0.08  # ignore-top-8%, the paper's headline setting (priming.md §4)
REDUCTION_BOUND = 0.5  # "cuts median priming by at least 50%" (issue; abstract: 50-95% and 50-75%)
KEPT_BOUND = 0.5  # "keeping at least 50% of median memorization"
BACKGROUND_BOUND = 0.01  # "raising held-out background loss by less than 1%"
P_VALUE_BOUND = 0.01
STONE_GAIN_BOUND = 1.0  # P_before rises by (at least) an order of magnitude (priming.md §5, fair criteria)


@dataclass(frozen=True)
class Config:
    """Every knob of the priming study; the defaults are the ``quick`` preset.

    Attributes:
        model: ``""`` for the tiny world model of ``world_preset``, else a local directory or hub
            name of a Hugging Face causal LM (never downloaded unless the hub is reachable).
        samples, probes: Outlandish-format JSONL files (``""``: the world's built-in set).
        background: text file, one document per line, for the insertion minibatches' other rows
            (``""``: the world's training corpus; required for other models).
        heldout: text file of held-out documents for the background loss (``""``: the world's held-out split).
        stepping_stones, controls: rewrite files in the samples format, keyed by sample id
            (``""``: built from the world's structure / neutral filler of matched length).
        world_preset: preset of the ``world`` study whose model and data are used.
        presentations, batch_size, sequence_length, optimizer, learning_rate: the insertion
            (priming.md §3.2: one row of each minibatch for 20 steps; fixed lr, §7).
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
    presentations: int = 20
    batch_size: int = 4
    sequence_length: int = 32
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    learning_rate: float = 3e-4
    warm_start: bool = True
    spaced_presentations: int = 3
    spacing: int = 20
    spaced_every: int = 6
    ablation_optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    ablation_learning_rate: float = 0.1
    ablation_every: int = 6
    prune_fractions: tuple[float, ...] = (0.0, 0.01, 0.02, 0.04, 0.08, 0.16)
    prune_scope: Literal["tensor", "global"] = "tensor"
    background_documents: int = 4000
    heldout_windows: int = 8
    heldout_length: int = 64
    threshold: float = 1e-3
    bootstrap: int = 1000
    max_samples: int = 0
    workers: int = 2
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("presentations", "batch_size", "sequence_length", "spaced_presentations", "spacing",
                     "background_documents", "heldout_windows", "heldout_length", "workers", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (one row is the sample), got {self.batch_size}")
        if min(self.spaced_every, self.ablation_every, self.bootstrap, self.max_samples) < 0:
            raise ValueError("spaced_every, ablation_every, bootstrap and max_samples must be >= 0")
        if self.learning_rate <= 0 or self.ablation_learning_rate <= 0:
            raise ValueError("learning_rate and ablation_learning_rate must be > 0")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if 0.0 not in self.prune_fractions or HEADLINE_FRACTION not in self.prune_fractions:
            raise ValueError(f"prune_fractions must include 0 and {HEADLINE_FRACTION}, got {self.prune_fractions}")
        if any(not 0 <= fraction < 1 for fraction in self.prune_fractions):
            raise ValueError(f"prune_fractions must lie in [0, 1), got {self.prune_fractions}")
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
    "quick": Config(),
    "full": Config(world_preset="full", workers=1),
}


# --- data and session ------------------------------------------------------------------------------


def _required_file(value: str, what: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    return path


def _lines(value: str, what: str) -> list[str]:
    lines = [line for line in _required_file(value, what).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{what} file {value} has no text")
    return lines


@dataclass
class PrimingData:
    """Samples, probes, rewrites and texts of a run (deterministic given the config)."""

    samples: list[OutlandishSample]
    probes: list[Probe]
    rewrites: dict[str, list[OutlandishSample]]
    background_texts: list[str]
    heldout_texts: list[str]


def world_of(config: Config, seed: int, out: Path, device: str) -> WorldModel:
    return ensure_world_model(config.world_preset, seed, out=out, device=device, threads=torch.get_num_threads())


def load_data(config: Config, world: WorldModel | None, tokenizer: Any) -> PrimingData:
    """The run's samples, probes and rewrites (built-in unless files are given) and its texts."""
    if config.samples:
        samples = load_samples(_required_file(config.samples, "samples"))
        probes = load_probes(_required_file(config.probes, "probes"))
    else:
        samples, probes = world.outlandish()
    if config.max_samples and config.max_samples < len(samples):
        step = len(samples) / config.max_samples
        samples = [samples[int(index * step)] for index in range(config.max_samples)]
    themes = {probe.theme for probe in probes}
    orphans = sorted({sample.theme for sample in samples} - themes)
    if orphans:
        raise UserError(f"no probes for theme(s) {', '.join(orphans)} (every sample theme needs probes)")
    if config.stepping_stones:
        stones = load_rewrites(_required_file(config.stepping_stones, "stepping_stones"), samples)
    elif world is not None and not config.samples:
        rewrite = world_stepping_stone(world.world())
        stones = {sample.id: rewrite(sample) for sample in samples}
    else:
        stones = {}

    def count_tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    if config.controls:
        controls = load_rewrites(_required_file(config.controls, "controls"), samples)
    else:
        controls = {sample.id: length_matched_control(sample, stones[sample.id], count_tokens)
                    for sample in samples if sample.id in stones}
    rewrites = {sample.id: [replace_category(stones[sample.id], "stepping-stone"), replace_category(controls[sample.id], "plain-control")]
                for sample in samples if sample.id in stones and sample.id in controls}
    background = _lines(config.background, "background") if config.background else world.texts("train")
    if config.heldout:
        heldout = _lines(config.heldout, "heldout")
    elif config.background or world is None:  # hold out the last 10% of the user's background text
        cut = max(1, len(background) // 10)
        if len(background) < 2:
            raise UserError(f"background file {config.background} needs at least 2 documents (or give heldout=FILE)")
        background, heldout = background[:-cut], background[-cut:]
    else:
        heldout = world.texts("heldout")
    return PrimingData(samples, probes, rewrites, background[: config.background_documents], heldout)


def replace_category(sample: OutlandishSample, category: str) -> OutlandishSample:
    """``sample`` labelled ``category`` (rewrites from files carry the original's category)."""
    return OutlandishSample(sample.id, sample.keyword, sample.theme, category, sample.text, sample.prefix, sample.extra)


def build_session(config: Config, seed: int, out: Path, device: torch.device) -> tuple[PrimingSession, PrimingData]:
    """Load the model and data and set up the measurement (the same in every worker)."""
    from learnlab.knowledge.models import load_causal_lm

    own_model = config.model in ("", "world")
    world = world_of(config, seed, out, device.type) if own_model or not config.samples else None
    model, tokenizer = world.load(device) if own_model else load_causal_lm(config.model, device)
    data = load_data(config, world, tokenizer)
    factory = world.continued_optimizer(config.learning_rate) if own_model and config.warm_start else None
    eos = getattr(tokenizer, "eos_token_id", None) or 0
    background = pack_documents(tokenizer(data.background_texts)["input_ids"], eos)
    heldout_stream = pack_documents(tokenizer(data.heldout_texts)["input_ids"], eos)
    if background.numel() <= config.sequence_length + 1:
        raise UserError(f"background text has {background.numel()} tokens, fewer than one row ({config.sequence_length + 1})")
    if heldout_stream.numel() <= config.heldout_length + 1:
        raise UserError(f"held-out text has {heldout_stream.numel()} tokens, fewer than one window ({config.heldout_length + 1})")
    windows = heldout_windows(heldout_stream, config.heldout_windows, config.heldout_length)
    session = PrimingSession(model, tokenizer, data.probes, background, windows, config.settings(), seed, factory)
    return session, data


def _measure(session: PrimingSession, data: PrimingData, config: Config) -> Any:
    """The per-sample step of the sweep: which samples also get the spaced and optimizer variants."""
    index = {sample.id: position for position, sample in enumerate(data.samples)}

    def process(sample: OutlandishSample) -> dict[str, Any]:
        position = index[sample.id]
        spaced = config.spaced_every > 0 and position % config.spaced_every == 0
        ablation = config.ablation_every > 0 and position % config.ablation_every == 0
        return session.measure(sample, data.rewrites.get(sample.id, ()), spaced=spaced, ablation=ablation)

    return process


def _worker(config: dict[str, Any], seed: int, out: str, output: str, rank: int, world_size: int, parent: int) -> None:
    """One sweep process (spawned): measures the samples of its shard; stops if the parent dies."""
    torch.set_num_threads(1)
    settings = Config(**config)
    session, data = build_session(settings, seed, Path(out), torch.device("cpu"))
    measure = _measure(session, data, settings)

    def process(sample: OutlandishSample) -> dict[str, Any]:
        if os.getppid() != parent:
            raise SystemExit(3)
        return measure(sample)

    run_sweep(data.samples, lambda sample: sample.id, process, Path(output), rank=rank, world_size=world_size)


def _sweep(config: Config, ctx: RunContext, out: Path) -> dict[str, Any]:
    """Measure every sample (resumable; sharded over ``workers`` processes on CPU)."""
    output = ctx.run_dir / "sweep" / "samples.jsonl"
    session, data = build_session(config, ctx.seed, out, ctx.device)
    already = len(recorded_ids(output))
    workers = min(config.workers, len(data.samples)) if ctx.device.type == "cpu" else 1
    started = time.perf_counter()
    with ctx.progress("insert samples", len(data.samples)) as bar:
        bar.advance(already)
        if workers > 1 and already < len(data.samples):
            _run_workers(config, ctx, out, output, workers, bar, already)
        records = run_sweep(data.samples, lambda sample: sample.id, _measure(session, data, config), output,
                            rank=0, world_size=1, on_item=lambda sample, record: bar.advance(1))
    seconds = time.perf_counter() - started
    measured_now = len(records) - already
    ctx.log(samples=len(records), measured_now=measured_now, seconds=seconds)
    return {
        "samples": len(records), "rewritten_samples": len(data.rewrites), "probes": len(data.probes),
        "background_loss_base": session.base_background_loss, "sweep_seconds": seconds, "workers": workers,
        "samples_per_minute": 60 * measured_now / seconds if measured_now else None,
    }


def _run_workers(config: Config, ctx: RunContext, out: Path, output: Path, workers: int, bar: Any, already: int) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker, args=(asdict(config), ctx.seed, str(out), str(output), rank, workers, os.getpid()),
                        daemon=True)
        for rank in range(workers)
    ]
    for process in processes:
        process.start()
    shown = already
    try:
        while any(process.is_alive() for process in processes):
            time.sleep(1.0)
            count = len(recorded_ids(output))
            bar.advance(count - shown)
            shown = count
        failed = [rank for rank, process in enumerate(processes) if process.exitcode != 0]
        if failed:
            raise RuntimeError(f"priming worker(s) {failed} exited with code(s) {[processes[r].exitcode for r in failed]}")
        bar.advance(len(recorded_ids(output)) - shown)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


# --- analysis --------------------------------------------------------------------------------------


def _analyse(config: Config, ctx: RunContext, records: list[dict[str, Any]]) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    measured.update(analysis.correlations(records, config.bootstrap, ctx.seed))
    measured.update(analysis.threshold_split(records, config.threshold))
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
    sweep = ctx.stage("sweep", lambda: _sweep(config, ctx, out))
    records = read_records(ctx.run_dir / "sweep" / "samples.jsonl")
    measured = dict(ctx.stage("analysis", lambda: _analyse(config, ctx, records)))
    measured.update(sweep)
    _plot_scatter(ctx, config, records, measured)
    _plot_pruning(ctx, measured)
    if measured.get("rewritten_samples"):
        _plot_rewrites(ctx, records)
    return measured


# --- figures ---------------------------------------------------------------------------------------


def _plot_scatter(ctx: RunContext, config: Config, records: list[dict[str, Any]], measured: dict[str, Any]) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(str(record.get("prior", record["category"])), []).append(record)
    for name, members in sorted(groups.items()):
        left.scatter([r["log_p_before"] / analysis.LN10 for r in members], [r["log_s_prime"] / analysis.LN10 for r in members],
                     s=12, alpha=0.7, label=name)
    threshold = measured["threshold_log10"]
    low = min(record["log_p_before"] for record in records) / analysis.LN10
    left.axvspan(min(low, threshold) - 1, threshold, color="C3", alpha=0.08, label=f"P_before < {config.threshold:g}")
    if measured.get("knee_log10_p_before") is not None:
        left.axvline(measured["knee_log10_p_before"], color="grey", linestyle="--", label="fitted knee")
    left.set_xlabel("log10 P_before(keyword | own prefix)")
    left.set_ylabel("log10 S_prime (same-theme probes)")
    left.set_title(f"Priming vs keyword probability (Spearman rho = {measured['rho_p_before']:.2f})")
    left.legend(fontsize=8)
    same = [record["log_s_prime"] / analysis.LN10 for record in records if "cross_log_s_prime" in record]
    cross = [record["cross_log_s_prime"] / analysis.LN10 for record in records if "cross_log_s_prime" in record]
    right.scatter(cross, same, s=10, alpha=0.6)
    if same:
        top = max(max(same), max(cross))
        right.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1)
    right.set_xlabel("log10 S_prime, cross-theme probes")
    right.set_ylabel("log10 S_prime, same-theme probes")
    right.set_title("Same-theme vs cross-theme priming")
    ctx.save_figure(figure, "priming_scatter")


def _plot_pruning(ctx: RunContext, measured: dict[str, Any]) -> None:
    plt = pyplot()
    variants = measured["variants"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for selection, style in (("top", "-o"), ("random", "--s")):
        names = sorted((name for name in variants if name.startswith(selection + "-") or name == "top-0"),
                       key=lambda name: float(name.split("-")[1]))
        ks = [float(name.split("-")[1]) for name in names]
        left.plot(ks, [variants[name]["median_log10_s_prime"] for name in names], style, label=f"S_prime, {selection}-k")
        left.plot(ks, [variants[name]["median_log10_s_mem"] for name in names], style, alpha=0.5, label=f"S_mem, {selection}-k")
        right.plot(ks, [100 * variants[name]["background_loss_increase"] for name in names], style, label=f"{selection}-k")
    left.set_xlabel("k (% of each tensor's update entries reset)")
    left.set_ylabel("median log10 score")
    left.set_title("Ignore-k: priming and memorization")
    left.legend(fontsize=8)
    right.axhline(100 * BACKGROUND_BOUND, color="grey", linestyle="--", label="1% bound")
    right.set_xlabel("k (%)")
    right.set_ylabel("held-out loss change vs base model (%)")
    right.set_title("Ignore-k: background loss")
    right.legend(fontsize=8)
    ctx.save_figure(figure, "ignore_k")


def _plot_rewrites(ctx: RunContext, records: list[dict[str, Any]]) -> None:
    plt = pyplot()
    both = [record for record in records if "stepping-stone" in record and "plain-control" in record]
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    columns = {"original": [r["log_s_prime"] for r in both],
               "stepping stones": [r["stepping-stone"]["log_s_prime"] for r in both],
               "plain control": [r["plain-control"]["log_s_prime"] for r in both]}
    axis.boxplot([[value / analysis.LN10 for value in values] for values in columns.values()], showfliers=False)
    axis.set_xticks(range(1, len(columns) + 1), list(columns))
    axis.set_ylabel("log10 S_prime")
    axis.set_title("Rewrites before learning: priming")
    ctx.save_figure(figure, "rewrites")


# --- claims ----------------------------------------------------------------------------------------

CLAIMS = (
    Claim(
        "C1",
        "Keyword probability before learning predicts priming: Spearman rho(log P_before, log S_prime) < 0 with "
        "p < 0.01, and it is the strongest of the predictors tried (text length, loss, entropy)",
        "Sun et al. 2025 abstract, §4 (Fig. 2); issue 6",
        "negative, strongest",
        (at_most("rho_p_before", 0.0), at_most("rho_p_before_p_value", P_VALUE_BOUND),
         is_true("p_before_strongest_predictor")),
    ),
    Claim(
        "C2",
        "Samples whose keyword has P_before below the threshold (paper: about 1e-3) prime more: median log10 "
        "S_prime below minus above the threshold > 0 (the fitted knee is reported)",
        "Sun et al. 2025 Fig. 2b; priming.md §2.2",
        "below > above",
        (at_least("log10_s_prime_gap_at_threshold", 0.0),),
    ),
    Claim(
        "C3",
        "Ignore-top-8% update pruning cuts median log S_prime by >= 50%, keeps >= 50% of median log S_mem, raises "
        "held-out loss (vs the base model) by < 1%, and random-8% cuts priming less",
        "Sun et al. 2025 abstract, §5.1, Eq. 3 / App. A.6 (50-95%)",
        ">= 50% cut",
        (at_least("ignore8_priming_reduction", REDUCTION_BOUND), at_least("ignore8_memorization_kept", KEPT_BOUND),
         at_most("ignore8_background_loss_increase", BACKGROUND_BOUND), is_true("random8_cuts_less")),
    ),
    Claim(
        "C4",
        "Stepping-stone rewrites raise P_before of the keyword (median, >= 1 order of magnitude), cut median log "
        "S_prime by >= 50% and keep >= 50% of median log S_mem (original context); the length-matched plain "
        "control cuts priming at most half as much",
        "Sun et al. 2025 abstract, §5 (Fig. 5: 50-75%); priming.md §5 fair criteria",
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
    figures=("priming_scatter", "ignore_k", "rewrites"),
)
