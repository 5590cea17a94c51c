"""Study ``trajectories``: "Training trajectories, mini-batch losses and the curious role of the
learning rate" (Sandler, Zhmoginov, Vladymyrov, Miller 2023, arXiv:2301.02312).

The paper's abstract makes the statements checked here, at small scale on CPU:

1. the loss of a fixed mini-batch along its own gradient, φ_B(λ) = L_B(θ − λ g_B), is a parabola
   ("remarkably convex-like"; R² of the quadratic fit on [0, 2λ_min], at checkpoints of SGD runs
   of an MLP, a CNN and a BatchNorm ResNet);
2. one step of the best size λ* on that batch reaches a very low loss (φ(λ*)/φ(0) <= 0.2) for the
   BatchNorm ResNet; the ratio is reported for every model;
3. the noisy quadratic model (a per-batch quadratic with gradient noise) has closed-form
   stationary excess losses of SGD, its EMA and its two-point average, which its simulation
   matches within 2% (a reference computation of the model behind "iterate aggregates are
   equivalent to learning-rate schedules");
4. on 8x8 digits with 20% symmetric training-label noise (so that SGD's noise floor, not its
   bias, dominates the loss), averaging two SGD iterates k steps apart improves the clean test
   loss over the last iterate and lands within 10% of continuing at half the learning rate (mean
   over seeds); EMA and SWA shown beside;
5. the EMA (β = 0.99) of the SGD run matches, within 10% in clean test loss, the run continued at a
   quarter of the learning rate (a pairing stated before measuring); the "equivalent learning
   rate" of each average is reported too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from learnlab.core import (Claim, RunContext, Study, StudyConfig, at_least, at_most, is_true, nonnegative, positive, ranged,
                           within)
from learnlab.optim.nqm import (
    ema_variance_factor,
    equivalent_learning_rate_fraction,
    predict_noisy_quadratic,
    simulate_noisy_quadratic,
    uniform_average_variance_factor,
)
from learnlab.optim.trajectories_figures import (
    plot_curves,
    plot_equivalent_learning_rates,
    plot_parabolas,
    plot_spacing,
    plot_trajectory_losses,
)
from learnlab.optim.trajectory_runs import averaging_worker, equivalent_learning_rate, final_steps, probe_run

PROBE_MODELS = ("mlp", "cnn", "resnet_bn")
VERY_LOW_ONE_STEP_RATIO = 0.2
PARABOLA_R2_BOUND = 0.95
PREDICTION_LOG2_BOUND = 1.0  # "the model predicts it": within a factor of 2, fixed before measuring


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every knob of the study; the defaults are the ``quick`` preset.

    Attributes:
        dataset: ``digits`` (sklearn 8x8) or ``mnist1d`` (generated locally) for both experiments.
        mnist1d_samples: examples generated when ``dataset`` is ``mnist1d``.
        probe_models: models whose fixed-batch losses are probed (claims 1–2).
        probe_width: width of the probed models (see ``learnlab.data.models.build_model``).
        probe_learning_rate, probe_batch_size: plain SGD of the probed runs.
        probe_checkpoints: steps at which the probe runs.
        probe_batches: fixed batches probed at each checkpoint.
        probe_points: λ grid points on [0, 2λ_min].
        nqm_dim, nqm_min_curvature, nqm_learning_rate, nqm_decay, nqm_spacing: the noisy quadratic model
            (d = 200, h log-spaced on [0.01, 1], s = 1, λ = 0.5, β = 0.99, k = 2000).
        nqm_steps, nqm_chains: simulated steps after burn-in, and independent chains.
        label_noise: fraction of training labels replaced by another class (claims 4–5).
        averaging_model, averaging_width: the model of the averaging runs (a CNN of ≈ 4.5k parameters).
        learning_rate, batch_size, weight_decay: SGD of the averaging runs.
        averaging_start: T0, the step where branches at lower learning rates start and SWA begins.
        total_steps: T, the end of every run.
        spacings: two-point spacings k swept, averaging θ_T and θ_{T−k}.
        claim_spacing: the k that claim 4 tests, fixed before measuring ("many steps apart").
        ema_decays: EMA decays β (zero-initialised, debiased, updated every step from step 1).
        lr_fractions: learning rates of the branches continued from T0, as fractions of ``learning_rate``: a
            decreasing ladder, long enough to reach the equivalent rate of the averages (claim 5).
        num_seeds: independent runs (initialisation, batches, label noise and splits).
        eval_every: steps between test-loss evaluations of the curves in [T0, T].
        final_points, final_stride: every method is scored at the end times T, T − stride, ...
            (``final_points`` of them) and the scores are averaged (see :func:`final_steps`).
        workers: processes that run the seeds of the averaging runs in parallel (1 = in this process).
    """

    dataset: Literal["digits", "mnist1d"] = "digits"
    mnist1d_samples: int = positive(4000)
    probe_models: tuple[str, ...] = PROBE_MODELS
    probe_width: int = positive(16)
    probe_learning_rate: float = positive(0.05)
    probe_batch_size: int = positive(32)
    probe_checkpoints: tuple[int, ...] = positive((20, 100, 300))
    probe_batches: int = positive(4)
    probe_points: int = ranged(13, ge=3)  # a parabola has three coefficients
    probe_interval: Literal["fitted", "doubling"] = "fitted"
    nqm_dim: int = positive(200)
    nqm_min_curvature: float = ranged(0.01, gt=0, lt=1)  # curvatures lie in [min, 1]
    nqm_learning_rate: float = ranged(0.5, gt=0, lt=2)
    nqm_decay: float = ranged(0.99, ge=0, lt=1)
    nqm_spacing: int = positive(2000)
    nqm_steps: int = positive(10000)
    nqm_chains: int = positive(32)
    label_noise: float = ranged(0.2, ge=0, lt=1)
    averaging_model: str = "cnn"
    averaging_width: int = positive(16)
    learning_rate: float = positive(0.2)
    batch_size: int = positive(32)
    weight_decay: float = nonnegative(1e-3)
    averaging_start: int = positive(2000)
    total_steps: int = 4000
    spacings: tuple[int, ...] = positive((50, 200, 1000))
    claim_spacing: int = 1000
    ema_decays: tuple[float, ...] = ranged((0.99, 0.995, 0.999), ge=0, lt=1)
    lr_fractions: tuple[float, ...] = ranged((0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
                                              0.001953125), gt=0, lt=1)
    num_seeds: int = positive(3)
    eval_every: int = positive(250)
    final_points: int = positive(8)
    final_stride: int = positive(100)
    workers: int = positive(2)

    def validate(self) -> None:
        if set(self.probe_models) != set(PROBE_MODELS):
            raise ValueError(f"probe_models must be {', '.join(PROBE_MODELS)} (claim 1 reads each)")
        if self.nqm_spacing % 10:
            raise ValueError("nqm_spacing must be a multiple of 10")
        if self.total_steps <= self.averaging_start:
            raise ValueError("total_steps must exceed averaging_start")
        if max(self.spacings) > self.total_steps - 1:
            raise ValueError("spacings must be in [1, total_steps - 1]")
        if self.claim_spacing not in self.spacings:
            raise ValueError("claim_spacing must be one of spacings")
        if 0.5 not in self.lr_fractions or list(self.lr_fractions) != sorted(self.lr_fractions, reverse=True):
            raise ValueError("lr_fractions must be decreasing and include 0.5 (claim 4)")
        if len(self.ema_decays) < 2:
            raise ValueError("ema_decays needs at least two horizons (claim 5)")
        first_end = self.total_steps - (self.final_points - 1) * self.final_stride
        if first_end <= self.averaging_start or first_end - max(self.spacings) < 1:
            raise ValueError("the earliest end time T - (final_points - 1) * final_stride must exceed "
                             "averaging_start and max(spacings)")


