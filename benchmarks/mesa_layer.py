"""Forward+backward time and memory of the mesa layer: chunked (custom backward) vs direct vs per-step loop.

Measures :class:`learnlab.incontext.mesa_layer.MesaLayer` (embed 40, 4 heads, key size 20, the
paper's setting) for T in {64, 256, 1024, 4096}:

* ``chunked``: the efficient path (chunked Woodbury/Cholesky form, custom backward);
* ``reference``: the direct per-step solve, differentiated by autograd;
* ``loop``: the Sherman–Morrison recursion as a plain per-step Python loop, differentiated by autograd.

Memory is the number of bytes autograd keeps for the backward pass (every tensor saved by any
node of the graph, counted once per storage, via ``torch.autograd.graph.saved_tensors_hooks``; the
custom backward's saved inputs and chunk-boundary states are included). The chunked backward also
builds one chunk's graph at a time while it runs; that transient is not in this number.

Configurations whose time (extrapolated linearly in T from the previous length) would exceed
``--budget`` seconds, or whose saved memory would exceed ``--max-gib``, are skipped and reported.
Reference (DESIGN.md, official JAX code, 2-core CPU, batch 256): 0.33 s at T = 50, 2.4 s at
T = 256, 22.9 s at T = 1024.

    .venv/bin/python benchmarks/mesa_layer.py [--batch 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from learnlab.incontext.mesa_layer import MesaLayer

JAX_SECONDS = {50: 0.33, 256: 2.4, 1024: 22.9}


def saved_bytes_and_seconds(layer: MesaLayer, tokens: torch.Tensor, method: str, repeats: int) -> tuple[int, float]:
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = layer(tokens, method=method)
    out.pow(2).mean().backward()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        layer(tokens, method=method).pow(2).mean().backward()
        durations.append(time.perf_counter() - start)
    return sum(storages.values()), statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lengths", type=str, default="64,256,1024,4096")
    parser.add_argument("--methods", type=str, default="chunked,reference,recurrent")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=60.0, help="skip runs predicted to take longer (seconds)")
    parser.add_argument("--max-gib", type=float, default=8.0, help="skip runs predicted to save more (GiB)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layer = MesaLayer(40, num_heads=4, key_size=20, init_std=0.1, generator=torch.Generator().manual_seed(0))
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"mesa layer fwd+bwd, batch {args.batch}, embed 40, 4 heads, key 20, {args.threads} thread(s)")
    print(f"{'T':>6} {'method':>10} {'seconds':>9} {'saved MiB':>10} {'MiB/token':>10}")
    last: dict[str, tuple[int, float, int]] = {}
    for length in lengths:
        tokens = torch.rand(args.batch, length, 40, generator=torch.Generator().manual_seed(length)) * 2 - 1
        for method in args.methods.split(","):
            name = "loop" if method == "recurrent" else method
            if method in last:
                prev_t, prev_s, prev_b = last[method]
                factor = length / prev_t
                if prev_s * factor * 2 > args.budget or prev_b * factor / 2**30 > args.max_gib:
                    print(f"{length:>6} {name:>10}   skipped (predicted {prev_s * factor:.0f} s per pass, "
                          f"{prev_b * factor / 2**30:.1f} GiB saved)")
                    continue
            repeats = 3 if length <= 256 else 1
            saved, seconds = saved_bytes_and_seconds(layer, tokens, method, repeats)
            last[method] = (length, seconds, saved)
            mib = saved / 2**20
            print(f"{length:>6} {name:>10} {seconds:>9.3f} {mib:>10.1f} {mib / length:>10.3f}", flush=True)
    print("JAX reference (official code, custom backward, batch 256):",
          ", ".join(f"T={t}: {s} s" for t, s in JAX_SECONDS.items()))


if __name__ == "__main__":
    main()
