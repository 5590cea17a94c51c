"""Study ``gistpool``: "Long Context In-Context Compression by Getting to the Gist of Gisting" (Petrov et al. 2025).

A decoder reads a long context once and keeps only k = L / r key/value slots per layer; questions
are answered from those slots. Petrov et al. (2025, abstract) report that gisting (Mu et al. 2023:
k gist tokens after the context, later tokens see only the gists) degrades on long contexts even
at low compression, that average pooling of the context's keys and values beats it, and that
GistPool (one gist per window of r tokens, each attending only to its window; later tokens read
the gists' keys and values from one layer up; separate compressor parameters) matches or beats
average pooling. The authors' account of the design adds the order of the ablation: the shift
helps at once, separate parameters help more, the window mask makes it work.

Protocol (:mod:`gistpool_runs`): a small Llama is first trained to answer from the full context
(the reader); every method then fine-tunes a copy of it on the same examples for the same number
of steps, full-parameter, on the answer loss (:mod:`training`); none and full context are trained
alike as the bounds. Metrics are the answer loss, exact-match accuracy and recovery
(Feldman & Artzi 2025) on held-out examples; each claim compares means over seeds with their
standard deviations. The built-in task asks for the dominant symbol of one window of the context
(:func:`tasks.window_statistic_examples`); ``task=key-value`` asks for one key's value, and
``model=PATH qa_file=PATH`` fine-tunes a user's Hugging Face decoder on their own QA file, and
``model=world`` the tiny world's model on passages of its world's facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from learnlab.compression import gistpool_analysis as analysis
from learnlab.compression.gistpool_figures import plot_ablation, plot_lengths, plot_rates
from learnlab.compression.gistpool_runs import finetune_worker, run_plan, train_reader
from learnlab.compression.tasks import read_qa_records
from learnlab.core import Claim, RunContext, Study, StudyConfig, at_least, is_true, positive, ranged
from learnlab.knowledge.substrate import ensure_world_model

NEAR_FULL_RECOVERY = 0.9  # "close to full context" at the lowest rate: recovery of at least 0.9

Compressor = Literal["gisting", "avgpool", "gistpool"]


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every knob of the compression study; the defaults are the ``quick`` preset.

    Attributes:
        task, symbols, task_window, dominance: the built-in task (``window-statistic``: windows of
            ``task_window`` tokens, a share ``dominance`` of each its symbol, out of ``symbols``;
            ``key-value``: L / 2 pairs, values out of ``symbols``).
        context_length, rates, methods, ablation, ablation_rate: the main comparison (every method
            at every rate r = L / k at one length; quick: 2, 4 and 8, full also 1 and 16) and the
            ablation chain at one rate.
        lengths, length_methods, length_rate: the length sweep (the bounds and these methods at
            ``length_rate`` at every length).
        reader_lengths: the context lengths the reader is trained on, taken in turn; they include every
            swept length (quick: it also reads 256-token contexts, which the fine-tuning sweep leaves to
            ``full``).
        hidden_size, num_layers, num_heads, reader_steps, reader_learning_rate: the
            reader (a Llama with MLP width 4 x hidden, initialised from the run seed) and its
            full-context training.
        steps, batch_size, learning_rate, train_examples, test_examples: every fine-tuning run
            (AdamW, answer-only loss, gradient norm clipped at 1).
        seeds: fine-tuning seeds (examples, order, gist initialisation); workers: processes.
        model, qa_file, qa_test_fraction: a user's decoder and QA file (JSONL: context, question,
            answer) instead of the built-in reader and task; contexts are fitted to
            ``context_length`` tokens (cut to the last ones or left-padded).
        world_preset, passage_facts: ``model=world``: the tiny world's model (of that preset) reads
            passages of ``passage_facts`` facts of its world and answers a question about one.
    """

    task: Literal["window-statistic", "key-value"] = "window-statistic"
    symbols: int = ranged(16, ge=2)
    task_window: int = positive(16)
    dominance: float = ranged(0.5, gt=0, le=1)
    context_length: int = positive(128)
    rates: tuple[int, ...] = ranged((2, 4, 8), ge=1)
    methods: tuple[Compressor, ...] = ("gisting", "avgpool", "gistpool")
    ablation: bool = True
    ablation_rate: int = positive(4)
    lengths: tuple[int, ...] = ranged((64, 128), ge=2)
    reader_lengths: tuple[int, ...] = ranged((64, 128, 256), ge=2)
    length_methods: tuple[Compressor, ...] = ("gisting",)
    length_rate: int = positive(2)
    hidden_size: int = positive(64)
    num_layers: int = positive(4)
    num_heads: int = positive(4)
    reader_steps: int = positive(600)
    reader_learning_rate: float = positive(1e-3)
    steps: int = positive(150)
    batch_size: int = positive(16)
    learning_rate: float = positive(1e-3)
    train_examples: int = positive(4000)
    test_examples: int = positive(256)
    seeds: int = positive(3)
    workers: int = positive(2)
    model: str = ""
    qa_file: str = ""
    world_preset: Literal["smoke", "quick", "full"] = "quick"
    passage_facts: int = positive(8)
    qa_test_fraction: float = ranged(0.2, gt=0, lt=1)

    @property
    def sweep_lengths(self) -> tuple[int, ...]:
        """The context lengths of the runs (a user's QA file: ``context_length`` only)."""
        return (self.context_length,) if self.model else tuple(sorted(self.lengths))

    def validate(self) -> None:
        if bool(self.model) != bool(self.qa_file) and self.model != "world":
            raise ValueError("model= and qa_file= go together (a user's decoder and its QA file, or neither)")
        if self.model == "world" and self.qa_file:
            raise ValueError("model=world answers the world's own passages; a qa_file needs the decoder it was written for")
        if self.context_length not in self.sweep_lengths:
            raise ValueError(f"context_length {self.context_length} must be one of lengths {self.lengths}")
        used = [(rate, self.context_length) for rate in self.rates + ((self.ablation_rate,) if self.ablation else ())]
        used += [(self.length_rate, length) for length in self.sweep_lengths]
        for rate, length in used:
            if length % rate:
                raise ValueError(f"compression rate {rate} does not divide the context length {length}")
        if not self.model and not set(self.lengths) <= set(self.reader_lengths):
            raise ValueError(f"the reader must be trained on every swept length: lengths {self.lengths} are not all "
                             f"in reader_lengths {self.reader_lengths}")
        if self.task == "window-statistic" and not self.model:
            for length in self.reader_lengths:
                if length % self.task_window:
                    raise ValueError(f"task_window {self.task_window} does not divide the context length {length}")
        if self.task == "key-value" and any(length % 2 for length in self.reader_lengths):
            raise ValueError("key-value contexts hold L / 2 pairs: every length must be even")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")


