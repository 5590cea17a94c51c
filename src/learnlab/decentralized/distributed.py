"""The multi-process runtime: one process per agent over ``torch.distributed`` (gloo on CPU, nccl on GPU).

Each rank is one agent and runs the same local step as the simulation
(:mod:`learnlab.decentralized.federation`); only the predictions on the public batch cross between
processes, either point to point to the graph's neighbours (``exchange="p2p"``, ``isend``/``irecv``)
or with one ``all_gather`` (``exchange="all-gather"``, every agent receives every message and keeps
its neighbours'). Processes can live on different machines: start them with ``torchrun``::

    torchrun --nproc-per-node 5 -m learnlab.decentralized.distributed --set graph=cycle --out mhd.json
    # two machines, 3 + 2 agents:
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 3 --master-addr HOST --master-port 29500 \\
        -m learnlab.decentralized.distributed --set agents=5 --out mhd.json

or locally without ``torchrun`` (``--local``: ``torch.multiprocessing`` and a file rendezvous, the same
as :func:`launch` from Python).
Rank 0 gathers every agent's metrics (and weights) and writes ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from learnlab.core.errors import UserError
from learnlab.core.io import plain, write_text
from learnlab.decentralized.distillation import DistillationSettings
from learnlab.decentralized.federation import (FederationData, FederationSettings, agent_metrics, build_federation,
                                               local_update, new_agent, payload_bytes, public_indices, publish)

EXCHANGES = ("p2p", "all-gather")


def _on(data: FederationData, device: torch.device) -> FederationData:
    return replace(data, private_x=[x.to(device) for x in data.private_x], private_y=[y.to(device) for y in data.private_y],
                   public_x=data.public_x.to(device), test_x=data.test_x.to(device), test_y=data.test_y.to(device),
                   distributions=[d.to(device) for d in data.distributions])


def _exchange(message: torch.Tensor, neighbours: tuple[int, ...], rank: int, world_size: int, exchange: str
              ) -> list[torch.Tensor]:
    if exchange == "all-gather":
        gathered = [torch.empty_like(message) for _ in range(world_size)]
        dist.all_gather(gathered, message.contiguous())
        return [gathered[j] for j in neighbours]
    received = {j: torch.empty_like(message) for j in neighbours}
    # the graph is undirected: every agent sends to and receives from the same neighbours
    requests = [dist.isend(message.contiguous(), j) for j in neighbours]
    requests += [dist.irecv(received[j], j) for j in neighbours]
    for request in requests:
        request.wait()
    return [received[j] for j in neighbours]


def run_agent(settings: FederationSettings, seed: int, exchange: str = "p2p",
              device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """This rank's agent for ``settings.rounds`` rounds inside an initialised process group; returns
    every agent's ``{"metrics", "weights"}`` (gathered on every rank)."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if world_size != settings.agents:
        raise UserError(f"one process per agent: {settings.agents} agents but {world_size} processes")
    if settings.method not in ("mhd", "isolated"):
        raise UserError(f"the distributed runtime runs mhd and isolated agents, not {settings.method!r}")
    if exchange not in EXCHANGES:
        raise UserError(f"unknown exchange {exchange!r}; valid: {', '.join(EXCHANGES)}")
    device = torch.device(device)
    data = _on(build_federation(settings, seed), device)
    model, optimizer = new_agent(settings, data, rank, seed)
    model.to(device)
    neighbours = () if settings.method == "isolated" else data.graph[rank]
    for round_index in range(settings.rounds):
        public_x = data.public_x[public_indices(settings, data, seed, round_index).to(device)]
        logits, message = publish(model, public_x, settings)
        received = _exchange(message, neighbours, rank, world_size, exchange) if neighbours else []
        local_update(model, optimizer, settings, data, rank, logits, received, seed, round_index)
    mine = {"metrics": agent_metrics(model, data, rank), "weights": [p.detach().cpu() for p in model.parameters()]}
    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, mine)
    return everyone


def _spawned(rank: int, world_size: int, init_file: str, settings: FederationSettings, seed: int, exchange: str,
             out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        everyone = run_agent(settings, seed, exchange)
        if rank == 0:
            torch.save(everyone, out)
        dist.barrier()  # tear down together: a peer closing its pairs mid-teardown can abort gloo (std::terminate)
    finally:
        dist.destroy_process_group()


def launch(settings: FederationSettings, seed: int, exchange: str = "p2p") -> dict[str, Any]:
    """Run ``settings.agents`` local processes over gloo (one per agent); return what :func:`simulate` returns."""
    data = build_federation(settings, seed)  # input errors surface here, in one line, not in the processes
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "agents.pt")
        mp.spawn(_spawned, args=(settings.agents, str(Path(folder) / "rendezvous"), settings, seed, exchange, out),
                 nprocs=settings.agents, join=True)
        everyone = torch.load(out, weights_only=False)
    return {"agents": [agent["metrics"] for agent in everyone], "weights": [agent["weights"] for agent in everyone],
            "payload": payload_bytes(settings, data)}


def settings_from(assignments: list[str]) -> FederationSettings:
    """``key=value`` assignments to :class:`FederationSettings` (and its distillation: nu, nu0, aggregation, temperature)."""
    settings, distillation = FederationSettings(), DistillationSettings()
    outer = {f.name for f in dataclasses.fields(FederationSettings)} - {"distillation"}
    inner = {f.name for f in dataclasses.fields(DistillationSettings)}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or key not in outer | inner:
            raise UserError(f"bad setting {assignment!r}; valid keys: {', '.join(sorted(outer | inner))}")
        owner = distillation if key in inner else settings
        kind = type(getattr(owner, key))
        try:
            parsed: Any = tuple(v for v in value.split(",") if v) if kind is tuple else kind(value)
        except ValueError:
            raise UserError(f"bad value for {key}: {value!r}") from None
        if key in inner:
            distillation = replace(distillation, **{key: parsed})
        else:
            settings = replace(settings, **{key: parsed})
    return replace(settings, distillation=distillation)


def _write(out: str, settings: FederationSettings, seed: int, agents: list[dict[str, Any]]) -> None:
    write_text(Path(out), json.dumps(plain({"settings": dataclasses.asdict(settings), "seed": seed, "agents": agents}),
                                     indent=1))


def main(argv: list[str] | None = None) -> int:
    """``torchrun ... -m learnlab.decentralized.distributed [--set key=value ...] [--out FILE]``, or
    ``python -m learnlab.decentralized.distributed --local`` to start one local process per agent itself."""
    parser = argparse.ArgumentParser(description="Multi-headed distillation, one process per agent (torchrun).")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exchange", default="p2p", choices=EXCHANGES)
    parser.add_argument("--local", action="store_true", help="start the agents' processes here (gloo), no torchrun")
    parser.add_argument("--out", default="mhd-agents.json")
    args = parser.parse_args(argv)
    if args.local:
        try:
            settings = settings_from(args.set)
            _write(args.out, settings, args.seed, launch(settings, args.seed, args.exchange)["agents"])
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    try:
        settings = settings_from(args.set)
        settings.validate()
        device = f"cuda:{dist.get_rank() % torch.cuda.device_count()}" if backend == "nccl" else "cpu"
        everyone = run_agent(settings, args.seed, args.exchange, device)
        if dist.get_rank() == 0:
            _write(args.out, settings, args.seed, [agent["metrics"] for agent in everyone])
        dist.barrier()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
