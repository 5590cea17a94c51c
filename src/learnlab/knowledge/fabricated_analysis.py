"""Retention, priming and mitigation summaries of the ``fabricated`` study's runs.

Every summary reads the run records of :mod:`fabricated_runs` (per fact: steps since the end of its
injection, log S_mem and log S_prime at each evaluation). Medians come with percentile-bootstrap
95% intervals over facts. A fact whose log S_mem never falls below half its peak within the horizon
is censored: its half-life counts as the steps measured (a lower bound), and the number of
censored facts is reported. Reductions are in log space, as in :mod:`priming_analysis`:
1 − median(log S_prime with sparse updates) / median(log S_prime without).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from learnlab.knowledge.fact_types import FACT_TYPES
from learnlab.knowledge.priming_analysis import LN10, bootstrap_interval, kept, reduction
from learnlab.knowledge.retention import half_life


def median_interval(values: Sequence[float], resamples: int, seed: int) -> dict[str, float]:
    """The median of ``values`` and its percentile-bootstrap 95% interval."""
    if not values:
        return {"median": math.nan, "low": math.nan, "high": math.nan}
    low, high = bootstrap_interval(values, values, lambda a, _: float(np.median(a)), resamples, seed)
    return {"median": float(statistics.median(values)), "low": low, "high": high}


def injected_facts(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every fact of the injected (non-mitigation, non-control) runs, with its run's horizon."""
    return [fact for record in records if record["kind"] == "injected" for fact in record["facts"]]


def fact_half_life(fact: dict[str, Any]) -> tuple[float, bool]:
    """(half-life in steps, censored) of one fact's log S_mem curve."""
    value = half_life(fact["steps"], fact["log_s_mem"])
    return (float(fact["steps"][-1]), True) if value is None else (value, False)


