"""Causal language models: the tiny world's Llama and a loader for any Hugging Face causal LM.

The world model is a standard ``transformers`` Llama (RMSNorm, rotary positions, SwiGLU), small
enough to pretrain on a 2-core CPU in minutes, saved with ``save_pretrained`` so that every tool
that reads Hugging Face checkpoints reads it.

:func:`load_causal_lm` loads any causal LM and its tokenizer through ``AutoModelForCausalLM`` /
``AutoTokenizer`` with ``trust_remote_code=False``; a local directory is read offline
(``local_files_only``), as is everything when ``HF_HUB_OFFLINE`` is set. A missing path, a
directory without a model, or a model that is not a causal LM is a :class:`UserError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch

from learnlab.core.errors import UserError

DType = Literal["auto", "float32", "bfloat16", "float16"]


def world_model_config(vocab_size: int, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                       intermediate_size: int = 384, max_positions: int = 256, bos_id: int = 1, eos_id: int = 2,
                       pad_id: int = 0) -> Any:
    """A small ``LlamaConfig`` with tied input/output embeddings."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def build_world_model(config: Any, seed: int) -> torch.nn.Module:
    """A freshly initialised ``LlamaForCausalLM``; initialisation is seeded (torch's global generator)."""
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def resolve_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    """``auto``: float32 on the CPU; bfloat16 on a GPU that supports it, else float16."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence ``transformers``' own progress bars (loading/saving shards) inside the block, then restore."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def _is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _looks_like_path(name: str) -> bool:
    """A hub name is ``name`` or ``org/name``; anything else with separators is meant as a path."""
    return name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1 or "\\" in name


def load_causal_lm(name_or_path: str | Path, device: torch.device | str = "cpu", dtype: DType = "auto") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` of a causal LM from a local directory or a hub name, in eval mode.

    Remote code is never trusted. Local directories (and everything under ``HF_HUB_OFFLINE=1``)
    are read without network access.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = str(name_or_path)
    device = torch.device(device)
    path = Path(name).expanduser()
    local = path.exists()
    if not local and (_looks_like_path(name) or _is_offline()):
        raise UserError(f"model {name!r}: no such directory" + (" (HF_HUB_OFFLINE is set)" if _is_offline() else ""))
    if local and not (path / "config.json").exists():
        raise UserError(f"model {name!r}: not a Hugging Face model directory (no config.json)")
    source = str(path) if local else name
    options = {"local_files_only": local or _is_offline(), "trust_remote_code": False}
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except (OSError, ValueError) as error:
        raise UserError(f"model {name!r}: cannot read its config ({_first_line(error)})") from None
    if getattr(config, "model_type", None) not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UserError(f"model {name!r} is not a causal language model (model_type {config.model_type!r})")
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(dtype, device), **options)
            tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except (OSError, ValueError) as error:
        raise UserError(f"model {name!r}: cannot load it ({_first_line(error)})") from None
    return model.to(device).eval(), tokenizer


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
