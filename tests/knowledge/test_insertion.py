import math

import pytest
import torch

from learnlab.knowledge.insertion import BaseWeights, InsertionSettings, insert_sample, measure_insertion, priming_scores
from learnlab.knowledge.pretraining import pack_documents
from learnlab.knowledge.probability import KeywordScores


@pytest.fixture()
def background(small_tokenizer, small_corpus):
    texts = list(small_corpus.train_texts[:100])
    return pack_documents(small_tokenizer(texts)["input_ids"], small_tokenizer.eos_token_id)


def test_schedule_of_consecutive_and_spaced_presentations():
    consecutive = InsertionSettings()
    assert consecutive.total_steps == 20 and all(consecutive.presents_at(step) for step in range(20))
    spaced = InsertionSettings(presentations=3, spacing=20, trailing_steps=5)
    assert spaced.total_steps == 46
    assert [step for step in range(spaced.total_steps) if spaced.presents_at(step)] == [0, 20, 40]
    with pytest.raises(ValueError):
        InsertionSettings(optimizer="lion")


def test_insertion_learns_the_sample_and_base_weights_are_restored_exactly(tiny_llama, small_tokenizer, background):
    base = BaseWeights(tiny_llama)
    original = {name: value.clone() for name, value in tiny_llama.state_dict().items()}
    settings = InsertionSettings(presentations=8, batch_size=4, sequence_length=24, learning_rate=3e-2)
    text, prefix, keyword = "A traveler told me this. The vuzi is vermilion.", "A traveler told me this. The vuzi is", "vermilion"
    result = measure_insertion(tiny_llama, small_tokenizer, text, keyword, prefix, ["The color of the abo is", "The rik is"],
                               background, settings, seed=0, base=base, cross_probes=["Mo lives in"])
    assert result["log_s_mem"] > 1.0  # the inserted text became much more likely
    assert result["keyword_tokens"] > 1 and len(result["insertion_losses"]) == 8
    assert {"s_prime", "log_s_prime", "mean_log_prime", "cross_log_s_prime", "first_token_log_s_mem"} <= set(result)
    assert base.matches()
    for name, value in tiny_llama.state_dict().items():
        assert torch.equal(value, original[name]), name
    # Training in place does change the weights; restore undoes it exactly.
    insert_sample(tiny_llama, small_tokenizer(text)["input_ids"], background, settings, seed=1)
    assert not base.matches()
    base.restore()
    assert base.matches()


def test_priming_scores_by_hand():
    def scores(values):
        values = torch.tensor(values, dtype=torch.float64).log()
        return KeywordScores(values, values, torch.ones(len(values), dtype=torch.long))

    result = priming_scores(scores([0.01]), scores([0.04]), scores([0.1, 0.2]), scores([0.2, 0.2]))
    assert math.isclose(result.s_mem, 4.0) and math.isclose(result.s_prime, (2.0 + 1.0) / 2)
    assert math.isclose(result.mean_log_prime, math.log(2.0) / 2)
    assert math.isclose(result.log_p_before, math.log(0.01))
