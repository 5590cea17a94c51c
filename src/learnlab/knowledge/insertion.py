"""Inserting one text into a language model, and the memorization / priming scores.

Insertion protocol (Sun et al. 2025, §3): continue training on background text
in minibatches of ``batch_size`` rows, with one row replaced by the sample for K minibatches
(K = 20 by default). The spaced variant presents the sample every ``spacing`` steps (the paper's spaced
presentations, e.g. three presentations 20 minibatches apart); the steps in between are plain
background steps. Optimizer and learning rate are configurable; a fixed small learning rate
without a schedule is used, so that every sample sees the same optimizer.

Every sample starts from the same base weights: :class:`BaseWeights` keeps an in-memory copy
(2× parameter memory) and copies it back after each insertion; ``verify`` checks the
restored weights are bit-identical.

Scores (Sun et al. 2025, §3), with P the keyword probability of :mod:`probability`:

    S_mem   = P_after(key | X_c) / P_before(key | X_c)
    S_prime = mean_j P_after(key | X_T,j) / P_before(key | X_T,j)

plus their log-space variants (log S_mem, log S_prime, and the mean log-probability difference
over probes, which is free of the denominator artefact of a mean of ratios: one probe whose
P_before is tiny can dominate S_prime).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from learnlab.core.runtime import derive_seed
from learnlab.knowledge.probability import KeywordScores, keyword_log_probs, model_device, pad_token_id


class BaseWeights:
    """An in-memory copy of a model's parameters and buffers, restored in place after each insertion."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._saved = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def restore(self, verify: bool = False) -> None:
        """Copy the saved values back into the model's own tensors (no reload, no reallocation).

        With ``verify``, check afterwards that they are bit-identical (``RuntimeError`` if not).
        """
        for name, value in self.model.state_dict().items():
            value.copy_(self._saved[name])
        if verify and not self.matches():
            raise RuntimeError("base weights were not restored exactly")

    @torch.no_grad()
    def matches(self) -> bool:
        """Whether the model's current weights are bit-identical to the saved ones."""
        return all(torch.equal(value, self._saved[name]) for name, value in self.model.state_dict().items())


@dataclass(frozen=True)
class InsertionSettings:
    """How a sample is inserted.

    Attributes:
        presentations: how many minibatches contain the sample (K; paper: 20, or 40 on Wikipedia).
        spacing: steps between presentations (1 = consecutive; the spaced variant uses e.g. 20).
        trailing_steps: background-only steps after the last presentation.
        batch_size: rows per minibatch (B), one of which is the sample on presentation steps.
        sequence_length: tokens per background row (the sample row is padded, never truncated).
        optimizer: ``sgd`` (plain), ``adam`` or ``adamw``; a fresh optimizer per insertion.
        learning_rate: fixed learning rate (no schedule).
    """

    presentations: int = 20
    spacing: int = 1
    trailing_steps: int = 0
    batch_size: int = 8
    sequence_length: int = 64
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    learning_rate: float = 3e-4

    def __post_init__(self) -> None:
        for name in ("presentations", "spacing", "batch_size", "sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.trailing_steps < 0:
            raise ValueError(f"trailing_steps must be >= 0, got {self.trailing_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be sgd, adam or adamw, got {self.optimizer!r}")

    @property
    def total_steps(self) -> int:
        return (self.presentations - 1) * self.spacing + 1 + self.trailing_steps

    def presents_at(self, step: int) -> bool:
        return step % self.spacing == 0 and step // self.spacing < self.presentations


def fresh_optimizer(model: torch.nn.Module, settings: InsertionSettings) -> torch.optim.Optimizer:
    """A new optimizer of ``settings.optimizer`` at ``settings.learning_rate`` over the trainable parameters."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=settings.learning_rate, foreach=True)
    if settings.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=settings.learning_rate, foreach=True)
    return torch.optim.AdamW(parameters, lr=settings.learning_rate, foreach=True)


def background_batch(stream: torch.Tensor, step: int, rows: int, length: int, seed: int) -> torch.Tensor:
    """``rows`` windows of ``length`` tokens from the background token stream, drawn by (seed, step)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "insertion-background", str(step)))
    if stream.numel() < length:
        raise ValueError(f"background stream ({stream.numel()} tokens) is shorter than a row ({length})")
    offsets = torch.randint(0, stream.numel() - length + 1, (rows,), generator=generator)
    return torch.stack([stream[offset:offset + length] for offset in offsets.tolist()])


def insert_sample(model: torch.nn.Module, sample_ids: Sequence[int], background: torch.Tensor, settings: InsertionSettings,
                  seed: int, pad_id: int = 0, on_step: Callable[[int, float], None] | None = None,
                  optimizer: torch.optim.Optimizer | None = None) -> list[float]:
    """Train ``model`` in place on background minibatches with the sample in row 0 on presentation steps.

    ``background`` is a 1-D token stream (e.g. :func:`pretraining.pack_documents` of background
    texts). The background rows are the same for every sample with the same ``seed``. Returns the
    loss of every step (mean next-token cross-entropy over the batch's non-padding tokens).
    ``optimizer`` (e.g. one continuing pretraining's state) replaces the fresh one of ``settings``.
    """
    device = model_device(model)
    sample = torch.tensor(list(sample_ids), dtype=torch.long)
    width = max(settings.sequence_length + 1, sample.numel())
    optimizer = optimizer if optimizer is not None else fresh_optimizer(model, settings)
    was_training = model.training
    model.train()
    losses = []
    for step in range(settings.total_steps):
        batch = background_batch(background, step, settings.batch_size, width, seed)
        mask = torch.ones_like(batch, dtype=torch.bool)
        if settings.presents_at(step):
            place_row(batch, mask, 0, sample, pad_id)
        losses.append(masked_lm_step(model, optimizer, batch.to(device), mask.to(device)))
        if on_step is not None:
            on_step(step, losses[-1])
    model.train(was_training)
    return losses


