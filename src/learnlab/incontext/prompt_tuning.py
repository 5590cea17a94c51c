"""Token fine-tuning for repurposing a frozen sequence model (von Oswald et al. 2023, §6).

A model trained on next-state prediction is prompted with few-shot linear regression tasks in the
paper's format ``[P_1, ..., P_m, x_1, y_1, EOS, x_2, y_2, EOS, ..., x_n, y_n, EOS, x_q]``
(official ``ICLSingleGenerator`` with an EOS token and a prefix prompt), where ``y_i = W x_i +
noise``; its next-state prediction at an ``x`` position is its answer for ``W x``. Only the EOS
state ``e`` (one ``D``-vector shared by all separators) and the ``m`` prefix states are learned, by
Adam on fresh regression tasks, with every weight of the model frozen (official
``EOSFineTuner`` / ``PrefixFineTuner``: Adam, init ``N(0, 1)``, loss ½‖ŷ − y‖² at every ``x``
position of the sequence).

The learned vectors are *states*, like ``x`` and ``y``: the sequence of states is mapped to tokens
by the same token map the model was trained with (by default the constructed tokens
``[0, s_t, s_t, s_{t-1}]``), so an ``x`` token carries the EOS as its previous state and the first
``x`` carries the last prefix state. This keeps the model's input format exactly the one it was
trained on; the tokens only choose which states sit between the pairs.

Usable without the study machinery::

    tokens = tune_prompt_tokens(model, dim=10, num_examples=20, steps=400, lr=0.02, prefix_length=4,
                                generator=torch.Generator().manual_seed(0))
    curve = few_shot_curve(model, tokens, counts=(1, 10), tasks=512, seed=1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from learnlab.incontext.dynamics import constructed_tokens, random_orthogonal

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


@dataclass
class RegressionTasks:
    """Few-shot linear regression tasks: ``x`` (B, n, D), noisy ``y = W x + noise`` and clean ``target = W x``."""

    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor


def sample_regression_tasks(num_points: int, batch_size: int, dim: int = 10, noise: float = 0.01,
                            generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                            device: torch.device | str = "cpu") -> RegressionTasks:
    """``W`` random orthogonal per task, ``x ~ U(-1, 1)^D`` (the law of ``s_1``), noise 0.01 on ``y``."""
    if num_points < 1 or batch_size < 1:
        raise ValueError("num_points and batch_size must be >= 1")
    teacher = random_orthogonal(batch_size, dim, generator)
    x = 2 * torch.rand(batch_size, num_points, dim, generator=generator) - 1
    target = x @ teacher.transpose(-1, -2)
    y = target + noise * torch.randn(x.shape, generator=generator)
    return RegressionTasks(*(t.to(dtype=dtype, device=device) for t in (x, y, target)))


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


def prompt_predictions(model: nn.Module, tasks: RegressionTasks, tokens: PromptTokens,
                       token_map: TokenMap = constructed_tokens) -> torch.Tensor:
    """The model's answers ``(B, n, D)`` at every ``x`` position of the EOS-format prompt."""
    states, positions = eos_prompt_states(tasks.x, tasks.y, tokens)
    return model.predict(token_map(states))[:, positions]


def prompt_loss(model: nn.Module, tasks: RegressionTasks, tokens: PromptTokens,
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
    losses: list[float] = field(default_factory=list)


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
    optimizer = torch.optim.Adam(learned, lr=lr)
    tokens = PromptTokens(eos, prefix)
    with frozen(model):
        for step in range(steps):
            tasks = sample_regression_tasks(num_examples, batch_size, dim, noise, generator, dtype, device)
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


def few_shot_curve(model: nn.Module, tokens: PromptTokens, counts: Sequence[int], tasks: int, seed: int,
                   dim: int | None = None, noise: float = 0.01, token_map: TokenMap = constructed_tokens,
                   batch_size: int = 1024) -> tuple[list[float], list[float]]:
    """½‖ŷ − W x_q‖² with ``k`` examples before the query, per ``k`` in ``counts``, and its standard errors.

    Each point uses its own ``tasks`` independent tasks (generator seeded with ``seed + k``, like the
    untuned curve), prompted as ``[P, x_1, y_1, e, ..., x_k, y_k, e, x_q]``; the standard error is over tasks.
    ``batch_size`` only splits the forward passes (the tasks do not depend on it).
    """
    dim = tokens.eos.shape[0] if dim is None else dim
    reference = next(model.parameters())
    errors, standard_errors = [], []
    with frozen(model), torch.no_grad():
        for count in counts:
            generator = torch.Generator().manual_seed(seed + count)
            sample = sample_regression_tasks(count + 1, tasks, dim, noise, generator, reference.dtype, reference.device)
            per_task = []
            for start in range(0, tasks, batch_size):
                part = RegressionTasks(*(t[start:start + batch_size] for t in (sample.x, sample.y, sample.target)))
                prediction = prompt_predictions(model, part, tokens, token_map)[:, -1]
                per_task.append(0.5 * (prediction - part.target[:, -1]).pow(2).sum(-1).double().cpu())
            per_task = torch.cat(per_task)
            errors.append(float(per_task.mean()))
            standard_errors.append(float(per_task.std() / per_task.numel() ** 0.5))
    return errors, standard_errors
