"""The runs of the ``l3rs`` study: tuned hand-designed baselines, ES meta-training, evaluation.

Every optimizer, hand-designed or learned, is a combination rule (:mod:`learnlab.optim.combined`)
trained by the same vectorised loop (:mod:`learnlab.optim.population`):

- hand-designed baselines are ``fixed`` rules with one base optimizer (heavy-ball momentum or
  Adam) whose per-step coefficient is the learning rate times the schedule (constant or cosine),
  with a separate head learning rate in the ``head`` variants; each family's grid is one
  population, tuned on its own task seeds by mean validation loss;
- the learned rules (the per-layer MLP, the per-layer constant combination and meta-learned Adam
  hyperparameters) are meta-trained by antithetic ES with the same budget.

``config`` is the study's config; payloads of the worker factories are ``(config, directory)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnlab.optim.combined import RuleSpec, initial_meta_parameters
from learnlab.optim.evolution import ESSettings, flatten, meta_train
from learnlab.optim.finetune_tasks import TaskSource, finetune_data, pretrain_body, structure, task_batches, task_start
from learnlab.optim.population import stacked, train_population

HAND_DESIGNED = ("sgdm-const", "sgdm-cosine", "adam-const", "adam-cosine",
                 "sgdm-const-head", "sgdm-cosine-head", "adam-const-head", "adam-cosine-head")
LEARNED = ("l3rs", "constant", "adam-hp")
TUNING_SEED_OFFSET, META_SEED_OFFSET = 500, 1000


def task_source(config: Any) -> TaskSource:
    return TaskSource(dataset=config.dataset, root=config.data_root, model=config.model, width=config.width)


@lru_cache(maxsize=16)
def body(source: TaskSource, seed: int, steps: int) -> dict[str, torch.Tensor]:
    return pretrain_body(source, seed, steps)


def num_layers_of(config: Any) -> int:
    return len(body(task_source(config), config.pretrain_seeds[0], config.pretrain_steps))


def learned_spec(config: Any, method: str, num_layers: int) -> RuleSpec:
    """The rule of a learned method: ``l3rs`` (per-layer MLP), ``constant`` (per-layer constants), ``adam-hp``."""
    if method == "l3rs":
        return RuleSpec(num_layers=num_layers, bases=config.bases, form=config.form, initial_lr=config.initial_lr)
    if method == "constant":
        return RuleSpec(num_layers=num_layers, bases=config.bases, form=config.form, model="constant",
                        initial_lr=config.initial_lr)
    return RuleSpec(num_layers=num_layers, bases=("adam",), form="sum", model="global", initial_lr=config.initial_lr)


def baseline_grid(config: Any, family: str, num_layers: int, horizon: int) -> tuple[RuleSpec, torch.Tensor, list[dict]]:
    """A family's grid as a fixed rule: ``(spec, coefficient tables [members, steps, layers, 1], settings)``."""
    base = "adam" if family.startswith("adam") else "momentum"
    rates = config.adam_learning_rates if base == "adam" else config.sgdm_learning_rates
    ratios = config.head_ratios if family.endswith("head") else (1.0,)
    steps = torch.arange(horizon, dtype=torch.float32)
    schedule = 0.5 * (1 + torch.cos(math.pi * steps / horizon)) if "cosine" in family else torch.ones(horizon)
    tables, settings = [], []
    for rate in rates:
        for ratio in ratios:
            layer_rates = torch.full((num_layers,), float(rate))
            layer_rates[-2:] *= ratio  # the head: the last Linear's weight and bias
            tables.append(schedule[:, None, None] * layer_rates[None, :, None])
            settings.append({"learning_rate": float(rate), "head_ratio": float(ratio)})
    return RuleSpec(num_layers=num_layers, bases=(base,), form="sum", model="fixed"), torch.stack(tables), settings


