"""Figure of the ``world`` study: the pretraining curve and the built-in keywords' prior probabilities."""

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
    colors = {"high": "C2", "low": "C1", "very-low": "C3"}
    right.barh([name for name, _ in rows], [row["median_log10_prob"] for _, row in rows],
               color=[colors[row["prior"]] for _, row in rows])
    right.axvline(-3, color="grey", linestyle="--", label="1e-3 (priming knee)")
    right.set_xlabel("median log10 P(keyword | prefix about a never-seen subject)")
    right.set_title("Built-in keywords: prior probability")
    right.legend(fontsize=8)
    ctx.save_figure(figure, "world_model")
