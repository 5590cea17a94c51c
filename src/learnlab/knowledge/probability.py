"""Keyword probabilities, greedy fact recall and perplexity for any causal LM.

Keyword probability (Sun et al. 2025, §3; a keyword may span several tokens):
P(keyword | prefix) is the teacher-forced joint probability of the keyword's tokens, i.e. the
product of the token probabilities (a sum of log-probabilities), with log-softmax taken in
float32. The first token's probability is reported too. Tokens of a continuation are found the
way evaluation harnesses do it: encode ``prefix + separator + keyword`` and take the tokens
after the encoded prefix (falling back to encoding the two parts separately when the tokenizer
merges across the boundary).

A ``model`` here is anything called as ``model(input_ids=..., attention_mask=...)`` that returns an
object with ``.logits`` of shape (batch, length, vocab): every ``transformers`` causal LM, or a
hand-written module in tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class KeywordScores:
    """Per (prefix, keyword) pair: joint log-probability, first-token log-probability, token count."""

    log_prob: torch.Tensor
    first_token_log_prob: torch.Tensor
    num_tokens: torch.Tensor

    @property
    def prob(self) -> torch.Tensor:
        return self.log_prob.exp()

    @property
    def first_token_prob(self) -> torch.Tensor:
        return self.first_token_log_prob.exp()


def encode_pair(tokenizer: Any, prefix: str, continuation: str, separator: str = " ") -> tuple[list[int], list[int]]:
    """Token ids of ``prefix`` (with the tokenizer's special start tokens) and of ``separator + continuation``."""
    prefix_ids = list(tokenizer(prefix)["input_ids"])
    whole = list(tokenizer(prefix + separator + continuation)["input_ids"])
    if whole[: len(prefix_ids)] == prefix_ids and len(whole) > len(prefix_ids):
        return prefix_ids, whole[len(prefix_ids):]
    return prefix_ids, list(tokenizer(separator + continuation, add_special_tokens=False)["input_ids"])


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and the matching ``attention_mask`` (1 on real tokens) for token lists."""
    length = max(map(len, rows))
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        attention[row, : len(ids)] = 1
    return input_ids, attention


@torch.no_grad()
def continuation_token_log_probs(model: Any, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 64,
                                 pad_id: int = 0) -> list[torch.Tensor]:
    """For each (context ids, continuation ids), the float32 log-probability of every continuation token.

    Pairs are batched by length (shortest first) so that a batch is padded to its own longest row, not
    to the longest of all; the results come back in the order of ``pairs``.
    """
    device = model_device(model)
    order = sorted(range(len(pairs)), key=lambda index: len(pairs[index][0]) + len(pairs[index][1]))
    by_length = [pairs[index] for index in order]
    results: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    for start in range(0, len(pairs), batch_size):
        chunk = by_length[start:start + batch_size]
        if any(not context or not continuation for context, continuation in chunk):
            raise ValueError("context and continuation must both be non-empty token lists")
        input_ids, attention = pad_rows([list(context) + list(continuation) for context, continuation in chunk], pad_id)
        rows, positions, targets = [], [], []
        for row, (context, continuation) in enumerate(chunk):
            for offset, token in enumerate(continuation):
                rows.append(row)
                positions.append(len(context) + offset - 1)  # logits at t predict token t + 1
                targets.append(token)
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        picked = logits[torch.tensor(rows, device=device), torch.tensor(positions, device=device)].float()
        token_log_probs = picked.log_softmax(-1).gather(1, torch.tensor(targets, device=device)[:, None])[:, 0].cpu()
        lengths = [len(continuation) for _, continuation in chunk]
        for index, values in zip(order[start:start + batch_size], token_log_probs.split(lengths)):
            results[index] = values
    return results


def keyword_log_probs(model: Any, tokenizer: Any, prefixes: Sequence[str], keywords: Sequence[str] | str,
                      batch_size: int = 64, separator: str = " ") -> KeywordScores:
    """log P(keyword | prefix) (product over the keyword's tokens) for each pair, batched.

    ``keywords`` is one keyword for every prefix or one per prefix.
    """
    if isinstance(keywords, str):
        keywords = [keywords] * len(prefixes)
    if len(keywords) != len(prefixes):
        raise ValueError(f"{len(prefixes)} prefixes but {len(keywords)} keywords")
    pairs = [encode_pair(tokenizer, prefix, keyword, separator) for prefix, keyword in zip(prefixes, keywords)]
    per_token = continuation_token_log_probs(model, pairs, batch_size, pad_token_id(tokenizer))
    return KeywordScores(
        log_prob=torch.stack([values.sum() for values in per_token]) if per_token else torch.zeros(0),
        first_token_log_prob=torch.stack([values[0] for values in per_token]) if per_token else torch.zeros(0),
        num_tokens=torch.tensor([len(values) for values in per_token], dtype=torch.long),
    )


@torch.no_grad()
def greedy_recall(model: Any, tokenizer: Any, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 64,
                  separator: str = " ") -> torch.Tensor:
    """Whether greedy decoding from each prompt produces exactly the answer's tokens (top-1 over the vocabulary).

    Teacher-forced check: greedy decoding yields the answer iff, at every answer position, the
    argmax of the next-token distribution is the answer's token.
    """
    device = model_device(model)
    pairs = [encode_pair(tokenizer, prompt, answer, separator) for prompt, answer in zip(prompts, answers)]
    correct = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        input_ids, attention = pad_rows([context + answer for context, answer in chunk], pad_token_id(tokenizer))
        predicted = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.argmax(-1).cpu()
        for row, (context, answer) in enumerate(chunk):
            guesses = predicted[row, len(context) - 1: len(context) + len(answer) - 1]
            correct.append(bool(torch.equal(guesses, torch.tensor(answer))))
    return torch.tensor(correct)


@torch.no_grad()
def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32, max_length: int = 256) -> float:
    """exp(mean next-token negative log-likelihood) over all tokens of ``texts`` (each truncated to ``max_length``)."""
    device = model_device(model)
    total, count = 0.0, 0
    encoded = [list(tokenizer(text)["input_ids"])[:max_length] for text in texts]
    for start in range(0, len(encoded), batch_size):
        chunk = [ids for ids in encoded[start:start + batch_size] if len(ids) > 1]
        if not chunk:
            continue
        input_ids, attention = pad_rows(chunk, pad_token_id(tokenizer))
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits[:, :-1].float()
        targets = input_ids[:, 1:].to(device)
        mask = attention[:, 1:].to(device).bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        total += nll[mask].sum().item()
        count += int(mask.sum())
    return math.exp(total / max(count, 1))


@torch.no_grad()
def heldout_loss(model: Any, windows: torch.Tensor, batch_size: int = 64) -> float:
    """Mean next-token loss of ``model`` (in eval mode for the call) on 2-D held-out token windows."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, count = 0.0, 0
    for chunk in windows.split(batch_size):
        chunk = chunk.to(device)
        logits = model(input_ids=chunk[:, :-1]).logits.float()
        total += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction="sum"))
        count += chunk[:, 1:].numel()
    model.train(was_training)
    return total / count


def pad_token_id(tokenizer: Any) -> int:
    """The id to pad with: the tokenizer's pad token, else its end-of-sequence token, else 0."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0
