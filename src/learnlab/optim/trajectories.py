"""Study ``trajectories``: "Training trajectories, mini-batch losses and the curious role of the
learning rate" (Sandler, Zhmoginov, Vladymyrov, Miller 2023, arXiv:2301.02312).

Notes: ``../shared/papers/trajectories.md``. The study checks, at small scale on CPU:

1. the loss of a fixed mini-batch along its own gradient, φ_B(λ) = L_B(θ − λ g_B), is a parabola
   (R² of the quadratic fit on [0, 2λ_min], at checkpoints of SGD runs of an MLP, a CNN and a
   BatchNorm ResNet);
2. one step of the best size λ* on that batch reaches a very low loss (φ(λ*)/φ(0) <= 0.2) for the
   BatchNorm ResNet; the ratio is reported for every model;
3. the noisy quadratic model's simulated stationary excess losses of SGD, its EMA and its two-point
   average match the closed forms of notes §4 within 2%;
4. on 8x8 digits with 20% symmetric training-label noise (a noise floor, notes §6), averaging two
   SGD iterates k steps apart improves the clean test loss over the last iterate and lands within
   10% of continuing at half the learning rate (mean over seeds); EMA and SWA shown beside;
5. the EMA (β = 0.99) of the SGD run matches, within 10% in clean test loss, the run continued at a
   quarter of the learning rate — the pairing of the notes' pilot table (C) (0.328 vs 0.340),
   stated before measuring; the "equivalent learning rate" of each average is reported too.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from learnlab.core import Claim, RunContext, Study, at_least, at_most, within
from learnlab.core.io import pyplot
from learnlab.core.runtime import derive_seed
from learnlab.data.datasets import load_dataset
from learnlab.data.models import build_model, count_parameters
from learnlab.data.training import SGDSettings, batch_indices, evaluate, make_optimizer, train_steps
from learnlab.optim.averaging import (
    averaged_model,
    averaged_module_parameters,
    ema_model,
    snapshot,
    swa_model,
    two_point_average,
)
from learnlab.optim.loss_probe import probe_fixed_batch
from learnlab.optim.nqm import predict_noisy_quadratic, simulate_noisy_quadratic

PROBE_MODELS = ("mlp", "cnn", "resnet_bn")
VERY_LOW_ONE_STEP_RATIO = 0.2


@dataclass(frozen=True)
class Config:
    """Every knob of the study; the defaults are the ``quick`` preset.

    Attributes:
        dataset: ``digits`` (sklearn 8x8) or ``mnist1d`` (generated locally) for both experiments.
        mnist1d_samples: examples generated when ``dataset`` is ``mnist1d``.
        probe_models: models whose fixed-batch losses are probed (claims 1–2).
        probe_width: width of the probed models (see ``learnlab.data.models.build_model``).
        probe_learning_rate, probe_batch_size: plain SGD of the probed runs (notes pilot (B): 0.05, 32).
        probe_checkpoints: steps at which the probe runs (pilot (B): 20, 100, 300).
        probe_batches: fixed batches probed at each checkpoint.
        probe_points: λ grid points on [0, 2λ_min].
        nqm_dim, nqm_min_curvature, nqm_learning_rate, nqm_decay, nqm_spacing: the NQM of notes §5
            (d = 200, h log-spaced on [0.01, 1], s = 1, λ = 0.5, β = 0.99, k = 2000).
        nqm_steps, nqm_chains: simulated steps after burn-in, and independent chains.
        label_noise: fraction of training labels replaced by another class (claims 4–5).
        averaging_model, averaging_width: the model of the averaging runs (pilot (C): CNN, ≈ 4.5k params).
        learning_rate, batch_size, weight_decay: SGD of the averaging runs (pilot (C): 0.2, 32, 1e-3).
        averaging_start: T0, the step where branches at lower learning rates start and SWA begins.
        total_steps: T, the end of every run.
        spacings: two-point spacings k swept, averaging θ_T and θ_{T−k}.
        claim_spacing: the k that claim 4 tests, fixed before measuring ("many steps apart").
        ema_decays: EMA decays β (zero-initialised, debiased, updated every step from step 1).
        lr_fractions: learning rates of the branches continued from T0, as fractions of ``learning_rate``.
        num_seeds: independent runs (initialisation, batches, label noise and splits).
        eval_every: steps between test-loss evaluations of the curves in [T0, T].
        final_points, final_stride: every method is scored at the end times T, T − stride, ...
            (``final_points`` of them) and the scores are averaged (see :func:`final_steps`).
        workers: processes that run the seeds of the averaging runs in parallel (1 = in this process).
    """

    dataset: str = "digits"
    mnist1d_samples: int = 4000
    probe_models: tuple[str, ...] = PROBE_MODELS
    probe_width: int = 16
    probe_learning_rate: float = 0.05
    probe_batch_size: int = 32
    probe_checkpoints: tuple[int, ...] = (20, 100, 300)
    probe_batches: int = 4
    probe_points: int = 13
    nqm_dim: int = 200
    nqm_min_curvature: float = 0.01
    nqm_learning_rate: float = 0.5
    nqm_decay: float = 0.99
    nqm_spacing: int = 2000
    nqm_steps: int = 10000
    nqm_chains: int = 32
    label_noise: float = 0.2
    averaging_model: str = "cnn"
    averaging_width: int = 16
    learning_rate: float = 0.2
    batch_size: int = 32
    weight_decay: float = 1e-3
    averaging_start: int = 2000
    total_steps: int = 4000
    spacings: tuple[int, ...] = (50, 200, 1000)
    claim_spacing: int = 1000
    ema_decays: tuple[float, ...] = (0.99, 0.999)
    lr_fractions: tuple[float, ...] = (0.5, 0.25)
    num_seeds: int = 3
    eval_every: int = 250
    final_points: int = 8
    final_stride: int = 100
    workers: int = 2

    def __post_init__(self) -> None:
        if self.dataset not in ("digits", "mnist1d"):
            raise ValueError(f"dataset must be digits or mnist1d, got {self.dataset!r}")
        for name in ("mnist1d_samples", "probe_width", "probe_batch_size", "probe_batches", "nqm_dim", "nqm_spacing",
                     "nqm_steps", "nqm_chains", "averaging_width", "batch_size", "averaging_start", "num_seeds",
                     "eval_every", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.probe_points < 3:
            raise ValueError("probe_points must be >= 3 (a parabola has three coefficients)")
        if not self.probe_checkpoints or min(self.probe_checkpoints) < 1:
            raise ValueError("probe_checkpoints must be positive steps")
        if not self.probe_models:
            raise ValueError("probe_models must not be empty")
        for name in ("probe_learning_rate", "learning_rate", "nqm_learning_rate", "nqm_min_curvature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.nqm_min_curvature < 1 or not self.nqm_learning_rate < 2:
            raise ValueError("need nqm_min_curvature < 1 and nqm_learning_rate < 2 (curvatures lie in [min, 1])")
        if not 0 <= self.nqm_decay < 1 or any(not 0 <= d < 1 for d in self.ema_decays):
            raise ValueError("EMA decays must be in [0, 1)")
        if self.nqm_spacing % 10:
            raise ValueError("nqm_spacing must be a multiple of 10")
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"label_noise must be in [0, 1), got {self.label_noise}")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")
        if self.total_steps <= self.averaging_start:
            raise ValueError("total_steps must exceed averaging_start")
        if not self.spacings or min(self.spacings) < 1 or max(self.spacings) > self.total_steps - 1:
            raise ValueError("spacings must be in [1, total_steps - 1]")
        if self.claim_spacing not in self.spacings:
            raise ValueError("claim_spacing must be one of spacings")
        if 0.5 not in self.lr_fractions or any(not 0 < f < 1 for f in self.lr_fractions):
            raise ValueError("lr_fractions must lie in (0, 1) and include 0.5 (claim 4)")
        if not self.ema_decays:
            raise ValueError("ema_decays must not be empty")
        if self.final_points < 1 or self.final_stride < 1:
            raise ValueError("final_points and final_stride must be >= 1")
        first_end = self.total_steps - (self.final_points - 1) * self.final_stride
        if first_end <= self.averaging_start or first_end - max(self.spacings) < 1:
            raise ValueError("the earliest end time T - (final_points - 1) * final_stride must exceed "
                             "averaging_start and max(spacings)")


PRESETS = {
    "smoke": Config(probe_models=("mlp", "resnet_bn"), probe_width=8, probe_checkpoints=(5, 20), probe_batches=1,
                    probe_points=7, nqm_dim=20, nqm_decay=0.9, nqm_spacing=100, nqm_steps=500, nqm_chains=8, averaging_width=8,
                    averaging_start=60, total_steps=120, spacings=(10, 50), claim_spacing=50, num_seeds=1,
                    eval_every=30, final_points=2, final_stride=10),
    "quick": Config(),
    # The paper trains ResNets on ImageNet; on a GPU, more seeds, longer runs and a wider sweep.
    "full": Config(dataset="mnist1d", mnist1d_samples=10000, probe_width=32, probe_batches=16,
                   probe_checkpoints=(20, 100, 300, 1000), nqm_steps=400000, nqm_chains=64,
                   averaging_model="resnet_bn", averaging_width=16, averaging_start=10000, total_steps=20000,
                   spacings=(50, 200, 1000, 5000), claim_spacing=5000, ema_decays=(0.99, 0.999, 0.9999),
                   lr_fractions=(0.5, 0.25, 0.125), num_seeds=5, eval_every=500, final_points=10, final_stride=500),
}


def _data(config: Config, seed: int, label_noise: float, device: torch.device | str = "cpu"):
    data = load_dataset(config.dataset, num_samples=config.mnist1d_samples, seed=seed, label_noise=label_noise)
    return data.to(device)


# ---------------------------------------------------------------- claims 1–2: fixed-batch probe
def _probe_model(config: Config, ctx: RunContext, name: str) -> dict[str, Any]:
    """Train ``name`` with plain SGD and probe fixed batches at each checkpoint."""
    data = _data(config, ctx.seed, 0.0, ctx.device)
    model = build_model(name, data.input_shape, data.num_classes, config.probe_width,
                        ctx.generator("probe", name, "init")).to(ctx.device)
    settings = SGDSettings(config.probe_learning_rate, config.probe_batch_size)
    optimizer = make_optimizer(model, settings)
    batches = batch_indices(len(data.train), settings.batch_size, ctx.generator("probe", name, "batches"))
    fixed = [torch.randperm(len(data.train), generator=ctx.generator("probe", name, "fixed", str(i)))[:settings.batch_size]
             for i in range(config.probe_batches)]
    records: dict[str, list] = {key: [] for key in ("checkpoint", "batch", "r_squared", "best_step_over_lr",
                                                   "one_step_ratio", "steps", "losses", "fit")}
    step = 0
    for checkpoint in sorted(config.probe_checkpoints):
        train_steps(model, data.train, checkpoint - step, optimizer, batches,
                    on_step=lambda s, loss: ctx.check_finite(float(loss), f"{name} probe-run loss at step {s}"),
                    first_step=step + 1)
        step = checkpoint
        for index, batch in enumerate(fixed):
            result = probe_fixed_batch(model, data.train.x[batch], data.train.y[batch], settings.learning_rate,
                                       num_points=config.probe_points)
            values = dict(checkpoint=checkpoint, batch=index, r_squared=result.fit.r_squared,
                          best_step_over_lr=result.best_step_over_learning_rate, one_step_ratio=result.one_step_ratio)
            for key, value in values.items():
                records[key].append(value)
            records["steps"].append(result.steps.tolist())
            records["losses"].append(result.losses.tolist())
            records["fit"].append([result.fit.a, result.fit.b, result.fit.c])
            ctx.log(model=name, **values, initial_loss=result.initial_loss)
    return {"parameters": count_parameters(model), **records}


# ---------------------------------------------------------------- claim 3: noisy quadratic model
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


# ---------------------------------------------------------------- claims 4–5: averaging runs
def _scores(model: torch.nn.Module, data) -> dict[str, float]:
    test = evaluate(model, data.test)
    train = evaluate(model, data.train)  # noisy training labels: the loss SGD optimises
    return {"test_loss": test["loss"], "test_accuracy": test["accuracy"], "train_loss": train["loss"]}


def final_steps(config: Config) -> list[int]:
    """The end times t at which every method is scored: T, T − stride, ..., (``final_points`` of them).

    The claims concern expected (stationary) losses (notes §4), while one iterate of a noisy SGD run
    is a single random draw (its test loss jumps by tens of percent between evaluations), so every
    method's score is its mean over these end times: the last iterate θ_t, the two-point average
    (θ_t + θ_{t−k})/2, the EMA and SWA at t, and the lower-learning-rate branches at t.
    """
    return [config.total_steps - j * config.final_stride for j in range(config.final_points)]


def _mean_scores(records: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([record[key] for record in records])) for key in records[0]}


def _averaging_seed(config: Config, ctx: RunContext, seed: int) -> dict[str, Any]:
    """One seed: the SGD run at η with its averages, and branches at lower η from T0."""
    data = _data(config, ctx.seed * 1000 + seed, config.label_noise, ctx.device)
    name = f"seed{seed}"
    model = build_model(config.averaging_model, data.input_shape, data.num_classes, config.averaging_width,
                        ctx.generator("averaging", name, "init")).to(ctx.device)
    settings = SGDSettings(config.learning_rate, config.batch_size, config.weight_decay)
    optimizer = make_optimizer(model, settings)
    batches = batch_indices(len(data.train), settings.batch_size, ctx.generator("averaging", name, "batches"))
    emas = {decay: ema_model(model, decay) for decay in config.ema_decays}
    swa = swa_model(model)
    ends = final_steps(config)
    snapshot_steps = set(ends) | {t - k for t in ends for k in config.spacings}
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    scores: dict[str, list[dict[str, float]]] = {}
    curves: dict[str, list[float]] = {"steps": []}
    bn_inputs = data.train.x
    total, start = config.total_steps, config.averaging_start

    def record_curve(step: int) -> None:
        curves["steps"].append(step)
        curves.setdefault("last", []).append(evaluate(model, data.test)["loss"])
        for decay, ema in emas.items():
            ema_net = averaged_model(model, averaged_module_parameters(ema), bn_inputs)
            curves.setdefault(f"ema_{decay}", []).append(evaluate(ema_net, data.test)["loss"])

    def record_scores(step: int) -> None:
        scores.setdefault("last", []).append(_scores(model, data))
        for decay, ema in emas.items():
            ema_net = averaged_model(model, averaged_module_parameters(ema), bn_inputs)
            scores.setdefault(f"ema_{decay}", []).append(_scores(ema_net, data))
        swa_net = averaged_model(model, averaged_module_parameters(swa), bn_inputs)
        scores.setdefault("swa", []).append(_scores(swa_net, data))

    def on_step(step: int, loss: torch.Tensor) -> None:
        for ema in emas.values():
            ema.update_parameters(model)
        if step > start:
            swa.update_parameters(model)
        if step in snapshot_steps:
            snapshots[step] = snapshot(model)
        if step % 50 == 0:
            ctx.check_finite(float(loss), f"{name} training loss at step {step}")
            bar.advance(50)
        if step >= start and step % config.eval_every == 0:
            record_curve(step)
        if step in ends:
            record_scores(step)

    with ctx.progress(f"averaging {name}", total + len(config.lr_fractions) * (total - start)) as bar:
        train_steps(model, data.train, start, optimizer, batches, on_step)
        branch_start = {key: value.clone() for key, value in model.state_dict().items()}
        train_steps(model, data.train, total - start, optimizer, batches, on_step, first_step=start + 1)
        for k in config.spacings:
            scores[f"two_point_{k}"] = [
                _scores(averaged_model(model, two_point_average(snapshots[t], snapshots[t - k]), bn_inputs), data)
                for t in ends
            ]
        for fraction in config.lr_fractions:
            branch = build_model(config.averaging_model, data.input_shape, data.num_classes,
                                 config.averaging_width).to(ctx.device)
            branch.load_state_dict(branch_start)
            branch_optimizer = make_optimizer(branch, SGDSettings(config.learning_rate * fraction, config.batch_size,
                                                                  config.weight_decay))
            branch_batches = batch_indices(len(data.train), settings.batch_size,
                                           ctx.generator("averaging", name, "branch", str(fraction)))
            curve: list[float] = [curves["last"][0]]
            branch_scores: list[dict[str, float]] = []

            def on_branch_step(step: int, loss: torch.Tensor, net=branch, curve=curve, out=branch_scores) -> None:
                if step % 50 == 0:
                    ctx.check_finite(float(loss), f"{name} branch loss at step {step}")
                    bar.advance(50)
                if step % config.eval_every == 0:
                    curve.append(evaluate(net, data.test)["loss"])
                if step in ends:
                    out.append(_scores(net, data))

            train_steps(branch, data.train, total - start, branch_optimizer, branch_batches, on_branch_step,
                        first_step=start + 1)
            curves[f"lr_{fraction}"] = curve
            scores[f"lr_{fraction}"] = branch_scores
    results = {method: _mean_scores(records) for method, records in scores.items()}
    for method, values in results.items():
        ctx.log(seed=seed, method=method, **values)
    flat = {f"{method}.{key}": value for method, values in results.items() for key, value in values.items()}
    return {**flat, **{f"curve.{key}": value for key, value in curves.items()}}


class _WorkerContext:
    """The part of :class:`RunContext` that ``_averaging_seed`` uses, for a worker process.

    Random streams are derived from the run seed exactly as ``RunContext.generator`` derives them,
    so a seed computed in a worker gives the same numbers as in the main process. Log records are
    collected and written by the main process; there is no progress bar.
    """

    device = torch.device("cpu")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.records: list[dict[str, Any]] = []
        self.check_finite = RunContext.check_finite

    def generator(self, *names: str) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.seed, *names))

    def log(self, **record: Any) -> None:
        self.records.append(record)

    def progress(self, description: str, total: int) -> Any:
        return contextlib.nullcontext(SimpleNamespace(advance=lambda *args, **kwargs: None))


def _averaging_seed_in_worker(config: Config, run_seed: int, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    torch.set_num_threads(1)
    ctx = _WorkerContext(run_seed)
    return _averaging_seed(config, ctx, seed), ctx.records  # type: ignore[arg-type]


def _averaging_seeds(config: Config, ctx: RunContext) -> list[dict[str, Any]]:
    """All seeds' averaging runs, each a resumable stage; missing seeds run in ``config.workers``
    parallel processes (one thread each; notes §6 "CPU threading"), or in this process when 1."""
    names = [f"averaging_seed{seed}" for seed in range(config.num_seeds)]
    missing = [seed for seed, name in enumerate(names) if not (ctx.stages_dir / f"{name}.json").exists()]
    computed: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    if config.workers > 1 and len(missing) > 1 and ctx.device.type == "cpu":
        spawn = multiprocessing.get_context("spawn")
        with ctx.progress("averaging runs (parallel seeds)", len(missing)) as bar:
            with ProcessPoolExecutor(min(config.workers, len(missing)), mp_context=spawn) as pool:
                futures = {pool.submit(_averaging_seed_in_worker, config, ctx.seed, seed): seed for seed in missing}
                for future in as_completed(futures):
                    computed[futures[future]] = future.result()
                    bar.advance(1)

    def compute(seed: int) -> dict[str, Any]:
        if seed not in computed:
            return _averaging_seed(config, ctx, seed)
        result, records = computed[seed]
        for record in records:  # logged inside the stage, so they carry its name
            ctx.log(**record)
        return result

    return [ctx.stage(name, lambda seed=seed: compute(seed)) for seed, name in enumerate(names)]


def _equivalent_learning_rate(loss: float, fractions: list[float], losses: list[float]) -> float | None:
    """The learning-rate fraction at which the last iterate's test loss would equal ``loss``:
    linear interpolation of log(fraction) against test loss along the ladder (1, fractions...)
    (notes §5, "equivalent LR"); None when ``loss`` lies outside the ladder's range of losses."""
    if not min(losses) <= loss <= max(losses):
        return None
    order = np.argsort(losses)
    x, y = np.asarray(losses)[order], np.log(np.asarray(fractions))[order]
    return float(np.exp(np.interp(loss, x, y)))


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
    if 0.25 in config.lr_fractions and 0.99 in config.ema_decays:
        measured["ema_to_quarter_lr"] = mean["ema_0.99"] / mean["lr_0.25"]
    fractions = [1.0] + list(config.lr_fractions)
    ladder = [mean["last"]] + [mean[f"lr_{f}"] for f in config.lr_fractions]
    for method in [f"ema_{d}" for d in config.ema_decays] + ["swa", f"two_point_{k}"]:
        measured[f"equivalent_lr_fraction_{method}"] = _equivalent_learning_rate(mean[method], fractions, ladder)
    return measured


