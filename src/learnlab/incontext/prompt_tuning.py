"""Prompting a frozen sequence model with few-shot regression tasks (von Oswald et al. 2023, §6).

A model trained on next-state prediction is *repurposed*: prompted with the pairs of a linear
regression task ``y_i = W x_i + noise`` (:class:`~learnlab.incontext.dynamics.FewShotRegressionSpec`)
as a sequence of states, its next-state prediction at an ``x`` position is its answer for ``W x``.
Two prompt formats, both mapped to tokens by the very token map the model was trained with (by
default the constructed tokens ``[0, s_t, s_t, s_{t-1}]``):

* untuned, :func:`pair_prompt_states`: ``[x_1, y_1, ..., x_n, y_n, x_q]`` (the official
  ``ICLSingleGenerator`` without EOS). The prompt is an ordinary input sequence, so it probes
  whether the algorithm learned on next-state prediction can be repurposed by prompting alone;
  it also holds the spurious transitions ``y_i -> x_{i+1}``, which an in-context dynamics learner
  fits as well.
* tuned, :func:`eos_prompt_states`: ``[P_1, ..., P_m, x_1, y_1, EOS, ..., x_n, y_n, EOS, x_q]``
  (official ``ICLSingleGenerator`` with an EOS token and a prefix prompt). Only the EOS state
  ``e`` (one ``D``-vector shared by all separators) and the ``m`` prefix states are learned, by Adam
  on fresh tasks with every weight of the model frozen (official ``EOSFineTuner`` /
  ``PrefixFineTuner``: Adam, init ``N(0, 1)``, loss ½‖ŷ − y‖² at every ``x`` position).

The learned vectors are *states*, like ``x`` and ``y``, so an ``x`` token carries the EOS as its
previous state and the first ``x`` carries the last prefix state: the model's input format stays
exactly the one it was trained on; the tokens only choose which states sit between the pairs.
:func:`few_shot_curve` measures either format against the number of examples, and
:func:`few_shot_baselines` the closed-form learners on the very same tasks.

Usable without the study machinery::

    tokens = tune_prompt_tokens(model, dim=10, num_examples=20, steps=400, lr=0.02, prefix_length=4,
                                generator=torch.Generator().manual_seed(0))
    tuned = few_shot_curve(model, counts=(1, 10), tasks=512, seed=1, dim=10, tokens=tokens)
    untuned = few_shot_curve(model, counts=(1, 10), tasks=512, seed=1, dim=10)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from learnlab.incontext.dynamics import FewShotRegressionSpec, FewShotRegressionTasks, constructed_tokens

TokenMap = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PromptTokens:
    """Learned separator and prefix states: ``eos`` (D,), ``prefix`` (m, D) (m may be 0)."""

    eos: torch.Tensor
    prefix: torch.Tensor

    @classmethod
    def zeros(cls, dim: int, prefix_length: int = 0, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> "PromptTokens":
        return cls(torch.zeros(dim, dtype=dtype, device=device), torch.zeros(prefix_length, dim, dtype=dtype, device=device))

    @classmethod
    def random(cls, dim: int, prefix_length: int, generator: torch.Generator | None = None, std: float = 1.0,
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> "PromptTokens":
        """The official initialisation: ``N(0, std^2)`` (std 1)."""
        eos = torch.randn(dim, generator=generator, dtype=torch.float64) * std
        prefix = torch.randn(prefix_length, dim, generator=generator, dtype=torch.float64) * std
        return cls(eos.to(dtype=dtype, device=device), prefix.to(dtype=dtype, device=device))

    def detach(self) -> "PromptTokens":
        return PromptTokens(self.eos.detach().clone(), self.prefix.detach().clone())


def eos_prompt_states(x: torch.Tensor, y: torch.Tensor, tokens: PromptTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """The state sequence ``[P, x_1, y_1, e, ..., x_n, y_n, e]`` ``(B, m + 3n, D)`` and the ``x`` positions ``(n,)``.

    The prediction at ``x_i``'s position is the answer for ``y_i`` after ``i - 1`` complete examples.
    To query with ``k`` examples, pass ``k + 1`` points and read the last ``x`` position.
    """
    batch, n, dim = x.shape
    eos = tokens.eos.to(x.dtype).expand(batch, n, 1, dim)
    triples = torch.cat([x.unsqueeze(2), y.unsqueeze(2), eos], dim=2).reshape(batch, 3 * n, dim)
    prefix = tokens.prefix.to(x.dtype).expand(batch, *tokens.prefix.shape)
    states = torch.cat([prefix, triples], dim=1)
    positions = tokens.prefix.shape[0] + 3 * torch.arange(n, device=x.device)
    return states, positions


def pair_prompt_states(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The untuned state sequence ``[x_1, y_1, ..., x_n, y_n, x_q]`` ``(B, 2n + 1, D)`` from ``n + 1`` points.

    The last point is the query: its ``x`` ends the sequence, its ``y`` is left out.
    """
    batch, points, dim = x.shape
    pairs = torch.stack([x[:, :-1], y[:, :-1]], dim=2).reshape(batch, 2 * (points - 1), dim)
    return torch.cat([pairs, x[:, -1:]], dim=1)


