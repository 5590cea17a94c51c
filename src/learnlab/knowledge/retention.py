"""How long injected facts last: inject many facts into continued training and track them on a step grid.

A retention run (Sun et al. 2024: facts injected during training and followed over tens of
thousands of steps) continues a model's training on background text in minibatches of
``batch_size`` rows. Facts are injected with the priming protocol of Sun et al. (2025, §3): each
fact replaces one row of the minibatch for K consecutive steps; ``facts_per_step`` facts share a
minibatch, so the facts of a run are injected in waves of K steps one after another. Training then
continues on background text alone for ``horizon`` steps. The data order depends only on the step
(:func:`insertion.background_batch`), so runs that inject different facts, or none (the control
run), see the same background rows.

At the end of every wave and on a log-spaced grid after the last one, every tracked fact is scored
in one batched pass: log P(keyword | own context X_c) and log P(keyword | X_T,j) on each of its
probes, from which, with P_before of the model before the run,

    log S_mem(i, s)   = log P_s(key_i | X_c,i) − log P_before(key_i | X_c,i)
    log S_prime(i, s) = log mean_j P_s(key_i | X_T,j) / P_before(key_i | X_T,j)

and the held-out background loss. A run checkpoints its model and optimizer every ``checkpoint_every``
steps and appends every evaluation to ``records.jsonl``, so a killed run resumes from its last
checkpoint (dropping the records after it) and gives the same records as an uninterrupted one. An optimizer wrapper (e.g. sparse updates,
:mod:`sparse_updates`) can take over at a given step (``wrap``, ``wrap_from``). A run can also leave a
snapshot (checkpoint and records) after a given step (``snapshots``): a run that repeats its first
steps (same model, optimizer, facts, settings and seed) starts from a copy of it and gives the same
records as if it had trained them itself.

:func:`half_life` reads a fact's retention off its curve: the steps after the end of its
injection until log S_mem falls below half its peak.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnlab.core.io import write_text
from learnlab.knowledge.insertion import background_batch, masked_lm_step, place_row
from learnlab.knowledge.pretraining import latest_checkpoint, load_checkpoint, save_checkpoint
from learnlab.knowledge.probability import continuation_token_log_probs, encode_pair, heldout_loss, model_device

OptimizerWrap = Callable[[torch.optim.Optimizer], torch.optim.Optimizer]


@dataclass(frozen=True)
class TrackedFact:
    """A fact to inject and track: its text, keyword, own context (prefix) and probe prefixes."""

    id: str
    text: str
    keyword: str
    prefix: str
    probes: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class RetentionSettings:
    """The protocol of a retention run.

    Attributes:
        batch_size: rows per minibatch; ``facts_per_step`` of them are facts during injection.
        sequence_length: tokens per background row (a fact row is padded, never truncated).
        presentations: K, steps each fact is in the minibatch (consecutive).
        facts_per_step: facts injected at once (in rows 0, 1, ...); the run's facts come in waves.
        horizon: background-only steps after the last wave.
        grid_points: evaluation steps after the last wave, log-spaced from 1 to ``horizon``.
        linear_points: further evaluation steps, evenly spaced over the horizon (the background loss of
            the iterates fluctuates; averages over the late points are steadier).
        checkpoint_every: steps between checkpoints of model and optimizer (and at the last step).
        grad_clip_norm: gradient-norm clipping of the continued training (0: none).
        eval_batch_size: prompts per evaluation forward pass.
    """

    batch_size: int = 16
    sequence_length: int = 32
    presentations: int = 20
    facts_per_step: int = 2
    horizon: int = 2000
    grid_points: int = 12
    linear_points: int = 10
    checkpoint_every: int = 250
    grad_clip_norm: float = 1.0
    eval_batch_size: int = 128

    def __post_init__(self) -> None:
        for name in ("batch_size", "sequence_length", "presentations", "facts_per_step", "grid_points",
                     "linear_points", "checkpoint_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.facts_per_step >= self.batch_size:
            raise ValueError(f"facts_per_step ({self.facts_per_step}) must be below batch_size ({self.batch_size})")
        if self.horizon < 0 or self.grad_clip_norm < 0:
            raise ValueError("horizon and grad_clip_norm must be >= 0")

    def waves(self, facts: int) -> int:
        return math.ceil(facts / self.facts_per_step) if facts else 0

    def injection_end(self, facts: int) -> int:
        """The step at which the last wave ends (0 for a run without facts)."""
        return self.waves(facts) * self.presentations

    def evaluation_steps(self, facts: int) -> list[int]:
        """0, the end of every wave, then the log-spaced and the linear grid after the last wave (steps done)."""
        end = self.injection_end(facts)
        waves = [(wave + 1) * self.presentations for wave in range(self.waves(facts))]
        grid = log_grid(self.horizon, self.grid_points)
        linear = [round(self.horizon * index / self.linear_points) for index in range(1, self.linear_points + 1)]
        return sorted({0, *waves, *(end + offset for offset in grid + linear if offset > 0)})


def log_grid(horizon: int, points: int) -> list[int]:
    """About ``points`` distinct integer steps from 1 to ``horizon``, evenly spaced in log(step)."""
    if horizon < 1:
        return []
    values = np.unique(np.round(np.geomspace(1, horizon, max(points, 2))).astype(int))
    return [int(value) for value in values]


def injection_window(index: int, settings: RetentionSettings) -> tuple[int, int, int]:
    """(row, first step, end step) of the ``index``-th fact of a run."""
    wave, row = divmod(index, settings.facts_per_step)
    return row, wave * settings.presentations, (wave + 1) * settings.presentations


class RetentionRun:
    """Continued training of ``model`` with ``facts`` injected, tracking every fact in ``tracked``.

    Args:
        model, tokenizer: any causal LM and its tokenizer (trained in place).
        injected: facts injected in this run (none: a control run), in injection order.
        tracked: facts scored at every evaluation (default: ``injected``); a control run tracks the
            facts of the injected runs to measure drift without injection.
        background: 1-D token stream of background text; heldout: 2-D held-out windows.
        optimizer: the optimizer of the continued training (e.g. the pretraining state continued).
        settings, seed: the protocol; the seed draws the background rows.
        directory: checkpoint directory (``None``: no checkpoints, no resume).
        wrap, wrap_from: from step ``wrap_from`` on, train with ``wrap(optimizer)`` instead.
        steps: evaluation steps (default: :meth:`RetentionSettings.evaluation_steps` of the injected facts).
        snapshots: step -> directory: after that step (and its evaluation), a resumable copy of the run
            (checkpoint and records) is written there, unless the directory exists.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, injected: Sequence[TrackedFact], background: torch.Tensor,
                 heldout: torch.Tensor, optimizer: torch.optim.Optimizer, settings: RetentionSettings, seed: int,
                 directory: Path | None = None, tracked: Sequence[TrackedFact] | None = None, pad_id: int = 0,
                 wrap: OptimizerWrap | None = None, wrap_from: int = 0, steps: Sequence[int] | None = None,
                 snapshots: dict[int, Path] | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.injected = list(injected)
        self.tracked = list(tracked) if tracked is not None else list(injected)
        self.background, self.heldout = background, heldout
        self.base_optimizer, self.optimizer = optimizer, optimizer
        self.settings, self.seed, self.directory, self.pad_id = settings, seed, directory, pad_id
        self.wrap, self.wrap_from = wrap, wrap_from
        self.snapshots = dict(snapshots or {})
        self.evaluation_steps = sorted(set(steps)) if steps is not None else settings.evaluation_steps(len(self.injected))
        self._fact_ids = [torch.tensor(list(tokenizer(fact.text)["input_ids"]), dtype=torch.long) for fact in self.injected]
        self._pairs = [encode_pair(tokenizer, prompt, fact.keyword) for fact in self.tracked
                       for prompt in (fact.prefix, *fact.probes)]
        self._sizes = [1 + len(fact.probes) for fact in self.tracked]

    @property
    def total_steps(self) -> int:
        return self.settings.injection_end(len(self.injected)) + self.settings.horizon

    # --- evaluation ----------------------------------------------------------------------------

    @torch.no_grad()
    def keyword_log_probs(self) -> list[torch.Tensor]:
        """Per tracked fact: log P(keyword | own context) then log P(keyword | probe j), one batched pass."""
        if not self._pairs:
            return []
        was_training = self.model.training
        self.model.eval()
        values = continuation_token_log_probs(self.model, self._pairs, self.settings.eval_batch_size, self.pad_id)
        self.model.train(was_training)
        joint = torch.stack([value.sum() for value in values]).double()
        return list(joint.split(self._sizes))

    def background_loss(self) -> float:
        return heldout_loss(self.model, self.heldout, self.settings.eval_batch_size)

    def evaluate(self, step: int) -> dict[str, Any]:
        """The record of one grid point: every tracked fact's keyword log-probabilities and the background loss."""
        return {"step": step, "log_p": [[float(value) for value in fact] for fact in self.keyword_log_probs()],
                "background_loss": self.background_loss()}

    # --- training ------------------------------------------------------------------------------

    def _use_wrapper(self) -> None:
        if self.wrap is not None and self.optimizer is self.base_optimizer:
            self.optimizer = self.wrap(self.base_optimizer)

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        settings = self.settings
        width = max([settings.sequence_length + 1, *(ids.numel() for ids in self._fact_ids)])
        batch = background_batch(self.background, step, settings.batch_size, width, self.seed)
        mask = torch.ones_like(batch, dtype=torch.bool)
        for index, ids in enumerate(self._fact_ids):
            row, first, end = injection_window(index, settings)
            if first <= step < end:
                place_row(batch, mask, row, ids, self.pad_id)
        return batch, mask

    def run(self, on_step: Callable[[int, float], None] | None = None) -> list[dict[str, Any]]:
        """Train to the end (resuming from ``directory``), returning the records of every evaluation step."""
        start, records = self._resume()
        if start == 0 and not records:
            self._record(records, self.evaluate(0))
        evaluation_steps = set(self.evaluation_steps)
        device = model_device(self.model)
        self.model.train()
        for step in range(start, self.total_steps):
            if step >= self.wrap_from:
                self._use_wrapper()
            batch, mask = self._batch(step)
            loss = masked_lm_step(self.model, self.optimizer, batch.to(device), mask.to(device), self.settings.grad_clip_norm)
            if on_step is not None:
                on_step(step, loss)
            done = step + 1
            if done in evaluation_steps:
                self._record(records, self.evaluate(done))
            if self.directory is not None and (done % self.settings.checkpoint_every == 0 or done == self.total_steps):
                save_checkpoint(self.directory, self.model, self.optimizer, done, {})
            if done in self.snapshots:
                self._snapshot(self.snapshots[done], done, records)
        self.model.eval()
        return records

    # --- checkpoints -----------------------------------------------------------------------------

    @property
    def _records_path(self) -> Path | None:
        return None if self.directory is None else self.directory / "records.jsonl"

    def _record(self, records: list[dict[str, Any]], record: dict[str, Any]) -> None:
        """Keep ``record`` and append it to the records file (one line per evaluation; a torn last line
        after a kill is dropped on resume)."""
        records.append(record)
        if self._records_path is not None:
            self._records_path.parent.mkdir(parents=True, exist_ok=True)
            with self._records_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _snapshot(self, target: Path, step: int, records: list[dict[str, Any]]) -> None:
        """A resumable copy of the run after ``step`` in ``target`` (written aside, then renamed into place)."""
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        save_checkpoint(temp, self.model, self.optimizer, step, {})
        write_text(temp / "records.jsonl", "".join(json.dumps(record) + "\n" for record in records))
        try:
            temp.rename(target)
        except OSError:  # another process wrote it first
            shutil.rmtree(temp, ignore_errors=True)

    def _resume(self) -> tuple[int, list[dict[str, Any]]]:
        """(first step to train, records so far): from the latest checkpoint and the records up to its step."""
        if self.directory is None or latest_checkpoint(self.directory) is None:
            if self._records_path is not None and self._records_path.exists():
                self._records_path.unlink()
            return 0, []
        if int(latest_checkpoint(self.directory)["step"]) > self.wrap_from:  # the wrapper trained step wrap_from on
            self._use_wrapper()
        step, _ = load_checkpoint(self.directory, self.model, self.optimizer)
        records = []
        for line in self._records_path.read_text().splitlines() if self._records_path.exists() else []:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            if record["step"] > step:
                break
            records.append(record)
        write_text(self._records_path, "".join(json.dumps(record) + "\n" for record in records))
        return step, records


