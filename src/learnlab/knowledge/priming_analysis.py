"""Analysis of a priming sweep: correlations, the knee, ignore-k and rewrite summaries.

Works on the per-sample records of :class:`priming_session.PrimingSession` (natural-log fields
``log_p_before``, ``log_s_prime``, ...). Reported numbers are in log10 where they describe
probabilities (as the paper's figures), and reductions are computed in log space, as
the paper reports them:

    reduction = 1 − median(log S_prime with the intervention) / median(log S_prime without)
    kept      = median(log S_mem with the intervention) / median(log S_mem without)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

LN10 = math.log(10)
PREDICTORS: dict[str, str] = {
    "log_p_before": "log P_before(keyword | own prefix)",
    "text_tokens": "text length (tokens)",
    "text_mean_loss": "mean token loss of the text",
    "text_mean_entropy": "mean next-token entropy of the text",
    "keyword_entropy": "next-token entropy where the keyword starts",
}


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (scipy); ``(nan, nan)`` when undefined."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def bootstrap_interval(x: Sequence[float], y: Sequence[float], statistic: Callable[[np.ndarray, np.ndarray], float],
                       resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic(x, y)`` over resampled (x, y) pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, len(x), len(x))
        value = statistic(x[index], y[index])
        if math.isfinite(value):
            values.append(value)
    if not values:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def bootstrap_rho(x: Sequence[float], y: Sequence[float], resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of Spearman's rho over samples."""
    return bootstrap_interval(x, y, lambda a, b: spearman(a, b)[0], resamples, seed, level)


