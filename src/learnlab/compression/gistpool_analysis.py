"""Summaries of the ``gistpool`` fine-tuning runs: per method, rate and length over seeds, and the claims' tests.

Each run's recovery is computed against the bounds of its own seed and length (Feldman & Artzi
2025): recovery = (method − none) / (full − none), of the exact-match accuracy. "Beyond one seed
standard deviation" compares means over seeds with the larger of the two methods' standard
deviations (population std over seeds).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from learnlab.compression.gistpool_runs import ablation_chain, compressor_spec
from learnlab.compression.training import recovery


def _stats(values: list[float]) -> dict[str, float]:
    values = [value for value in values if not math.isnan(value)]
    if not values:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values)}


def with_recovery(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records, each with ``recovery`` (accuracy) against the none/full runs of its seed and length."""
    bounds = {(record["seed"], record["length"], record["method"]): record["accuracy"] for record in records
              if record["method"] in ("none", "full")}
    out = []
    for record in records:
        none = bounds.get((record["seed"], record["length"], "none"), math.nan)
        full = bounds.get((record["seed"], record["length"], "full"), math.nan)
        out.append({**record, "recovery": recovery(record["accuracy"], none, full)})
    return out


def method_table(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``L<length>/<name>`` -> mean and std over seeds of loss, accuracy and recovery."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for record in with_recovery(records):
        groups[(record["length"], record["name"])].append(record)
    return {f"L{length}/{name}": {"length": length, "name": name, "method": rows[0]["method"], "rate": rows[0]["rate"],
                                  **{metric: _stats([row[metric] for row in rows]) for metric in ("loss", "accuracy", "recovery")}}
            for (length, name), rows in sorted(groups.items())}


def _entry(table: dict[str, dict[str, Any]], length: int, name: str) -> dict[str, Any] | None:
    return table.get(f"L{length}/{name}")


def _beyond(better: dict[str, float], worse: dict[str, float]) -> float:
    """How far ``better``'s mean exceeds ``worse``'s, in units of the larger seed std (inf when both are 0)."""
    gap, spread = better["mean"] - worse["mean"], max(better["std"], worse["std"])
    return gap / spread if spread > 0 else (math.inf if gap > 0 else -math.inf if gap < 0 else 0.0)


def length_summary(table: dict[str, dict[str, Any]], lengths: tuple[int, ...], rate: int) -> dict[str, Any]:
    """Claim 1: gisting's recovery at ``rate`` over the lengths, and full context's accuracy."""
    gisting = [_entry(table, length, compressor_spec("gisting", rate).name) for length in lengths]
    full = [_entry(table, length, "full") for length in lengths]
    if len(lengths) < 2 or None in gisting or None in full:
        return {}
    first, last = gisting[0]["recovery"], gisting[-1]["recovery"]
    return {
        "gisting_recovery_by_length": {str(length): entry["recovery"]["mean"] for length, entry in zip(lengths, gisting)},
        "full_accuracy_by_length": {str(length): entry["accuracy"]["mean"] for length, entry in zip(lengths, full)},
        "gisting_recovery_drop": first["mean"] - last["mean"],
        "gisting_falls_with_length": _beyond(first, last) > 1,
        "full_holds_with_length": full[-1]["accuracy"]["mean"] >= full[0]["accuracy"]["mean"] - full[0]["accuracy"]["std"],
    }


def rate_summary(table: dict[str, dict[str, Any]], length: int, rates: tuple[int, ...]) -> dict[str, Any]:
    """Claims 2 and 3: average pooling against gisting, GistPool against average pooling, at every rate."""
    margins_avg, margins_gp, gp_ok = {}, {}, {}
    for rate in rates:
        gisting, avgpool, gistpool = (_entry(table, length, compressor_spec(method, rate).name)
                                      for method in ("gisting", "avgpool", "gistpool"))
        if gisting and avgpool:
            margins_avg[str(rate)] = _beyond(avgpool["accuracy"], gisting["accuracy"])
        if gistpool and avgpool:
            margins_gp[str(rate)] = gistpool["accuracy"]["mean"] - avgpool["accuracy"]["mean"]
            gp_ok[str(rate)] = margins_gp[str(rate)] >= -avgpool["accuracy"]["std"]
    measured: dict[str, Any] = {}
    if len(margins_avg) == len(rates):
        measured["avgpool_over_gisting_in_stds"] = margins_avg
        measured["avgpool_beats_gisting_at_every_rate"] = all(margin > 1 for margin in margins_avg.values())
    if len(gp_ok) == len(rates):
        measured["gistpool_minus_avgpool_accuracy"] = margins_gp
        measured["gistpool_matches_avgpool_at_every_rate"] = all(gp_ok.values())
    lowest = _entry(table, length, compressor_spec("gistpool", min(rates)).name)
    if lowest is not None:
        measured["gistpool_recovery_at_lowest_rate"] = lowest["recovery"]["mean"]
        measured["lowest_rate"] = min(rates)
    return measured


def ablation_summary(table: dict[str, dict[str, Any]], length: int, rate: int) -> dict[str, Any]:
    """Claim 4: the answer loss along gisting -> +shift -> +separate -> +window mask (lower is better)."""
    chain = [_entry(table, length, spec.name) for spec in ablation_chain(rate)]
    if None in chain:
        return {}
    losses = [entry["loss"]["mean"] for entry in chain]
    steps = ["+shift", "+separate", "+window mask"]
    failing = [step for step, before, after in zip(steps, losses, losses[1:]) if not after < before]
    return {"ablation_loss": dict(zip(["gisting", *steps], losses)),
            "ablation_accuracy": dict(zip(["gisting", *steps], [entry["accuracy"]["mean"] for entry in chain])),
            "ablation_steps_not_improving": failing, "ablation_improves_every_step": not failing}
