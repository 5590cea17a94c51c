"""Compression masks as properties, the uniform-logit identity, and caches that equal one masked pass."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learnlab.compression.caches import GistTokens, answer_logits, compress, one_pass_logits
from learnlab.compression.layouts import CONTEXT, REST, SLOT, additive_mask, attention_allowed, build_layout


@st.composite
def layouts(draw):
    method = draw(st.sampled_from(["full", "gisting", "gistpool"]))
    rate = draw(st.sampled_from([1, 2, 4, 8]))
    context = rate * draw(st.integers(1, 6))
    return build_layout(method, context, draw(st.integers(0, 5)), rate)


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_masks_are_causal_and_never_empty(layout):
    allowed = attention_allowed(layout)
    assert not (allowed & ~torch.ones_like(allowed).tril()).any()  # nothing attends to a later position
    assert allowed.any(dim=1).all()  # no fully masked row (which would give NaN)


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_compressing_methods_hide_the_raw_context(layout):
    allowed = attention_allowed(layout)
    rest, context, slots = layout.positions(REST), layout.positions(CONTEXT), layout.positions(SLOT)
    if layout.method == "full":
        assert all(allowed[i, j] for i in rest for j in context)
        return
    assert not any(allowed[i, j] for i in rest for j in context)  # answers see the context only through slots
    assert all(allowed[i, j] for i in rest for j in slots)
    if layout.method == "gistpool":
        for i in slots:
            seen = {j for j in range(layout.length) if allowed[i, j]}
            assert seen == {j for j in context if layout.windows[j] == layout.windows[i]}  # its own window only


def test_uniform_logits_give_the_window_mean_exactly():
    torch.manual_seed(0)
    layout = build_layout("gistpool", 12, 2, rate=4)
    allowed = attention_allowed(layout)
    values = torch.randn(layout.length, 8)
    weights = (torch.zeros(layout.length, layout.length) + additive_mask(allowed)[0, 0]).softmax(-1)
    outputs = weights @ values
    for window, slot in enumerate(layout.positions(SLOT)):
        members = [j for j in layout.positions(CONTEXT) if layout.windows[j] == window]
        assert torch.allclose(outputs[slot], values[members].mean(0), atol=1e-6, rtol=0)


@pytest.fixture()
def decoder():
    from learnlab.knowledge.models import build_world_model, world_model_config

    return build_world_model(world_model_config(50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                                                max_positions=128), seed=0).eval()


@pytest.mark.parametrize("method, rate", [("full", 1), ("gisting", 2), ("gisting", 4), ("gistpool", 2), ("gistpool", 4)])
def test_answers_from_the_cache_equal_one_masked_pass(decoder, method, rate):
    torch.manual_seed(1)
    context, rest = torch.randint(3, 50, (3, 8)), torch.randint(3, 50, (3, 5))
    gists = GistTokens(16, slots=8, shared=method == "gistpool")
    with torch.no_grad():
        compressed = compress(decoder, context, method, rate, gists)
        cached = answer_logits(decoder, compressed, rest)
        reference = one_pass_logits(decoder, context, rest, method, rate, gists)
        assert compressed.slots == (8 if method == "full" else 8 // rate)
        assert torch.allclose(cached, reference, atol=1e-5, rtol=1e-5)
        rows = torch.cat([answer_logits(decoder, compress(decoder, context[i:i + 1], method, rate, gists), rest[i:i + 1])
                          for i in range(3)])
        assert torch.allclose(rows, cached, atol=1e-5, rtol=1e-5)  # batch > 1 equals batch 1 row by row


def test_full_cache_answers_like_the_plain_model(decoder):
    context, rest = torch.randint(3, 50, (2, 6)), torch.randint(3, 50, (2, 4))
    with torch.no_grad():
        cached = answer_logits(decoder, compress(decoder, context, "full"), rest)
        plain = decoder(input_ids=torch.cat([context, rest], 1)).logits[:, -4:]
    assert torch.allclose(cached, plain, atol=1e-5, rtol=1e-5)


def test_average_pooling_keeps_the_window_means_of_keys_and_values(decoder):
    context = torch.randint(3, 50, (2, 8))
    with torch.no_grad():
        full = compress(decoder, context, "full")
        pooled = compress(decoder, context, "avgpool", rate=4)
    assert pooled.slots == 2 and pooled.next_position == 8
    for full_layer, pooled_layer in zip(full.cache.layers, pooled.cache.layers):
        assert torch.allclose(pooled_layer.values[:, :, 1], full_layer.values[:, :, 4:8].mean(2), atol=1e-6)
        assert torch.allclose(pooled_layer.keys[:, :, 0], full_layer.keys[:, :, 0:4].mean(2), atol=1e-6)


def test_gradient_reaches_the_context_only_through_the_slots(decoder):
    """The answer loss's gradient with respect to the context embeddings is nonzero with the gisting
    mask, and exactly zero once the slots stop reading the context: no raw-context path around them."""
    from learnlab.compression.layouts import additive_mask as mask_of

    torch.manual_seed(2)
    context, rest = torch.randint(3, 50, (1, 8)), torch.randint(3, 50, (1, 4))
    layout = build_layout("gisting", 8, 4, rate=2)
    allowed = attention_allowed(layout)
    cut = allowed.clone()
    for slot in layout.positions(SLOT):
        cut[slot, layout.positions(CONTEXT)] = False  # slots no longer read the context
    gists = GistTokens(16, slots=4, shared=False)
    embed = decoder.get_input_embeddings()
    gradients = []
    for matrix in (allowed, cut):
        context_embeddings = embed(context).detach().requires_grad_(True)
        slots = gists(4)[None]
        inputs = torch.cat([context_embeddings, slots, embed(rest)], dim=1)
        logits = decoder(inputs_embeds=inputs, attention_mask=mask_of(matrix), position_ids=torch.arange(16)[None]).logits
        logits[:, -4:].logsumexp(-1).sum().backward()
        gradients.append(context_embeddings.grad.abs().sum())
    assert gradients[0] > 0 and gradients[1] == 0


@pytest.mark.parametrize("call, message", [
    (lambda: build_layout("gistpool", 10, 2, rate=4), "does not divide"),
    (lambda: build_layout("zip", 8, 2, rate=2), "unknown method"),
])
def test_bad_layouts_are_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_shifted_slots_read_one_layer_up(decoder):
    """With every layer's weights equal, layer l's shifted slot keys/values are layer l + 1's plain ones."""
    from learnlab.compression.layouts import additive_mask as mask_of
    from learnlab.compression.shift import shifted_slot_states

    layers = decoder.model.layers
    for layer in layers[1:]:
        layer.load_state_dict(layers[0].state_dict())
    torch.manual_seed(3)
    context = torch.randint(3, 50, (2, 8))
    gists = GistTokens(16, slots=4, shared=False)
    layout = build_layout("gisting", 8, 0, rate=2)
    from learnlab.compression.caches import laid_out_embeddings

    with torch.no_grad():
        embeddings = laid_out_embeddings(decoder, context, layout, gists)
        mask, positions = mask_of(attention_allowed(layout), batch=2), torch.arange(layout.length).expand(2, -1)
        slots = torch.tensor(layout.positions(SLOT))
        shifted = shifted_slot_states(decoder, embeddings, mask, positions, slots)
        plain = compress(decoder, context, "gisting", 2, gists)
        shifted_cache = compress(decoder, context, "gisting", 2, gists, shift=True)
    assert torch.allclose(shifted[0][0], plain.cache.layers[1].keys, atol=1e-5)
    assert torch.allclose(shifted[0][1], plain.cache.layers[1].values, atol=1e-5)
    assert torch.allclose(shifted_cache.cache.layers[0].keys, shifted[0][0])
    assert not torch.allclose(shifted_cache.cache.layers[1].keys, plain.cache.layers[1].keys)