PRESETS = {
    "smoke": Config(symbols=4, task_window=4, context_length=16, rates=(2, 4), lengths=(8, 16), reader_lengths=(8, 16),
                    length_rate=2, ablation_rate=2, hidden_size=16, num_layers=2, num_heads=2, reader_steps=20, steps=6,
                    batch_size=4, train_examples=64, test_examples=16, seeds=2, workers=1),
    "quick": Config(),
    "full": Config(context_length=256, lengths=(128, 256, 512, 1024),
                   reader_lengths=(128, 256, 512, 1024), rates=(1, 2, 4, 8, 16),
                   length_methods=("gisting", "avgpool", "gistpool"), hidden_size=128, reader_steps=4000,
                   steps=1000, batch_size=32, train_examples=20000, test_examples=512, seeds=5, workers=1),
}


# --- the runs --------------------------------------------------------------------------------------


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    source, reader = str(ctx.stages_dir / "reader.safetensors"), {"reader_accuracy": {}}
    if config.model == "world":
        source = str(ensure_world_model(config.world_preset, ctx.seed, out=ctx.run_dir.parent.parent,
                                        device=ctx.device.type, threads=torch.get_num_threads()).run_dir)
    elif config.model:  # a malformed QA file fails before any model is loaded
        read_qa_records(Path(config.qa_file))
    else:
        reader = ctx.stage("reader", lambda: train_reader(config, ctx))
    keys = [run.key for run in sorted(run_plan(config), key=lambda run: -run.length)]  # longest contexts first
    workers = min(config.workers, len(keys)) if ctx.device.type == "cpu" else 1
    runs = ctx.stage_items("finetune", keys, finetune_worker, (config, source), workers=workers,
                           description="fine-tuning runs (seed x length x method)")
    table = analysis.method_table(runs.records)
    measured: dict[str, Any] = {"reader_full_context_accuracy": reader["reader_accuracy"], "methods": table,
                                "runs": len(runs.records), "runs_seconds": runs.seconds, "workers": workers}
    measured.update(analysis.length_summary(table, config.sweep_lengths, config.length_rate))
    measured.update(analysis.rate_summary(table, config.context_length, config.rates))
    if config.ablation:
        measured.update(analysis.ablation_summary(table, config.context_length, config.ablation_rate))
    plot_rates(ctx, table, config.context_length, config.rates, config.methods)
    plot_lengths(ctx, table, config.sweep_lengths, config.length_rate, config.length_methods)
    plot_ablation(ctx, table, config.context_length, config.ablation_rate)
    return measured