# ---------------------------------------------------------------- run
def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    probes = {name: ctx.stage(f"probe_{name}", lambda name=name: _probe_model(config, ctx, name))
              for name in config.probe_models}
    all_r2 = [r for probe in probes.values() for r in probe["r_squared"]]
    measured["parabola_r2_median"] = float(np.median(all_r2))
    measured["parabola_r2_min"] = float(np.min(all_r2))
    for name, probe in probes.items():
        measured[f"{name}_parameters"] = probe["parameters"]
        measured[f"{name}_one_step_ratio_median"] = float(np.median(probe["one_step_ratio"]))
        measured[f"{name}_parabola_r2_median"] = float(np.median(probe["r_squared"]))
        last = [i for i, c in enumerate(probe["checkpoint"]) if c == max(config.probe_checkpoints)]
        measured[f"{name}_best_step_over_lr_final"] = float(np.median([probe["best_step_over_lr"][i] for i in last]))
        first = [i for i, c in enumerate(probe["checkpoint"]) if c == min(config.probe_checkpoints)]
        measured[f"{name}_best_step_over_lr_first"] = float(np.median([probe["best_step_over_lr"][i] for i in first]))
    if "resnet_bn" in probes:
        measured["resnet_bn_one_step_very_low"] = measured["resnet_bn_one_step_ratio_median"] <= VERY_LOW_ONE_STEP_RATIO

    measured.update(ctx.stage("noisy_quadratic", lambda: _noisy_quadratic(config, ctx)))

    seeds = _averaging_seeds(config, ctx)
    measured.update(_summarise_averaging(config, seeds))

    _plot_parabolas(ctx, config, probes)
    _plot_spacing(ctx, config, measured["averaging_table"])
    _plot_curves(ctx, config, seeds)
    return measured