def fact_curves(records: Sequence[dict[str, Any]], facts: Sequence[TrackedFact], settings: RetentionSettings,
                injected: int) -> list[dict[str, Any]]:
    """Per tracked fact (the first ``injected`` of them were injected, in order): steps since the end of its
    injection, log S_mem and log S_prime at each evaluation from then on, against the record at step 0."""
    before = records[0]["log_p"]
    curves = []
    for index, fact in enumerate(facts):
        end = injection_window(index, settings)[2] if index < injected else 0
        own, probes = before[index][0], np.asarray(before[index][1:])
        steps, log_s_mem, log_s_prime = [], [], []
        for record in records:
            if record["step"] < end:
                continue
            values = record["log_p"][index]
            differences = np.asarray(values[1:]) - probes
            steps.append(record["step"] - end)
            log_s_mem.append(values[0] - own)
            log_s_prime.append(float(np.logaddexp.reduce(differences) - math.log(len(differences))) if len(differences) else math.nan)
        curves.append({"id": fact.id, "end": end, "steps": steps, "log_s_mem": log_s_mem, "log_s_prime": log_s_prime,
                       "log_p_before": own, "log_p_before_probes": float(np.mean(probes)) if len(probes) else math.nan})
    return curves


def half_life(steps: Sequence[float], values: Sequence[float]) -> float | None:
    """The step (counted like ``steps``, e.g. from the end of the injection) at which ``values`` (log S_mem)
    first fall below half their peak, after the peak.

    The crossing is interpolated linearly in log(1 + step) between the last grid point above and the
    first below. Returns 0.0 when nothing was memorized (peak <= 0) and ``None`` when the curve never
    falls below half its peak within the measured steps (retained past the horizon: censored).
    """
    if len(steps) != len(values) or not len(steps):
        raise ValueError("steps and values must be non-empty and of equal length")
    values = [float(value) for value in values]
    peak_index = int(np.argmax(values))
    peak = values[peak_index]
    if peak <= 0:
        return 0.0
    threshold = peak / 2
    for index in range(peak_index + 1, len(values)):
        if values[index] < threshold:
            left, right = math.log1p(steps[index - 1]), math.log1p(steps[index])
            share = (values[index - 1] - threshold) / (values[index - 1] - values[index])
            return math.expm1(left + share * (right - left))
    return None
