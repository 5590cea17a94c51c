"""Figures of the ``mesa`` study (per-t losses as in the paper's Fig. 2 and 5, training curves, §6 repurposing).

Each function returns a matplotlib figure (Agg backend); the study saves it through its run context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from learnlab.core.io import pyplot


def per_t_figure(curves: Mapping[str, Sequence[float]], title: str) -> Any:
    """Test loss at each time step t, one line per learner (baselines dashed)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    styles = {"least squares": ("k", "--"), "tuned 1-step GD": ("grey", ":")}
    for index, (label, curve) in enumerate(curves.items()):
        color, style = next((v for k, v in styles.items() if label.startswith(k)), (f"C{index}", "-"))
        axis.plot(range(len(curve)), curve, linestyle=style, color=color, label=label)
    axis.set_yscale("log")
    axis.set_xlabel("time step t")
    axis.set_ylabel("test loss at t (½ squared error)")
    axis.set_title(title)
    axis.legend(fontsize=8)
    return figure


def training_figure(results: Mapping[str, Mapping[str, Any]], lsq_mean: float, sandbox_mean: float) -> Any:
    """Mean-over-t test loss during training (``results[label]`` holds ``steps`` and ``test_losses``)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for label, result in results.items():
        axis.plot(result["steps"], result["test_losses"], label=label)
    axis.axhline(lsq_mean, color="k", linestyle="--", label="least squares")
    axis.axhline(sandbox_mean, color="C0", linestyle=":", label=f"official 2-layer linear ({sandbox_mean:g})")
    axis.set_yscale("log")
    axis.set_xlabel("training step")
    axis.set_ylabel("mean-over-t test loss")
    axis.legend(fontsize=8)
    return figure


def repurposing_figure(counts: Sequence[int], untuned: Mapping[str, Sequence[float]], tuned: Mapping[str, Sequence[float]],
                       references: Mapping[str, Sequence[float]], prefix_length: int, ridge: float) -> Any:
    """Few-shot regression error against the number of examples: untuned and tuned prompts, closed-form references."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, (label, errors) in enumerate(untuned.items()):
        axis.plot(counts, errors, ":o", color=f"C{index}", markersize=3, alpha=0.7, label=f"{label}: [x, y, ..., x_q] (no EOS)")
        if label in tuned:
            axis.plot(counts, tuned[label], "-o", color=f"C{index}", markersize=4,
                      label=f"{label}: learned EOS + {prefix_length} prefix")
    axis.plot(counts, references["gd1"], "--", color="grey", label="one GD step (η tuned per count)")
    axis.plot(counts, references["lsq"], "--", color="k", label=f"least squares (ridge {ridge:g})")
    axis.set_ylim(bottom=0)
    axis.set_xlabel("in-context regression examples")
    axis.set_ylabel("regression error (½ squared error)")
    axis.set_title("Repurposing: few-shot regression prompts (held-out tasks)")
    axis.legend(fontsize=7)
    return figure
