"""A stage's independent items, run in parallel worker processes, resumable per item.

An item is anything a study measures many times over with no dependence between the times: a
sample inserted into a language model, a training seed, a point of a sweep. :func:`run_items`
computes every item not yet recorded and returns all records in item order:

- each process appends one JSON line per finished item to its own part file
  ``<name>.part<rank>-of<world>.jsonl`` (flushed and fsynced), so a kill loses at most the items in
  progress; on restart every recorded item, in any part file or in the merged file, is skipped,
  whatever the number of processes was before; at the end the records are merged, in item order,
  into ``<name>.jsonl`` (written atomically);
- on one machine, ``workers`` > 1 spawns that many processes (one CPU thread each) that share the
  items: each takes the next untaken item whenever it is free; a worker stops when its parent
  dies, and a failure in a worker (a diverging loss included) is raised in the parent;
- under ``torchrun`` (``WORLD_SIZE`` > 1) every rank takes the items whose index is congruent to
  its rank, in its own process; rank 0 merges.

Worker processes are started with ``spawn``: a script that calls this (or runs a study) from
Python needs the usual ``if __name__ == "__main__":`` guard. The work is given as a *worker factory*: a module-level function ``make_worker(payload, ctx)`` that
sets up what every item needs (a model, data) once per process and returns ``process(key) ->
dict``. ``ctx`` is an :class:`ItemContext`: random streams derived from the run seed exactly as
:meth:`RunContext.generator` derives them (an item gives the same numbers in any process), and
``ctx.log`` records that travel with the item's record (the run writes them to its metrics).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from learnlab.core.errors import DivergenceError
from learnlab.core.io import plain, write_text
from learnlab.core.progress import ProgressTask
from learnlab.core.runtime import derive_seed

LOGS_KEY = "_logs"
WorkerFactory = Callable[[Any, "ItemContext"], Callable[[str], dict[str, Any]]]


class StreamsAndChecks:
    """What a run's context and an item's context share: named random streams and the loss checks."""

    seed: int

    def generator(self, *names: str, device: torch.device | str = "cpu") -> torch.Generator:
        """An explicit generator for a named random stream, seeded from the run seed and the names."""
        generator = torch.Generator(device=device)
        generator.manual_seed(derive_seed(self.seed, *names))
        return generator

    @staticmethod
    def check_finite(value: float, what: str) -> None:
        """Stop the run (recorded as failed) when a loss turns NaN or infinite."""
        if value != value or value in (float("inf"), float("-inf")):
            raise DivergenceError(f"{what} became {value}")

    def progress(self, description: str, total: int) -> Any:
        raise NotImplementedError

    @contextmanager
    def training_progress(self, description: str, total: int, what: str) -> Iterator[Callable[..., None]]:
        """A progress bar for a training loop, as a callback ``on_step(step, loss)``.

        Every loss is checked (NaN or inf stops the run, recorded as failed with ``"<what> at step
        <step> became nan"``) and advances the bar by one step, showing the loss.
        """
        with self.progress(description, total) as bar:

            def on_step(step: int, loss: float) -> None:
                self.check_finite(loss, f"{what} at step {step}")
                bar.advance(1, loss=loss)

            yield on_step


@dataclass
class ItemContext(StreamsAndChecks):
    """The context an item's work sees, in any process: seed, device, random streams, log records."""

    seed: int
    device: torch.device = torch.device("cpu")
    records: list[dict[str, Any]] = field(default_factory=list)

    def log(self, **record: Any) -> None:
        self.records.append(plain(record))

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[ProgressTask]:
        yield ProgressTask(None, None)  # items run side by side: the run shows one bar over the items


# --- the record files ----------------------------------------------------------------------------------


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of ``path`` (a torn last line from a kill is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _repair(path: Path) -> None:
    """Cut a torn last line (no trailing newline) left by a kill mid-write."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _part_files(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f"{output.stem}.part*-of*.jsonl"))


def _all_records(output: Path) -> dict[str, dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for path in [output, *_part_files(output)]:
        for record in read_records(path):
            by_id.setdefault(record["id"], record)
    return by_id


def recorded_ids(output: Path) -> set[str]:
    """Ids of the items already recorded under ``output`` (merged file or any part file)."""
    return set(_all_records(Path(output)))


def merge_records(output: Path, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Merge the merged file and every part file into ``output``, ordered by ``keys`` (atomic write)."""
    order = {key: index for index, key in enumerate(keys)}
    records = sorted(_all_records(output).values(), key=lambda record: order.get(record["id"], len(order)))
    write_text(output, "".join(json.dumps(record) + "\n" for record in records))
    return records


def distributed_rank_and_size() -> tuple[int, int]:
    """``(rank, world_size)``: from an initialised process group, or from ``torchrun``'s environment
    (initialising a gloo group), or ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and dist.is_available():
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def run_sweep(items: Sequence[Any], key: Callable[[Any], str], process: Callable[[Any], dict[str, Any]],
              output: Path, rank: int | None = None, world_size: int | None = None,
              on_item: Callable[[Any, dict[str, Any]], None] | None = None,
              take: Callable[[int], bool] | None = None) -> list[dict[str, Any]]:
    """Process, in this process, every item of this rank's shard not yet recorded under ``output``;
    return all records found, in item order.

    The shard is every item whose index is congruent to ``rank``, or, with ``take``, every item for
    which ``take(index)`` (asked when this process is free for its next item) is true.

    ``key(item)`` is the item's unique id, stored as the record's ``"id"``; ``process(item)``
    returns the record's other (JSON-ready) fields. Pass ``rank``/``world_size`` to shard without
    ``torch.distributed`` (e.g. independent processes); by default they come from
    :func:`distributed_rank_and_size`, and the ranks of a process group wait for each other before
    rank 0 merges. Without a process group the merge happens in the call of rank 0.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    distributed = rank is None and world_size is None
    if distributed:
        rank, world_size = distributed_rank_and_size()
    rank, world_size = rank or 0, world_size or 1
    keys = [key(item) for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError("sweep item keys must be unique")
    done = recorded_ids(output)
    part = output.parent / f"{output.stem}.part{rank}-of{world_size}.jsonl"
    _repair(part)
    with part.open("a") as handle:
        for index, (item, item_key) in enumerate(zip(items, keys)):
            if item_key in done or not (take(index) if take is not None else index % world_size == rank):
                continue
            record = {"id": item_key, **plain(process(item))}
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            if on_item is not None:
                on_item(item, record)
    group = distributed and dist.is_available() and dist.is_initialized()
    if group:
        dist.barrier()
    if rank == 0:
        merge_records(output, keys)
    if group:
        dist.barrier()
    by_id = _all_records(output)
    return [by_id[item_key] for item_key in keys if item_key in by_id]


# --- worker processes ----------------------------------------------------------------------------------


def _item_process(make_worker: WorkerFactory, payload: Any, ctx: ItemContext) -> Callable[[str], dict[str, Any]]:
    """The factory's ``process``, with each item's log records attached to its record."""
    process = make_worker(payload, ctx)

    def with_logs(item_key: str) -> dict[str, Any]:
        ctx.records.clear()
        record = dict(process(item_key))
        return {**record, LOGS_KEY: list(ctx.records)} if ctx.records else record

    return with_logs


def _error_file(output: Path, rank: int) -> Path:
    return output.parent / f"{output.stem}.error{rank}.txt"


def _exit_when_orphaned(parent: int, interval: float = 1.0) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent:
            os._exit(3)


def _claimer(claimed: Any) -> Callable[[int], bool]:
    """``take(index)``: true for the one worker that claims item ``index`` first (a shared flag array)."""

    def take(index: int) -> bool:
        with claimed.get_lock():
            if claimed[index]:
                return False
            claimed[index] = 1
            return True

    return take


def _worker_main(make_worker: WorkerFactory, payload: Any, keys: list[str], output: str, seed: int, rank: int,
                 world_size: int, parent: int, claimed: Any) -> None:
    """One spawned worker, one CPU thread: whenever it is free it takes the next item no other worker
    has taken (so a long item does not leave the other workers' cores idle at the end); stops if the
    parent dies (checked every second by a watchdog thread, so a long item does not outlive a killed
    run and write into the run directory beside the next run's workers)."""
    torch.set_num_threads(1)
    path = Path(output)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    try:
        process = _item_process(make_worker, payload, ItemContext(seed))

        def guarded(item_key: str) -> dict[str, Any]:
            if os.getppid() != parent:
                raise SystemExit(3)
            return process(item_key)

        run_sweep(keys, str, guarded, path, rank=rank, world_size=world_size, take=_claimer(claimed))
    except Exception as error:  # reported to the parent, which raises it in the run
        write_text(_error_file(path, rank), f"{type(error).__name__}\n{error}")
        raise SystemExit(1) from None


def _run_workers(make_worker: WorkerFactory, payload: Any, keys: list[str], output: Path, seed: int, workers: int,
                 bar: ProgressTask, shown: int) -> None:
    spawn = multiprocessing.get_context("spawn")
    for rank in range(workers):
        _error_file(output, rank).unlink(missing_ok=True)
    claimed = spawn.Array("b", len(keys))
    processes = [
        spawn.Process(target=_worker_main,
                      args=(make_worker, payload, keys, str(output), seed, rank, workers, os.getpid(), claimed), daemon=True)
        for rank in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        while any(process.is_alive() for process in processes):
            time.sleep(0.5)
            count = len(recorded_ids(output))
            bar.advance(count - shown)
            shown = count
        bar.advance(len(recorded_ids(output)) - shown)
        for rank, process in enumerate(processes):
            if process.exitcode == 0:
                continue
            report = _error_file(output, rank)
            if not report.exists():
                raise RuntimeError(f"worker {rank} exited with code {process.exitcode} before its first item "
                                   "(see its traceback above)")
            kind, _, message = report.read_text().partition("\n")
            if kind == DivergenceError.__name__:
                raise DivergenceError(message)
            raise RuntimeError(f"worker {rank} failed: {kind}: {message}")
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


@dataclass(frozen=True)
class ItemsResult:
    """Every item's record in item order, and what this call computed (items and seconds)."""

    records: list[dict[str, Any]]
    computed: int
    seconds: float


def run_items(keys: Sequence[str], make_worker: WorkerFactory, payload: Any, output: Path, seed: int, *,
              device: torch.device = torch.device("cpu"), workers: int = 1,
              progress: Callable[[str, int], Any] | None = None, description: str = "items",
              local_process: Callable[[str], dict[str, Any]] | None = None) -> ItemsResult:
    """Compute every item of ``keys`` not yet recorded under ``output``; see the module docstring.

    ``payload`` and ``make_worker`` must be picklable when ``workers`` > 1 (plain data, and a
    module-level function). Worker processes are used on the CPU only; on a GPU, or under
    ``torchrun``, the items run in this process (this rank's share), with ``local_process`` if
    the caller has already set one up (e.g. a loaded model), else with ``make_worker``'s.
    """
    keys = list(keys)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    already = len(recorded_ids(output) & set(keys))
    distributed = distributed_rank_and_size()[1] > 1
    local_workers = min(workers, len(keys) - already) if device.type == "cpu" and not distributed else 1
    bars = progress(description, len(keys)) if progress is not None else ItemContext(seed).progress(description, len(keys))
    with bars as bar:
        bar.advance(already)
        if local_workers > 1:
            _run_workers(make_worker, payload, keys, output, seed, local_workers, bar, already)
        if len(recorded_ids(output)) >= len(keys):
            process: Callable[[str], dict[str, Any]] = lambda key: {}  # noqa: E731 (nothing left to compute)
        else:
            process = local_process or _item_process(make_worker, payload, ItemContext(seed, device))
        records = run_sweep(keys, str, process, output, rank=None if distributed else 0,
                            world_size=None if distributed else 1, on_item=lambda key, record: bar.advance(1))
    seconds = time.perf_counter() - started
    return ItemsResult(records, len(records) - already, seconds)
