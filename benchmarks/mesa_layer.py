"""Forward+backward time and peak memory of every mesa-layer method, with the speed-ups, in one run.

Measures :class:`learnlab.incontext.mesa_layer.MesaLayer` (embed 40, 4 heads, key size 20, the
paper's setting; batch 256 by default) for T in {50, 256, 1024, 4096} on 1 and 2 threads:

* ``parallel``: the chunkwise-parallel solve (all chunks at once, product-only backward; default);
* ``chunked``: the chunk-by-chunk form with the recomputing custom backward (the previous default);
* ``reference``: the direct per-step solve, differentiated by autograd;
* ``loop``: the Sherman–Morrison recursion as a plain per-step loop, differentiated by autograd.

Time: median of repeated passes (forward, ``out.pow(2).mean()``, backward) after one warm-up pass,
the methods interleaved pass by pass (15 rounds up to T = 64, 5 up to 256, 3 up to 1024, else 2), so
that the machine's speed drifting (it does, by 20% and more on a shared 2-core VM) does not favour
one method.
Peak memory: the peak resident set of a fresh process during one pass minus its resident set just
before (the inputs and the layer already allocated), so transients inside the backward count. Memory does not depend on
the thread count and is measured once per method and length. On CUDA (``--device cuda``) the
time is synchronised and the memory is ``torch.cuda.max_memory_allocated`` above the inputs.

Configurations predicted (linearly in T from the previous length) to exceed ``--budget`` seconds
per pass or ``--max-gib`` GiB are skipped and reported. Reference (the official JAX code on a
2-core CPU of this kind, batch 256): 0.33 s at T = 50, 2.4 s at T = 256, 22.9 s at T = 1024.

    .venv/bin/python benchmarks/mesa_layer.py [--batch 256] [--threads 1,2] [--lengths 50,256,1024,4096]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from learnlab.incontext.mesa_layer import MesaLayer

JAX_SECONDS = {50: 0.33, 256: 2.4, 1024: 22.9}
METHOD_NAMES = {"parallel": "parallel", "chunked": "chunked", "reference": "reference", "recurrent": "loop"}


def inputs(batch: int, length: int, device: torch.device) -> tuple[MesaLayer, torch.Tensor]:
    layer = MesaLayer(40, num_heads=4, key_size=20, init_std=0.1, generator=torch.Generator().manual_seed(0))
    tokens = torch.rand(batch, length, 40, generator=torch.Generator().manual_seed(length)) * 2 - 1
    return layer.to(device), tokens.to(device)


def one_pass(layer: MesaLayer, tokens: torch.Tensor, method: str) -> None:
    layer(tokens, method=method).pow(2).mean().backward()
    if tokens.device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_pass(layer: MesaLayer, tokens: torch.Tensor, methods: list[str], rounds: int) -> dict[str, float]:
    """Median seconds per pass of each method, the methods interleaved round by round (one warm-up
    pass each first), so that a drift of the machine's speed affects every method alike."""
    for method in methods:
        one_pass(layer, tokens, method)
    durations: dict[str, list[float]] = {method: [] for method in methods}
    for _ in range(rounds):
        for method in methods:
            start = time.perf_counter()
            one_pass(layer, tokens, method)
            durations[method].append(time.perf_counter() - start)
    return {method: statistics.median(values) for method, values in durations.items()}