def prompt_predictions(model: nn.Module, tasks: FewShotRegressionTasks, tokens: PromptTokens,
                       token_map: TokenMap = constructed_tokens) -> torch.Tensor:
    """The model's answers ``(B, n, D)`` at every ``x`` position of the EOS-format prompt."""
    states, positions = eos_prompt_states(tasks.x, tasks.y, tokens)
    return model.predict(token_map(states))[:, positions]


def prompt_loss(model: nn.Module, tasks: FewShotRegressionTasks, tokens: PromptTokens,
                token_map: TokenMap = constructed_tokens) -> torch.Tensor:
    """½‖ŷ_i − W x_i‖², averaged over tasks and over the ``x`` positions (the official fine-tuning loss)."""
    predictions = prompt_predictions(model, tasks, tokens, token_map)
    return 0.5 * (predictions - tasks.target).pow(2).sum(-1).mean()


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Turn off ``requires_grad`` on every parameter (and eval mode) for the block; restore afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    model.eval()
    try:
        yield model
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(training)


@dataclass
class TuningHistory:
    """The training loss of every tuning step."""

    losses: list[float] = field(default_factory=list)

    def first_and_last(self) -> tuple[float, float]:
        """Mean loss over the first and over the last window of steps (a fifth of them, 1 to 50)."""
        window = max(1, min(50, len(self.losses) // 5))
        return sum(self.losses[:window]) / window, sum(self.losses[-window:]) / window


def tune_prompt_tokens(
    model: nn.Module,
    dim: int,
    num_examples: int,
    steps: int,
    lr: float,
    prefix_length: int = 0,
    batch_size: int = 64,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    init: PromptTokens | None = None,
    tune_eos: bool = True,
    token_map: TokenMap = constructed_tokens,
    history: TuningHistory | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> PromptTokens:
    """Learn the EOS state and ``prefix_length`` prefix states by Adam with ``model`` frozen.

    Every step draws ``batch_size`` fresh tasks of ``num_examples`` points and minimises
    :func:`prompt_loss`. ``init`` (default: the official ``N(0, 1)`` draw from ``generator``) gives
    the starting tokens; ``tune_eos=False`` keeps its EOS fixed (the official second stage, which
    tunes the prefix for a previously tuned EOS). The model's weights are never modified.
    Returns the learned tokens (detached); the per-step losses go to ``history``.
    """
    if steps < 0 or lr <= 0 or prefix_length < 0 or num_examples < 1 or batch_size < 1:
        raise ValueError("need steps >= 0, lr > 0, prefix_length >= 0, num_examples >= 1, batch_size >= 1")
    reference = next(model.parameters())
    dtype, device = reference.dtype, reference.device
    if init is None:
        init = PromptTokens.random(dim, prefix_length, generator, dtype=dtype, device=device)
    if init.prefix.shape[0] != prefix_length or init.eos.shape != (dim,):
        raise ValueError(f"init tokens must have eos ({dim},) and prefix ({prefix_length}, {dim})")
    eos = init.eos.detach().clone().to(dtype=dtype, device=device).requires_grad_(tune_eos)
    prefix = init.prefix.detach().clone().to(dtype=dtype, device=device).requires_grad_(prefix_length > 0)
    learned = [t for t in (eos, prefix) if t.requires_grad]
    if not learned or steps == 0:
        return PromptTokens(eos.detach(), prefix.detach())
    optimizer = torch.optim.Adam(learned, lr=lr, foreach=True)  # the per-tensor loop's numbers, fewer calls
    tokens = PromptTokens(eos, prefix)
    sampler = FewShotRegressionSpec(num_examples, dim, noise)
    with frozen(model):
        for step in range(steps):
            tasks = sampler.sample(batch_size, generator, dtype=dtype, device=device)
            optimizer.zero_grad(set_to_none=True)
            loss = prompt_loss(model, tasks, tokens, token_map)
            loss.backward()
            optimizer.step()
            value = loss.item()
            if history is not None:
                history.losses.append(value)
            if on_step is not None:
                on_step(step + 1, value)
    return tokens.detach()


def few_shot_tasks(counts: Sequence[int], tasks: int, seed: int, dim: int, noise: float = 0.01,
                   dtype: torch.dtype = torch.float32,
                   device: torch.device | str = "cpu") -> Iterator[tuple[int, FewShotRegressionTasks]]:
    """``(k, tasks)`` per ``k`` in ``counts``: ``tasks`` independent tasks of ``k + 1`` points (the last is the query).

    Each count has its own generator, seeded with ``seed + k``, so every curve and baseline
    measured with the same ``seed`` sees the very same tasks at each count.
    """
    for count in counts:
        generator = torch.Generator().manual_seed(seed + count)
        yield count, FewShotRegressionSpec(count + 1, dim, noise).sample(tasks, generator, dtype=dtype, device=device)


@dataclass
class FewShotCurve:
    """Mean error ½‖ŷ − W x_q‖² over tasks per number of examples, and its standard error over tasks."""

    counts: tuple[int, ...]
    errors: list[float]
    standard_errors: list[float]

    @classmethod
    def from_per_task(cls, counts: Sequence[int], per_task: Sequence[torch.Tensor]) -> "FewShotCurve":
        """The curve of per-task errors ``(tasks,)`` (float64), one tensor per count."""
        errors = [float(values.mean()) for values in per_task]
        standard_errors = [float(values.std() / values.numel() ** 0.5) for values in per_task]
        return cls(tuple(counts), errors, standard_errors)

    def ratio(self, top: int, bottom: int) -> float:
        """``error(top examples) / error(bottom examples)``."""
        return self.errors[self.counts.index(top)] / self.errors[self.counts.index(bottom)]

    def ratio_standard_error(self, top: int, bottom: int) -> float:
        """Delta-method standard error of :meth:`ratio` (the counts' task sets are independent)."""
        t, b = self.counts.index(top), self.counts.index(bottom)
        relative = ((self.standard_errors[t] / self.errors[t]) ** 2 + (self.standard_errors[b] / self.errors[b]) ** 2) ** 0.5
        return self.ratio(top, bottom) * relative

    def metrics(self, name: str, top: int = 10, bottom: int = 1) -> dict[str, Any]:
        """``{name}_errors``, ``{name}_error_standard_errors`` and the ratio ``top``-to-``bottom`` with its standard error."""
        return {f"{name}_errors": self.errors, f"{name}_error_standard_errors": self.standard_errors,
                f"{name}_ratio_{top}_to_{bottom}": self.ratio(top, bottom),
                f"{name}_ratio_{top}_to_{bottom}_standard_error": self.ratio_standard_error(top, bottom)}


def few_shot_curve(model: nn.Module, counts: Sequence[int], tasks: int, seed: int, dim: int, *,
                   tokens: PromptTokens | None = None, noise: float = 0.01, token_map: TokenMap = constructed_tokens,
                   batch_size: int = 1024) -> FewShotCurve:
    """The model's few-shot regression error with ``k`` examples before the query, per ``k`` in ``counts``.

    The tasks are :func:`few_shot_tasks` (``seed + k`` per count). With learned ``tokens`` the
    prompt is the EOS format ``[P, x_1, y_1, e, ..., x_k, y_k, e, x_q]``; without, the untuned
    ``[x_1, y_1, ..., x_k, y_k, x_q]``. ``batch_size`` only splits the forward passes.
    """
    reference = next(model.parameters())
    per_task = []
    with frozen(model), torch.no_grad():
        for _, sample in few_shot_tasks(counts, tasks, seed, dim, noise, reference.dtype, reference.device):
            parts = []
            for start in range(0, tasks, batch_size):
                part = sample[start:start + batch_size]
                if tokens is None:
                    prediction = model.predict(token_map(pair_prompt_states(part.x, part.y)))[:, -1]
                else:
                    prediction = prompt_predictions(model, part, tokens, token_map)[:, -1]
                parts.append(0.5 * (prediction - part.target[:, -1]).pow(2).sum(-1).double().cpu())
            per_task.append(torch.cat(parts))
    return FewShotCurve.from_per_task(counts, per_task)


def few_shot_baselines(counts: Sequence[int], tasks: int, seed: int, dim: int, noise: float = 0.01,
                       ridge: float = 1e-3) -> dict[str, FewShotCurve]:
    """Closed-form learners on the very tasks of :func:`few_shot_curve` with the same ``seed`` (float64).

    ``gd1``: one GD step from ``W = 0`` on the ``k`` pairs, ``Ŵ = η Σ y_i x_iᵀ``, with ``η`` fitted per
    ``k`` on the answers of all tasks (in hindsight: a lower bound for any single GD step);
    ``lsq``: ridge least squares with penalty ``ridge``.
    """
    gd1, lsq = [], []
    for _, sample in few_shot_tasks(counts, tasks, seed, dim, noise):
        x, y = sample.x[:, :-1].double(), sample.y[:, :-1].double()
        query, target = sample.x[:, -1].double(), sample.target[:, -1].double()
        step = (y.transpose(1, 2) @ (x @ query.unsqueeze(-1))).squeeze(-1)
        eta = float((step * target).sum() / (step * step).sum())
        gd1.append(0.5 * (eta * step - target).pow(2).sum(-1))
        gram = x.transpose(1, 2) @ x + ridge * torch.eye(dim, dtype=torch.float64)
        solved = torch.linalg.solve(gram, query.unsqueeze(-1))
        lsq.append(0.5 * ((y.transpose(1, 2) @ (x @ solved)).squeeze(-1) - target).pow(2).sum(-1))
    return {"gd1": FewShotCurve.from_per_task(counts, gd1), "lsq": FewShotCurve.from_per_task(counts, lsq)}


def tune_frozen_models(models: dict[str, nn.Module], config: Any, ctx: Any) -> dict[str, Any]:
    """Learn the EOS and prefix states of each frozen model (von Oswald et al. 2023, §6, token fine-tuning).

    ``config`` has the ``mesa`` study's ``dim``, ``noise`` and ``prompt_*`` fields; ``ctx`` is a run
    context (random streams, a progress bar that stops on a NaN loss, ``log``). Returns, per model
    key, ``<key>.eos``, ``<key>.prefix``, the loss history, its first and last window means and the seconds.
    """
    result: dict[str, Any] = {}
    for key, model in models.items():
        generator, history, started = ctx.generator("prompt tuning", key), TuningHistory(), time.perf_counter()
        what = f"{key} prompt-tuning loss"
        with ctx.training_progress(f"tune EOS + prefix ({key})", config.prompt_tuning_steps, what) as on_step:
            tokens = tune_prompt_tokens(model, config.dim, config.prompt_tuning_examples, config.prompt_tuning_steps,
                                        config.prompt_tuning_lr, config.prompt_prefix_length, config.prompt_tuning_batch_size,
                                        config.noise, generator, history=history, on_step=on_step)
        seconds = time.perf_counter() - started
        first, last = history.first_and_last()
        ctx.log(model=key, prompt_tuning_first_loss=first, prompt_tuning_last_loss=last, prompt_tuning_seconds=seconds)
        result.update({f"{key}.eos": tokens.eos.cpu(), f"{key}.prefix": tokens.prefix.cpu(), f"{key}.losses": history.losses,
                       f"{key}.first_loss": first, f"{key}.last_loss": last, f"{key}.seconds": seconds})
    return result
