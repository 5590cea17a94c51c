import math

import torch

from learnlab.knowledge.probability import encode_pair, greedy_recall, keyword_log_probs, perplexity
from tests.knowledge.conftest import BigramModel, word_tokenizer

WORDS = ["a", "b", "c", "d"]  # ids 2..5


def bigram_table():
    """Next-token probabilities chosen by hand: P(c | b) = 0.5, P(d | c) = 0.25, P(a | bos) = 0.4, otherwise uniform."""
    probabilities = torch.full((6, 6), 1 / 6)
    probabilities[3] = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.5, 0.1])  # after b
    probabilities[4] = torch.tensor([0.15, 0.15, 0.15, 0.15, 0.15, 0.25])  # after c
    probabilities[1] = torch.tensor([0.1, 0.1, 0.4, 0.2, 0.1, 0.1])  # after <bos>
    return probabilities.log()


def test_encode_pair_splits_prefix_and_keyword():
    tokenizer = word_tokenizer(WORDS)
    assert encode_pair(tokenizer, "a b", "c d") == ([1, 2, 3], [4, 5])


def test_multi_token_keyword_probability_is_the_product_of_token_probabilities():
    tokenizer, model = word_tokenizer(WORDS), BigramModel(bigram_table())
    scores = keyword_log_probs(model, tokenizer, ["a b", "a b", "a"], ["c d", "c", "b"])
    assert scores.num_tokens.tolist() == [2, 1, 1]
    torch.testing.assert_close(scores.prob, torch.tensor([0.5 * 0.25, 0.5, 1 / 6]))
    torch.testing.assert_close(scores.first_token_prob, torch.tensor([0.5, 0.5, 1 / 6]))
    assert math.isclose(scores.log_prob[0].item(), math.log(0.125), rel_tol=1e-6)


def test_batched_equals_unbatched_with_padding():
    """Pairs are batched by length; every batch size gives each pair's own score, in the input order."""
    tokenizer, model = word_tokenizer(WORDS), BigramModel(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)))
    prefixes, keywords = ["a", "a b c", "d d d d a", "b", "c c"], ["b c", "d", "a b c d", "c", "a"]
    alone = [keyword_log_probs(model, tokenizer, [p], [k], batch_size=1) for p, k in zip(prefixes, keywords)]
    for batch_size in (2, 4, 8):
        together = keyword_log_probs(model, tokenizer, prefixes, keywords, batch_size=batch_size)
        torch.testing.assert_close(together.log_prob, torch.cat([scores.log_prob for scores in alone]))
        assert together.num_tokens.tolist() == [2, 1, 4, 1, 1]


def test_greedy_recall_and_perplexity():
    tokenizer, model = word_tokenizer(WORDS), BigramModel(bigram_table())
    assert greedy_recall(model, tokenizer, ["a b", "a b"], ["c", "d"]).tolist() == [True, False]
    uniform = BigramModel(torch.zeros(6, 6))
    assert math.isclose(perplexity(uniform, tokenizer, ["a b c", "d a"]), 6.0, rel_tol=1e-5)
