"""Figures of the ``trajectories`` study."""

from __future__ import annotations

from typing import Any

import numpy as np

from learnlab.core.io import pyplot


def plot_parabolas(ctx: Any, config: Any, probes: dict[str, dict[str, Any]]) -> None:
    """Measured φ_B(λ) (points) and the fitted parabola (lines), batch 0 at every checkpoint."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(probes), figsize=(4.6 * len(probes), 3.8), squeeze=False)
    for axis, (name, probe) in zip(axes[0], probes.items()):
        for color, index in enumerate(i for i, b in enumerate(probe["batch"]) if b == 0):
            steps, losses = np.asarray(probe["steps"][index]), np.asarray(probe["losses"][index])
            a, b, c = probe["fit"][index]
            dense = np.linspace(0, steps[-1], 100)
            x = steps / config.probe_learning_rate
            axis.plot(x, losses, "o", color=f"C{color}", markersize=4)
            axis.plot(dense / config.probe_learning_rate, a - b * dense + c * dense**2, "-", color=f"C{color}",
                      label=f"step {probe['checkpoint'][index]}: R²={probe['r_squared'][index]:.3f}")
        axis.set_xlabel("λ / learning rate")
        axis.set_ylabel("fixed-batch loss φ_B(λ)")
        axis.set_title(f"{name} ({probe['parameters']} params)")
        axis.legend(fontsize=8)
    figure.suptitle("Loss of a fixed mini-batch along its own gradient, with quadratic fits")
    ctx.save_figure(figure, "parabola_fits")


def plot_spacing(ctx: Any, config: Any, table: list[dict[str, Any]]) -> None:
    """Clean test loss of the two-point average against the spacing k, with the other methods beside."""
    plt = pyplot()
    rows = {row["method"]: row for row in table}
    figure, axis = plt.subplots(figsize=(7, 4.3))
    ks = list(config.spacings)
    axis.errorbar(ks, [rows[f"two_point_{k}"]["test_loss"] for k in ks],
                  yerr=[rows[f"two_point_{k}"]["test_loss_std"] for k in ks], fmt="-o", color="k",
                  label="two-point (θ_T + θ_{T−k})/2")
    styles = [("last", "C3", "-"), ("lr_0.5", "C0", "--")] + [(f"lr_{f}", "C0", ":") for f in config.lr_fractions if f != 0.5]
    styles += [(f"ema_{d}", f"C{2 + i}", "-.") for i, d in enumerate(config.ema_decays)] + [("swa", "C1", "--")]
    for method, color, style in styles:
        axis.axhline(rows[method]["test_loss"], color=color, linestyle=style, label=method.replace("lr_", "lr × "))
    axis.set_xscale("log")
    axis.set_xlabel("spacing k (steps)")
    axis.set_ylabel("clean test loss (mean over seeds)")
    axis.set_title(f"Averaging vs lower learning rate ({config.dataset}, {config.label_noise:.0%} label noise)")
    axis.legend(fontsize=7, ncol=2)
    ctx.save_figure(figure, "two_point_vs_spacing")


def plot_curves(ctx: Any, config: Any, seeds: list[dict[str, Any]]) -> None:
    """Test loss over [T0, T]: the last iterate, its EMAs, and runs continued at lower learning rates."""
    plt = pyplot()
    steps = seeds[0]["curve.steps"]
    figure, axis = plt.subplots(figsize=(7, 4.3))
    keys = ["last"] + [f"ema_{d}" for d in config.ema_decays] + [f"lr_{f}" for f in config.lr_fractions]
    for index, key in enumerate(keys):
        values = np.mean([np.asarray(seed[f"curve.{key}"], dtype=float) for seed in seeds], axis=0)
        style = "--" if key.startswith("lr_") else "-"
        label = {"last": f"SGD at η = {config.learning_rate} (last iterate)"}.get(key, key.replace("lr_", "SGD at η × ")
                                                                                  .replace("ema_", "EMA β = "))
        axis.plot(steps[:len(values)], values, style, color=f"C{index}", label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("clean test loss (mean over seeds)")
    axis.set_title("EMA of the SGD run vs runs continued at reduced learning rates")
    axis.legend(fontsize=8)
    ctx.save_figure(figure, "ema_vs_reduced_lr")


def plot_trajectory_losses(ctx: Any, config: Any, probes: dict[str, dict[str, Any]]) -> None:
    """L_B(θ_t) of fixed batch 0 along each model's SGD run, with the probe checkpoints marked."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(probes), figsize=(4.6 * len(probes), 3.6), squeeze=False)
    for axis, (name, probe) in zip(axes[0], probes.items()):
        axis.plot(probe["trajectory_losses"][0], color="C0", linewidth=1)
        for checkpoint in config.probe_checkpoints:
            axis.axvline(checkpoint, color="grey", linestyle=":", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_xlabel("SGD step t")
        axis.set_ylabel("fixed-batch loss L_B(θ_t)")
        median = float(np.median(probe["trajectory_r2"])) if probe["trajectory_r2"] else float("nan")
        axis.set_title(f"{name}: parabola-in-t R² median {median:.3f}")
    figure.suptitle("Loss of a fixed mini-batch along the SGD trajectory (other batches drive the steps)")
    ctx.save_figure(figure, "fixed_batch_along_trajectory")


def plot_equivalent_learning_rates(ctx: Any, rows: list[dict[str, Any]], smallest_fraction: float) -> None:
    """Equivalent learning rate of each average against its horizon τ: measured (ladder) and predicted (NQM)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.8, 4.3))
    horizons = [row["horizon"] for row in rows]
    predicted = [row["predicted"] if row["predicted"] is not None else np.nan for row in rows]
    axis.plot(horizons, predicted, "--s", color="C1", label="noisy quadratic model, measured curvature")
    for row in rows:
        if row["measured"] is not None:
            axis.plot(row["horizon"], row["measured"], "o", color="C0")
        else:  # lower than any rate of the ladder: an upper bound
            axis.plot(row["horizon"], smallest_fraction, "v", color="C0", markersize=9)
        axis.annotate(row["method"], (row["horizon"], row["measured"] or smallest_fraction), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    axis.plot([], [], "o", color="C0", label="measured (continued runs at lower rates)")
    axis.plot([], [], "v", color="C0", label="measured: below the smallest rate run")
    axis.axhline(smallest_fraction, color="grey", linestyle=":", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("averaging horizon τ (steps; SWA: window / 2)")
    axis.set_ylabel("equivalent learning rate / η")
    axis.set_title("Iterate averages as learning-rate reductions")
    axis.legend(fontsize=8)
    ctx.save_figure(figure, "equivalent_learning_rates")
