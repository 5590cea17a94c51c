"""Figures of the ``priming`` study: priming against keyword probability, ignore-k, rewrites."""

from __future__ import annotations

from typing import Any

from learnlab.core.io import pyplot
from learnlab.knowledge.priming_analysis import LN10


def plot_scatter(ctx: Any, threshold: float, records: list[dict[str, Any]], measured: dict[str, Any]) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(str(record.get("prior", record["category"])), []).append(record)
    for name, members in sorted(groups.items()):
        left.scatter([r["log_p_before"] / LN10 for r in members], [r["log_s_prime"] / LN10 for r in members],
                     s=12, alpha=0.7, label=name)
    threshold = measured["threshold_log10"]
    low = min(record["log_p_before"] for record in records) / LN10
    left.axvspan(min(low, threshold) - 1, threshold, color="C3", alpha=0.08, label=f"P_before < {threshold:g}")
    if measured.get("knee_log10_p_before") is not None:
        left.axvline(measured["knee_log10_p_before"], color="grey", linestyle="--", label="fitted knee")
    if measured.get("knee_ci_low_log10") is not None:
        left.axvspan(measured["knee_ci_low_log10"], measured["knee_ci_high_log10"], color="grey", alpha=0.15,
                     label="knee, bootstrap 95% interval")
    left.set_xlabel("log10 P_before(keyword | own prefix)")
    left.set_ylabel("log10 S_prime (same-theme probes)")
    left.set_title(f"Priming vs keyword probability (Spearman rho = {measured['rho_p_before']:.2f})")
    left.legend(fontsize=8)
    same = [record["log_s_prime"] / LN10 for record in records if "cross_log_s_prime" in record]
    cross = [record["cross_log_s_prime"] / LN10 for record in records if "cross_log_s_prime" in record]
    right.scatter(cross, same, s=10, alpha=0.6)
    if same:
        top = max(max(same), max(cross))
        right.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1)
    right.set_xlabel("log10 S_prime, cross-theme probes")
    right.set_ylabel("log10 S_prime, same-theme probes")
    right.set_title("Same-theme vs cross-theme priming")
    ctx.save_figure(figure, "priming_scatter")


def plot_pruning(ctx: Any, measured: dict[str, Any], background_bound: float) -> None:
    plt = pyplot()
    variants = measured["variants"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for selection, style in (("top", "-o"), ("random", "--s")):
        names = sorted((name for name in variants if name.startswith(selection + "-") or name == "top-0"),
                       key=lambda name: float(name.split("-")[1]))
        ks = [float(name.split("-")[1]) for name in names]
        left.plot(ks, [variants[name]["median_log10_s_prime"] for name in names], style, label=f"S_prime, {selection}-k")
        left.plot(ks, [variants[name]["median_log10_s_mem"] for name in names], style, alpha=0.5, label=f"S_mem, {selection}-k")
        right.plot(ks, [100 * variants[name]["background_loss_increase"] for name in names], style, label=f"{selection}-k")
    left.set_xlabel("k (% of each tensor's update entries reset)")
    left.set_ylabel("median log10 score")
    left.set_title("Ignore-k: priming and memorization")
    left.legend(fontsize=8)
    right.axhline(100 * background_bound, color="grey", linestyle="--", label="1% bound")
    right.set_xlabel("k (%)")
    right.set_ylabel("held-out loss change vs base model (%)")
    right.set_title("Ignore-k: background loss")
    right.legend(fontsize=8)
    ctx.save_figure(figure, "ignore_k")


def plot_rewrites(ctx: Any, records: list[dict[str, Any]]) -> None:
    plt = pyplot()
    both = [record for record in records if "stepping-stone" in record and "plain-control" in record]
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    columns = {"original": [r["log_s_prime"] for r in both],
               "stepping stones": [r["stepping-stone"]["log_s_prime"] for r in both],
               "plain control": [r["plain-control"]["log_s_prime"] for r in both]}
    if all("keyword-lead-in" in r for r in both):
        columns["keyword lead-in"] = [r["keyword-lead-in"]["log_s_prime"] for r in both]
    axis.boxplot([[value / LN10 for value in values] for values in columns.values()], showfliers=False)
    axis.set_xticks(range(1, len(columns) + 1), list(columns))
    axis.set_ylabel("log10 S_prime")
    axis.set_title("Rewrites before learning: priming")
    ctx.save_figure(figure, "rewrites")