def run_tasks(config: Any, spec: RuleSpec, metas: dict[str, torch.Tensor], tasks: list[tuple[int, int]], horizon: int,
              split: str, rotated: bool = False, eval_every: int = 0, record_coefficients: bool = False):
    """Fine-tune under every member of ``metas``, member m on task ``tasks[m]`` = (pretraining seed, task
    seed): that body, a fresh head and a batch order from the task seed. One task: every member on it."""
    source = task_source(config)
    data = finetune_data(source, rotated)
    members = next(iter(metas.values())).shape[0]
    if len(tasks) not in (1, members):
        raise ValueError(f"{len(tasks)} tasks for {members} members: give one task, or one per member")
    distinct = dict.fromkeys(tasks)
    starts = {task: task_start(source, body(source, task[0], config.pretrain_steps), task[1]) for task in distinct}
    orders = {task: task_batches(len(data.train_y), config.batch_size, horizon, task[1]) for task in distinct}
    if len(tasks) == 1:
        params, batches = stacked(starts[tasks[0]], members), orders[tasks[0]]
    else:
        params = {name: torch.stack([starts[task][name] for task in tasks]) for name in starts[tasks[0]]}
        batches = [torch.stack(rows) for rows in zip(*(orders[task] for task in tasks))]
    eval_x, eval_y = (data.val_x, data.val_y) if split == "val" else (data.test_x, data.test_y)
    return train_population(structure(source), params, spec, metas, data.train_x, data.train_y, eval_x, eval_y,
                            batches, horizon, eval_every=eval_every, record_coefficients=record_coefficients)


def tune_baselines(config: Any) -> dict[str, Any]:
    """Each hand-designed family's best setting by mean validation loss over the tuning task seeds."""
    num_layers = num_layers_of(config)
    tuned = {}
    for family in HAND_DESIGNED:
        spec, tables, settings = baseline_grid(config, family, num_layers, config.horizon)
        seeds = range(config.tuning_seeds)  # the whole grid on every tuning seed, as one population
        tasks = [(config.pretrain_seeds[seed % len(config.pretrain_seeds)], TUNING_SEED_OFFSET + seed)
                 for seed in seeds for _ in settings]
        run = run_tasks(config, spec, {"coefficients": tables.repeat(len(seeds), 1, 1, 1)}, tasks, config.horizon, "val")
        losses = run.final_loss.view(len(seeds), len(settings)).mean(dim=0)
        losses = torch.nan_to_num(losses, nan=math.inf)
        best = int(torch.argmin(losses))
        rates = config.adam_learning_rates if family.startswith("adam") else config.sgdm_learning_rates
        choice = settings[best]
        # ratio 1 (one rate for all layers) is the natural lower end of the head grid; its upper end is an edge
        edge = choice["learning_rate"] in (min(rates), max(rates)) or (
            family.endswith("head") and choice["head_ratio"] == max(config.head_ratios))
        tuned[family] = {**choice, "val_loss": float(losses[best]), "at_grid_edge": bool(edge),
                         "grid": [{**s, "val_loss": float(v)} for s, v in zip(settings, losses.tolist())]}
    return tuned