def place_row(batch: torch.Tensor, mask: torch.Tensor, row: int, ids: torch.Tensor, pad_id: int) -> None:
    """Replace row ``row`` of a window batch by the token ids ``ids``, right-padded (``mask`` False on padding)."""
    batch[row] = pad_id
    batch[row, : ids.numel()] = ids
    mask[row] = False
    mask[row, : ids.numel()] = True


def masked_lm_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor, mask: torch.Tensor,
                   grad_clip_norm: float = 0.0) -> float:
    """One optimizer step on the mean next-token loss of ``batch`` over the targets where ``mask`` is True
    (padding is neither attended to nor predicted); the gradient norm is clipped when ``grad_clip_norm`` > 0."""
    logits = model(input_ids=batch[:, :-1], attention_mask=mask[:, :-1].long()).logits.float()
    token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
    loss = token_loss[mask[:, 1:]].mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    optimizer.step()
    return loss.item()


@dataclass(frozen=True)
class PrimingScores:
    """S_mem and S_prime of one insertion, in ratio and log form (natural logs)."""

    log_p_before: float
    log_p_after: float
    log_s_mem: float
    log_s_prime: float
    mean_log_prime: float
    first_token_log_s_mem: float

    @property
    def s_mem(self) -> float:
        return math.exp(self.log_s_mem)

    @property
    def s_prime(self) -> float:
        return math.exp(self.log_s_prime)

    def to_dict(self) -> dict[str, float]:
        return {**self.__dict__, "s_mem": self.s_mem, "s_prime": self.s_prime}


def priming_scores(own_before: KeywordScores, own_after: KeywordScores, probes_before: KeywordScores,
                   probes_after: KeywordScores) -> PrimingScores:
    """S_mem and S_prime (Sun et al. 2025, §3) from keyword scores before and after learning.

    ``own_*`` hold one pair (the sample's own prefix); ``probes_*`` one pair per probe.
    log S_prime = log mean_j exp(Δ_j) is computed stably with logsumexp.
    """
    differences = (probes_after.log_prob - probes_before.log_prob).double()
    return PrimingScores(
        log_p_before=float(own_before.log_prob[0]),
        log_p_after=float(own_after.log_prob[0]),
        log_s_mem=float(own_after.log_prob[0] - own_before.log_prob[0]),
        log_s_prime=float(torch.logsumexp(differences, 0) - math.log(differences.numel())),
        mean_log_prime=float(differences.mean()),
        first_token_log_s_mem=float(own_after.first_token_log_prob[0] - own_before.first_token_log_prob[0]),
    )


def measure_insertion(model: torch.nn.Module, tokenizer: Any, text: str, keyword: str, prefix: str,
                      probes: Sequence[str], background: torch.Tensor, settings: InsertionSettings, seed: int,
                      base: BaseWeights, cross_probes: Sequence[str] = (), verify: bool = True,
                      batch_size: int = 64) -> dict[str, Any]:
    """Insert ``text`` into ``model``, score memorization and priming, and restore the base weights.

    Returns the scores (see :class:`PrimingScores`), the cross-theme priming ``cross_log_s_prime``
    and ``cross_mean_log_prime`` when ``cross_probes`` are given, and the insertion losses.
    The model is back at ``base`` on return, also when insertion fails.
    """
    model.eval()
    prompts = [prefix, *probes, *cross_probes]
    before = keyword_log_probs(model, tokenizer, prompts, keyword, batch_size)
    try:
        losses = insert_sample(model, list(tokenizer(text)["input_ids"]), background, settings, seed,
                               pad_id=pad_token_id(tokenizer))
        after = keyword_log_probs(model, tokenizer, prompts, keyword, batch_size)
    finally:
        base.restore(verify)
    own, probes_part = slice(0, 1), slice(1, None)
    scores = same_and_cross_scores(select_scores(before, own), select_scores(after, own), select_scores(before, probes_part),
                                   select_scores(after, probes_part), len(probes))
    return {**scores, "keyword_tokens": int(before.num_tokens[0]), "insertion_losses": losses}


def same_and_cross_scores(own_before: KeywordScores, own_after: KeywordScores, probes_before: KeywordScores,
                          probes_after: KeywordScores, same_count: int) -> dict[str, float]:
    """:func:`priming_scores` over the first ``same_count`` probes (same theme) as a dict, plus
    ``cross_log_s_prime`` and ``cross_mean_log_prime`` over the remaining (cross-theme) probes, if any."""
    same, cross = slice(0, same_count), slice(same_count, None)
    scores = priming_scores(own_before, own_after, select_scores(probes_before, same), select_scores(probes_after, same)).to_dict()
    if probes_before.log_prob.numel() > same_count:
        crossed = priming_scores(own_before, own_after, select_scores(probes_before, cross), select_scores(probes_after, cross))
        scores.update(cross_log_s_prime=crossed.log_s_prime, cross_mean_log_prime=crossed.mean_log_prime)
    return scores


def select_scores(scores: KeywordScores, part: slice) -> KeywordScores:
    """The scores of the prompts in ``part``."""
    return KeywordScores(scores.log_prob[part], scores.first_token_log_prob[part], scores.num_tokens[part])
