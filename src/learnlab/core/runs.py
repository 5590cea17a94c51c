"""Run directories, the run context handed to a study, and the run/reuse/resume logic.

A run of study S lives in ``<out>/<S>/<preset>-seed<N>-<hash>/``:

- ``config.json``   the resolved config (preset plus ``--set`` overrides) and run options;
- ``metrics.jsonl`` one JSON record per logged event, appended and flushed;
- ``stages/``       finished stages (JSON + safetensors), so a killed run resumes without redoing them;
- ``figures/*.png`` figures;
- ``results.json``  written last and atomically: measured values and claim verdicts.

A run whose ``results.json`` exists with status ``ok`` and was made by the same code (see
:mod:`learnlab.core.versions`) is reused unless ``force`` is set. A run or a cached stage made by
other code is recomputed, unless ``reuse_stale`` is set: then it is reused and marked stale, in
``results.json`` and in the report.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from learnlab import __version__
from learnlab.core.claims import FAIL, NOT_RUN, PASS
from learnlab.core.config import apply_overrides, config_hash, config_to_dict, parse_overrides
from learnlab.core.errors import DivergenceError, UserError
from learnlab.core.io import load_tensors, plain, read_json, save_figure, save_tensors, write_json
from learnlab.core.parallel import LOGS_KEY, ItemsResult, StreamsAndChecks, WorkerFactory, read_records, run_items
from learnlab.core.progress import ProgressReporter
from learnlab.core.registry import Study
from learnlab.core.runtime import preserved_runtime, resolve_device, seed_everything, set_threads
from learnlab.core.versions import code_version

RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class RunOptions:
    """What the command line says about one run, besides the study's own config."""

    preset: str = "quick"
    seed: int = 0
    overrides: tuple[str, ...] = ()
    device: str = "auto"
    out: Path = Path("runs")
    force: bool = False
    quiet: bool = False
    threads: int | None = None  # None: the study's own choice (Study.threads)
    reuse_stale: bool = False  # reuse a finished run or cached stages made by other code (marked stale)