def test_a_separate_compressor_writes_the_slots(decoder):
    import copy

    compressor = copy.deepcopy(decoder)
    with torch.no_grad():
        for parameter in compressor.parameters():
            parameter.add_(0.1)
    context, rest = torch.randint(3, 50, (1, 8)), torch.randint(3, 50, (1, 3))
    gists = GistTokens(16, slots=4, shared=True)
    with torch.no_grad():
        own = answer_logits(decoder, compress(decoder, context, "gistpool", 2, gists), rest)
        separate = answer_logits(decoder, compress(decoder, context, "gistpool", 2, gists, compressor=compressor), rest)
    assert not torch.allclose(own, separate)


def test_greedy_generation_from_the_cache_matches_the_full_model(decoder):
    from learnlab.compression.caches import cache_bytes, generate_greedy

    context, question = torch.randint(3, 50, (2, 8)), torch.randint(3, 50, (2, 3))
    compressed = compress(decoder, context, "full")
    tokens = generate_greedy(decoder, compressed, question, 4)
    sequence = torch.cat([context, question], 1)
    with torch.no_grad():
        for step in range(4):  # the same tokens by re-running the whole sequence each time
            expected = decoder(input_ids=sequence).logits[:, -1].argmax(-1, keepdim=True)
            assert torch.equal(tokens[:, step:step + 1], expected)
            sequence = torch.cat([sequence, expected], 1)
    pooled = compress(decoder, context, "avgpool", rate=4)
    assert cache_bytes(compressed) == 4 * cache_bytes(pooled)  # the cache shrinks by r
    assert compressed.cache.layers[0].keys.shape[2] == 8  # generation left the compressed cache as it was


