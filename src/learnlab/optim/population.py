"""Train one model under a whole population of optimizer rules at once (``torch.func``).

Meta-training by evolution strategies evaluates 2M perturbed rules on the same fine-tuning task
(common random numbers: the same initialisation and the same batches). Instead of 2M training
loops, :func:`train_population` keeps the model's parameters stacked ``[members, ...]`` and runs
one loop: per step, ``vmap(grad_and_value(functional_call(model)))`` gives every member's
gradient and loss, and one ``stacked_combined_step`` every member's update. Members may also train on
tasks of their own (their own start and batches, e.g. the evaluation seeds of one rule), which
runs many small fine-tunings as one vectorised loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from learnlab.optim.combined import RuleSpec, initial_state, stacked_combined_step


@dataclass
class PopulationRun:
    """Per member: ``final_loss`` on the evaluation split after the last step, ``curve`` ``[members,
    points]`` of that loss at ``curve_steps`` (step 0 first), ``coefficients`` ``[members, steps,
    layers, bases]`` when recorded."""

    final_loss: torch.Tensor
    curve: torch.Tensor
    curve_steps: list[int]
    coefficients: torch.Tensor | None


def stacked(params: Mapping[str, torch.Tensor], members: int) -> dict[str, torch.Tensor]:
    """The same parameters for every member: ``{name: [members, ...]}``."""
    return {name: value.detach().unsqueeze(0).expand(members, *value.shape).clone() for name, value in params.items()}


def train_population(model: nn.Module, params: Mapping[str, torch.Tensor], spec: RuleSpec,
                     metas: Mapping[str, torch.Tensor], train_x: torch.Tensor, train_y: torch.Tensor,
                     eval_x: torch.Tensor, eval_y: torch.Tensor, batches: Sequence[torch.Tensor], horizon: int,
                     eval_every: int = 0, record_coefficients: bool = False) -> PopulationRun:
    """Train ``model`` (structure only; weights from ``params``, stacked ``[members, ...]``) for
    ``len(batches)`` steps of cross-entropy, member m under rule ``metas[...][m]``.

    A batch is a ``[batch]`` index tensor that every member trains on, or ``[members, batch]``:
    member m trains on row m (members on tasks of their own).

    Layers are the model's parameter tensors in ``params`` order. The loss on ``(eval_x,
    eval_y)`` is measured at step 0, every ``eval_every`` steps (0: only at the end) and after
    the last step.
    """
    names = list(params)
    if len(names) != spec.num_layers:
        raise ValueError(f"the rule was made for {spec.num_layers} layers, the model has {len(names)} parameter tensors")

    def loss_of(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, weights, (x,)), y)

    own_batches = bool(batches) and batches[0].dim() == 2
    gradients = vmap(grad_and_value(loss_of), in_dims=(0, 0, 0) if own_batches else (0, None, None))
    evaluate = vmap(loss_of, in_dims=(0, None, None))
    weights = dict(params)
    state = vmap(lambda p: initial_state(spec, p))([weights[n] for n in names])
    steps = len(batches)
    curve, curve_steps, recorded = [evaluate(weights, eval_x, eval_y)], [0], []
    for step, index in enumerate(batches, start=1):
        grads, loss = gradients(weights, train_x[index], train_y[index])
        new, state, coefficient = stacked_combined_step(spec, metas, [weights[n] for n in names],
                                                        [grads[n] for n in names], loss, state, step, horizon)
        weights = dict(zip(names, new))
        if record_coefficients:
            recorded.append(coefficient)
        if (eval_every and step % eval_every == 0) or step == steps:
            curve.append(evaluate(weights, eval_x, eval_y))
            curve_steps.append(step)
    return PopulationRun(curve[-1], torch.stack(curve, dim=1), curve_steps,
                         torch.stack(recorded, dim=1) if record_coefficients else None)
