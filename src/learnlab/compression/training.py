"""Fine-tuning a decoder to answer from a compressed context, and the answer metrics.

Every method is trained the same way (full-parameter fine-tuning, as Petrov et al. 2025): the
loss is the next-token cross-entropy of the answer tokens only, read against the compressed
context (:func:`caches.compress` then :func:`caches.answer_logits`), with gradients flowing
through the slots into the compressor (the decoder itself, or its separate copy) and the gist
embeddings. ``none`` answers from the question alone (the lower bound), ``full`` from the whole
context (the upper bound). Metrics: answer loss, exact match (every answer token the argmax), and
recovery = (method − none) / (full − none) (Feldman & Artzi 2025).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from learnlab.compression.caches import GistTokens, answer_logits, compress
from learnlab.compression.tasks import QAExample, batch_of

Method = Literal["none", "full", "gisting", "gistpool", "avgpool"]


@dataclass(frozen=True)
class MethodSpec:
    """A compression method and its switches (the ablation chain: gisting, +shift, +separate, +window mask)."""

    method: Method
    rate: int = 1
    shift: bool = False
    separate: bool = False

    @property
    def name(self) -> str:
        extras = "".join(("+shift" if self.shift else "", "+separate" if self.separate else ""))
        return self.method if self.method in ("none", "full") else f"{self.method}{extras}-r{self.rate}"


@dataclass
class Answerer:
    """A decoder fine-tuned for one method, with its compressor (``None``: the decoder) and gist tokens."""

    spec: MethodSpec
    decoder: Any
    compressor: Any = None
    gists: GistTokens | None = None

    def parameters(self) -> list[torch.nn.Parameter]:
        modules = [self.decoder, self.compressor, self.gists]
        return [parameter for module in modules if module is not None for parameter in module.parameters()]

    def logits(self, contexts: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        if self.spec.method == "none":
            return self.decoder(input_ids=rest).logits
        compressed = compress(self.decoder, contexts, self.spec.method, self.spec.rate, self.gists, self.spec.shift,
                              self.compressor)
        return answer_logits(self.decoder, compressed, rest)

    def loss_and_correct(self, contexts: torch.Tensor, rest: torch.Tensor,
                         answer_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean answer-token loss and, per row, whether every answer token is the argmax."""
        logits = self.logits(contexts, rest)[:, :-1].float()
        targets, mask = rest[:, 1:], answer_mask[:, 1:]
        token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        hits = (logits.argmax(-1) == targets) | ~mask
        return token_loss[mask].mean(), hits.all(dim=1)


def make_answerer(decoder: Any, spec: MethodSpec, context_length: int,
                  generator: torch.Generator | None = None) -> Answerer:
    """A copy of ``decoder`` set up for ``spec``: gist tokens (initialised from ``generator``) for
    gisting and GistPool, a compressor copy if separate."""
    decoder = copy.deepcopy(decoder)
    gists = None
    if spec.method in ("gisting", "gistpool"):
        hidden = decoder.config.hidden_size
        gists = GistTokens(hidden, slots=context_length // spec.rate, shared=spec.method == "gistpool",
                           generator=generator)
    compressor = copy.deepcopy(decoder) if spec.separate else None
    return Answerer(spec, decoder, compressor, gists)


def finetune(answerer: Answerer, examples: list[QAExample] | list[list[QAExample]], steps: int, batch_size: int,
             learning_rate: float, generator: torch.Generator, on_step: Any = None) -> list[float]:
    """AdamW on the answer loss over batches drawn from ``examples``; returns the losses.

    ``examples`` is one list (one context length) or a list of such lists, taken in turn step by
    step (e.g. one per context length, for a model that reads every length).
    """
    groups = [examples] if examples and isinstance(examples[0], QAExample) else examples
    optimizer = torch.optim.AdamW(answerer.parameters(), lr=learning_rate, weight_decay=0.0, foreach=True)
    for module in (answerer.decoder, answerer.compressor):
        if module is not None:
            module.train()
    losses = []
    for step in range(steps):
        group = groups[step % len(groups)]
        picked = torch.randint(0, len(group), (batch_size,), generator=generator).tolist()
        contexts, rest, mask = batch_of([group[index] for index in picked])
        loss, _ = answerer.loss_and_correct(contexts, rest, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(answerer.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


@torch.no_grad()
def evaluate(answerer: Answerer, examples: list[QAExample], batch_size: int = 64) -> dict[str, float]:
    """Mean answer loss and exact-match accuracy over ``examples``."""
    for module in (answerer.decoder, answerer.compressor):
        if module is not None:
            module.eval()
    losses, correct = [], []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        loss, hits = answerer.loss_and_correct(*batch_of(chunk))
        losses.append(float(loss) * len(chunk))
        correct.extend(hits.tolist())
    return {"loss": sum(losses) / len(examples), "accuracy": sum(correct) / len(correct)}


def recovery(method: float, none: float, full: float) -> float:
    """(method − none) / (full − none): 0 at the no-context bound, 1 at the full-context bound (NaN when equal)."""
    return (method - none) / (full - none) if full != none else math.nan
