"""GistPool's activation shift: slot keys and values computed from the hidden states one layer up.

Under gisting, a gist's summary made at layer ℓ reaches the following tokens only at layer ℓ + 1
(one layer of delay; Petrov et al. 2025, §3). With the shift, the decoder's layer ℓ reads slot keys
and values that layer ℓ's own key/value maps compute from the gists' *output* of layer ℓ (the
input of layer ℓ + 1), after layer ℓ's input norm and with the rotary phases of the gist
positions. This needs the compressor pass to finish before the decoder reads the slots, which the
cache-based interface does anyway. Every layer is defined, the last one included (its output is
taken before the final norm).

Works on Llama-family decoders (``model.model.layers`` with ``input_layernorm`` and
``self_attn.k_proj`` / ``v_proj``, ``model.model.rotary_emb``); other architectures raise a
``ValueError`` naming what is missing.
"""

from __future__ import annotations

from typing import Any

import torch


def llama_parts(model: Any) -> tuple[Any, Any]:
    """The decoder layers and the rotary embedding of a Llama-family causal LM (``ValueError`` otherwise)."""
    inner = getattr(model, "model", None)
    layers, rotary = getattr(inner, "layers", None), getattr(inner, "rotary_emb", None)
    if layers is None or rotary is None or not all(hasattr(layer, "input_layernorm") and hasattr(layer, "self_attn")
                                                   for layer in layers):
        raise ValueError(f"the activation shift needs a Llama-family decoder (model.model.layers with input_layernorm "
                         f"and self_attn, model.model.rotary_emb); got {type(model).__name__}")
    return layers, rotary


def layer_key_values(layer: Any, rotary: Any, hidden: torch.Tensor,
                     positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values that ``layer``'s attention makes of ``hidden`` (batch, tokens, width): its input
    norm, its key / value maps and the rotary phases of ``positions``, the operations of the layer's own
    forward pass; shape (batch, kv heads, tokens, head dim)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    normed = layer.input_layernorm(hidden)
    attention = layer.self_attn
    shape = (*hidden.shape[:-1], -1, attention.head_dim)
    keys = attention.k_proj(normed).view(shape).transpose(1, 2)
    values = attention.v_proj(normed).view(shape).transpose(1, 2)
    cos, sin = rotary(hidden, position_ids=positions)
    _, keys = apply_rotary_pos_emb(keys, keys, cos, sin)
    return keys, values


def shifted_slot_states(model: Any, embeddings: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor,
                        slots: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer ℓ, the (keys, values) of the ``slots`` positions made by layer ℓ's projections from
    layer ℓ's output, rotated at the slots' positions: shape (batch, kv heads, slots, head dim)."""
    layers, rotary = llama_parts(model)
    outputs: dict[int, torch.Tensor] = {}

    def keep(index: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            outputs[index] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [layer.register_forward_hook(keep(index)) for index, layer in enumerate(layers)]
    try:
        model(inputs_embeds=embeddings, attention_mask=mask, position_ids=positions)
    finally:
        for handle in handles:
            handle.remove()
    return [layer_key_values(layer, rotary, outputs[index][:, slots], positions[:, slots])
            for index, layer in enumerate(layers)]