# --- claims ----------------------------------------------------------------------------------------

CLAIMS = (
    Claim(
        "G1",
        "Gisting degrades with context length even at low compression: its recovery at r = length_rate falls from the "
        "shortest to the longest context by more than one seed std, while full-context accuracy does not fall (longest "
        ">= shortest minus one seed std)",
        "Petrov et al. 2025 abstract ('significant performance drops even at minimal compression rates')",
        "falls beyond 1 std; full holds",
        (is_true("gisting_falls_with_length"), is_true("full_holds_with_length")),
    ),
    Claim(
        "G2",
        "Average pooling of keys and values beats gisting at every compression rate, by more than one seed std of "
        "accuracy (avgpool_over_gisting_in_stds per rate)",
        "Petrov et al. 2025 abstract ('a simple average pooling baseline consistently outperforms Gisting')",
        "> 1 std at every r",
        (is_true("avgpool_beats_gisting_at_every_rate"),),
    ),
    Claim(
        "G3",
        "GistPool matches or beats average pooling at every rate (accuracy >= average pooling's minus its seed std) "
        f"and is close to full context at the lowest rate (recovery >= {NEAR_FULL_RECOVERY})",
        "Petrov et al. 2025 abstract ('matches or beats average pooling'; 'near lossless' at low compression)",
        f">= avgpool - 1 std; recovery >= {NEAR_FULL_RECOVERY}",
        (is_true("gistpool_matches_avgpool_at_every_rate"),
         at_least("gistpool_recovery_at_lowest_rate", NEAR_FULL_RECOVERY)),
    ),
    Claim(
        "G4",
        "The ablation chain gisting -> +shift -> +separate compressor parameters -> +window mask (= GistPool) lowers "
        "the mean answer loss at every step (ablation_steps_not_improving names any step that does not)",
        "Petrov et al. 2025, the authors' account of the ablation (shift, then separate parameters, then the mask)",
        "lower loss at each step",
        (is_true("ablation_improves_every_step"),),
    ),
)

STUDY = Study(
    name="gistpool",
    title="Compressing long contexts in context: gisting, average pooling, GistPool",
    paper="Petrov et al. 2025 (arXiv:2504.08934); Mu et al. 2023 (arXiv:2304.08467)",
    presets=PRESETS,
    run=run,
    claims=CLAIMS,
    summary="Fine-tune one reader per compression method and compare answers from k = L / r cached slots.",
    # One thread: the reader trains in one process (the same weights as on two threads, less CPU
    # time); the fine-tuning runs are one-thread worker processes anyway.
    figures=("accuracy_vs_rate", "accuracy_vs_length", "ablation"),
    reference_seconds={"quick": 540},
)
