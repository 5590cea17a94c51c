"""Rounds per second and bytes per round of multi-headed distillation in both runtimes.

For 5 and 10 agents (complete graph and cycle, 3 auxiliary heads, public batch 64, digits MLPs of
two sizes): the single-process simulation (one thread) against one gloo process per agent
(point-to-point and all-gather exchange, one thread each), on this machine. The processes' time
includes spawning them and loading the data once per process; every rate is per round after
subtracting the time of a 1-round run (start-up: data, models, processes).

Run: ``.venv/bin/python benchmarks/mhd_runtimes.py [--rounds 200]``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch

from learnlab.decentralized.distributed import launch
from learnlab.decentralized.federation import FederationSettings
from learnlab.decentralized.simulation import simulate


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{os.cpu_count()} CPU cores; {args.rounds} rounds\n")
    print(f"{'agents':>6} {'graph':>9} {'runtime':>22} {'rounds/s':>10} {'bytes/round':>12}")
    for agents in (5, 10):
        for graph in ("complete", "cycle"):
            settings = FederationSettings(agents=agents, graph=graph, rounds=args.rounds)
            result = {}
            startup = seconds(lambda: simulate(replace(settings, rounds=1), 0))
            duration = seconds(lambda: result.update(simulate(settings, 0)))
            payload = result["payload"]["mhd_bytes_per_round"]
            print(f"{agents:>6} {graph:>9} {'simulation':>22} {args.rounds / max(duration - startup, 1e-9):>10.1f} "
                  f"{payload:>12,}   (start-up {startup:.1f} s, total {duration:.1f} s)")
            for exchange in ("p2p", "all-gather"):
                startup = seconds(lambda: launch(replace(settings, rounds=1), 0, exchange))
                total = seconds(lambda: launch(settings, 0, exchange))
                sent = payload if exchange == "p2p" else result["payload"]["message_bytes"] * agents * (agents - 1)
                print(f"{agents:>6} {graph:>9} {f'{agents} processes, {exchange}':>22} "
                      f"{args.rounds / max(total - startup, 1e-9):>10.1f} {sent:>12,}   "
                      f"(start-up {startup:.1f} s, total {total:.1f} s)")
    weights = result["payload"]["fedavg_bytes_per_average"]
    print(f"\nFedAvg, for reference: {weights:,} bytes per weight average (every agent sends and receives its weights)")


if __name__ == "__main__":
    main()