def test_a_compressing_pass_skips_the_unread_last_layer_work_with_the_same_keys_and_values(decoder):
    from learnlab.compression.caches import _layer_tensors, _pass_key_values, _returned_cache

    torch.manual_seed(5)
    context = torch.randint(3, 50, (2, 8))
    positions = torch.arange(8).expand(2, -1)
    calls = []
    handle = decoder.model.layers[-1].mlp.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        whole = _layer_tensors(_returned_cache(decoder(input_ids=context, position_ids=positions, use_cache=True)))
        assert len(calls) == 1  # the whole pass runs the last layer's MLP
        stopped = _pass_key_values(decoder, positions, input_ids=context)
    handle.remove()
    assert len(calls) == 1  # the stopped pass never does
    assert len(stopped) == len(whole) == 2
    for (keys, values), (whole_keys, whole_values) in zip(stopped, whole):
        assert torch.equal(keys, whole_keys) and torch.equal(values, whole_values)


def test_gistings_compressing_pass_runs_without_a_mask_with_the_same_numbers(decoder):
    from learnlab.compression.caches import _compressing_mask, _pass_key_values, laid_out_embeddings

    torch.manual_seed(6)
    context = torch.randint(3, 50, (2, 8))
    gists = GistTokens(16, slots=4, shared=False)
    layout = build_layout("gisting", 8, 0, 2)
    embeddings = laid_out_embeddings(decoder, context, layout, gists)
    assert _compressing_mask(layout, embeddings, 2) is None  # context ‖ gists is plain causal attention
    assert _compressing_mask(build_layout("gistpool", 8, 0, 2), embeddings, 2) is not None
    positions = torch.arange(layout.length).expand(2, -1)
    mask = additive_mask(attention_allowed(layout), embeddings.dtype, 2)
    with torch.no_grad():
        masked = _pass_key_values(decoder, positions, inputs_embeds=embeddings, attention_mask=mask)
        causal = _pass_key_values(decoder, positions, inputs_embeds=embeddings)
    for (keys, values), (causal_keys, causal_values) in zip(masked, causal):
        assert torch.equal(keys, causal_keys) and torch.equal(values, causal_values)