PRESETS = {
    "smoke": Config(probe_width=8, probe_checkpoints=(5, 20), probe_batches=1, probe_points=7, nqm_dim=20, nqm_decay=0.9,
                    nqm_spacing=100, nqm_steps=500, nqm_chains=8, averaging_width=8, averaging_start=60, total_steps=120,
                    spacings=(10, 50), claim_spacing=50, ema_decays=(0.9, 0.99), lr_fractions=(0.5, 0.25, 0.125),
                    num_seeds=1, eval_every=30, final_points=2, final_stride=10),
    "quick": Config(),
    # The paper trains ResNets on ImageNet; on a GPU, more seeds, longer runs and a wider sweep.
    "full": Config(dataset="mnist1d", mnist1d_samples=10000, probe_width=32, probe_batches=16,
                   probe_checkpoints=(20, 100, 300, 1000), nqm_steps=400000, nqm_chains=64,
                   averaging_model="resnet_bn", averaging_width=16, averaging_start=10000, total_steps=20000,
                   spacings=(50, 200, 1000, 5000), claim_spacing=5000, ema_decays=(0.99, 0.995, 0.999, 0.9999),
                   lr_fractions=(0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625), num_seeds=5, eval_every=500, final_points=10, final_stride=500),
}


def _noisy_quadratic(config: Config, ctx: RunContext) -> dict[str, float]:
    curvatures = torch.logspace(np.log10(config.nqm_min_curvature), 0, config.nqm_dim, dtype=torch.float64)
    prediction = predict_noisy_quadratic(curvatures, 1.0, config.nqm_learning_rate, config.nqm_decay, config.nqm_spacing)
    simulation = simulate_noisy_quadratic(curvatures, 1.0, config.nqm_learning_rate, config.nqm_decay, config.nqm_spacing,
                                          config.nqm_steps, config.nqm_chains, ctx.generator("nqm"))
    result = {}
    for name in ("sgd", "ema", "two_point"):
        result[f"nqm_{name}_formula"] = getattr(prediction, name)
        result[f"nqm_{name}_simulated"] = getattr(simulation, name)
        result[f"nqm_{name}_ratio"] = getattr(simulation, name) / getattr(prediction, name)
    result["nqm_sgd_half_lr_formula"] = prediction.sgd_half_learning_rate
    return result


