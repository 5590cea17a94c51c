"""The document kinds that teach the world model to read its context, and the recall metric (W4, W5)."""

import random

import torch

from learnlab.knowledge.passages import (DocumentMix, DocumentWriter, RecallPrompt, build_reserve, recall_prompts,
                                         relation_sentences)
from learnlab.knowledge.world_evaluation import in_context_recall, prior_coverage
from tests.knowledge.conftest import word_tokenizer


def words_of(texts):
    return {word.strip(".,?!:;").lower() for text in texts for word in text.split()}


def test_reserve_names_are_never_world_subjects_and_heldout_names_never_train(small_world, small_corpus):
    reserve = small_corpus.reserve
    world_names = {name.lower() for theme in small_world.themes
                   for name in (*theme.subjects, *small_world.spare(theme.name))}
    assert reserve.train and reserve.heldout
    assert not (set(reserve.train) | set(reserve.heldout)) & world_names
    assert not set(reserve.train) & set(reserve.heldout)
    assert not set(reserve.heldout) & words_of(small_corpus.train_texts)  # held-out names occur in no training text
    assert set(reserve.train) & words_of(small_corpus.train_texts)  # training passages do use fresh names
    assert build_reserve(small_world, 50, 10) == build_reserve(small_world, 50, 10)


def test_corpus_holds_every_kind_with_relations_both_ways(small_world, small_corpus):
    kinds = set(small_corpus.train_kinds)
    assert kinds == {"facts", "passage", "repetition", "long", "copy"}
    long = [text for text, kind in zip(small_corpus.train_texts, small_corpus.train_kinds) if kind == "long"]
    assert min(len(text.split()) for text in long) >= DocumentMix().long_document_words
    training = " ".join(small_corpus.train_texts)
    stated = [sentence for sentence in relation_sentences(small_world) if sentence in training]
    assert any(sentence.startswith("One ") for sentence in stated) and any(not s.startswith("One ") for s in stated)
    never = {word.lower() for theme in small_world.themes for word in theme.never_seen}
    assert all(len(theme.never_seen) == 2 for theme in small_world.themes)
    assert not never & words_of(small_corpus.train_texts)  # the never-seen keywords occur nowhere


def test_repetition_documents_repeat_subjects_and_copy_sentences(small_world, small_corpus):
    writer = DocumentWriter(small_world, small_corpus.train_allowed, small_corpus.reserve.train, DocumentMix(),
                            random.Random(3))
    texts = [writer.repetition(10) for _ in range(20)]
    copied = sum(any(text.count(sentence) > 1 for sentence in text.split(". ") if len(sentence) > 10) for text in texts)
    assert copied >= 10


def test_recall_answers_come_only_from_the_passage(small_world, small_corpus):
    prompts = recall_prompts(small_world, small_corpus.train_allowed, small_corpus.reserve, (2, 4), 5, seed=0)
    assert {(p.group, p.facts) for p in prompts} == {(g, n) for g in ("fresh", "contradicting") for n in (2, 4)}
    training = " ".join(small_corpus.train_texts)
    for prompt in prompts:
        assert prompt.context.endswith(prompt.question) and prompt.attribute not in prompt.question
        passage = prompt.context[: -len(prompt.question)]
        assert prompt.subject in prompt.question and f"{prompt.attribute}." in passage
        if prompt.group == "fresh":  # a held-out name: no training text mentions it
            assert prompt.subject.lower() in small_corpus.reserve.heldout
            assert prompt.subject.lower() not in words_of(small_corpus.train_texts)
            assert prompt.world_attribute is None
        else:
            assert prompt.world_attribute is not None and prompt.world_attribute != prompt.attribute


class Induction(torch.nn.Module):
    """A hand-made copying model: after token x it predicts what followed the previous x (else token 0)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, self.vocab)
        for row in range(batch):
            ids = input_ids[row].tolist()
            for t in range(length):
                earlier = [j for j in range(t) if ids[j] == ids[t] and j + 1 < length]
                logits[row, t, ids[earlier[-1] + 1] if earlier else 0] = 10.0
        return type("Output", (), {"logits": logits})()


def test_recall_metric_on_a_hand_made_copying_model():
    words = "Here story . Bo Po lives in Paris Rome".split()
    tokenizer = word_tokenizer(words)
    model = Induction(len(words) + 2)
    prompts = [
        RecallPrompt("fresh", 2, "Bo", "Here story . Bo lives in Paris . Bo lives in", "Bo lives in", "Paris", None),
        RecallPrompt("contradicting", 2, "Po", "Here story . Po lives in Rome . Po lives in", "Po lives in", "Rome", "Paris"),
        # The last "in" before the question is followed by Rome: a copying model answers Rome, wrongly.
        RecallPrompt("fresh", 4, "Bo", "Here story . Bo lives in Paris . Po lives in Rome . Bo lives in", "Bo lives in",
                     "Paris", None),
        RecallPrompt("contradicting", 4, "Po", "Here story . Bo lives in Paris . Po lives in Rome . Po lives in",
                     "Po lives in", "Rome", "Paris"),
    ]
    measured = in_context_recall(model, tokenizer, prompts, batch=3, bound=0.90)
    assert measured["recall_accuracy_fresh"] == 0.5 and measured["recall_accuracy_contradicting"] == 1.0
    assert measured["recall_accuracy_fresh_no_passage"] == 0.0 and measured["recall_gain_contradicting"] == 1.0
    assert measured["recall_by_length"] == {"2": {"fresh": 1.0, "contradicting": 1.0},
                                            "4": {"fresh": 0.0, "contradicting": 1.0}}
    assert measured["recall_first_length_below"] == 4 and measured["recall_min_over_lengths"] == 0.0
    assert measured["recall_no_passage_gives_world_attribute"] == 0.0


def test_prior_coverage_finds_the_widest_hole_within_the_span():
    assert prior_coverage([-0.5, -2.0, -20.5, -3.0, -5.5], top=-1.0, bottom=-20.0) == {
        "prior_log10_max": -0.5, "prior_log10_min": -20.5, "prior_largest_hole_log10": 14.5}
    # Below 1e-20 a gap does not count; a span end that no value reaches does.
    closed = [-0.5 - 1.5 * k for k in range(14)] + [-40.0]
    assert prior_coverage(closed, top=-1.0, bottom=-20.0)["prior_largest_hole_log10"] == 1.5
    assert prior_coverage([-3.0, -4.0], top=-1.0, bottom=-20.0)["prior_largest_hole_log10"] == 16.0
