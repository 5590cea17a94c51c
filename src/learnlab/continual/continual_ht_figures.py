"""Figures of the ``continual-ht`` study."""

from __future__ import annotations

from typing import Any

import numpy as np

from learnlab.core.io import pyplot

METHOD_STYLE = {"cht": ("k", "-", "CHT"), "cht-cached": ("tab:gray", "-.", "CHT, cached prototypes"),
                "constpn": ("tab:blue", "--", "ConstPN"), "merged-ht": ("tab:green", ":", "MergedHT (all supports)"),
                "finetune": ("tab:red", "--", "fine-tuning a shared head")}


def plot_width_sweep(ctx: Any, config: Any, sweep: dict[str, dict[str, Any]]) -> None:
    """Meta-test accuracy of HT (both heads) and ProtoNet against the CNN width (mean and 2 standard errors)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.6, 4.0))
    widths = [int(width) for width in sweep]
    for key, label, color in (("ht", "HT, logits head (all layers generated)", "k"),
                              ("ht_prototypes", "HT, prototype head (all layers generated)", "tab:gray"),
                              ("protonet", "ProtoNet (trained CNN)", "tab:blue")):
        if key not in sweep[str(widths[0])]:
            continue
        means = np.array([sweep[str(width)][key][0] for width in widths])
        errors = np.array([2 * sweep[str(width)][key][1] for width in widths])
        axis.errorbar(widths, means, yerr=errors, marker="o", color=color, capsize=3, label=label)
    axis.axhline(1 / config.ways, color="tab:gray", linestyle=":", linewidth=1, label="chance")
    axis.set_xscale("log", base=2)
    axis.set_xticks(widths, [str(width) for width in widths])
    axis.set_xlabel("CNN channels")
    axis.set_ylabel(f"meta-test accuracy ({config.ways}-way {config.shots}-shot)")
    axis.set_title("HT against ProtoNet of the same CNN")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    ctx.save_figure(figure, "width_sweep")


def plot_continual(ctx: Any, config: Any, measured: dict[str, Any]) -> None:
    """Task-incremental accuracy of every task after each task (CHT, ConstPN), class-incremental average
    accuracy of every method, and one task learned from mini-batches."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(15.5, 4.2))
    length, horizon = config.eval_tasks, config.train_tasks
    after = np.arange(1, length + 1)
    cht, constpn = measured["cht_task_accuracy"], measured["constpn_task_accuracy"]  # [t][tau], tau <= t
    for tau in range(length):
        later = range(tau, length)
        axes[0].plot(after[tau:], [cht[t][tau] for t in later], color=f"C{tau % 10}", marker="o", markersize=3,
                     label=f"task {tau + 1}")
        axes[0].plot(after[tau:], [constpn[t][tau] for t in later], color=f"C{tau % 10}", linestyle=":", linewidth=1)
    axes[0].set_title("task-incremental: CHT (solid), ConstPN (dotted)")
    axes[0].set_ylabel("accuracy on the task")
    axes[0].legend(fontsize=7, ncol=2)
    for name, (color, style, label) in METHOD_STYLE.items():
        key = f"{name}_class_average_after"
        if key in measured:
            axes[1].plot(after, measured[key], color=color, linestyle=style, marker="o", markersize=3, label=label)
    axes[1].set_title("class-incremental: mean accuracy over tasks so far")
    axes[1].legend(fontsize=7)
    for axis in axes[:2]:
        axis.axvspan(horizon + 0.5, length + 0.5, color="tab:gray", alpha=0.12, lw=0)
        axis.set_xlabel("after task  (shaded: beyond the trained horizon)")
    axes[2].plot(after, measured["minibatches_accuracy_after"], color="k", marker="o")
    axes[2].axvspan(horizon + 0.5, length + 0.5, color="tab:gray", alpha=0.12, lw=0)
    axes[2].set_xlabel(f"support mini-batches seen ({config.shots} per class each)")
    axes[2].set_title("one task learned from mini-batches (CHT)")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.set_xticks(after)
    figure.suptitle(f"Continual HyperTransformer on meta-test sequences ({config.ways}-way {config.shots}-shot tasks, "
                    f"trained on {horizon})")
    figure.tight_layout()
    ctx.save_figure(figure, "continual_accuracy")


def plot_meta_training(ctx: Any, histories: dict[str, list[dict[str, float]]]) -> None:
    """Training accuracy (episodes of the meta-training classes) against steps for every model."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.0))
    for index, (key, history) in enumerate(histories.items()):
        style = "--" if key.startswith("pn") else "-"
        axis.plot([entry["step"] for entry in history], [entry["accuracy"] for entry in history], linestyle=style,
                  color=f"C{index % 10}", label=key)
    axis.set_xlabel("meta-training step")
    axis.set_ylabel("training accuracy (running mean)")
    axis.set_title("Meta-training")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    ctx.save_figure(figure, "meta_training")