def _summarise_averaging(config: Config, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    methods = (["last"] + [f"two_point_{k}" for k in config.spacings] + [f"ema_{d}" for d in config.ema_decays]
               + ["swa"] + [f"lr_{f}" for f in config.lr_fractions])
    table, mean = [], {}
    for method in methods:
        row = {"method": method}
        for key in ("train_loss", "test_loss", "test_accuracy"):
            values = [float(seed[f"{method}.{key}"]) for seed in seeds]
            row[key] = float(np.mean(values))
            row[f"{key}_std"] = float(np.std(values))
        mean[method] = row["test_loss"]
        table.append(row)
    k = config.claim_spacing
    measured: dict[str, Any] = {
        "averaging_table": table,
        "last_test_loss": mean["last"],
        "half_lr_test_loss": mean["lr_0.5"],
        "two_point_test_loss": mean[f"two_point_{k}"],
        "two_point_to_last": mean[f"two_point_{k}"] / mean["last"],
        "two_point_to_half_lr": mean[f"two_point_{k}"] / mean["lr_0.5"],
        "two_point_improves_every_seed": all(
            float(s[f"two_point_{k}.test_loss"]) < float(s["last.test_loss"]) for s in seeds),
    }
    # C4 over seeds: the per-seed ratio and its spread.
    per_seed = [float(seed[f"two_point_{k}.test_loss"]) / float(seed["lr_0.5.test_loss"]) for seed in seeds]
    measured.update(two_point_to_half_lr_per_seed=per_seed, two_point_to_half_lr_std=float(np.std(per_seed)))
    measured.update(_equivalent_learning_rates(config, seeds, mean))
    return measured


def _equivalent_learning_rates(config: Config, seeds: list[dict[str, Any]], mean: dict[str, float]) -> dict[str, Any]:
    """C5: the equivalent learning rate of each average against its horizon, measured and predicted.

    Measured: the constant rate (fraction of η) whose run continued from T0 reaches the average's
    test loss, read off the ladder of lower-rate runs. Predicted: the noisy quadratic model in one
    direction of the curvature measured at T0, h = 1/λ* (λ* the best step of fixed batches along
    their gradients), where an average with variance factor f matches SGD at the rate of
    :func:`~learnlab.optim.nqm.equivalent_learning_rate_fraction`. The horizon of the EMA is
    τ = 1/(1 − β); SWA over a window of W iterates has the variance of an EMA with τ = W/2.
    """
    fractions = [1.0] + list(config.lr_fractions)
    ladder = [mean["last"]] + [mean[f"lr_{f}"] for f in config.lr_fractions]
    step_curvature = config.learning_rate / float(np.mean([seed["curvature_best_step"] for seed in seeds]))
    contraction = torch.tensor(1 - step_curvature, dtype=torch.float64)
    window = int(np.mean([t - config.averaging_start for t in final_steps(config)]))
    factors = {f"ema_{d}": (1 / (1 - d), float(ema_variance_factor(contraction, d))) for d in config.ema_decays}
    factors["swa"] = (window / 2, float(uniform_average_variance_factor(contraction, window)))
    rows = []
    for method, (horizon, factor) in sorted(factors.items(), key=lambda item: item[1][0]):
        measured = equivalent_learning_rate(mean[method], fractions, ladder)
        predicted = equivalent_learning_rate_fraction(step_curvature, factor) if 0 < step_curvature < 2 else None
        rows.append({"method": method, "horizon": horizon, "measured": measured, "predicted": predicted})
    values = [row["measured"] for row in rows]
    errors = [abs(math.log2(row["predicted"] / row["measured"])) if row["measured"] and row["predicted"] else math.inf
              for row in rows]
    return {
        "equivalent_lr_table": rows,
        **{f"equivalent_lr_fraction_{row['method']}": row["measured"] for row in rows},
        **{f"predicted_lr_fraction_{row['method']}": row["predicted"] for row in rows},
        "nqm_step_curvature": step_curvature,
        "equivalent_lr_outside_ladder": [row["method"] for row in rows if row["measured"] is None],
        "equivalent_lr_decreases_with_horizon": None not in values and all(b < a for a, b in zip(values, values[1:])),
        "equivalent_lr_prediction_max_log2_error": max(errors),
    }


# ---------------------------------------------------------------- run
def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    probes = {name: ctx.stage(f"probe_{name}", lambda name=name: probe_run(config, ctx, name))
              for name in config.probe_models}
    all_r2 = [r for probe in probes.values() for r in probe["r_squared"]]
    measured["parabola_r2_median"] = float(np.median(all_r2))
    measured["parabola_r2_min"] = float(np.min(all_r2))
    for name, probe in probes.items():
        measured[f"{name}_parameters"] = probe["parameters"]
        measured[f"{name}_one_step_ratio_median"] = float(np.median(probe["one_step_ratio"]))
        measured[f"{name}_parabola_r2_median"] = float(np.median(probe["r_squared"]))
        measured[f"{name}_trajectory_parabola_r2_median"] = float(np.median(probe["trajectory_r2"]))
        last = [i for i, c in enumerate(probe["checkpoint"]) if c == max(config.probe_checkpoints)]
        measured[f"{name}_best_step_over_lr_final"] = float(np.median([probe["best_step_over_lr"][i] for i in last]))
        first = [i for i, c in enumerate(probe["checkpoint"]) if c == min(config.probe_checkpoints)]
        measured[f"{name}_best_step_over_lr_first"] = float(np.median([probe["best_step_over_lr"][i] for i in first]))
    if "resnet_bn" in probes:
        measured["resnet_bn_one_step_very_low"] = measured["resnet_bn_one_step_ratio_median"] <= VERY_LOW_ONE_STEP_RATIO

    measured.update(ctx.stage("noisy_quadratic", lambda: _noisy_quadratic(config, ctx)))

    # The seeds are independent: parallel worker processes (one thread each), resumable per seed.
    seeds = ctx.stage_items("averaging", [f"seed{seed}" for seed in range(config.num_seeds)], averaging_worker, config,
                            workers=config.workers, description="averaging runs (seeds)").records
    measured.update(_summarise_averaging(config, seeds))

    plot_parabolas(ctx, config, probes)
    plot_trajectory_losses(ctx, config, probes)
    plot_spacing(ctx, config, measured["averaging_table"])
    plot_curves(ctx, config, seeds)
    plot_equivalent_learning_rates(ctx, measured["equivalent_lr_table"], config.lr_fractions[-1])
    return measured


CLAIMS = (
    Claim(
        "C1",
        "The loss of a fixed mini-batch along its own gradient is a parabola in the step size (fit on [0, 2λ*]), for "
        "every model and for the BatchNorm ResNet on its own (median R² per model; the loss along the SGD "
        "trajectory, L_B(θ_t), is reported as <model>_trajectory_parabola_r2_median)",
        "abstract ('for ResNet ... the loss of any fixed mini-batch ... accurately modelled by a quadratic')",
        "'remarkably convex-like'; R² >= 0.95",
        tuple(at_least(f"{name}_parabola_r2_median", PARABOLA_R2_BOUND) for name in PROBE_MODELS),
    ),
    Claim(
        "C2",
        "One GD step of the best size reaches a very low loss on that batch (BatchNorm ResNet); ratios for MLP and CNN reported",
        "abstract ('a very low loss ... in one GD step')",
        f"φ(λ*)/φ(0) 'very low' (<= {VERY_LOW_ONE_STEP_RATIO})",
        (at_most("resnet_bn_one_step_ratio_median", VERY_LOW_ONE_STEP_RATIO),),
    ),
    Claim(
        "C3",
        "Noisy quadratic model: simulated stationary excess losses of SGD, EMA and two-point averaging match the closed forms",
        "reference computation of the noisy quadratic model (closed forms 3.340, 0.1016, 1.670)",
        "within 2%",
        (within("nqm_sgd_ratio", 1.0, 0.02), within("nqm_ema_ratio", 1.0, 0.02), within("nqm_two_point_ratio", 1.0, 0.02)),
    ),
    Claim(
        "C4",
        "Averaging two iterates many steps apart improves test loss over the last iterate and matches half the learning "
        "rate (mean over seeds; per-seed ratios and their spread: two_point_to_half_lr_per_seed, _std)",
        "abstract (two points many steps apart); Defazio et al. 2024 ('a learning rate two times smaller')",
        "two-point ≈ η/2 run, both better than the last iterate",
        (at_most("two_point_to_last", 1.0), within("two_point_to_half_lr", 1.0, 0.10)),
    ),
    Claim(
        "C5",
        "Iterate aggregates are equivalent to learning-rate schedules: for several EMA horizons τ and SWA, the "
        "equivalent learning rate (the constant rate whose continued run reaches the same test loss) decreases "
        "monotonically with τ, and the noisy quadratic model with the measured curvature predicts it within a "
        "factor of 2 (table equivalent_lr_table; figure equivalent_learning_rates)",
        "abstract ('iterate aggregates are equivalent to learning-rate schedules ... the model matches the "
        "training trajectories'); noisy quadratic model",
        "equivalent rate falls with τ; model matches",
        (is_true("equivalent_lr_decreases_with_horizon"),
         at_most("equivalent_lr_prediction_max_log2_error", PREDICTION_LOG2_BOUND)),
    ),
)

STUDY = Study(
    name="trajectories",
    title="Training trajectories, mini-batch losses and the curious role of the learning rate",
    paper="Sandler, Zhmoginov, Vladymyrov, Miller. 2023. arXiv:2301.02312",
    presets=PRESETS,
    run=run,
    claims=CLAIMS,
    summary="Fixed-batch losses are parabolas along the gradient; weight averages act like lower learning rates.",
    figures=("parabola_fits", "fixed_batch_along_trajectory", "two_point_vs_spacing", "ema_vs_reduced_lr",
             "equivalent_learning_rates"),
    reference_seconds={"quick": 230},
)
