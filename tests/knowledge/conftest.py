"""Shared fixtures: a small world, its corpus and tokenizer, and a tiny random Llama."""

import pytest
import torch

from learnlab.knowledge.corpus import build_corpus
from learnlab.knowledge.world import build_world


@pytest.fixture(scope="session")
def small_world():
    return build_world(seed=7, subjects_per_theme=24, attributes_per_theme=8)


@pytest.fixture(scope="session")
def small_corpus(small_world):
    return build_corpus(small_world, seed=7, train_documents=300, heldout_documents=20)


@pytest.fixture(scope="session")
def small_tokenizer(small_corpus):
    from learnlab.knowledge.tokenizer import train_tokenizer

    return train_tokenizer(small_corpus.train_texts, vocab_size=400)


@pytest.fixture()
def tiny_llama(small_tokenizer):
    from learnlab.knowledge.models import build_world_model, world_model_config

    config = world_model_config(len(small_tokenizer), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                bos_id=small_tokenizer.bos_token_id, eos_id=small_tokenizer.eos_token_id,
                                pad_id=small_tokenizer.pad_token_id)
    return build_world_model(config, seed=0).eval()


def word_tokenizer(words):
    """A whitespace word-level tokenizer over ``words`` that prepends <bos> (ids: <pad>=0, <bos>=1, words from 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, **{word: index + 2 for index, word in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", pad_token="<pad>")


class BigramModel(torch.nn.Module):
    """A causal LM whose next-token logits depend only on the current token: ``logits[t] = table[x_t]``."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.as_tensor(table, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None):
        return type("Output", (), {"logits": self.table[input_ids]})()