def peak_bytes(batch: int, length: int, method: str, device: torch.device) -> int:
    """Peak memory of one pass: measured here (CUDA) or in a fresh process (CPU, resident set)."""
    if device.type == "cuda":
        layer, tokens = inputs(batch, length, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        one_pass(layer, tokens, method)
        return torch.cuda.max_memory_allocated() - before
    command = [sys.executable, __file__, "--peak-of", method, "--batch", str(batch), "--lengths", str(length)]
    return int(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def resident_growth(batch: int, length: int, method: str) -> int:
    """Peak resident set during one pass minus the resident set just before it (Linux: the peak is
    reset through ``/proc/self/clear_refs`` so that the set-up's own transients do not count)."""
    torch.set_num_threads(1)
    layer, tokens = inputs(batch, length, torch.device("cpu"))
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak resident set (VmHWM) to the current one
    before = _status_kib("VmRSS")
    one_pass(layer, tokens, method)
    return (_status_kib("VmHWM") - before) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lengths", type=str, default="50,256,1024,4096")
    parser.add_argument("--methods", type=str, default="chunked,parallel,reference,recurrent")
    parser.add_argument("--threads", type=str, default="1,2")
    parser.add_argument("--device", type=str, default="cpu")
    parser.add_argument("--budget", type=float, default=60.0, help="skip runs predicted to take longer (seconds)")
    parser.add_argument("--max-gib", type=float, default=8.0, help="skip runs predicted to need more (GiB)")
    parser.add_argument("--peak-of", type=str, default=None, help=argparse.SUPPRESS)  # worker: one peak measurement
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.peak_of is not None:
        print(resident_growth(args.batch, lengths[0], args.peak_of))
        return
    device = torch.device(args.device)
    methods = args.methods.split(",")
    threads = [int(x) for x in args.threads.split(",")] if device.type == "cpu" else [torch.get_num_threads()]
    print(f"mesa layer forward+backward, batch {args.batch}, embed 40, 4 heads, key 20, {device.type}")
    memory: dict[tuple[str, int], int] = {}
    seconds: dict[tuple[str, int, int], float] = {}
    for count in threads:
        torch.set_num_threads(count)
        print(f"\n{count} thread(s)" if device.type == "cpu" else "")
        print(f"{'T':>6} {'method':>10} {'seconds':>9} {'peak MiB':>9} {'MiB/token':>10} {'chunked/this':>13}")
        last: dict[str, tuple[int, float, int]] = {}
        for length in lengths:
            layer, tokens = inputs(args.batch, length, device)
            timed, skipped = [], []
            for method in methods:
                if method in last:
                    prev_t, prev_s, prev_b = last[method]
                    factor = length / prev_t
                    if prev_s * factor > args.budget or prev_b * factor / 2**30 > args.max_gib:
                        skipped.append(f"{length:>6} {METHOD_NAMES[method]:>10}   skipped (predicted "
                                       f"{prev_s * factor:.0f} s per pass, {prev_b * factor / 2**30:.1f} GiB)")
                        continue
                if (method, length) not in memory:
                    memory[method, length] = peak_bytes(args.batch, length, method, device)
                timed.append(method)
            rounds = 15 if length <= 64 else 5 if length <= 256 else 3 if length <= 1024 else 2
            for method, value in seconds_per_pass(layer, tokens, timed, rounds).items():
                seconds[method, length, count] = value
                last[method] = (length, value, memory[method, length])
            for method in timed:
                mib = memory[method, length] / 2**20
                base = seconds.get(("chunked", length, count))
                ratio = f"{base / seconds[method, length, count]:.2f}x" if base else "-"
                print(f"{length:>6} {METHOD_NAMES[method]:>10} {seconds[method, length, count]:>9.3f} {mib:>9.0f} "
                      f"{mib / length:>10.3f} {ratio:>13}", flush=True)
            for line in skipped:
                print(line, flush=True)
    print("\nparallel vs chunked (speed-up, same run): " + ", ".join(
        f"T={t} {n}t: {seconds['chunked', t, n] / seconds['parallel', t, n]:.2f}x"
        for n in threads for t in lengths if ("chunked", t, n) in seconds and ("parallel", t, n) in seconds))
    if device.type == "cpu":
        print("\nJAX reference (official code, custom backward, batch 256, 2-core CPU):",
              ", ".join(f"T={t}: {s} s" for t, s in JAX_SECONDS.items()))


if __name__ == "__main__":
    main()
