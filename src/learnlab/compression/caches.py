"""Compress a context into a small key/value cache, then answer from the cache, for any HF decoder.

:func:`compress` reads a batch of contexts (same length L) once and returns a
:class:`CompressedContext`: a ``transformers`` ``DynamicCache`` holding k slots per layer and the
position the following tokens continue from. :func:`answer_logits` runs the question and answer
tokens against that cache. Methods (layouts and masks in :mod:`learnlab.compression.layouts`):

* ``full``: the context's own cache (k = L), the upper bound;
* ``gisting``: k = L / r gist tokens after the context (Mu et al. 2023); the cache keeps the gists'
  keys and values only;
* ``gistpool``: one gist after every window of r tokens, attending to its window only
  (Petrov et al. 2025); the cache keeps the gists;
* ``avgpool``: the context read causally, then every layer's keys and values averaged over
  windows of r tokens (k = L / r slots; keys are averaged after the rotary embedding).

Position ids are explicit: context and gist tokens take their index in the laid-out sequence, so
the cached keys carry the rotary phases a single masked pass would give them, and the following
tokens continue from the end of that sequence (``next_position``); the answer computed from the
cache equals the answer of one pass over the whole layout with the method's mask (tested).
Gist tokens are inputs embeddings from :class:`GistTokens` (learned; one vector per slot index,
or one shared vector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from learnlab.compression.layouts import REST, SLOT, Layout, additive_mask, attention_allowed, build_layout
from learnlab.compression.shift import layer_key_values, llama_parts, shifted_slot_states

CompressionMethod = Literal["full", "gisting", "gistpool", "avgpool"]
METHODS: tuple[str, ...] = ("full", "gisting", "gistpool", "avgpool")


class GistTokens(torch.nn.Module):
    """Learned gist embeddings: ``slots`` vectors (gist i uses vector i), or one shared vector."""

    def __init__(self, hidden_size: int, slots: int = 1, shared: bool = True, scale: float = 0.02,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.shared = shared
        self.vectors = torch.nn.Parameter(torch.randn(1 if shared else slots, hidden_size, generator=generator) * scale)

    def forward(self, count: int) -> torch.Tensor:
        if self.shared:
            return self.vectors.expand(count, -1)
        if count > self.vectors.shape[0]:
            raise ValueError(f"{count} gists asked of {self.vectors.shape[0]} learned vectors")
        return self.vectors[:count]


@dataclass
class CompressedContext:
    """A compressed context: its cache (k slots per layer) and where the next tokens' positions start."""

    cache: Any
    next_position: int
    slots: int


