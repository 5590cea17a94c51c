"""A learned, layer-wise combination of base optimizers (Kristiansen et al. 2024, "Narrowing the
Focus: Learned Optimizers for Pretrained Models", §3).

Every base optimizer (plain SGD, heavy-ball momentum, Adam; the set is configurable) runs on the
same gradient and proposes a direction ``d_{l,p}`` for each layer ``l`` (here: each parameter
tensor). A small MLP shared by all layers reads a learned embedding of the layer and its
training state and outputs, per layer and step, the coefficients of the update:

- ``form="normalised"`` (the form of the paper's public review): ``Δ_l = λ_l(t) Σ_p μ_{l,p}(t)
  d̂_{l,p}(t)`` with ``d̂ = d / rms(d)``, ``μ_l = softmax`` over the base optimizers and ``λ_l =
  exp(log_lr + o_l)`` a per-layer learning rate;
- ``form="sum"``: the unnormalised ``Δ_l = Σ_p c_{l,p}(t) d_{l,p}(t)`` with ``c_{l,p} =
  exp(log_lr_p + o_{l,p})`` (directions carry no learning rate, so ``c`` is one).

The training-state features of layer ``l`` are the time ``t / T`` and the logs of exponential
moving averages, at several decay rates, of the loss, of the layer's gradient norm and of its
weight norm. The output layer of the MLP starts at zero, so an untrained rule is a constant
uniform mixture at ``exp(log_lr)``.

The update is written as a pure function of tensors with a leading member dimension
(:func:`stacked_combined_step`), so the same code updates a whole population of rules and models
at once during meta-training and one model inside :class:`CombinedOptimizer` (a
``torch.optim.Optimizer``, through :func:`combined_step`). :func:`save_rule` /
:func:`load_rule` store a meta-trained rule as one safetensors file and a JSON config beside it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError

from learnlab.core.errors import UserError
from learnlab.core.io import load_tensors, save_tensors, write_text

BASE_OPTIMIZERS = ("sgd", "momentum", "adam")
RULE_FORMAT = "learnlab.combined-optimizer/1"
RULE_MODELS = ("mlp", "constant", "global", "fixed")
Tensors = list[torch.Tensor]


@dataclass(frozen=True)
class RuleSpec:
    """The shape of a combination rule (everything but its meta-parameters).

    Attributes:
        num_layers: layers (parameter tensors) of the model it optimises; one embedding each.
        bases: base optimizers whose directions are combined, from :data:`BASE_OPTIMIZERS`.
        form: ``normalised`` (λ · softmax mixture of RMS-normalised directions) or ``sum``.
        model: ``mlp`` (the learned rule), ``constant`` (per-layer constant coefficients, an
            ATMO-like ablation), ``global`` (one learning rate per base optimizer for every layer,
            and Adam's β1, β2 as meta-parameters: meta-learned hyperparameters) or ``fixed``
            (coefficients given as ``[layers, bases]`` or a per-step table ``[steps, layers,
            bases]``, for hand-designed baselines and schedules).
        embedding_dim, hidden: the layer embedding and the MLP's hidden width.
        decays: EMA decay rates of the loss, gradient-norm and weight-norm features.
        momentum, beta1, beta2, eps: hyperparameters of the base optimizers.
        initial_lr: ``exp(log_lr)`` at initialisation.
    """

    num_layers: int
    bases: tuple[str, ...] = BASE_OPTIMIZERS
    form: Literal["normalised", "sum"] = "normalised"
    model: Literal["mlp", "constant", "global", "fixed"] = "mlp"
    embedding_dim: int = 4
    hidden: int = 16
    decays: tuple[float, ...] = (0.9, 0.99)
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    initial_lr: float = 1e-3

    def __post_init__(self) -> None:
        unknown = [name for name in self.bases if name not in BASE_OPTIMIZERS]
        if unknown or not self.bases:
            raise ValueError(f"unknown base optimizer {unknown[0] if unknown else '(none)'!r}; "
                             f"valid base optimizers: {', '.join(BASE_OPTIMIZERS)}")
        if len(set(self.bases)) != len(self.bases):
            raise ValueError("base optimizers must not repeat")
        if self.form not in ("normalised", "sum"):
            raise ValueError(f"unknown form {self.form!r}; valid forms: normalised, sum")
        if self.model not in RULE_MODELS:
            raise ValueError(f"unknown rule model {self.model!r}; valid models: {', '.join(RULE_MODELS)}")
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if not all(0 <= decay < 1 for decay in self.decays) or not self.decays:
            raise ValueError("decays must lie in [0, 1)")

    @property
    def num_features(self) -> int:
        """t/T plus three EMA statistics at each decay rate."""
        return 1 + 3 * len(self.decays)


def initial_meta_parameters(spec: RuleSpec, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The meta-parameters of a fresh rule: an untrained rule is a constant uniform mixture at ``initial_lr``."""
    count = len(spec.bases)
    log_lr = torch.full((count,) if spec.form == "sum" else (), math.log(spec.initial_lr))
    if spec.model == "fixed":
        return {}
    if spec.model == "constant":
        return {"log_lr": log_lr, "layer_logits": torch.zeros(spec.num_layers, count)}
    if spec.model == "global":
        betas = torch.logit(torch.tensor([spec.beta1, spec.beta2]))
        return {"log_lr": log_lr, **({"beta_logits": betas} if "adam" in spec.bases else {})}
    inputs = spec.embedding_dim + spec.num_features
    outputs = count if spec.form == "sum" else count + 1
    scale = 1 / math.sqrt(inputs)
    return {
        "log_lr": log_lr,
        "embedding": torch.randn(spec.num_layers, spec.embedding_dim, generator=generator),
        "w1": torch.randn(inputs, spec.hidden, generator=generator) * scale,
        "b1": torch.zeros(spec.hidden),
        "w2": torch.zeros(spec.hidden, outputs),
        "b2": torch.zeros(outputs),
    }


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values [members]`` shaped to broadcast against ``like [members, ...]``."""
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


def _member_norms(tensors: Tensors) -> torch.Tensor:
    """``[members, layers, 1]``: each member's norm of each layer (tensor) of ``tensors [members, ...]``."""
    norms = [torch.linalg.vector_norm(t, dim=tuple(range(1, t.dim()))) for t in tensors]
    return torch.stack(norms, dim=1).unsqueeze(-1)


def coefficients(spec: RuleSpec, metas: Mapping[str, torch.Tensor], features: torch.Tensor, step: int = 1) -> torch.Tensor:
    """Coefficients ``[members, layers, bases]`` of step ``step`` from the layers' ``features [members,
    layers, num_features]`` (every meta-parameter with a leading member dimension).

    ``normalised``: ``λ_l μ_{l,p}`` (μ sums to one over p); ``sum``: ``c_{l,p}``. A ``fixed`` rule
    reads them from ``metas["coefficients"]`` (row ``step - 1`` of a per-step table).
    """
    if spec.model == "fixed":
        table = metas["coefficients"]
        return table[:, min(step, table.shape[1]) - 1] if table.dim() == 4 else table
    layers = features.shape[1]
    if spec.model in ("constant", "global"):
        outputs = metas["layer_logits"] if spec.model == "constant" else torch.zeros(layers, len(spec.bases))
        if spec.form == "sum":
            return torch.exp(metas["log_lr"].unsqueeze(1) + outputs)
        return _per_member(torch.exp(metas["log_lr"]), features) * torch.softmax(outputs, dim=-1)
    inputs = torch.cat([metas["embedding"], features], dim=-1)
    outputs = torch.tanh(inputs @ metas["w1"] + metas["b1"].unsqueeze(1)) @ metas["w2"] + metas["b2"].unsqueeze(1)
    if spec.form == "sum":
        return torch.exp(metas["log_lr"].unsqueeze(1) + outputs.clamp(-10, 10))
    scale = torch.exp(_per_member(metas["log_lr"], features) + outputs[..., :1].clamp(-10, 10))
    return scale * torch.softmax(outputs[..., 1:], dim=-1)


def initial_state(spec: RuleSpec, params: Tensors) -> dict[str, Any]:
    """Base-optimizer buffers and feature EMAs for ``params`` (one tensor per layer)."""
    zeros = [torch.zeros_like(p) for p in params]
    state: dict[str, Any] = {"loss_ema": torch.zeros(len(spec.decays)),
                             "grad_ema": torch.zeros(len(params), len(spec.decays)),
                             "weight_ema": torch.zeros(len(params), len(spec.decays))}
    if "momentum" in spec.bases:
        state["momentum"] = [z.clone() for z in zeros]
    if "adam" in spec.bases:
        state["adam_m"] = [z.clone() for z in zeros]
        state["adam_v"] = [z.clone() for z in zeros]
    return state


def _debiased(ema: torch.Tensor, decays: torch.Tensor, step: int) -> torch.Tensor:
    return ema / (1 - decays ** step)


def layer_features(spec: RuleSpec, state: Mapping[str, Any], step: int, horizon: int) -> torch.Tensor:
    """``[members, layers, 1 + 3 · decays]``: t/T, then log EMAs of the loss, gradient norm and weight norm."""
    decays = torch.tensor(spec.decays, dtype=state["grad_ema"].dtype)
    members, layers = state["grad_ema"].shape[:2]
    loss = torch.log(_debiased(state["loss_ema"], decays, step).clamp_min(1e-8)).unsqueeze(1).expand(members, layers, -1)
    grad = torch.log(_debiased(state["grad_ema"], decays, step).clamp_min(1e-8))
    weight = torch.log(_debiased(state["weight_ema"], decays, step).clamp_min(1e-8))
    time = torch.full((members, layers, 1), step / horizon, dtype=grad.dtype)
    return torch.cat([time, loss, grad, weight], dim=-1)


def _base_directions(spec: RuleSpec, grads: Tensors, state: dict[str, Any], step: int, betas: Any) -> list[Tensors]:
    """Per base optimizer, its direction for every layer (a step of size one); updates ``state``.
    ``betas`` are Adam's (β1, β2): numbers, or meta-learned ``[members]`` tensors."""
    directions = []
    for name in spec.bases:
        if name == "sgd":
            directions.append(list(grads))
        elif name == "momentum":
            state["momentum"] = [spec.momentum * m + g for m, g in zip(state["momentum"], grads)]
            directions.append(state["momentum"])
        else:
            beta1, beta2 = ([_per_member(beta, g) if torch.is_tensor(beta) else beta for g in grads] for beta in betas)
            state["adam_m"] = [b * m + (1 - b) * g for b, m, g in zip(beta1, state["adam_m"], grads)]
            state["adam_v"] = [b * v + (1 - b) * g * g for b, v, g in zip(beta2, state["adam_v"], grads)]
            directions.append([(m / (1 - b ** step)) / ((v / (1 - c ** step)).sqrt() + spec.eps)
                               for b, c, m, v in zip(beta1, beta2, state["adam_m"], state["adam_v"])])
    return directions


def _rms_normalised(direction: torch.Tensor) -> torch.Tensor:
    """Each member's ``direction / rms(direction)``."""
    rms = direction.pow(2).mean(dim=tuple(range(1, direction.dim()))).sqrt() + 1e-12
    return direction / _per_member(rms, direction)


def stacked_combined_step(spec: RuleSpec, metas: Mapping[str, torch.Tensor], params: Tensors, grads: Tensors,
                          losses: torch.Tensor, state: dict[str, Any], step: int, horizon: int,
                          layer_scales: torch.Tensor | None = None) -> tuple[Tensors, dict[str, Any], torch.Tensor]:
    """One update (step ``step`` >= 1 of ``horizon``) of a population of rules and models stacked along a
    leading member dimension: ``(new params, new state, coefficients [members, layers, bases])``.

    Every tensor (``metas``, ``params``, ``grads``, ``losses [members]`` and the state of
    :func:`initial_state` on the stacked params) carries the members first; each reduction runs over
    one member's layer, so a member's update is the same whatever the population around it (tested),
    and one call updates the whole population. Pure in its tensor arguments (``state`` is copied).
    ``layer_scales [layers]`` multiplies each layer's coefficients (param-group learning-rate scales).
    """
    state = dict(state)
    decays = torch.tensor(spec.decays, dtype=state["grad_ema"].dtype)
    state["loss_ema"] = decays * state["loss_ema"] + (1 - decays) * losses.detach().unsqueeze(-1)
    state["grad_ema"] = decays * state["grad_ema"] + (1 - decays) * _member_norms(grads)
    state["weight_ema"] = decays * state["weight_ema"] + (1 - decays) * _member_norms(params)
    coefficient = coefficients(spec, metas, layer_features(spec, state, step, horizon), step)
    if layer_scales is not None:
        coefficient = coefficient * layer_scales.unsqueeze(-1)
    if "beta_logits" in metas:
        betas = torch.sigmoid(metas["beta_logits"]).unbind(-1)
    else:
        betas = (spec.beta1, spec.beta2)
    directions = _base_directions(spec, grads, state, step, betas)
    new_params = []
    for layer, param in enumerate(params):
        terms = [_per_member(coefficient[:, layer, index], d[layer])
                 * (_rms_normalised(d[layer]) if spec.form == "normalised" else d[layer])
                 for index, d in enumerate(directions)]
        new_params.append(param - sum(terms))
    return new_params, state, coefficient


def combined_step(spec: RuleSpec, meta: Mapping[str, torch.Tensor], params: Tensors, grads: Tensors, loss: torch.Tensor,
                  state: dict[str, Any], step: int, horizon: int,
                  layer_scales: torch.Tensor | None = None) -> tuple[Tensors, dict[str, Any], torch.Tensor]:
    """:func:`stacked_combined_step` of one rule and model: ``(new params, new state, coefficients [layers, bases])``,
    with the state of :func:`initial_state` on ``params``."""
    def one(value: Any) -> Any:
        return [tensor.unsqueeze(0) for tensor in value] if isinstance(value, list) else value.unsqueeze(0)

    def first(value: Any) -> Any:
        return [tensor[0] for tensor in value] if isinstance(value, list) else value[0]

    new_params, new_state, coefficient = stacked_combined_step(
        spec, {name: one(value) for name, value in meta.items()}, one(params), one(grads), one(torch.as_tensor(loss)),
        {name: one(value) for name, value in state.items()}, step, horizon, layer_scales)
    return first(new_params), {name: first(value) for name, value in new_state.items()}, first(coefficient)


class CombinedOptimizer(torch.optim.Optimizer):
    """A ``torch.optim`` optimizer that applies a (meta-trained) combination rule.

    Every parameter tensor is one layer, in the order of the parameter groups; the rule's
    ``num_layers`` must match. ``horizon`` is the planned number of steps (the rule reads t / T).
    The loss feeds the rule's features: pass it with ``step(loss=...)``, or register
    :meth:`loss_hook` as a forward hook of the loss module (``criterion.register_forward_hook(
    optimizer.loss_hook)``), or give the usual ``closure``. Each group may set ``lr_scale`` (a
    multiplier of its layers' coefficients, default 1). ``coefficient_log`` keeps the
    coefficients of every step (``[layers, bases]``) when ``log_coefficients`` is true.
    """

    def __init__(self, params: Iterable[Any], spec: RuleSpec, meta: Mapping[str, torch.Tensor], horizon: int,
                 log_coefficients: bool = False) -> None:
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        super().__init__(params, {"lr_scale": 1.0})
        layers = sum(len(group["params"]) for group in self.param_groups)
        if layers != spec.num_layers:
            raise ValueError(f"the rule was made for {spec.num_layers} layers (parameter tensors), got {layers}")
        self.spec, self.horizon = spec, horizon
        self.meta = {name: value.detach().clone() for name, value in meta.items()}
        self.log_coefficients = log_coefficients
        self.coefficient_log: list[torch.Tensor] = []
        self._observed_loss: torch.Tensor | None = None

    def loss_hook(self, module: Any, inputs: Any, output: torch.Tensor) -> None:
        """A forward hook for a loss module: remembers the loss for the next :meth:`step`."""
        self._observed_loss = output.detach()

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None, loss: torch.Tensor | float | None = None) -> Any:
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if loss is None:
            loss = self._observed_loss
        if loss is None:
            raise ValueError("CombinedOptimizer needs the loss: step(loss=...), a closure, or loss_hook on the loss module")
        params = self._params()
        loss_tensor = torch.as_tensor(loss, dtype=params[0].dtype).detach().cpu()
        shared = self.state.setdefault("rule", {})
        if "state" not in shared:
            shared["step"] = 0
            shared["state"] = initial_state(self.spec, [p.detach() for p in params])
        shared["step"] += 1
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        scales = torch.tensor([group["lr_scale"] for group in self.param_groups for _ in group["params"]])
        new_params, shared["state"], coefficient = combined_step(
            self.spec, self.meta, [p.detach() for p in params], grads, loss_tensor, shared["state"], shared["step"],
            self.horizon, layer_scales=scales)
        for param, value in zip(params, new_params):
            param.copy_(value)
        if self.log_coefficients:
            self.coefficient_log.append(coefficient.detach().clone())
        self._observed_loss = None
        return loss


