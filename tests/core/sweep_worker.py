"""Run by ``torchrun`` in test_sweep: each rank processes its shard; rank 0 merges."""

import sys

import torch.distributed as dist

from learnlab.core.parallel import run_sweep

if __name__ == "__main__":
    items = [f"item{index}" for index in range(7)]
    records = run_sweep(items, str, lambda item: {"rank": dist.get_rank()}, sys.argv[1])
    assert [record["id"] for record in records] == items
    dist.destroy_process_group()
