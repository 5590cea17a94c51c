"""Figures of the ``icl-gd`` study (training curves as in the paper's Fig. 2-3, weights as in Fig. 2, App. A.2 OOD).

Each function returns a matplotlib figure (Agg backend); the study saves it through its run context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from learnlab.core.io import pyplot
from learnlab.incontext.alignment import scale_corrected_products
from learnlab.incontext.attention import LinearSelfAttention
from learnlab.incontext.gradient_descent import gd_layer_weights


def training_figure(one_layer: Mapping[str, Any], recurrent: Mapping[str, Any], losses: Mapping[str, float],
                    recurrent_layers: int) -> Any:
    """Test loss during training of both LSA models (``steps``, ``test_losses``) against the tuned GD baselines."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    axis.plot(one_layer["steps"], one_layer["test_losses"], label="trained LSA, 1 layer", color="C0")
    axis.plot(recurrent["steps"], recurrent["test_losses"], label=f"trained recurrent LSA, {recurrent_layers} layers",
              color="C1")
    axis.axhline(losses["gd1_loss"], color="C0", linestyle="--", label="tuned 1-step GD")
    axis.axhline(losses["gd2_loss"], color="C1", linestyle=":", label=f"tuned {recurrent_layers}-step GD")
    axis.axhline(losses["gdpp_tied_loss"], color="C1", linestyle="--", label=f"tuned GD++ ({recurrent_layers} steps, tied)")
    axis.set_yscale("log")
    axis.set_xlabel("training step")
    axis.set_ylabel("test loss (½·MSE)")
    axis.set_title("Trained linear self-attention vs gradient descent")
    axis.legend(fontsize=8)
    return figure


def weights_figure(layer: LinearSelfAttention, eta_over_n: float, dim: int) -> Any:
    """Heatmaps of the scale-corrected learned products beside the Prop. 1 construction (paper Fig. 2)."""
    plt = pyplot()
    corrected = scale_corrected_products(layer, dim)
    query, key, value, projection = gd_layer_weights(dim, eta_over_n, 1, dtype=torch.float32)  # P = eta/N
    panels = [
        ("construction  W_K^T W_Q", key.T @ query),
        ("learned  W_K^T W_Q (scale-corrected)", corrected.key_query),
        ("construction  P W_V", projection @ value),
        ("learned  P W_V (scale-corrected)", corrected.value_projection),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(18, 4), constrained_layout=True)
    for axis, (title, matrix) in zip(axes, panels):
        matrix = matrix.detach().cpu().numpy()
        limit = max(abs(matrix).max(), 1e-12)
        image = axis.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axis.set_title(title, fontsize=9)
        figure.colorbar(image, ax=axis, fraction=0.046)
    return figure


def out_of_distribution_figure(scales: Sequence[float], curves: Mapping[str, Sequence[float]]) -> Any:
    """Test loss against the input range (a multiple of the training range), one line per learner (App. A.2)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    styles = ["-o", "--s", "-^", "--v"]
    for (name, losses), style in zip(curves.items(), styles):
        axis.plot(scales, losses, style, label=name)
    axis.axvline(1.0, color="grey", linewidth=0.8)
    axis.set_yscale("log")
    axis.set_xlabel("input range / training input range")
    axis.set_ylabel("test loss (½·MSE)")
    axis.set_title("Out of distribution: scaled inputs")
    axis.legend(fontsize=8)
    return figure