class RunContext(StreamsAndChecks):
    """What a study's ``run(config, ctx)`` uses to log, save figures, draw seeds and resume.

    Besides the methods below: ``generator(*names)`` (a named random stream), ``check_finite`` and
    ``training_progress(description, steps, what)`` (a bar whose ``on_step(step, loss)`` stops the
    run on a NaN/inf loss), shared with the item context of :mod:`learnlab.core.parallel`.
    """

    def __init__(self, run_dir: Path, seed: int, device: torch.device, progress: ProgressReporter) -> None:
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.device = device
        self._progress = progress
        self._current_stage: str | None = None
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        self.stages_dir.mkdir(parents=True, exist_ok=True)

    @property
    def figures_dir(self) -> Path:
        return self.run_dir / "figures"

    @property
    def stages_dir(self) -> Path:
        return self.run_dir / "stages"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def quiet(self) -> bool:
        return self._progress.quiet

    def log(self, **record: Any) -> None:
        """Append one metrics record (tagged with the current stage) to ``metrics.jsonl``."""
        if self._current_stage is not None:
            record = {"stage": self._current_stage, **record}
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(plain(record)) + "\n")
            handle.flush()

    def save_figure(self, figure: Any, name: str) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` (atomically) and close it."""
        path = self.figures_dir / f"{name}.png"
        save_figure(figure, path)
        return path

    def progress(self, description: str, total: int) -> Any:
        """A progress bar context: ``with ctx.progress("train", steps) as bar: bar.advance(1, loss=x)``."""
        return self._progress.task(description, total)

    def stage(self, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``compute`` once per run directory and cache its result.

        Tensor values of the returned dict are stored with safetensors, the rest as JSON; a run
        killed midway resumes by loading every finished stage instead of computing it again.
        Metrics logged by an unfinished earlier attempt of this stage are dropped first.
        """
        summary_path = self.stages_dir / f"{name}.json"
        tensor_path = self.stages_dir / f"{name}.safetensors"
        if summary_path.exists():
            result = read_json(summary_path)
            if tensor_path.exists():
                result.update(load_tensors(tensor_path))
            return result
        self._drop_metrics_of(name)
        previous, self._current_stage = self._current_stage, name
        try:
            result = compute()
        finally:
            self._current_stage = previous
        tensors = {key: value for key, value in result.items() if isinstance(value, torch.Tensor)}
        if tensors:
            save_tensors(tensor_path, tensors)
        write_json(summary_path, plain({key: value for key, value in result.items() if key not in tensors}))
        return result

    def stage_items(self, name: str, keys: list[str], make_worker: WorkerFactory, payload: Any, workers: int = 1,
                    description: str | None = None, local_process: Callable[[str], dict[str, Any]] | None = None) -> ItemsResult:
        """A stage made of independent items (:mod:`learnlab.core.parallel`), resumable per item.

        Records go to ``items/<name>.jsonl``; ``workers`` processes share the items on the CPU, and
        ``torchrun`` ranks shard them (``local_process``: see :func:`~learnlab.core.parallel.run_items`). Each item's log records are written to the metrics, tagged
        with the stage and the item, once every item is done. Returns the records in ``keys`` order
        (and, on the call that computed them, how many were computed and how long it took).
        """
        output = self.run_dir / "items" / f"{name}.jsonl"
        summary_path = self.stages_dir / f"{name}.json"
        if summary_path.exists() and len(read_records(output)) < len(keys):
            summary_path.unlink()  # the records were removed: compute the missing ones again

        def compute() -> dict[str, Any]:
            result = run_items(keys, make_worker, payload, output, self.seed, device=self.device, workers=workers,
                               progress=self.progress, description=description or name, local_process=local_process)
            for record in result.records:
                for entry in record.get(LOGS_KEY, []):
                    self.log(item=record["id"], **entry)
            return {"items": len(result.records), "computed": result.computed, "seconds": result.seconds}

        summary = self.stage(name, compute)
        records = [{key: value for key, value in record.items() if key != LOGS_KEY} for record in read_records(output)]
        return ItemsResult(records, int(summary["computed"]), float(summary["seconds"]))

    def _drop_metrics_of(self, stage: str) -> None:
        if not self.metrics_path.exists():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines() if line and json.loads(line).get("stage") != stage]
        temp = self.metrics_path.with_suffix(".jsonl.tmp")
        temp.write_text("".join(line + "\n" for line in kept))
        temp.replace(self.metrics_path)


@dataclass(frozen=True)
class PreparedRun:
    study: Study
    options: RunOptions
    config: Any
    device: torch.device
    run_dir: Path


def prepare_run(study: Study, options: RunOptions) -> PreparedRun:
    """Resolve preset, overrides and device into a config and its run directory (no side effects)."""
    if options.seed < 0:
        raise UserError(f"--seed must be >= 0, got {options.seed}")
    config = apply_overrides(study.config(options.preset), parse_overrides(options.overrides))
    device = resolve_device(options.device)
    digest = config_hash(config, {"device": device.type})
    run_dir = Path(options.out) / study.name / f"{options.preset}-seed{options.seed}-{digest}"
    return PreparedRun(study, options, config, device, run_dir)


def _ensure_writable(directory: Path) -> None:
    """Check that ``directory`` can be written to, with a probe file of a unique name: processes that
    check the same directory at once (e.g. the workers of a sweep) must not remove each other's probe."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"cannot write to {directory}: {error.strerror or error}") from None


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the workers of a run)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine_description() -> str:
    """``"<CPU model>, <n> cores"`` (and the GPU when CUDA is available)."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    text = f"{model}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def finished_results(run_dir: Path) -> dict[str, Any] | None:
    """The results of a finished, successful run in ``run_dir``, or None."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return None
    results = read_json(path)
    return results if results.get("status") == "ok" else None


def study_code_version(study: Study) -> str:
    """The code version of ``study`` (its area package's sources, see :mod:`learnlab.core.versions`)."""
    return code_version(study.run.__module__)


def reusable_results(study: Study, options: RunOptions) -> dict[str, Any] | None:
    """The finished result :func:`execute` would reuse for ``options`` (nothing is changed), or None.

    Reused: a successful ``results.json`` made by the current code, or by other code with
    ``reuse_stale`` (then marked ``stale``); never with ``force``.
    """
    if options.force:
        return None
    run_dir = prepare_run(study, options).run_dir
    results = finished_results(run_dir)
    if results is None:
        return None
    config_path = run_dir / "config.json"
    made_by = {results.get("code_version")} | ({read_json(config_path).get("code_version")} if config_path.exists()
                                               else set())
    other_code = made_by != {study_code_version(study)}
    if other_code and not options.reuse_stale:
        return None
    return {**results, "reused": True, "stale": other_code or bool(results.get("stale"))}


def _discard_other_code(run_dir: Path, code: str, options: RunOptions) -> bool:
    """Remove a run directory whose results or stages were made by other code; True if it is kept stale."""
    config_path = run_dir / "config.json"
    if not config_path.exists():
        return False
    made_by = read_json(config_path).get("code_version")
    if made_by == code:
        return False
    if options.reuse_stale:
        return True
    shutil.rmtree(run_dir)
    return False


def execute(study: Study, options: RunOptions) -> dict[str, Any]:
    """Run a study (or reuse its finished result) and return the content of ``results.json``.

    The returned dict carries ``reused: True`` when an earlier result was reused, and ``stale: True``
    when that result (or a stage it was resumed from) was made by other code (``reuse_stale``).
    Thread settings and global random states are restored afterwards, so a study may run another.
    """
    prepared = prepare_run(study, options)
    run_dir = prepared.run_dir
    code = study_code_version(study)
    _ensure_writable(run_dir.parent)
    previous = reusable_results(study, options)
    if previous is not None:
        return previous
    if options.force and run_dir.exists():
        shutil.rmtree(run_dir)
    stale = _discard_other_code(run_dir, code, options)
    _ensure_writable(run_dir)
    write_json(
        run_dir / "config.json",
        {
            "study": study.name,
            "preset": options.preset,
            "seed": options.seed,
            "overrides": list(options.overrides),
            "device": prepared.device.type,
            "code_version": code if not stale else read_json(run_dir / "config.json").get("code_version"),
            "config": config_to_dict(prepared.config),
        },
    )
    with preserved_runtime():
        wanted = study.threads if options.threads is None else options.threads
        threads = set_threads(wanted) if prepared.device.type == "cpu" else torch.get_num_threads()
        seed_everything(options.seed)
        ctx = RunContext(run_dir, options.seed, prepared.device, ProgressReporter(options.quiet))
        started, cpu_started = time.perf_counter(), cpu_seconds()
        status, reason, measured = "ok", None, {}
        try:
            measured = plain(study.run(prepared.config, ctx))
        except DivergenceError as error:
            status, reason = "failed", str(error)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    claims = [claim.evaluate(measured) for claim in study.claims]
    results = {
        "study": study.name,
        "title": study.title,
        "paper": study.paper,
        "preset": options.preset,
        "seed": options.seed,
        "config_hash": run_dir.name.rsplit("-", 1)[-1],
        "code_version": code,
        "stale": stale,
        "config": config_to_dict(prepared.config),
        "status": status,
        "reason": reason,
        "measured": measured,
        "claims": claims,
        "verdicts": {verdict: sum(c["verdict"] == verdict for c in claims) for verdict in (PASS, FAIL, NOT_RUN)},
        "figures": sorted(path.name for path in ctx.figures_dir.glob("*.png")),
        "run_seconds": round(elapsed, 3),
        "cpu_seconds": round(cpu, 3),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": {
            "learnlab": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": prepared.device.type,
            "threads": threads,
            "machine": machine_description(),
        },
    }
    write_json(run_dir / RESULTS_FILE, results)
    return {**results, "reused": False}


__all__ = ["RunContext", "RunOptions", "execute", "finished_results", "plain", "prepare_run", "reusable_results",
           "study_code_version"]
