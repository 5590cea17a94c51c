"""Compression tasks, the QA-file loader and fine-tuning through compressed caches."""

import json

import pytest
import torch

from learnlab.compression.tasks import batch_of, key_value_examples, load_qa_file, window_statistic_examples
from learnlab.compression.training import MethodSpec, evaluate, finetune, make_answerer, recovery
from learnlab.core.errors import UserError


def test_key_value_answers_are_in_the_context():
    for example in key_value_examples(20, pairs=4, keys=10, values=5, generator=torch.Generator().manual_seed(0)):
        context = list(example.context)
        keys = context[0::2]
        assert len(set(keys)) == 4 and example.question[0] in keys
        assert context[context.index(example.question[0]) + 1] == example.answer[0]


def test_window_statistic_answer_is_the_windows_dominant_symbol():
    examples = window_statistic_examples(50, length=16, window=4, symbols=5, generator=torch.Generator().manual_seed(0),
                                         dominance=1.0)
    for example in examples:
        window = example.question[0] - 3 - 5
        assert set(example.context[4 * window: 4 * window + 4]) == {example.answer[0]}
    with pytest.raises(ValueError, match="does not divide"):
        window_statistic_examples(1, length=10, window=4, symbols=5, generator=torch.Generator())


def test_batches_mark_only_answer_tokens():
    examples = key_value_examples(3, pairs=2, keys=6, values=4, generator=torch.Generator().manual_seed(1))
    contexts, rest, mask = batch_of(examples)
    assert contexts.shape == (3, 4) and rest.shape == (3, 2) and mask[:, 1].all() and not mask[:, 0].any()


@pytest.mark.parametrize("line, message", [("{", "not valid JSON"), ('{"context": "a", "question": "b"}', "'answer'"),
                                           ("[1]", "JSON object")])
def test_malformed_qa_file_names_file_and_line(tmp_path, line, message):
    from tests.knowledge.conftest import word_tokenizer

    tokenizer = word_tokenizer(["x", "y", "q", "a"])
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"context": "x y", "question": "q", "answer": "a"}) + "\n" + line + "\n")
    with pytest.raises(UserError, match=f"qa.jsonl:2: .*{message}"):
        load_qa_file(path, tokenizer)
    path.write_text(json.dumps({"context": "x y", "question": "q", "answer": "a"}) + "\n")
    (example,) = load_qa_file(path, tokenizer)
    assert len(example.context) == 3 and example.answer == (tuple(tokenizer(" a", add_special_tokens=False)["input_ids"]))


@pytest.fixture()
def decoder():
    from learnlab.knowledge.models import build_world_model, world_model_config

    return build_world_model(world_model_config(40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                                                max_positions=64), seed=0)


@pytest.mark.parametrize("spec", [MethodSpec("none"), MethodSpec("full"), MethodSpec("avgpool", 2),
                                  MethodSpec("gisting", 2, shift=True, separate=True), MethodSpec("gistpool", 2)])
def test_finetuning_lowers_the_answer_loss_for_every_method(decoder, spec):
    generator = torch.Generator().manual_seed(0)
    examples = window_statistic_examples(64, length=8, window=2, symbols=4, generator=generator, dominance=1.0)
    answerer = make_answerer(decoder, spec, context_length=8)
    before = evaluate(answerer, examples)["loss"]
    finetune(answerer, examples, steps=30, batch_size=16, learning_rate=1e-2, generator=generator)
    after = evaluate(answerer, examples)
    assert after["loss"] < before and 0.0 <= after["accuracy"] <= 1.0
    if spec.separate:  # the compressor's own parameters are trained through the slots
        assert any(not torch.equal(a, b) for a, b in zip(answerer.compressor.parameters(), decoder.parameters()))


def test_recovery_runs_from_the_lower_to_the_upper_bound():
    assert recovery(0.2, 0.2, 0.9) == 0.0 and recovery(0.9, 0.2, 0.9) == 1.0 and recovery(0.55, 0.2, 0.9) == pytest.approx(0.5)
