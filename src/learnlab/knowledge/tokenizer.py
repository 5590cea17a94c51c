"""A byte-level BPE tokenizer trained on the tiny world's corpus with Hugging Face ``tokenizers``.

Byte-level BPE (the GPT-2 scheme) round-trips any text exactly. Words frequent in the corpus
(subjects, attribute words) become single tokens; words the corpus never contains, such as the
outlandish keywords ("vermilion"), split into several tokens, so multi-token keywords occur
naturally. Every encoded text starts with ``<|bos|>`` (added by the post-processor), so the first
real token is predicted from a context, as with Llama tokenizers.

The tokenizer is saved in the standard format (``tokenizer.json`` + ``tokenizer_config.json``)
and loads with ``PreTrainedTokenizerFast.from_pretrained`` or ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> Any:
    """Train a byte-level BPE tokenizer on ``texts``; returns a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=1 << 20
    )


def save_tokenizer(tokenizer: Any, directory: Path) -> None:
    """Save in the standard format (``tokenizer.json``, ``tokenizer_config.json``, special tokens)."""
    tokenizer.save_pretrained(str(directory))


def load_tokenizer(directory: Path) -> Any:
    """Load a saved tokenizer offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
