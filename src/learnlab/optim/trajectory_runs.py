"""The two experiments of Sandler et al. (2023) as reusable runs on the image substrate.

- :func:`probe_run`: SGD on a classifier, probing fixed mini-batches' losses along their own
  gradients at checkpoints (§3, the "convex-like" fixed-batch loss; :mod:`loss_probe`);
- :func:`averaging_run`: one SGD run at learning rate η with its iterate averages (two-point
  average of iterates k steps apart, debiased EMA, SWA; :mod:`averaging`) and the same run
  continued at lower learning rates from T0, every method scored at the same end times (§4–5,
  averages as learning-rate schedules);
- :func:`averaging_worker`: :func:`averaging_run` as a worker factory for parallel items
  (:mod:`learnlab.core.parallel`), one item per seed.

``config`` is the ``trajectories`` study's config (any object with the fields named in each
docstring); ``ctx`` a run context or an item context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

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
from learnlab.optim.loss_probe import fit_parabola, fixed_batch_loss, probe_fixed_batch


def study_data(config: Any, seed: int, label_noise: float, device: torch.device | str = "cpu"):
    """``config.dataset`` (``digits`` or ``mnist1d`` with ``config.mnist1d_samples``) split by ``seed``."""
    data = load_dataset(config.dataset, num_samples=config.mnist1d_samples, seed=seed, label_noise=label_noise)
    return data.to(device)


def probe_run(config: Any, ctx: Any, name: str) -> dict[str, Any]:
    """Train model ``name`` with plain SGD and probe ``config.probe_batches`` fixed batches at each checkpoint.

    ``config`` has the probe fields of the ``trajectories`` config (``dataset``, ``probe_*``);
    ``ctx`` is a run or item context (random streams, ``log``, ``check_finite``, ``device``).
    """
    data = study_data(config, ctx.seed, 0.0, ctx.device)
    model = build_model(name, data.input_shape, data.num_classes, config.probe_width,
                        ctx.generator("probe", name, "init")).to(ctx.device)
    settings = SGDSettings(config.probe_learning_rate, config.probe_batch_size)
    optimizer = make_optimizer(model, settings)
    batches = batch_indices(len(data.train), settings.batch_size, ctx.generator("probe", name, "batches"))
    fixed = [torch.randperm(len(data.train), generator=ctx.generator("probe", name, "fixed", str(i)))[:settings.batch_size]
             for i in range(config.probe_batches)]
    records: dict[str, list] = {key: [] for key in ("checkpoint", "batch", "r_squared", "best_step_over_lr",
                                                   "one_step_ratio", "steps", "losses", "fit")}
    along = [[fixed_batch_loss(model, data.train.x[batch], data.train.y[batch])] for batch in fixed]  # L_B(θ_t), t = 0, 1, ...

    def on_step(step: int, loss: torch.Tensor) -> None:
        ctx.check_finite(float(loss), f"{name} probe-run loss at step {step}")
        for losses, batch in zip(along, fixed):
            losses.append(fixed_batch_loss(model, data.train.x[batch], data.train.y[batch]))

    step = 0
    for checkpoint in sorted(config.probe_checkpoints):
        train_steps(model, data.train, checkpoint - step, optimizer, batches, on_step=on_step, first_step=step + 1)
        step = checkpoint
        for index, batch in enumerate(fixed):
            result = probe_fixed_batch(model, data.train.x[batch], data.train.y[batch], settings.learning_rate,
                                       num_points=config.probe_points, refit=config.probe_interval == "fitted")
            values = dict(checkpoint=checkpoint, batch=index, r_squared=result.fit.r_squared,
                          best_step_over_lr=result.best_step_over_learning_rate, one_step_ratio=result.one_step_ratio)
            for key, value in values.items():
                records[key].append(value)
            records["steps"].append(result.steps.tolist())
            records["losses"].append(result.losses.tolist())
            records["fit"].append([result.fit.a, result.fit.b, result.fit.c])
            ctx.log(model=name, **values, initial_loss=result.initial_loss)
    return {"parameters": count_parameters(model), **records, "trajectory_losses": along,
            "trajectory_r2": trajectory_parabola_r2(along, sorted(config.probe_checkpoints))}


def trajectory_parabola_r2(losses: list[list[float]], checkpoints: list[int]) -> list[float]:
    """R² of a parabola in t fitted to L_B(θ_t) on each segment between checkpoints (0, c_1], (c_1, c_2], ...

    The second reading of "the fixed-batch loss is convex-like": along the SGD trajectory itself
    (driven by other batches) rather than along the batch's own gradient. One value per batch and segment.
    """
    values = []
    for curve in losses:
        for start, end in zip([0, *checkpoints[:-1]], checkpoints):
            if end - start >= 3:
                values.append(fit_parabola(range(start, end + 1), curve[start:end + 1]).r_squared)
    return values


def _scores(model: torch.nn.Module, data) -> dict[str, float]:
    test = evaluate(model, data.test)
    train = evaluate(model, data.train)  # noisy training labels: the loss SGD optimises
    return {"test_loss": test["loss"], "test_accuracy": test["accuracy"], "train_loss": train["loss"]}


def final_steps(config: Any) -> list[int]:
    """The end times t at which every method is scored: T, T − stride, ..., (``final_points`` of them).

    The paper's statements concern expected (stationary) losses, while one iterate of a noisy SGD run
    is a single random draw (its test loss jumps by tens of percent between evaluations), so every
    method's score is its mean over these end times: the last iterate θ_t, the two-point average
    (θ_t + θ_{t−k})/2, the EMA and SWA at t, and the lower-learning-rate branches at t.
    """
    return [config.total_steps - j * config.final_stride for j in range(config.final_points)]


def _mean_scores(records: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([record[key] for record in records])) for key in records[0]}


def averaging_run(config: Any, ctx: Any, seed: int) -> dict[str, Any]:
    """One seed: the SGD run at η with its averages (two-point, EMA, SWA), and branches at lower η from T0.

    ``config`` has the averaging fields of the ``trajectories`` config; ``ctx`` is a run or item
    context. Returns flat scores ``"<method>.<metric>"`` (means over :func:`final_steps`) and the
    test-loss curves ``"curve.<method>"`` over [T0, T].
    """
    data = study_data(config, ctx.seed * 1000 + seed, config.label_noise, ctx.device)
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
        curvature_steps = [  # λ* of fixed batches at T0: the curvature 1/λ* that the noisy quadratic model is given
            probe_fixed_batch(model, data.train.x[index], data.train.y[index], config.learning_rate,
                              num_points=config.probe_points, refit=config.probe_interval == "fitted").best_step
            for index in (torch.randperm(len(data.train), generator=ctx.generator("averaging", name, "curvature", str(i)))
                          [:config.batch_size] for i in range(config.probe_batches))]
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
    return {**flat, **{f"curve.{key}": value for key, value in curves.items()},
            "curvature_best_step": float(np.median(curvature_steps))}


def equivalent_learning_rate(loss: float, fractions: list[float], losses: list[float]) -> float | None:
    """The learning-rate fraction at which the continued run's test loss would equal ``loss``.

    The ladder ``(fractions, losses)`` of runs continued from T0 at lower constant rates is read
    from the largest fraction down to the one with the lowest loss (below it, a rate too small to
    move in the budget raises the loss again); ``log(fraction)`` is interpolated linearly in the
    loss. None when ``loss`` lies outside the losses of that part of the ladder (e.g. lower than
    any constant rate reached).
    """
    order = np.argsort(fractions)[::-1]
    fractions, losses = np.asarray(fractions, dtype=float)[order], np.asarray(losses, dtype=float)[order]
    stop = int(np.argmin(losses)) + 1
    fractions, losses = fractions[:stop], losses[:stop]
    if not losses.min() <= loss <= losses.max():
        return None
    increasing = np.argsort(losses)
    return float(np.exp(np.interp(loss, losses[increasing], np.log(fractions[increasing]))))


def averaging_worker(config: Any, ctx: Any) -> Callable[[str], dict[str, Any]]:
    """Worker factory for :func:`learnlab.core.parallel.run_items`: item ``"seed<i>"`` is ``averaging_run(config, ctx, i)``."""
    return lambda key: averaging_run(config, ctx, int(key.removeprefix("seed")))
