"""Figures of the ``fabricated`` study: retention and priming per fact type, and the sparse-update defence."""

from __future__ import annotations

from typing import Any

from learnlab.core.io import pyplot
from learnlab.knowledge.fact_types import FACT_TYPES


def plot_retention(ctx: Any, curves: dict[str, Any], half_lives: dict[str, Any]) -> None:
    """Median (quartile band) log10 S_mem and log10 S_prime per type over the steps since injection."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    steps = [step + 1 for step in curves["steps"]]
    for index, kind in enumerate(FACT_TYPES):
        if f"{kind}_log_s_mem" not in curves:
            continue
        life = half_lives[kind]
        for axis, field in zip(axes, ("log_s_mem", "log_s_prime")):
            band = curves[f"{kind}_{field}"]
            label = kind if field == "log_s_prime" else f"{kind} (median half-life {life['median']:.0f} steps, n={life['facts']})"
            axis.plot(steps, band["median"], color=f"C{index}", label=label)
            axis.fill_between(steps, band["low"], band["high"], color=f"C{index}", alpha=0.15)
    for axis, name in zip(axes, ("log10 S_mem (own context)", "log10 S_prime (same-theme probes)")):
        axis.set_xscale("log")
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_xlabel("steps since the end of the fact's injection + 1")
        axis.set_ylabel(name)
        axis.legend(fontsize=8)
    axes[0].set_title("Retention of injected facts (median, quartiles)")
    axes[1].set_title("Priming of unrelated prompts over time")
    ctx.save_figure(figure, "retention")


def plot_mitigation(ctx: Any, mitigation: dict[str, Any], reduction_bound: float, background_bound: float) -> None:
    """Per sparse-update variant: the cut of median log S_prime and the background-loss change, with bounds."""
    plt = pyplot()
    variants = mitigation["variants"]
    names = sorted(variants, key=lambda name: (variants[name]["mode"], variants[name]["protocol"], variants[name]["window"],
                                               variants[name]["fraction"], variants[name]["selection"]))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.9 + 0.32 * len(names)))
    colors = ["C0" if variants[name]["selection"] == "top" else "C7" for name in names]
    left.barh(names, [100 * (variants[name]["priming_reduction"] or 0.0) for name in names], color=colors)
    left.axvline(100 * reduction_bound, color="C3", linestyle="--", label=f"{100 * reduction_bound:g}% bound")
    left.set_xlabel("cut of the conflicting facts' median log S_prime at the end of the horizon (%)")
    left.set_title("Sparse updates: priming cut (grey: random-k)")
    left.legend(fontsize=8)
    right.barh(names, [100 * variants[name]["background_loss_increase"] for name in names], color=colors)
    right.axvline(100 * background_bound, color="C3", linestyle="--", label=f"+{100 * background_bound:g}% bound")
    right.set_xlabel("held-out background loss vs the unmitigated run (%)")
    right.set_title("Training ability")
    right.set_yticks([])
    right.legend(fontsize=8)
    ctx.save_figure(figure, "mitigation")
