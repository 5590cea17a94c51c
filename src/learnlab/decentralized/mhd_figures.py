"""Figures of the ``mhd`` study."""

from __future__ import annotations

from typing import Any

import numpy as np

from learnlab.core.io import pyplot


def plot_methods(ctx: Any, config: Any, measured: dict[str, Any]) -> None:
    """Shared and private accuracy of isolated, MHD (h0 and every auxiliary head), central and FedAvg."""
    plt = pyplot()
    shared, private = measured["shared_accuracy_by_head"], measured["private_accuracy_by_head"]
    labels = ["isolated", "MHD h0"] + [f"MHD head {k}" for k in range(1, len(shared["mhd"]))] + ["central", "FedAvg"]
    values = [(shared["isolated"][0], private["isolated"][0])]
    values += [(s, p) for s, p in zip(shared["mhd"], private["mhd"])]
    values += [(shared["central"][0], private["central"][0]), (shared["fedavg"][0], private["fedavg"][0])]
    figure, axis = plt.subplots(figsize=(8.5, 4.0))
    positions = np.arange(len(labels))
    axis.bar(positions - 0.2, [v[0] for v in values], 0.4, label="shared (uniform test set)", color="tab:blue")
    axis.bar(positions + 0.2, [v[1] for v in values], 0.4, label="private (agent's own label mix)", color="tab:orange")
    axis.set_xticks(positions, labels, rotation=20)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel(f"accuracy (mean over agents and {len(config.seeds)} seeds)")
    axis.set_title(f"{config.agents} agents, skew {config.skew}, {config.graph} graph")
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    ctx.save_figure(figure, "methods")


def plot_heads(ctx: Any, config: Any, measured: dict[str, Any]) -> None:
    """Shared accuracy against the head index on a cycle and on the complete graph."""
    plt = pyplot()
    shared = measured["shared_accuracy_by_head"]
    figure, axis = plt.subplots(figsize=(6.0, 4.0))
    for name, label, color in (("cycle", f"cycle, {config.cycle_agents} agents", "tab:red"),
                               ("complete10", f"complete, {config.cycle_agents} agents", "tab:blue"),
                               ("mhd", f"complete, {config.agents} agents", "tab:gray")):
        axis.plot(range(len(shared[name])), shared[name], marker="o", color=color, label=label)
    axis.axhline(shared["central"][0], color="k", linestyle=":", label="central")
    axis.set_xticks(range(max(len(shared[name]) for name in ("cycle", "complete10", "mhd"))))
    axis.set_xlabel("head (0 = main head h0; k = distils the peers' head k-1)")
    axis.set_ylabel("shared accuracy")
    axis.set_title(f"Knowledge travels one hop per head (skew {config.skew})")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    ctx.save_figure(figure, "heads")


def plot_islands(ctx: Any, measured: dict[str, Any]) -> None:
    """Each island's shared accuracy beside its class coverage."""
    plt = pyplot()
    islands = measured["islands"]
    figure, axis = plt.subplots(figsize=(6.0, 3.6))
    positions = np.arange(len(islands))
    axis.bar(positions - 0.2, [i["coverage"] for i in islands], 0.4, label="class coverage", color="tab:gray")
    axis.bar(positions + 0.2, [i["shared_h0"] for i in islands], 0.4, label="shared accuracy (h0)", color="tab:green")
    axis.set_xticks(positions, [f"seed {i['seed']}\nagents {','.join(map(str, i['agents']))}" for i in islands],
                    fontsize=7)
    axis.set_ylim(0, 1.0)
    axis.set_title("Two disconnected islands (skew 1, h0 distillation)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    ctx.save_figure(figure, "islands")