def rule_to_dict(spec: RuleSpec) -> dict[str, Any]:
    return {"format": RULE_FORMAT, **asdict(spec)}


def save_rule(path: str | Path, spec: RuleSpec, meta: Mapping[str, torch.Tensor],
              extra: Mapping[str, Any] | None = None) -> Path:
    """Save a rule as ``<path>.safetensors`` (meta-parameters) and ``<path>.json`` (its :class:`RuleSpec`)."""
    base = Path(path).with_suffix("")
    save_tensors(base.with_suffix(".safetensors"), dict(meta))
    write_text(base.with_suffix(".json"), json.dumps({**rule_to_dict(spec), **dict(extra or {})}, indent=2))
    return base.with_suffix(".safetensors")


def load_rule(path: str | Path) -> tuple[RuleSpec, dict[str, torch.Tensor]]:
    """Load what :func:`save_rule` wrote; anything else is a :class:`UserError` naming the file."""
    base = Path(path).with_suffix("")
    config_path, weights_path = base.with_suffix(".json"), base.with_suffix(".safetensors")
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise UserError(f"{needed} does not exist; a meta-trained optimizer is a .safetensors file with its .json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{config_path} is not a meta-trained optimizer's config ({error})") from None
    if not isinstance(config, dict) or config.get("format") != RULE_FORMAT:
        raise UserError(f"{config_path} is not a meta-trained optimizer (expected format {RULE_FORMAT})")
    names = set(RuleSpec.__dataclass_fields__)
    try:
        spec = RuleSpec(**{key: tuple(value) if isinstance(value, list) else value
                           for key, value in config.items() if key in names})
        meta = load_tensors(weights_path)
    except (TypeError, ValueError, SafetensorError) as error:
        raise UserError(f"{base} is not a meta-trained optimizer ({error})") from None
    expected = initial_meta_parameters(spec)
    if set(meta) != set(expected) or any(meta[k].shape != expected[k].shape for k in expected):
        raise UserError(f"{weights_path} does not hold the meta-parameters its config describes")
    return spec, {name: meta[name] for name in expected}  # the canonical order (safetensors sorts names)
