"""Context ‖ question ‖ answer tasks for compression, as token ids, and a loader for a user's QA file.

* :func:`key_value_examples`: the context lists key/value token pairs; the question is one key and
  the answer its value (recall of one item: what a compressed context must keep exactly).
* :func:`window_statistic_examples`: the context is cut into windows of ``window`` tokens, each
  dominated by one symbol; the question names a window and the answer is its dominant symbol (a
  per-window summary, the case GistPool's window mask is built for).
* :func:`load_qa_file`: JSONL lines ``{"context": ..., "question": ..., "answer": ...}`` (strings),
  tokenized by the model's tokenizer; a malformed line is a :class:`UserError` naming file:line.

Token ids of the procedural tasks start at ``first_id`` so that a tokenizer's special ids stay free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learnlab.core.errors import UserError
from learnlab.core.io import jsonl_records


@dataclass(frozen=True)
class QAExample:
    """Token ids of one example: the context, the question and the answer."""

    context: tuple[int, ...]
    question: tuple[int, ...]
    answer: tuple[int, ...]


def key_value_examples(count: int, pairs: int, keys: int, values: int, generator: torch.Generator,
                       first_id: int = 3) -> list[QAExample]:
    """``count`` examples of ``pairs`` distinct keys (context length 2 * pairs) with random values."""
    if pairs > keys:
        raise ValueError(f"{pairs} distinct keys asked of {keys}")
    examples = []
    for _ in range(count):
        chosen = torch.randperm(keys, generator=generator)[:pairs] + first_id
        answers = torch.randint(0, values, (pairs,), generator=generator) + first_id + keys
        context = torch.stack([chosen, answers], dim=1).flatten().tolist()
        asked = int(torch.randint(0, pairs, (1,), generator=generator))
        examples.append(QAExample(tuple(context), (int(chosen[asked]),), (int(answers[asked]),)))
    return examples


def window_statistic_examples(count: int, length: int, window: int, symbols: int, generator: torch.Generator,
                              dominance: float = 0.6, first_id: int = 3) -> list[QAExample]:
    """``count`` contexts of ``length`` tokens in windows of ``window``; in each window a share
    ``dominance`` of the tokens is the window's symbol, the rest uniform; question: the window's
    index token (ids after the symbols); answer: its symbol."""
    if length % window:
        raise ValueError(f"window {window} does not divide the context length {length}")
    windows = length // window
    examples = []
    for _ in range(count):
        dominant = torch.randint(0, symbols, (windows,), generator=generator)
        noise = torch.randint(0, symbols, (windows, window), generator=generator)
        keep = torch.rand(windows, window, generator=generator) < dominance
        tokens = torch.where(keep, dominant[:, None].expand(-1, window), noise) + first_id
        asked = int(torch.randint(0, windows, (1,), generator=generator))
        examples.append(QAExample(tuple(tokens.flatten().tolist()), (first_id + symbols + asked,),
                                  (int(dominant[asked]) + first_id,)))
    return examples


def load_qa_file(path: Path | str, tokenizer: Any) -> list[QAExample]:
    """Read a JSONL QA file (``context``, ``question``, ``answer`` strings) and tokenize it."""
    examples = []
    for number, record in jsonl_records(Path(path), "QA"):
        for field in ("context", "question", "answer"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise UserError(f"{path}:{number}: field {field!r} must be a non-empty string")
        context = list(tokenizer(record["context"])["input_ids"])
        question = list(tokenizer(" " + record["question"], add_special_tokens=False)["input_ids"])
        answer = list(tokenizer(" " + record["answer"], add_special_tokens=False)["input_ids"])
        examples.append(QAExample(tuple(context), tuple(question), tuple(answer)))
    if not examples:
        raise UserError(f"QA file {path} has no examples")
    return examples


def batch_of(examples: list[QAExample], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(contexts, question ‖ answer ids, answer mask) of examples whose contexts and questions have equal
    lengths; answers are right-padded with ``pad_id`` (mask False there)."""
    lengths = {len(example.context) for example in examples}
    questions = {len(example.question) for example in examples}
    if len(lengths) != 1 or len(questions) != 1:
        raise ValueError("a batch needs contexts of one length and questions of one length (group examples first)")
    longest = max(len(example.answer) for example in examples)
    contexts = torch.tensor([list(example.context) for example in examples])
    rest = torch.full((len(examples), questions.pop() + longest), pad_id)
    answer_mask = torch.zeros_like(rest, dtype=torch.bool)
    for row, example in enumerate(examples):
        ids = list(example.question) + list(example.answer)
        rest[row, : len(ids)] = torch.tensor(ids)
        answer_mask[row, len(example.question): len(ids)] = True
    return contexts, rest, answer_mask