# ---------------------------------------------------------------- figures
def _plot_parabolas(ctx: RunContext, config: Config, probes: dict[str, dict[str, Any]]) -> None:
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


def _plot_spacing(ctx: RunContext, config: Config, table: list[dict[str, Any]]) -> None:
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


def _plot_curves(ctx: RunContext, config: Config, seeds: list[dict[str, Any]]) -> None:
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


CLAIMS = (
    Claim(
        "C1",
        "The loss of a fixed mini-batch along its own gradient is a parabola in the step size",
        "abstract claim 1; notes §4, §5 (pilot B: R² 0.949–0.9996)",
        "'remarkably convex-like'; R² >= 0.95",
        (at_least("parabola_r2_median", 0.95),),
    ),
    Claim(
        "C2",
        "One GD step of the best size reaches a very low loss on that batch (BatchNorm ResNet); ratios for MLP and CNN reported",
        "abstract claim 1; notes §5 (pilot B did not reproduce it: 0.28–0.97)",
        f"φ(λ*)/φ(0) 'very low' (<= {VERY_LOW_ONE_STEP_RATIO})",
        (at_most("resnet_bn_one_step_ratio_median", VERY_LOW_ONE_STEP_RATIO),),
    ),
    Claim(
        "C3",
        "Noisy quadratic model: simulated stationary excess losses of SGD, EMA and two-point averaging match the closed forms",
        "notes §4–5 (reference computation: 3.340, 0.1016, 1.670)",
        "within 2%",
        (within("nqm_sgd_ratio", 1.0, 0.02), within("nqm_ema_ratio", 1.0, 0.02), within("nqm_two_point_ratio", 1.0, 0.02)),
    ),
    Claim(
        "C4",
        "Averaging two iterates many steps apart improves test loss over the last iterate and matches half the learning rate",
        "abstract claim 4; Defazio et al. 2024 summary; notes §5 pilot C",
        "two-point ≈ η/2 run, both better than the last iterate",
        (at_most("two_point_to_last", 1.0), within("two_point_to_half_lr", 1.0, 0.10)),
    ),
    Claim(
        "C5",
        "The EMA (β = 0.99) of an SGD run reaches the loss of the run continued at a reduced learning rate (η/4)",
        "abstract claim 3; notes §4 'averages as effective learning rates', pilot C (0.328 vs 0.340)",
        "similar loss (within 10%)",
        (within("ema_to_quarter_lr", 1.0, 0.10),),
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
)
