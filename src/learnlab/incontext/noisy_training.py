"""Training linear transformers on noisy in-context regression, best of several starts (Vladymyrov et al. 2024, §6).

The paper trains every model with Adam on fresh sequences and reports the best of 5 training seeds.
Here a *start group* is every start (random initialisations and warm starts) of one variant and
depth for every noise setting at once: the ``settings x starts`` models of one
:class:`LinearTransformer`, trained by one batched optimiser (:func:`train_online`; the models share
no parameter, so each trains as if alone). Each step draws fresh sequences per setting, shared by
that setting's starts; each start keeps its checkpoint with the lowest validation loss, and the
start with the lowest one is the setting's model.

Warm starts (the paper's initialisation is unknown): a trained shallower model of the same variant
plus identity layers (``P = 0``), or a GD++ model as a DIAG one (GD++ is DIAG with ``q_y = 0``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from learnlab.incontext.gradient_descent import fit_lbfgs
from learnlab.incontext.linear_transformer_variants import (
    LinearTransformer,
    MomentTraining,
    query_averaged_loss,
    train_online,
)
from learnlab.incontext.noisy_regression import NoiseDistribution, NoisySet, sample_noisy_moments


def parameter_names(variant: str) -> tuple[str, str]:
    """The parameters of a :class:`LinearTransformer` of ``variant``: ``(P, Q)`` for FULL, ``(p, q)`` otherwise."""
    return ("projection", "key_query") if variant == "full" else ("p", "q")


def model_from_parameters(variant: str, parameters: dict[str, torch.Tensor], dim: int,
                          dtype: torch.dtype = torch.float32) -> LinearTransformer:
    """The :class:`LinearTransformer` (models, layers and heads from the shapes) holding ``parameters``
    (its random initialisation, overwritten, draws from a throwaway generator, not torch's global one)."""
    count, depth, heads = parameters[parameter_names(variant)[0]].shape[:3]
    model = LinearTransformer(dim, depth, variant, heads, count, generator=torch.Generator(), dtype=dtype)
    with torch.no_grad():
        for name in parameter_names(variant):
            getattr(model, name).copy_(parameters[name].to(dtype))
    return model


@dataclass
class StartGroup:
    """A trained start group: the best start per noise setting, and how every start did.

    Attributes:
        parameters: the best start's parameters per setting, e.g. ``p`` ``(settings, L, H, 2)``.
        best_start: the index of the best start per setting (random starts first, then warm ones).
        steps: the evaluation steps.
        curves: validation adjusted loss of the best start per setting, at every evaluation step.
        start_final_losses: ``(settings, starts)``: every start's lowest validation adjusted loss.
        random_parameters: the best *random* start's parameters per setting (selected the same way,
            among the random starts only), or None without random starts: what the random
            initialisations reach on their own, without any warm start.
    """

    parameters: dict[str, torch.Tensor]
    best_start: list[int]
    steps: list[int]
    curves: list[list[float]]
    start_final_losses: list[list[float]]
    random_parameters: dict[str, torch.Tensor] | None = None


def _place_warm_starts(model: LinearTransformer, warm_starts: Sequence[dict[str, torch.Tensor]],
                       num_settings: int, random_starts: int) -> None:
    """Copy each warm start into its start (after the random ones); its missing layers become the identity."""
    starts, depth, heads = random_starts + len(warm_starts), model.num_layers, model.num_heads
    with torch.no_grad():
        if model.variant == "full":  # shallower FULL models plus identity layers (P = 0)
            size = model.dim + 1
            projection = model.projection.view(num_settings, starts, depth, heads, size, size)
            key_query = model.key_query.view(num_settings, starts, depth, heads, size, size)
            for offset, start in enumerate(warm_starts):
                index, copied = random_starts + offset, start["projection"].shape[1]
                projection[:, index, :copied] = start["projection"]
                projection[:, index, copied:] = 0.0
                key_query[:, index, :copied] = start["key_query"]
        else:
            p = model.p.view(num_settings, starts, depth, heads, 2)
            q = model.q.view(num_settings, starts, depth, heads, -1)
            for offset, start in enumerate(warm_starts):
                index, copied = random_starts + offset, start["p"].shape[1]
                p[:, index, :copied] = start["p"]
                p[:, index, copied:] = 0.0  # extra layers start as the identity
                q[:, index, :copied] = 0.0
                q[:, index, :copied, :, : start["q"].shape[-1]] = start["q"][..., : q.shape[-1]]  # GD++: q_y = 0


def train_start_group(
    variant: str,
    depth: int,
    noises: Sequence[NoiseDistribution],
    validation: Sequence[NoisySet],
    training: MomentTraining,
    *,
    num_context: int,
    random_starts: int,
    warm_starts: Sequence[dict[str, torch.Tensor]] = (),
    num_heads: int = 1,
    init_scale: float = 0.01,
    init_generator: torch.Generator | None = None,
    data_generator: torch.Generator | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> StartGroup:
    """Train ``variant`` at ``depth`` for every noise setting and start at once; keep the best start per setting.

    Args:
        noises, validation: the noise settings and a validation set of each (checkpoint and start
            selection); ``d`` is the validation teachers'.
        training: steps, batch size (fresh sequences per setting and step), schedule and clipping.
        random_starts: random initialisations (``N(0, init_scale^2)`` per scalar) per setting.
        warm_starts: trained parameters of shape ``(settings, L', H, ...)`` with ``L' <= depth``, one
            start each: the first ``L'`` layers are copied, the others start as the identity
            (``P = 0``, resp. ``p = 0``); a GD++ ``q`` in a DIAG start gets ``q_y = 0``.
        on_step: sees the step and the mean training loss per model (e.g. to stop on NaN).
    """
    num_settings, dim = len(noises), validation[0].teacher.shape[-1]
    starts = random_starts + len(warm_starts)
    count = num_settings * starts
    model = LinearTransformer(dim, depth, variant, num_heads, count, init_scale, generator=init_generator)
    _place_warm_starts(model, warm_starts, num_settings, random_starts)

    def expand(tensor: torch.Tensor) -> torch.Tensor:  # one copy per start of every setting's tensor
        return tensor.unsqueeze(1).expand(num_settings, starts, *tensor.shape[1:]).reshape(count, *tensor.shape[1:])

    def draw(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        moments, teacher = sample_noisy_moments(noises, training.batch_size, data_generator, dim, num_context)
        return expand(moments), expand(teacher)

    val_moments = expand(torch.stack([v.moments.float() for v in validation]))
    val_teacher = expand(torch.stack([v.teacher.float() for v in validation]))
    val_oracle = torch.tensor([v.oracle_loss.mean().item() for v in validation]).repeat_interleave(starts)
    per_model = None if on_step is None else (lambda step, loss: on_step(step, loss / count))
    history = train_online(model, draw, training, (val_moments, val_teacher), per_model)
    curves = (torch.tensor(history.losses) - val_oracle).T.reshape(num_settings, starts, -1)  # adjusted
    final = (torch.tensor(history.best_losses) - val_oracle).reshape(num_settings, starts).nan_to_num(math.inf)
    best = final.argmin(1)
    best_random = final[:, :random_starts].argmin(1) if random_starts > 0 else None
    parameters, random_parameters = {}, {} if random_starts > 0 else None
    for key in parameter_names(variant):
        parameter = getattr(model, key).detach().view(num_settings, starts, *getattr(model, key).shape[1:])
        parameters[key] = parameter[torch.arange(num_settings), best].clone()
        if best_random is not None:
            random_parameters[key] = parameter[torch.arange(num_settings), best_random].clone()
    return StartGroup(parameters, best.tolist(), history.steps, curves[torch.arange(num_settings), best].tolist(),
                      final.tolist(), random_parameters)


def adjusted_test_losses(model: LinearTransformer, test: Sequence[NoisySet], chunk_size: int = 10000) -> list[float]:
    """Model ``i`` of ``model`` on test set ``i``: its mean adjusted loss (query-averaged ½·MSE minus the oracle's)."""
    losses_per_set = []
    with torch.no_grad():
        for index, data in enumerate(test):
            alone = {name: getattr(model, name)[index:index + 1] for name in parameter_names(model.variant)}
            single, losses = model_from_parameters(model.variant, alone, model.dim), []
            for start in range(0, data.moments.shape[0], chunk_size):
                chunk = data.moments[start:start + chunk_size].float().unsqueeze(0)
                weights = single.effective_weights(chunk)[0].double()
                losses.append(query_averaged_loss(weights, data.teacher[start:start + chunk_size]))
            losses_per_set.append((torch.cat(losses) - data.oracle_loss).mean().item())
    return losses_per_set


def fit_on_fixed_set(variant: str, depth: int, data: NoisySet, starts: int = 6, seed: int = 10,
                     max_iter: int = 400) -> tuple[dict[str, torch.Tensor], float]:
    """Optimise one ``variant`` model directly on a fixed set: full-batch L-BFGS in float64, best of ``starts``.

    A reference for what a parametrisation can attain, apart from any training recipe (the
    landscape has poor local optima: 2-layer GD++ at sigma = 0 has minima at ~0.26, 0.34 and 0.39).
    Every start is near a plain GD step in every layer (``omega_yx ~ -0.032 (1 +- 0.5)``, the
    one-step optimum being ``-1 / (n + d + 1)``) with random ``p_x``; L-BFGS with a strong-Wolfe line
    search. Returns the parameters of the start with the lowest adjusted loss on ``data``, and that loss.
    """
    if variant == "full":
        raise ValueError("fit_on_fixed_set starts from GD steps: DIAG or GD++ only")
    dim = data.teacher.shape[-1]
    best: tuple[dict[str, torch.Tensor], float] = ({}, math.inf)
    for start in range(starts):
        generator = torch.Generator().manual_seed(seed + start)
        model = LinearTransformer(dim, depth, variant, init_scale=0.1, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            shape = model.p[..., 1].shape
            model.p[..., 1] = 0.2 * (1 + 0.5 * torch.randn(shape, generator=generator, dtype=torch.float64))
            model.q[..., 0] = -0.16 * (1 + 0.5 * torch.randn(shape, generator=generator, dtype=torch.float64))
            model.p[..., 0] = 0.2 * torch.randn(shape, generator=generator, dtype=torch.float64)

        def adjusted() -> torch.Tensor:
            weights = model.effective_weights(data.moments.unsqueeze(0))[0]
            return (query_averaged_loss(weights, data.teacher) - data.oracle_loss).mean()

        loss = fit_lbfgs(adjusted, model.parameters(), max_iter, history_size=50, tolerance_change=1e-14)
        if loss < best[1]:
            best = ({name: parameter.detach().clone() for name, parameter in model.named_parameters()}, loss)
    return best
