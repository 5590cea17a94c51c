"""Context ‖ question ‖ answer tasks for compression, as token ids, and a loader for a user's QA file.

* :func:`key_value_examples`: the context lists key/value token pairs; the question is one key and
  the answer its value (recall of one item: what a compressed context must keep exactly).
* :func:`window_statistic_examples`: the context is cut into windows of ``window`` tokens, each
  dominated by one symbol; the question names a window and the answer is its dominant symbol (a
  per-window summary, the case GistPool's window mask is built for).
* :func:`load_qa_file` (:func:`read_qa_records`): JSONL lines ``{"context": ..., "question": ..., "answer": ...}`` (strings),
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


def read_qa_records(path: Path | str) -> list[dict[str, str]]:
    """The records of a JSONL QA file (``context``, ``question``, ``answer``: non-empty strings), checked."""
    records = []
    for number, record in jsonl_records(Path(path), "QA"):
        for field in ("context", "question", "answer"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise UserError(f"{path}:{number}: field {field!r} must be a non-empty string")
        records.append(record)
    if not records:
        raise UserError(f"QA file {path} has no examples")
    return records


def load_qa_file(path: Path | str, tokenizer: Any) -> list[QAExample]:
    """Read a JSONL QA file (:func:`read_qa_records`) and tokenize it."""
    return tokenize_qa(read_qa_records(path), tokenizer)


def tokenize_qa(records: list[dict[str, str]], tokenizer: Any) -> list[QAExample]:
    """QA records (``context``, ``question``, ``answer`` strings) as token ids; question and answer
    each follow a space, as they would in running text."""
    examples = []
    for record in records:
        context = list(tokenizer(record["context"])["input_ids"])
        question = list(tokenizer(" " + record["question"], add_special_tokens=False)["input_ids"])
        answer = list(tokenizer(" " + record["answer"], add_special_tokens=False)["input_ids"])
        examples.append(QAExample(tuple(context), tuple(question), tuple(answer)))
    return examples


def world_passage_records(world_model: Any, facts: int, count: int, seed: int) -> list[dict[str, str]]:
    """``count`` passage-QA records of a trained tiny world (a ``WorldModel``): passages of ``facts``
    facts stated in the templates its training used, a question about one of them in another
    template, the answer the passage gives (the held-out in-context recall prompts of ``world``)."""
    from learnlab.knowledge.corpus import heldout_template_choice
    from learnlab.knowledge.passages import GROUPS, build_reserve, recall_prompts
    from learnlab.knowledge.templates import FACT_TEMPLATES

    world, config = world_model.world(), world_model.config
    mix = config.document_mix()
    withheld = heldout_template_choice(world, config.heldout_templates, world_model_seed(world_model))
    templates = range(len(next(iter(FACT_TEMPLATES.values()))))
    allowed = {subject: [index for index in templates if index not in withheld[subject]] for subject in withheld}
    reserve = build_reserve(world, mix.train_reserve, mix.heldout_reserve)
    prompts = recall_prompts(world, allowed, reserve, [facts], -(-count // len(GROUPS)), seed, mix)
    return [{"context": prompt.context[: -len(prompt.question)].strip(), "question": prompt.question,
             "answer": prompt.attribute} for prompt in prompts[:count]]


def world_model_seed(world_model: Any) -> int:
    """The seed a ``world`` run was made with (its world and corpus are deterministic in it)."""
    from learnlab.core.io import read_json

    return int(read_json(world_model.run_dir / "config.json")["seed"])


def fitted_context(example: QAExample, length: int, pad_id: int) -> QAExample:
    """``example`` with its context cut to its last ``length`` tokens or left-padded with ``pad_id``
    (the compressors read a batch of one context length; padding is read as context)."""
    context = list(example.context)[-length:]
    return QAExample(tuple([pad_id] * (length - len(context)) + context), example.question, example.answer)


def batch_of(examples: list[QAExample], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(contexts, question ‖ answer ids, answer mask) of examples whose contexts have one length; each
    row's question ‖ answer is right-padded with ``pad_id`` (the mask is True on answer tokens only)."""
    if len({len(example.context) for example in examples}) != 1:
        raise ValueError("a batch needs contexts of one length (fit them with fitted_context first)")
    width = max(len(example.question) + len(example.answer) for example in examples)
    contexts = torch.tensor([list(example.context) for example in examples])
    rest = torch.full((len(examples), width), pad_id)
    answer_mask = torch.zeros_like(rest, dtype=torch.bool)
    for row, example in enumerate(examples):
        ids = list(example.question) + list(example.answer)
        rest[row, : len(ids)] = torch.tensor(ids)
        answer_mask[row, len(example.question): len(ids)] = True
    return contexts, rest, answer_mask