def laid_out_embeddings(model: Any, context_ids: torch.Tensor, layout: Layout, gists: GistTokens | None,
                        rest_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Inputs embeddings of the layout: context tokens where it has context, gist vectors at its slots,
    then ``rest_ids`` (if given) at its rest positions.

    One gather over [context embeddings ‖ gist vectors] puts every row at its layout position (one
    copy forward, one scatter backward), instead of a slice per position.
    """
    embed = model.get_input_embeddings()
    batch, length = context_ids.shape
    context = embed(context_ids)
    roles = torch.tensor(layout.roles)
    prefix_roles = roles[roles != REST]
    slot_count = int((prefix_roles == SLOT).sum())
    if slot_count and gists is None:
        raise ValueError(f"method {layout.method} needs gist tokens (GistTokens)")
    sources = [context]
    if slot_count:
        sources.append(gists(slot_count).to(context.dtype).expand(batch, -1, -1))
    # Row of each layout position in [context ‖ gists]: the i-th context token is row i, the j-th slot row L + j.
    is_slot = prefix_roles == SLOT
    order = torch.where(is_slot, length + is_slot.long().cumsum(0) - 1, (~is_slot).long().cumsum(0) - 1)
    prefix = torch.cat(sources, dim=1)[:, order.to(context.device)]
    if rest_ids is None:
        return prefix
    return torch.cat([prefix, embed(rest_ids)], dim=1)


def _cache_of(config: Any, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """A ``DynamicCache`` holding the given per-layer (keys, values)."""
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=config)
    except TypeError:  # transformers before the per-layer cache classes
        cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def _returned_cache(output: Any) -> Any:
    """The cache a forward pass returned (``cache`` in newer ``transformers``, ``past_key_values`` before)."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def _layer_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))  # transformers before the per-layer cache classes


class _LastLayerReached(Exception):
    """Ends a forward pass at the input of the last decoder layer (:func:`_pass_key_values`)."""


def _pass_key_values(model: Any, positions: torch.Tensor, **inputs: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's (keys, values) of one forward pass of ``model`` over ``inputs`` at ``positions``.

    A compressing pass is read only through its keys and values, so on a Llama-family decoder the pass
    stops at the input of the last layer, whose keys and values are then made from it as the layer
    itself makes them (:func:`shift.layer_key_values`): the last layer's attention output and MLP,
    the final norm and the LM head, which nothing reads, are not computed. The numbers are those of
    the whole pass. Other decoders run the whole pass.
    """
    try:
        layers, rotary = llama_parts(model)
    except ValueError:
        return _layer_tensors(_returned_cache(model(position_ids=positions, use_cache=True, **inputs)))
    cache, reached = _cache_of(model.config, []), {}

    def stop(module: Any, args: Any, kwargs: Any) -> None:
        reached["hidden"] = args[0] if args else kwargs["hidden_states"]
        raise _LastLayerReached

    handle = layers[-1].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        model.model(position_ids=positions, use_cache=True, **{_cache_argument(model.model): cache}, **inputs)
    except _LastLayerReached:
        pass
    finally:
        handle.remove()
    earlier = _layer_tensors(cache)[: len(layers) - 1]
    return [*earlier, layer_key_values(layers[-1], rotary, reached["hidden"], positions)]


def compress(model: Any, context_ids: torch.Tensor, method: CompressionMethod, rate: int = 1,
             gists: GistTokens | None = None, shift: bool = False, compressor: Any = None) -> CompressedContext:
    """Read ``context_ids`` (batch, L) and keep k = L / ``rate`` slots per layer (all L for ``full``).

    For ``gisting`` and ``gistpool``: ``compressor`` is the model that reads the context and the gists
    (separate compression parameters, e.g. a copy of the decoder; default: the decoder itself), and
    ``shift`` takes the slots' keys and values from one layer up (:mod:`learnlab.compression.shift`).
    Together with the method's mask these are the three switches of GistPool's ablation chain.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    batch, length = context_ids.shape
    if method in ("full", "avgpool"):
        if method == "avgpool" and length % rate:
            raise ValueError(f"compression rate {rate} does not divide the context length {length}")
        positions = torch.arange(length, device=context_ids.device).expand(batch, -1)
        layers = _pass_key_values(model, positions, input_ids=context_ids)
        if method == "full":
            return CompressedContext(_cache_of(model.config, layers), length, length)
        pooled = [(keys.unflatten(2, (length // rate, rate)).mean(3), values.unflatten(2, (length // rate, rate)).mean(3))
                  for keys, values in layers]
        return CompressedContext(_cache_of(model.config, pooled), length, length // rate)
    reader = model if compressor is None else compressor
    layout = build_layout(method, length, 0, rate)
    embeddings = laid_out_embeddings(reader, context_ids, layout, gists)
    mask = _compressing_mask(layout, embeddings, batch)
    positions = torch.arange(layout.length, device=embeddings.device).expand(batch, -1)
    slots = torch.tensor(layout.positions(SLOT), device=embeddings.device)
    if shift:
        kept = shifted_slot_states(reader, embeddings, mask, positions, slots)
    else:
        kept = [(keys[:, :, slots], values[:, :, slots])
                for keys, values in _pass_key_values(reader, positions, inputs_embeds=embeddings, attention_mask=mask)]
    return CompressedContext(_cache_of(model.config, kept), layout.length, len(slots))


def _compressing_mask(layout: Layout, embeddings: torch.Tensor, batch: int) -> torch.Tensor | None:
    """The 4-D mask of a compressing pass, or ``None`` where the layout's mask is plain causal attention.

    Gisting's context ‖ gists (no rest) is plain causal: gists see the context and earlier gists.
    Without an explicit mask the decoder attends causally by itself, and its attention kernel skips the
    blocks above the diagonal instead of adding the mask's minimum there (the same numbers, tested).
    """
    allowed = attention_allowed(layout)
    if torch.equal(allowed, torch.ones_like(allowed).tril()):
        return None
    return additive_mask(allowed, embeddings.dtype, batch).to(embeddings.device)


def _read(model: Any, compressed: CompressedContext, cache: Any, ids: torch.Tensor) -> torch.Tensor:
    """Logits of ``ids`` (batch, m) placed after the compressed context: every slot visible, causal among
    themselves, positions continuing from ``next_position``; ``cache`` (a copy of the context's) grows."""
    batch, count = ids.shape
    allowed = torch.ones(count, compressed.slots + count, dtype=torch.bool)
    allowed[:, compressed.slots:] = torch.ones(count, count, dtype=torch.bool).tril()
    dtype = model.get_input_embeddings().weight.dtype
    mask = additive_mask(allowed, dtype, batch).to(ids.device)
    positions = (compressed.next_position + torch.arange(count, device=ids.device)).expand(batch, -1)
    return model(input_ids=ids, attention_mask=mask, position_ids=positions, **{_cache_argument(model): cache}).logits


def _fresh_cache(model: Any, compressed: CompressedContext) -> Any:
    return _cache_of(model.config, _layer_tensors(compressed.cache))  # a copy: gradients still flow


def answer_logits(model: Any, compressed: CompressedContext, rest_ids: torch.Tensor) -> torch.Tensor:
    """Logits of ``rest_ids`` (batch, m) read against the compressed context (the cache is not modified)."""
    return _read(model, compressed, _fresh_cache(model, compressed), rest_ids)


def _cache_argument(model: Any) -> str:
    """The name under which the model's ``forward`` takes a cache (``cache`` in newer ``transformers``)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def one_pass_logits(model: Any, context_ids: torch.Tensor, rest_ids: torch.Tensor, method: CompressionMethod,
                    rate: int = 1, gists: GistTokens | None = None) -> torch.Tensor:
    """The logits of ``rest_ids`` from one pass over the whole layout with the method's mask (the
    reference that :func:`answer_logits` on a :func:`compress` cache must equal); not for ``avgpool``."""
    if method == "avgpool":
        raise ValueError("average pooling has no single-pass form")
    batch, length = context_ids.shape
    layout = build_layout("full" if method == "full" else method, length, rest_ids.shape[1], rate)
    embeddings = laid_out_embeddings(model, context_ids, layout, gists, rest_ids)
    mask = additive_mask(attention_allowed(layout), embeddings.dtype, batch).to(embeddings.device)
    positions = torch.arange(layout.length, device=embeddings.device).expand(batch, -1)
    logits = model(inputs_embeds=embeddings, attention_mask=mask, position_ids=positions).logits
    return logits[:, -rest_ids.shape[1]:]


@torch.no_grad()
def generate_greedy(model: Any, compressed: CompressedContext, prompt_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy continuation of ``prompt_ids`` (batch, m; e.g. the question) read against the compressed
    context: ``new_tokens`` tokens, one cached step each (the compressed cache itself is not modified)."""
    cache = _fresh_cache(model, compressed)
    logits = _read(model, compressed, cache, prompt_ids)
    argument = _cache_argument(model)
    position = compressed.next_position + prompt_ids.shape[1]
    generated = []
    for _ in range(new_tokens):
        token = logits[:, -1].argmax(-1, keepdim=True)
        generated.append(token)
        logits = model(input_ids=token, position_ids=torch.full_like(token, position), **{argument: cache}).logits
        position += 1
    return torch.cat(generated, dim=1)


def cache_bytes(compressed: CompressedContext) -> int:
    """Bytes of the keys and values a compressed context holds."""
    return sum(tensor.numel() * tensor.element_size() for keys, values in _layer_tensors(compressed.cache)
               for tensor in (keys, values))
