"""Figures of the ``gistpool`` study: accuracy against the compression rate and the context length, and the ablation chain."""

from __future__ import annotations

from typing import Any

from learnlab.compression.gistpool_runs import ablation_chain, compressor_spec
from learnlab.core.io import pyplot

LABELS = {"gisting": "gisting", "avgpool": "average pooling", "gistpool": "GistPool (shift + separate + window mask)"}


def _bounds(axis: Any, table: dict[str, Any], length: int) -> None:
    for name, label, style in (("full", "full context", "--"), ("none", "no context", ":")):
        entry = table.get(f"L{length}/{name}")
        if entry:
            axis.axhline(entry["accuracy"]["mean"], color="black", linestyle=style, linewidth=1,
                         label=f"{label} ({entry['accuracy']['mean']:.2f})")


def plot_rates(ctx: Any, table: dict[str, Any], length: int, rates: tuple[int, ...], methods: tuple[str, ...]) -> None:
    """Exact-match accuracy (mean ± seed std) against the compression rate r = L / k, per method."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.4))
    for index, method in enumerate(methods):
        entries = [table.get(f"L{length}/{compressor_spec(method, rate).name}") for rate in rates]
        points = [(rate, entry["accuracy"]) for rate, entry in zip(rates, entries) if entry]
        axis.errorbar([rate for rate, _ in points], [value["mean"] for _, value in points],
                      yerr=[value["std"] for _, value in points], marker="o", capsize=3, color=f"C{index}",
                      label=LABELS.get(method, method))
    _bounds(axis, table, length)
    axis.set_xscale("log", base=2)
    axis.set_xticks(list(rates), [str(rate) for rate in rates])
    axis.set_xlabel("compression rate r = L / k")
    axis.set_ylabel("exact-match accuracy (mean ± std over seeds)")
    axis.set_title(f"Answer accuracy against compression rate (L = {length})")
    axis.legend(fontsize=8)
    ctx.save_figure(figure, "accuracy_vs_rate")


def plot_lengths(ctx: Any, table: dict[str, Any], lengths: tuple[int, ...], rate: int, methods: tuple[str, ...]) -> None:
    """Accuracy and recovery (mean ± seed std) against the context length at one rate, with full and no context."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    names = [("full", "full context", "black")] + [(compressor_spec(method, rate).name, f"{LABELS.get(method, method)}, r = {rate}",
                                                  f"C{index}") for index, method in enumerate(methods)]
    names.append(("none", "no context", "grey"))
    for name, label, color in names:
        for axis, metric in ((left, "accuracy"), (right, "recovery")):
            if metric == "recovery" and name in ("full", "none"):
                continue
            points = [(length, table[f"L{length}/{name}"][metric]) for length in lengths if f"L{length}/{name}" in table]
            axis.errorbar([length for length, _ in points], [value["mean"] for _, value in points],
                          yerr=[value["std"] for _, value in points], marker="o", capsize=3, color=color, label=label)
    for axis, metric in ((left, "exact-match accuracy"), (right, "recovery (method − none) / (full − none)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(lengths), [str(length) for length in lengths])
        axis.set_xlabel("context length L (tokens)")
        axis.set_ylabel(metric)
        axis.legend(fontsize=8)
    left.set_title("Accuracy against context length")
    right.set_title("Recovery against context length")
    ctx.save_figure(figure, "accuracy_vs_length")


def plot_ablation(ctx: Any, table: dict[str, Any], length: int, rate: int) -> None:
    """Answer loss and accuracy along gisting -> +shift -> +separate parameters -> +window mask (GistPool)."""
    plt = pyplot()
    steps = ["gisting", "+shift", "+separate", "+window mask\n(= GistPool)"]
    entries = [table.get(f"L{length}/{spec.name}") for spec in ablation_chain(rate)]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric, label in ((left, "loss", "answer loss (nats, lower is better)"), (right, "accuracy", "exact-match accuracy")):
        values = [entry[metric]["mean"] if entry else 0.0 for entry in entries]
        spreads = [entry[metric]["std"] if entry else 0.0 for entry in entries]
        axis.bar(steps, values, yerr=spreads, capsize=4, color=["C0", "C1", "C2", "C3"])
        axis.set_ylabel(label)
        axis.tick_params(axis="x", labelsize=8)
    left.set_title(f"Ablation chain at r = {rate}, L = {length}")
    _bounds(right, table, length)
    right.set_ylim(0, 1.15)
    right.legend(fontsize=7, loc="upper left", ncol=2)
    ctx.save_figure(figure, "ablation")
