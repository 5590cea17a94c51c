"""The runs of the ``gistpool`` study: the pretrained reader, the plan of fine-tuning runs, one run.

Protocol (Petrov et al. 2025, §4: every method fine-tunes the same pretrained decoder,
full-parameter, on the answer loss):

* the **reader**: a small Llama trained from scratch to answer from the full context at every
  context length of the study (the stand-in for a pretrained LLM that reads its context); with
  ``model=PATH`` the user's Hugging Face decoder is the reader;
* one **fine-tuning run** per (seed, context length, method): a copy of the reader (and, for
  separate compression parameters, a second copy as the compressor) trained for the same number of
  steps on the same examples in the same order (common random numbers across methods); the seed
  draws the training and test examples, the batch order and the gist initialisation.

Runs are items of a resumable stage, shared by worker processes (one thread each).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learnlab.compression.tasks import (QAExample, fitted_context, key_value_examples, load_qa_file, tokenize_qa,
                                        window_statistic_examples, world_passage_records)
from learnlab.compression.training import Answerer, MethodSpec, evaluate, finetune, make_answerer
from learnlab.core.io import load_tensors, module_weights, restore_module_weights

FIRST_ID = 3  # ids 0-2: padding, beginning and end of a sequence


def gistpool_spec(rate: int) -> MethodSpec:
    """GistPool as Petrov et al. define it: the window mask with the shift and separate compressor parameters."""
    return MethodSpec("gistpool", rate, shift=True, separate=True)


def ablation_chain(rate: int) -> list[MethodSpec]:
    """Gisting, then +shift, +separate parameters, +the window mask (= GistPool), at one rate."""
    return [MethodSpec("gisting", rate), MethodSpec("gisting", rate, shift=True),
            MethodSpec("gisting", rate, shift=True, separate=True), gistpool_spec(rate)]


def compressor_spec(method: str, rate: int) -> MethodSpec:
    """The compared form of a compressing method at a rate (GistPool with all three of its parts)."""
    return gistpool_spec(rate) if method == "gistpool" else MethodSpec(method, rate)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FinetuneRun:
    """One fine-tuning run: a seed, a context length and a method."""

    seed: int
    length: int
    spec: MethodSpec

    @property
    def key(self) -> str:
        return f"seed{self.seed}-L{self.length}-{self.spec.name}"


def run_plan(config: Any) -> list[FinetuneRun]:
    """Every run of a config, without repeats: at the main length the bounds, every compressing
    method at every rate and the ablation chain; at the other lengths the bounds and the methods of
    the length sweep at its rate."""
    runs: dict[str, FinetuneRun] = {}
    bounds = [MethodSpec("none"), MethodSpec("full")]
    for seed in range(config.seeds):
        main = bounds + [compressor_spec(method, rate) for rate in config.rates for method in config.methods]
        main += ablation_chain(config.ablation_rate) if config.ablation else []
        plan = [(config.context_length, spec) for spec in main]
        plan += [(length, spec) for length in config.sweep_lengths if length != config.context_length
                 for spec in bounds + [compressor_spec(method, config.length_rate) for method in config.length_methods]]
        for length, spec in plan:
            run = FinetuneRun(seed, length, spec)
            runs.setdefault(run.key, run)
    return list(runs.values())


# --- tasks and the reader --------------------------------------------------------------------------


def vocabulary_size(config: Any) -> int:
    """Token ids the built-in tasks use (the reader's vocabulary)."""
    longest = max(config.reader_lengths)
    if config.task == "key-value":
        return FIRST_ID + longest // 2 + config.symbols
    return FIRST_ID + config.symbols + longest // config.task_window


def task_examples(config: Any, length: int, count: int, generator: torch.Generator) -> list[QAExample]:
    """``count`` examples of the built-in task at one context length."""
    if config.task == "key-value":
        return key_value_examples(count, length // 2, max(config.reader_lengths) // 2, config.symbols, generator,
                                  FIRST_ID)
    return window_statistic_examples(count, length, config.task_window, config.symbols, generator, config.dominance,
                                     FIRST_ID)


def build_reader(config: Any, seed: int) -> torch.nn.Module:
    """A fresh Llama of the study's shape over the built-in tasks' vocabulary."""
    from learnlab.knowledge.models import build_world_model, world_model_config

    longest = max(config.reader_lengths)
    model_config = world_model_config(vocabulary_size(config), hidden_size=config.hidden_size,
                                      num_layers=config.num_layers, num_heads=config.num_heads,
                                      intermediate_size=4 * config.hidden_size, max_positions=2 * longest + 64)
    return build_world_model(model_config, seed=seed)


def train_reader(config: Any, ctx: Any) -> dict[str, Any]:
    """Train the reader on the full context at every length (taken in turn); its weights and accuracy."""
    model = build_reader(config, ctx.seed)
    generator = ctx.generator("reader")
    lengths = config.reader_lengths
    train = [task_examples(config, length, config.train_examples, generator) for length in lengths]
    test = {length: task_examples(config, length, config.test_examples, generator) for length in lengths}
    reader = Answerer(MethodSpec("full"), model)
    with ctx.training_progress("reader (full context)", config.reader_steps, "reader loss") as on_step:
        losses = finetune(reader, train, config.reader_steps, config.batch_size, config.reader_learning_rate, generator,
                          on_step)
    accuracy = {str(length): evaluate(reader, examples)["accuracy"] for length, examples in test.items()}
    ctx.log(event="reader", final_loss=losses[-1], accuracy=accuracy)
    return {**module_weights(model), "reader_accuracy": accuracy, "reader_final_loss": losses[-1]}


def qa_split(config: Any, examples: list[QAExample], pad_id: int,
             generator: torch.Generator) -> tuple[list[QAExample], list[QAExample]]:
    """QA examples (a user's file, or the world's passages), contexts fitted to ``context_length``,
    split into training and test examples."""
    examples = [fitted_context(example, config.context_length, pad_id) for example in examples]
    order = torch.randperm(len(examples), generator=generator).tolist()
    cut = max(1, round(len(examples) * config.qa_test_fraction))
    return [examples[index] for index in order[cut:]], [examples[index] for index in order[:cut]]


def load_reader_and_qa(config: Any, source: str, ctx: Any) -> tuple[Any, list[QAExample], list[QAExample]]:
    """A pretrained reader and its QA split: the tiny world's model and passages (``model=world``;
    ``source`` is the world run), or a user's decoder and QA file."""
    from learnlab.knowledge.probability import pad_token_id

    if config.model == "world":
        from learnlab.knowledge.substrate import WorldModel

        world_model = WorldModel(Path(source))
        reader, tokenizer = world_model.load(ctx.device)
        records = world_passage_records(world_model, config.passage_facts, config.train_examples + config.test_examples,
                                        ctx.seed)
        examples = tokenize_qa(records, tokenizer)
    else:
        from learnlab.knowledge.models import load_causal_lm

        reader, tokenizer = load_causal_lm(config.model, ctx.device, "float32")
        examples = load_qa_file(Path(config.qa_file), tokenizer)
    return (reader, *qa_split(config, examples, pad_token_id(tokenizer), ctx.generator("qa-split")))


# --- one fine-tuning run ---------------------------------------------------------------------------


def finetune_worker(payload: tuple[Any, str], ctx: Any):
    """Worker factory: the reader once per process, then ``process(key)`` fine-tunes and evaluates one run."""
    config, source = payload  # the reader's weights, or the world run (model=world)
    runs = {run.key: run for run in run_plan(config)}
    if config.model:
        reader, train, test = load_reader_and_qa(config, source, ctx)
    else:
        reader = restore_module_weights(build_reader(config, ctx.seed), load_tensors(Path(source))).to(ctx.device)

    def process(key: str) -> dict[str, Any]:
        run = runs[key]
        started = time.perf_counter()
        seed, length = str(run.seed), str(run.length)
        if not config.model:
            data = ctx.generator("data", seed, length)
            train_examples = task_examples(config, run.length, config.train_examples, data)
            test_examples = task_examples(config, run.length, config.test_examples, data)
        else:
            train_examples, test_examples = train, test
        answerer = make_answerer(reader, run.spec, run.length, ctx.generator("gists", seed, key))
        losses = finetune(answerer, train_examples, config.steps, config.batch_size, config.learning_rate,
                          ctx.generator("order", seed, length))
        for step, loss in enumerate(losses):
            ctx.check_finite(loss, f"{key} loss at step {step}")
        metrics = evaluate(answerer, test_examples)
        seconds = time.perf_counter() - started
        return {"seed": run.seed, "length": run.length, "method": run.spec.method, "rate": run.spec.rate,
                "shift": run.spec.shift, "separate": run.spec.separate, "name": run.spec.name, **metrics,
                "train_loss_first": sum(losses[:10]) / len(losses[:10]), "train_loss_last": sum(losses[-10:]) / len(losses[-10:]),
                "seconds": seconds, "steps_per_second": config.steps / seconds}

    return process