def _meta_objective(config: Any, spec: RuleSpec, unflatten: Callable) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """Losses ``[tasks, members]`` of a population on the tasks of one ES iteration (common random numbers)."""
    # The intermediate validation losses only matter for the trajectory average; the final loss is measured anyway.
    every = max(1, config.horizon // 10) if config.meta_objective == "average" else 0

    def objective(population: torch.Tensor, iteration: int) -> torch.Tensor:
        members = population.shape[0]  # every member on each of the iteration's tasks, as one population
        indices = [iteration * config.es_tasks + task for task in range(config.es_tasks)]
        tasks = [(config.pretrain_seeds[index % len(config.pretrain_seeds)], META_SEED_OFFSET + index)
                 for index in indices for _ in range(members)]
        metas = {name: torch.cat([value] * config.es_tasks) for name, value in unflatten(population).items()}
        run = run_tasks(config, spec, metas, tasks, config.horizon, "val", eval_every=every)
        losses = run.final_loss if config.meta_objective == "final" else run.curve.mean(dim=1)
        return torch.nan_to_num(losses, nan=1e3, posinf=1e3).clamp_max(1e3).view(config.es_tasks, members)

    return objective


def meta_train_method(config: Any, method: str, checkpoint: Path | None, seed: int,
                      on_iteration: Callable | None = None) -> dict[str, Any]:
    num_layers = num_layers_of(config)
    spec = learned_spec(config, method, num_layers)
    theta, unflatten = flatten(initial_meta_parameters(spec, torch.Generator().manual_seed(seed)))
    settings = ESSettings(pairs=config.es_pairs, sigma=config.es_sigma, learning_rate=config.es_learning_rate,
                          iterations=config.es_iterations, clip=config.es_clip, checkpoint_every=10)
    result = meta_train(_meta_objective(config, spec, unflatten), theta, settings, seed, checkpoint,
                        on_iteration=on_iteration)
    return {"theta": result.theta.tolist(), "history": result.history, "parameters": int(theta.numel())}


def meta_worker(payload: tuple[Any, str], ctx: Any) -> Callable[[str], dict[str, Any]]:
    """Worker factory: item ``method`` is its ES meta-training (checkpointed under the payload's directory)."""
    config, directory = payload

    def process(method: str) -> dict[str, Any]:
        with ctx.progress(f"meta-training {method} (ES iterations)", config.es_iterations) as bar:
            return meta_train_method(config, method, Path(directory) / f"{method}.meta.pt", config.es_seed,
                                     on_iteration=lambda step, record: bar.advance(1))

    return process


def learned_metas(config: Any, method: str, theta: list[float], num_layers: int) -> tuple[RuleSpec, dict[str, torch.Tensor]]:
    spec = learned_spec(config, method, num_layers)
    _, unflatten = flatten(initial_meta_parameters(spec))
    return spec, unflatten(torch.tensor(theta))


def variant_settings(config: Any, variant: str) -> tuple[tuple[int, ...], bool, int]:
    """``(pretraining seeds, rotated inputs, horizon)`` of an evaluation variant."""
    seeds = (config.unseen_pretrain_seed,) if variant == "unseen-init" else config.pretrain_seeds
    return seeds, variant == "unseen-dataset", 2 * config.horizon if variant == "long-horizon" else config.horizon


def evaluate_worker(payload: tuple[Any, dict[str, Any]], ctx: Any) -> Callable[[str], dict[str, Any]]:
    """Worker factory: item ``variant`` scores every method on ``eval_seeds`` test tasks of that variant.

    Payload: ``(config, {"tuned": ..., "learned": {method: theta}, "num_layers": n})``.
    """
    config, setup = payload

    def process(variant: str) -> dict[str, Any]:
        pretrain_seeds, rotated, horizon = variant_settings(config, variant)
        every = max(1, horizon // 20)
        record: dict[str, Any] = {}
        rules = {}
        for family, choice in setup["tuned"].items():
            spec, tables, settings = baseline_grid(config, family, setup["num_layers"], horizon)
            member = settings.index({"learning_rate": choice["learning_rate"], "head_ratio": choice["head_ratio"]})
            rules[family] = (spec, {"coefficients": tables[member:member + 1]})
        for method, theta in setup["learned"].items():
            spec, meta = learned_metas(config, method, theta, setup["num_layers"])
            rules[method] = (spec, {name: value.unsqueeze(0) for name, value in meta.items()})
        groups: dict[RuleSpec, list[str]] = {}  # rules of one shape train as one population
        for name, (spec, _) in rules.items():
            groups.setdefault(spec, []).append(name)
        seeds = config.eval_seeds
        tasks = [(pretrain_seeds[seed % len(pretrain_seeds)], seed) for seed in range(seeds)]
        with ctx.progress(f"evaluating ({variant})", len(rules) * seeds) as bar:
            for spec, names in groups.items():
                metas = {key: torch.cat([rules[name][1][key].expand(seeds, *rules[name][1][key].shape[1:])
                                         for name in names]) for key in rules[names[0]][1]}
                coefficients = "l3rs" in names and variant == "in-distribution"
                run = run_tasks(config, spec, metas, tasks * len(names), horizon, "test", rotated, eval_every=every,
                                record_coefficients=coefficients)
                for index, name in enumerate(names):
                    rows = slice(index * seeds, (index + 1) * seeds)
                    record[name] = {"final": run.final_loss[rows].tolist(),
                                    "curve": np.mean(run.curve[rows].tolist(), axis=0).tolist(),
                                    "curve_steps": run.curve_steps}
                    if coefficients and name == "l3rs":
                        record[name]["coefficients"] = run.coefficients[rows].mean(dim=0).tolist()
                bar.advance(len(names) * seeds)
        record = {name: record[name] for name in rules}  # the rules' order
        return record

    return process