def hinge_knee(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Fit y = a + b · max(0, t − x) by least squares over breakpoints t between sorted x values.

    With x = log10 P_before and y = log10 S_prime this locates the knee below which priming
    grows (Fig. 2b of the paper: near x = −3). Returns ``knee`` (t), ``slope`` (b) and the
    fraction of variance explained. For each t the fit is a simple regression of y on
    h = max(0, t − x), solved in closed form for all t at once.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    values = np.unique(x)
    if values.size < 3:
        return {"knee": math.nan, "slope": math.nan, "r2": math.nan}
    knees = (values[:-1] + values[1:]) / 2
    hinge = np.maximum(0.0, knees[:, None] - x[None, :])
    centred = hinge - hinge.mean(axis=1, keepdims=True)
    variance = (centred ** 2).sum(axis=1)
    slope = np.divide(centred @ (y - y.mean()), variance, out=np.zeros_like(variance), where=variance > 0)
    total = float(((y - y.mean()) ** 2).sum())
    error = total - slope ** 2 * variance
    best = int(np.argmin(error))
    return {"knee": float(knees[best]), "slope": float(slope[best]),
            "r2": 1 - float(error[best]) / total if total > 0 else math.nan}


def bootstrap_knee(x: Sequence[float], y: Sequence[float], resamples: int, seed: int,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the hinge knee over samples."""
    return bootstrap_interval(x, y, lambda a, b: hinge_knee(a, b)["knee"], resamples, seed, level)


def median_of(records: Sequence[dict[str, Any]], read: Callable[[dict[str, Any]], float | None]) -> float | None:
    values = [value for value in (read(record) for record in records) if value is not None]
    return statistics.median(values) if values else None


def reduction(with_intervention: float | None, without: float | None) -> float | None:
    """1 − with/without for medians of log S_prime; ``None`` when there is no priming to reduce."""
    if with_intervention is None or without is None or without <= 0:
        return None
    return 1.0 - with_intervention / without


def kept(with_intervention: float | None, without: float | None) -> float | None:
    """with/without for medians of log S_mem; ``None`` when nothing was memorized."""
    if with_intervention is None or without is None or without <= 0:
        return None
    return with_intervention / without


def correlations(records: Sequence[dict[str, Any]], resamples: int, seed: int) -> dict[str, Any]:
    """Spearman rho (and p) of every predictor with log S_prime; bootstrap CI for log P_before (claim 1)."""
    target = [record["log_s_prime"] for record in records]
    table = {}
    for name in PREDICTORS:
        rho, p_value = spearman([record[name] for record in records], target)
        table[name] = {"rho": rho, "p_value": p_value}
    strongest = max(table, key=lambda name: abs(table[name]["rho"]) if math.isfinite(table[name]["rho"]) else -1.0)
    low, high = bootstrap_rho([record["log_p_before"] for record in records], target, resamples, seed)
    denominator_free, _ = spearman([record["log_p_before"] for record in records], [record["mean_log_prime"] for record in records])
    absolute, _ = spearman([record["log_p_before"] for record in records], [record["mean_abs_delta_p_probes"] for record in records])
    return {
        "predictors": table,
        "rho_p_before": table["log_p_before"]["rho"],
        "rho_p_before_p_value": table["log_p_before"]["p_value"],
        "rho_p_before_ci_low": low,
        "rho_p_before_ci_high": high,
        "strongest_predictor": strongest,
        "p_before_strongest_predictor": strongest == "log_p_before",
        "rho_p_before_mean_log_prime": denominator_free,
        "rho_p_before_abs_delta_p": absolute,
    }


def prior_level(record: dict[str, Any]) -> str:
    """The sample's built-in prior level (``high``, ``low``, ``very-low``), else its category."""
    return str(record.get("prior", record["category"]))


def within_prior_levels(records: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Claims 1 and 2 within each prior level, beside the pooled values.

    A pooled rho can be driven by the gap between levels (e.g. never-seen keywords against common
    ones); within a level only the variation among its samples counts. Per level: Spearman rho of
    log P_before with log S_prime (and p, sample count), and, where the level has samples on both
    sides of ``threshold``, the median log10 S_prime gap below minus above.
    """
    levels: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        levels.setdefault(prior_level(record), []).append(record)
    result: dict[str, Any] = {"by_prior_level": {}}
    for level, members in sorted(levels.items()):
        rho, p_value = spearman([r["log_p_before"] for r in members], [r["log_s_prime"] for r in members])
        entry = {"samples": len(members), "rho": rho, "p_value": p_value}
        split = threshold_split(members, threshold) if len(members) > 2 else {}
        if "log10_s_prime_gap_at_threshold" in split:
            entry["log10_s_prime_gap_at_threshold"] = split["log10_s_prime_gap_at_threshold"]
        result["by_prior_level"][level] = entry
        result[f"rho_p_before_prior_{level}"] = rho
    return result


def threshold_split(records: Sequence[dict[str, Any]], threshold: float, resamples: int = 0, seed: int = 0) -> dict[str, Any]:
    """Median log10 S_prime below and above P_before = ``threshold`` (claim 2), the fitted knee and,
    with ``resamples``, its bootstrap 95% interval."""
    cut = math.log(threshold)
    below = [record["log_s_prime"] / LN10 for record in records if record["log_p_before"] < cut]
    above = [record["log_s_prime"] / LN10 for record in records if record["log_p_before"] >= cut]
    knee = hinge_knee([record["log_p_before"] / LN10 for record in records], [record["log_s_prime"] / LN10 for record in records])
    result = {
        "threshold_log10": math.log10(threshold),
        "samples_below_threshold": len(below),
        "samples_above_threshold": len(above),
        "median_log10_s_prime_below": statistics.median(below) if below else None,
        "median_log10_s_prime_above": statistics.median(above) if above else None,
        "knee_log10_p_before": knee["knee"],
        "knee_slope": knee["slope"],
        "knee_r2": knee["r2"],
    }
    if resamples:
        low, high = bootstrap_knee([r["log_p_before"] / LN10 for r in records], [r["log_s_prime"] / LN10 for r in records],
                                   resamples, seed)
        result.update(knee_ci_low_log10=low, knee_ci_high_log10=high)
    if below and above:
        result["log10_s_prime_gap_at_threshold"] = result["median_log10_s_prime_below"] - result["median_log10_s_prime_above"]
    return result


def pruning_summary(records: Sequence[dict[str, Any]], headline: str = "8", field: str = "pruning") -> dict[str, Any]:
    """Per ignore-k variant: median log10 S_prime / S_mem, reduction, kept memorization, background change.

    ``field`` names the records' variant table (``pruning``, or ``ablation_pruning`` for the
    optimizer ablation; records without it are skipped).
    """
    records = [record for record in records if field in record]
    if not records:
        return {}
    base_prime = median_of(records, lambda record: record[field]["top-0"]["log_s_prime"])
    base_mem = median_of(records, lambda record: record[field]["top-0"]["log_s_mem"])
    variants = {}
    for name in records[0][field]:
        prime = median_of(records, lambda record, name=name: record[field][name]["log_s_prime"])
        memory = median_of(records, lambda record, name=name: record[field][name]["log_s_mem"])
        background = median_of(records, lambda record, name=name: record[field][name]["background_loss"] / record["background_loss_base"] - 1)
        variants[name] = {
            "median_log10_s_prime": prime / LN10, "median_log10_s_mem": memory / LN10,
            "priming_reduction": reduction(prime, base_prime), "memorization_kept": kept(memory, base_mem),
            "background_loss_increase": background,
            "dropped_update_share": median_of(records, lambda record, name=name: record[field][name]["dropped_update_share"]),
        }
    top, random = variants.get(f"top-{headline}", {}), variants.get(f"random-{headline}", {})
    summary: dict[str, Any] = {"variants": variants, "samples": len(records),
                               "unpruned_background_loss_increase": variants["top-0"]["background_loss_increase"]}
    summary["ignore8_priming_reduction"] = top.get("priming_reduction")
    summary["ignore8_memorization_kept"] = top.get("memorization_kept")
    summary["ignore8_background_loss_increase"] = top.get("background_loss_increase")
    summary["random8_priming_reduction"] = random.get("priming_reduction")
    if summary["ignore8_priming_reduction"] is not None and summary["random8_priming_reduction"] is not None:
        summary["random8_cuts_less"] = summary["random8_priming_reduction"] < summary["ignore8_priming_reduction"]
    return summary


def rewrite_summary(records: Sequence[dict[str, Any]], stone: str = "stepping-stone", control: str = "plain-control",
                    lead_in: str = "keyword-lead-in") -> dict[str, Any]:
    """Stepping stones vs the plain control (and the keyword lead-in), on the samples that have both (claim 4).

    "Much less" for the control is fixed as: its priming reduction is at most half the stepping
    stones' (and the stepping stones reduce priming at all).
    """
    both = [record for record in records if stone in record and control in record]
    if not both:
        return {"rewritten_samples": 0}
    base_prime = median_of(both, lambda record: record["log_s_prime"])
    base_mem = median_of(both, lambda record: record["log_s_mem"])
    result: dict[str, Any] = {"rewritten_samples": len(both), "original_median_log10_s_prime": base_prime / LN10}
    variants = [(stone, "stone"), (control, "control")] + ([(lead_in, "lead_in")] if all(lead_in in r for r in both) else [])
    for name, label in variants:
        prime = median_of(both, lambda record, name=name: record[name]["log_s_prime"])
        memory = median_of(both, lambda record, name=name: record[name]["log_s_mem"])
        result[f"{label}_median_log10_s_prime"] = prime / LN10
        result[f"{label}_priming_reduction"] = reduction(prime, base_prime)
        result[f"{label}_memorization_kept"] = kept(memory, base_mem)
        result[f"{label}_log10_p_before_gain"] = median_of(both, lambda record, name=name: record[name]["log_p_before_gain"]) / LN10
        result[f"{label}_median_tokens"] = median_of(both, lambda record, name=name: record[name]["text_tokens"])
    stone_cut, control_cut = result["stone_priming_reduction"], result["control_priming_reduction"]
    if stone_cut is not None and control_cut is not None:
        result["control_cuts_much_less"] = stone_cut > 0 and control_cut <= 0.5 * stone_cut
    return result


def theme_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Same-theme vs cross-theme priming (the paper: priming is strongest within the keyword's theme)."""
    crossed = [record for record in records if "cross_log_s_prime" in record]
    if not crossed:
        return {}
    return {
        "median_log10_s_prime_same_theme": median_of(crossed, lambda record: record["log_s_prime"]) / LN10,
        "median_log10_s_prime_cross_theme": median_of(crossed, lambda record: record["cross_log_s_prime"]) / LN10,
        "share_same_theme_above_cross": sum(record["log_s_prime"] > record["cross_log_s_prime"] for record in crossed) / len(crossed),
    }


def spaced_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The spaced-presentation variant: its correlation of log P_before with log S_prime, and medians."""
    spaced = [record for record in records if "spaced" in record]
    if len(spaced) < 3:
        return {}
    rho, p_value = spearman([record["log_p_before"] for record in spaced], [record["spaced"]["log_s_prime"] for record in spaced])
    return {
        "spaced_samples": len(spaced), "spaced_rho_p_before": rho, "spaced_rho_p_value": p_value,
        "spaced_median_log10_s_prime": median_of(spaced, lambda record: record["spaced"]["log_s_prime"]) / LN10,
        "spaced_median_log10_s_mem": median_of(spaced, lambda record: record["spaced"]["log_s_mem"]) / LN10,
    }


def group_medians(records: Sequence[dict[str, Any]], field: str) -> dict[str, dict[str, float]]:
    """Median log10 P_before, S_mem and S_prime per value of ``field`` (e.g. category, prior)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if field in record:
            groups.setdefault(str(record[field]), []).append(record)
    return {
        name: {
            "samples": len(members),
            "median_log10_p_before": median_of(members, lambda record: record["log_p_before"]) / LN10,
            "median_log10_s_mem": median_of(members, lambda record: record["log_s_mem"]) / LN10,
            "median_log10_s_prime": median_of(members, lambda record: record["log_s_prime"]) / LN10,
        }
        for name, members in sorted(groups.items())
    }
