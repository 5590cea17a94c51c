"""Figures of the ``noisy-icl`` study (Vladymyrov et al. 2024): Fig. 2's adjusted loss, Table 1, training curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from learnlab.core import RunContext
from learnlab.core.io import pyplot
from learnlab.incontext.noisy_regression import NoiseDistribution

VARIANT_LABELS = {"gdpp": "GD++", "diag": "DIAG", "full": "FULL"}
VARIANT_STYLES = {"gdpp": "--", "diag": "-", "full": ":"}
BASELINE_STYLES = {"constrr": ("ConstRR", "black"), "adarr": ("AdaRR", "grey"), "tunedrr": ("TunedRR", "silver")}


def plot_adjusted_loss(ctx: RunContext, measured: dict[str, Any], layers: Sequence[int], full_layers: Sequence[int],
                       uniform: Sequence[NoiseDistribution]) -> None:
    """Adjusted loss against sigma_max per depth and variant, with the ridge baselines (Fig. 2 style)."""
    plt = pyplot()
    xs = [n.levels[0] for n in uniform]
    figure, axis = plt.subplots(figsize=(7.5, 5))
    for depth_index, depth in enumerate(layers):
        for variant in ("gdpp", "diag", "full"):
            if variant == "full" and depth not in full_layers:
                continue
            ys = [max(measured[f"adjusted_{variant}{depth}_{n.key}"], 1e-6) for n in uniform]
            axis.plot(xs, ys, VARIANT_STYLES[variant], marker="o", color=f"C{depth_index}",
                      label=f"{VARIANT_LABELS[variant]}, {depth} layer(s)")
    for name, (label, color) in BASELINE_STYLES.items():
        ys = [max(measured[f"adjusted_{name}_{n.key}"], 1e-6) for n in uniform]
        axis.plot(xs, ys, "-s", color=color, linewidth=2, label=label)
    axis.set_yscale("log")
    axis.set_xlabel("sigma_max (sigma ~ U(0, sigma_max))")
    axis.set_ylabel("adjusted loss (½·MSE − oracle ridge)")
    axis.set_title("Noisy in-context regression: adjusted loss vs noise")
    axis.legend(fontsize=7, ncol=2)
    ctx.save_figure(figure, "adjusted_loss_vs_sigma")


def plot_table1(ctx: RunContext, table: list[dict[str, Any]]) -> None:
    """Table 1 layout: one row per model, 'measured (paper)' per noise setting."""
    plt = pyplot()
    models = list(dict.fromkeys(row["model"] for row in table))
    columns = list(dict.fromkeys(row["setting"] for row in table))
    cells = {(row["model"], row["setting"]): row for row in table}
    text = []
    for model in models:
        line = []
        for column in columns:
            row = cells.get((model, column))
            if row is None:
                line.append("")
            else:
                paper = "—" if row["paper"] is None else f"{row['paper']:.3g}"
                line.append(f"{row['measured']:.3g} ({paper})")
        text.append(line)
    figure, axis = plt.subplots(figsize=(1.7 * len(columns) + 1.5, 0.32 * len(models) + 1.2))
    axis.axis("off")
    rendered = axis.table(cellText=text, rowLabels=models, colLabels=columns, loc="center")
    rendered.auto_set_font_size(False)
    rendered.set_fontsize(8)
    axis.set_title("Adjusted eval loss: measured (Table 1)", fontsize=10)
    ctx.save_figure(figure, "table1")


def plot_training_curves(ctx: RunContext, groups: dict[str, dict[str, Any]], layers: Sequence[int],
                         settings: Sequence[NoiseDistribution]) -> None:
    """Validation adjusted loss during training (best start per setting), one panel per setting."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(settings), figsize=(3.6 * len(settings), 3.4), squeeze=False)
    for index, (axis, noise) in enumerate(zip(axes[0], settings)):
        for name, group in groups.items():
            variant, depth = name.rstrip("0123456789"), int(name.lstrip("gdpfulia"))
            curve = [max(value, 1e-6) for value in group["curves"][index]]
            axis.plot(group["steps"], curve, VARIANT_STYLES[variant], color=f"C{layers.index(depth)}", label=name)
        axis.set_yscale("log")
        axis.set_title(noise.name, fontsize=9)
        axis.set_xlabel("step")
    axes[0][0].set_ylabel("validation adjusted loss")
    axes[0][-1].legend(fontsize=6)
    figure.tight_layout()
    ctx.save_figure(figure, "training_curves")
