import json

import pytest

from learnlab.core.parallel import merge_records, read_records, run_sweep

ITEMS = [f"item{index}" for index in range(7)]


class Killed(Exception):
    pass


def test_sweep_appends_per_item_and_resumes_after_a_kill(tmp_path):
    output = tmp_path / "sweep.jsonl"
    calls = []

    def flaky(item):
        if item == "item3":
            raise Killed
        calls.append(item)
        return {"value": int(item[-1]) ** 2}

    with pytest.raises(Killed):
        run_sweep(ITEMS, str, flaky, output)
    part = tmp_path / "sweep.part0-of1.jsonl"
    assert [r["id"] for r in read_records(part)] == ["item0", "item1", "item2"]
    with part.open("a") as handle:  # a kill in the middle of a write leaves a torn line
        handle.write('{"id": "item3", "val')
    calls.clear()
    records = run_sweep(ITEMS, str, lambda item: {"value": int(item[-1]) ** 2}, output)
    assert [r["id"] for r in records] == ITEMS and [r["value"] for r in records] == [i * i for i in range(7)]
    assert [r["id"] for r in read_records(output)] == ITEMS
    again = run_sweep(ITEMS, str, lambda item: pytest.fail("nothing left to do"), output)
    assert again == records


def test_sharded_sweep_merges_in_item_order(tmp_path):
    output = tmp_path / "sweep.jsonl"
    seen = {0: [], 1: []}
    for rank in (1, 0):
        run_sweep(ITEMS, str, lambda item, rank=rank: seen[rank].append(item) or {"rank": rank}, output, rank=rank, world_size=2)
    assert seen[0] == ITEMS[0::2] and seen[1] == ITEMS[1::2]
    merged = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in merged] == ITEMS and [r["rank"] for r in merged] == [i % 2 for i in range(7)]
    assert merge_records(output, ITEMS) == merged


def test_sweep_shards_across_torchrun_processes(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).with_name("sweep_worker.py")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
               str(tmp_path / "sweep.jsonl")]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    merged = read_records(tmp_path / "sweep.jsonl")
    assert [r["id"] for r in merged] == ITEMS and [r["rank"] for r in merged] == [i % 2 for i in range(7)]
