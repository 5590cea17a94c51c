"""A resumable sweep over items (e.g. Outlandish samples), sharded across ``torchrun`` processes.

Each process handles the items whose index is congruent to its rank modulo the world size and
appends one JSON line per finished item to its own part file
``<name>.part<rank>-of<world>.jsonl`` (flushed and fsynced), so a kill loses at most the item in
progress. On restart every item already recorded, in any part file or in the merged file, is
skipped, whatever the world size was before. When all ranks are done, rank 0 merges the records,
in item order, into ``<name>.jsonl`` (written atomically) and every rank returns them.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the gloo process group is initialised on first use
unless the caller already did so; otherwise the sweep runs in one process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch.distributed as dist

from learnlab.core.io import write_text
from learnlab.core.runs import plain

Item = TypeVar("Item")


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


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of ``path`` (a torn last line from a kill is ignored)."""
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


def recorded_ids(output: Path) -> set[str]:
    """Ids of the items already recorded under ``output`` (merged file or any part file)."""
    output = Path(output)
    return {record["id"] for path in [output, *_part_files(output)] for record in read_records(path)}


def run_sweep(items: Sequence[Item], key: Callable[[Item], str], process: Callable[[Item], dict[str, Any]],
              output: Path, rank: int | None = None, world_size: int | None = None,
              on_item: Callable[[Item, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Process every item not yet recorded under ``output`` and return all records in item order.

    ``key(item)`` is the item's unique id, stored as the record's ``"id"``; ``process(item)``
    returns the record's other (JSON-ready) fields. Pass ``rank``/``world_size`` to shard
    without ``torch.distributed`` (e.g. independent processes); by default they come from
    :func:`distributed_rank_and_size`. Without a process group the merge happens in whichever
    call finds every item recorded.
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
            if index % world_size != rank or item_key in done:
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
    by_id = {record["id"]: record for path in [output, *_part_files(output)] for record in read_records(path)}
    return [by_id[item_key] for item_key in keys if item_key in by_id]


def merge_records(output: Path, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Merge the merged file and every part file into ``output``, ordered by ``keys`` (atomic write)."""
    by_id: dict[str, dict[str, Any]] = {}
    for path in [output, *_part_files(output)]:
        for record in read_records(path):
            by_id.setdefault(record["id"], record)
    order = {item_key: index for index, item_key in enumerate(keys)}
    records = sorted(by_id.values(), key=lambda record: order.get(record["id"], len(order)))
    write_text(output, "".join(json.dumps(record) + "\n" for record in records))
    return records
