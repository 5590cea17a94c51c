"""Figures of the ``world`` study: pretraining curve and keyword priors; in-context recall vs passage length."""

from __future__ import annotations

from typing import Any

from learnlab.core.io import pyplot


def plot_world_model(ctx: Any, training: dict[str, Any], measured: dict[str, Any]) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(training["steps"], training["losses"])
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel("training loss (nats/token)")
    left.set_title("World model pretraining")
    rows = sorted(measured["keyword_priors"].items(), key=lambda item: -item[1]["median_log10_prob"])
    colors = {"high": "C2", "mid": "C0", "low": "C1", "very-low": "C3", "never-seen": "C4", "never-seen-long": "C5"}
    right.barh([name for name, _ in rows], [row["median_log10_prob"] for _, row in rows],
               color=[colors[row["prior"]] for _, row in rows])
    right.axvline(-3, color="grey", linestyle="--", label="1e-3 (priming knee)")
    right.set_xlabel("median log10 P(keyword | prefix about a never-seen subject)")
    right.set_title("Built-in keywords: prior probability")
    right.legend(fontsize=8)
    ctx.save_figure(figure, "world_model")


def plot_recall(ctx: Any, measured: dict[str, Any], bound: float) -> None:
    """Top-1 recall of the passage's attribute vs facts per passage, per group, with the no-passage baselines."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    table = measured["recall_by_length"]
    lengths = [int(length) for length in table]
    for group, color in (("fresh", "C0"), ("contradicting", "C3")):
        axis.plot(lengths, [table[str(length)][group] for length in lengths], "o-", color=color,
                  label=f"{group} subject, after the passage")
        axis.axhline(measured[f"recall_accuracy_{group}_no_passage"], color=color, linestyle=":",
                     label=f"{group} subject, question alone")
    axis.axhline(bound, color="grey", linestyle="--", label=f"{bound:.0%} bound")
    axis.set_xscale("log", base=2)
    axis.set_xticks(lengths, [str(length) for length in lengths])
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("facts in the passage")
    axis.set_ylabel("top-1 recall of the passage's attribute")
    axis.set_title("In-context recall (held-out passages)")
    axis.legend(fontsize=7)
    ctx.save_figure(figure, "in_context_recall")