def drift_corrected(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The injected facts with log S_mem and log S_prime minus the no-injection control's value for the same
    fact at the same step of training (continued training alone moves keyword probabilities too)."""
    control = next((record for record in records if record["kind"] == "control"), None)
    if control is None:
        return []
    reference = {fact["id"]: fact for fact in control["facts"]}
    corrected = []
    for record in records:
        if record["kind"] != "injected":
            continue
        for fact in record["facts"]:
            base = reference[fact["id"]]
            at = {step: index for index, step in enumerate(base["steps"])}
            indices = [at[fact["end"] + step] for step in fact["steps"]]
            corrected.append({**fact, **{field: [value - base[field][index] for value, index in zip(fact[field], indices)]
                                         for field in ("log_s_mem", "log_s_prime")}})
    return corrected


def retention_summary(records: Sequence[dict[str, Any]], resamples: int, seed: int,
                      facts: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Half-life of log S_mem per type (median, interval, censored count), per type and prior level, and
    whether the conflicting facts' interval lies above the mundane and the jumbled facts' intervals
    (pooled, and level by level as ``m of n``)."""
    facts = injected_facts(records) if facts is None else facts
    measured: dict[str, Any] = {"half_life": {}, "half_life_by_prior": {}}
    for kind in FACT_TYPES:
        lives = [fact_half_life(fact) for fact in facts if fact["type"] == kind]
        summary = median_interval([value for value, _ in lives], resamples, seed)
        measured["half_life"][kind] = {**summary, "facts": len(lives), "censored": sum(censored for _, censored in lives)}
        measured[f"half_life_{kind}"] = summary["median"]
        levels = sorted({fact.get("prior", "") for fact in facts if fact["type"] == kind})
        measured["half_life_by_prior"][kind] = {
            level: statistics.median(fact_half_life(fact)[0] for fact in facts if fact["type"] == kind and fact.get("prior", "") == level)
            for level in levels}
    conflicting = measured["half_life"]["conflicting"]
    for other in ("mundane", "jumbled"):
        rival = measured["half_life"][other]
        measured[f"conflicting_outlasts_{other}"] = bool(rival["facts"] and conflicting["low"] > rival["high"])
        measured[f"conflicting_outlasts_{other}_levels"] = levels_higher(measured["half_life_by_prior"], other)
    return measured


def levels_higher(by_prior: dict[str, dict[str, Any]], other: str, where: str | None = None) -> str:
    """"m of n": in how many of the prior levels that both types have the conflicting facts' median is higher
    (the comparison stratified by P_before; ``where`` picks ``start``/``end`` of nested values)."""
    shared = sorted(set(by_prior["conflicting"]) & set(by_prior.get(other, {})))
    read = (lambda value: value) if where is None else (lambda value: value[where])
    higher = sum(read(by_prior["conflicting"][level]) > read(by_prior[other][level]) for level in shared)
    return f"{higher} of {len(shared)}"


def value_at(fact: dict[str, Any], field: str, where: str) -> float:
    """``field`` of a fact at the end of its injection (``start``) or at the end of the horizon (``end``)."""
    return float(fact[field][0 if where == "start" else -1])


def priming_summary(records: Sequence[dict[str, Any]], facts: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Median log10 S_prime (and log10 S_mem) per type at the end of injection and of the horizon; whether
    conflicting facts prime more than mundane and jumbled ones at both times; the same per prior level.
    ``facts``: other fact curves (e.g. :func:`drift_corrected`) instead of the injected runs' own."""
    facts = injected_facts(records) if facts is None else facts
    measured: dict[str, Any] = {"priming": {}, "priming_by_prior": {}}
    for kind in FACT_TYPES:
        group = [fact for fact in facts if fact["type"] == kind]
        measured["priming"][kind] = {
            f"{field}_{where}": statistics.median(value_at(fact, field, where) for fact in group) / LN10 if group else math.nan
            for field in ("log_s_prime", "log_s_mem") for where in ("start", "end")}
        by_level: dict[str, dict[str, float]] = {}
        for level in sorted({fact.get("prior", "") for fact in group}):
            members = [fact for fact in group if fact.get("prior", "") == level]
            by_level[level] = {where: statistics.median(value_at(fact, "log_s_prime", where) for fact in members) / LN10
                               for where in ("start", "end")}
        measured["priming_by_prior"][kind] = by_level
    for where in ("start", "end"):
        conflicting = measured["priming"]["conflicting"][f"log_s_prime_{where}"]
        for other in ("mundane", "jumbled"):
            rival = measured["priming"][other][f"log_s_prime_{where}"]
            measured[f"conflicting_primes_more_than_{other}_at_{where}"] = bool(not math.isnan(rival) and conflicting > rival)
            measured[f"log10_s_prime_{where}_{other}"] = rival
            measured[f"conflicting_primes_more_than_{other}_at_{where}_levels"] = levels_higher(
                measured["priming_by_prior"], other, where)
        measured[f"log10_s_prime_{where}_conflicting"] = conflicting
    return measured


def type_curves(records: Sequence[dict[str, Any]], points: int = 40) -> dict[str, Any]:
    """Per type, the median (and quartiles) of log10 S_mem and log10 S_prime on a common grid of steps since
    injection (each fact's curve interpolated in log(1 + step))."""
    facts = injected_facts(records)
    if not facts:
        return {}
    horizon = min(fact["steps"][-1] for fact in facts)
    grid = np.unique(np.round(np.geomspace(1, max(horizon, 1), points))).astype(float)
    grid = np.concatenate([[0.0], grid])
    curves: dict[str, Any] = {"steps": grid.tolist()}
    for kind in FACT_TYPES:
        group = [fact for fact in facts if fact["type"] == kind]
        if not group:
            continue
        for field in ("log_s_mem", "log_s_prime"):
            values = np.array([np.interp(np.log1p(grid), np.log1p(fact["steps"]), fact[field]) for fact in group]) / LN10
            curves[f"{kind}_{field}"] = {q: np.percentile(values, p, axis=0).tolist() for q, p in
                                         (("median", 50), ("low", 25), ("high", 75))}
    return curves


def _end_medians(record: dict[str, Any]) -> tuple[float, float]:
    facts = record["facts"]
    return (statistics.median(value_at(fact, "log_s_prime", "end") for fact in facts),
            statistics.median(value_at(fact, "log_s_mem", "end") for fact in facts))


def loss_halves(record: dict[str, Any]) -> tuple[float, float]:
    """Mean held-out background loss over the first and over the second half of the horizon after the
    injection (the iterates' loss fluctuates from step to step; half-horizon means are steadier)."""
    start, last = record["injection_end"], record["steps"][-1]
    middle = start + (last - start) / 2
    first = [loss for step, loss in zip(record["steps"], record["background_loss"]) if start <= step < middle]
    second = [loss for step, loss in zip(record["steps"], record["background_loss"]) if step >= middle]
    return statistics.fmean(first), statistics.fmean(second)


def mitigation_summary(records: Sequence[dict[str, Any]], unmitigated: str, reduction_bound: float,
                       background_bound: float) -> dict[str, Any]:
    """Per sparse-update variant: the cut of the conflicting facts' median log S_prime at the end of the
    horizon against the unmitigated run, memorization kept, the background loss over the second half of
    the horizon against the unmitigated run's, whether it fell from the first half to the second, and
    the same cut of its random-k counterpart. ``achieving``: the top-k variants that meet every bound."""
    by_key = {record["id"]: record for record in records}
    control = by_key[unmitigated]
    prime_control, mem_control = _end_medians(control)
    loss_control = loss_halves(control)[1]
    variants: dict[str, dict[str, Any]] = {}
    for record in records:
        if record["kind"] != "mitigation":
            continue
        prime, mem = _end_medians(record)
        first, second = loss_halves(record)
        variants[record["id"].removeprefix("mitigation-")] = {
            **record["mitigation"], "log10_s_prime_end": prime / LN10, "priming_reduction": reduction(prime, prime_control),
            "memorization_kept": kept(mem, mem_control), "background_loss_late": second,
            "background_loss_increase": second / loss_control - 1, "background_loss_falls": second < first,
        }
    for name, variant in variants.items():
        counterpart = variants.get(name.replace("-top-", "-random-")) if variant["selection"] == "top" else None
        variant["random_reduction"] = counterpart["priming_reduction"] if counterpart else None
        variant["meets_claim"] = bool(
            variant["selection"] == "top" and variant["priming_reduction"] is not None
            and variant["priming_reduction"] >= reduction_bound
            and variant["background_loss_increase"] <= background_bound and variant["background_loss_falls"]
            and variant["random_reduction"] is not None and variant["random_reduction"] < variant["priming_reduction"])
    candidates = [name for name, variant in variants.items() if variant["selection"] == "top"]
    best = max(candidates, key=lambda name: (variants[name]["meets_claim"], variants[name]["priming_reduction"] or -math.inf),
               default=None)
    first, second = loss_halves(control)
    measured: dict[str, Any] = {
        "variants": variants, "achieving": [name for name in candidates if variants[name]["meets_claim"]],
        "unmitigated_log10_s_prime_end": prime_control / LN10, "unmitigated_background_loss_late": second,
        "unmitigated_background_loss_falls": second < first,
    }
    if best is not None:
        chosen = variants[best]
        measured.update(best_variant=best, best_priming_reduction=chosen["priming_reduction"],
                        best_background_loss_increase=chosen["background_loss_increase"],
                        best_background_loss_falls=chosen["background_loss_falls"],
                        best_random_reduction=chosen["random_reduction"],
                        best_random_cuts_less=chosen["random_reduction"] is not None and chosen["priming_reduction"] is not None
                        and chosen["random_reduction"] < chosen["priming_reduction"],
                        sparse_update_meets_claim=bool(measured["achieving"]))
    return measured


def drift_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The no-injection control: median log10 S_mem and log10 S_prime of the tracked facts at its last step
    (drift of continued training alone), and the background loss at step 0 and over each half of the run."""
    control = next((record for record in records if record["kind"] == "control"), None)
    if control is None:
        return {}
    prime, mem = _end_medians(control)
    first, second = loss_halves(control)
    return {"control_log10_s_mem_end": mem / LN10, "control_log10_s_prime_end": prime / LN10,
            "control_background_loss_start": control["background_loss"][0],
            "control_background_loss_first_half": first, "control_background_loss_second_half": second}
