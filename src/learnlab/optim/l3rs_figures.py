"""Figures of the ``l3rs`` study."""

from __future__ import annotations

from typing import Any

import numpy as np

from learnlab.core.io import pyplot

LEARNED_STYLE = {"l3rs": ("k", "-", 2.2), "constant": ("tab:gray", "--", 1.5), "adam-hp": ("tab:purple", "--", 1.5)}


def plot_loss_curves(ctx: Any, config: Any, evaluation: dict[str, dict[str, Any]]) -> None:
    """Mean test loss against fine-tuning steps for every method, one panel per variant."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(evaluation), figsize=(4.4 * len(evaluation), 4.0), squeeze=False)
    for axis, (variant, record) in zip(axes[0], evaluation.items()):
        for index, (name, result) in enumerate(record.items()):
            color, style, width = LEARNED_STYLE.get(name, (f"C{index % 10}", ":" if "head" in name else "-", 1.0))
            axis.plot(result["curve_steps"], result["curve"], linestyle=style, color=color, linewidth=width, label=name)
        axis.set_yscale("log")
        axis.set_xlabel("fine-tuning step")
        axis.set_title(variant)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test loss (mean over {config.eval_seeds} task seeds)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    figure.suptitle("Fine-tuning digits 5-9 from a body pretrained on 0-4: every optimizer")
    figure.tight_layout()
    ctx.save_figure(figure, "loss_curves")


def plot_coefficients(ctx: Any, config: Any, coefficients: np.ndarray) -> None:
    """c_{l,k}(t) of the learned rule (mean over the in-distribution test tasks): one panel per base optimizer."""
    plt = pyplot()
    bases = coefficients.shape[-1]
    figure, axes = plt.subplots(1, bases, figsize=(4.4 * bases, 3.8), squeeze=False, sharey=True)
    steps = np.arange(1, coefficients.shape[0] + 1)
    for base, axis in enumerate(axes[0]):
        for layer in range(coefficients.shape[1]):
            kind = "weight" if layer % 2 == 0 else "bias"
            axis.plot(steps, coefficients[:, layer, base], color=f"C{layer // 2}", linestyle="-" if kind == "weight" else "--",
                      label=f"layer {layer // 2} {kind}")
        axis.set_yscale("log")
        axis.set_title(f"{config.bases[base]} direction")
        axis.set_xlabel("fine-tuning step")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("coefficient c_{l,k}(t) = λ_l μ_{l,k}")
    axes[0][-1].legend(fontsize=7)
    figure.suptitle("Learned per-layer coefficients over time")
    figure.tight_layout()
    ctx.save_figure(figure, "coefficients")


def plot_meta_training(ctx: Any, histories: dict[str, list[dict[str, float]]]) -> None:
    """Mean population meta-loss against ES iterations for every meta-trained method."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.0))
    for name, history in histories.items():
        color, style, _ = LEARNED_STYLE.get(name, ("C0", "-", 1.0))
        axis.plot([h["iteration"] for h in history], [h["population_loss"] for h in history], color=color,
                  linestyle=style, label=name)
    axis.set_yscale("log")
    axis.set_xlabel("ES iteration")
    axis.set_ylabel("meta-loss (validation loss after T steps)")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    ctx.save_figure(figure, "meta_training")
