import pytest
import torch

from learnlab.core.errors import UserError
from learnlab.knowledge.models import load_causal_lm, resolve_dtype
from learnlab.knowledge.probability import keyword_log_probs


def test_any_causal_lm_loads_from_a_local_directory_offline(tiny_llama, small_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_llama.save_pretrained(tmp_path)
    small_tokenizer.save_pretrained(tmp_path)
    model, tokenizer = load_causal_lm(tmp_path)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    for name, value in tiny_llama.state_dict().items():
        assert torch.equal(model.state_dict()[name], value)
    prompt = ["The color of the abo is"]
    expected = keyword_log_probs(tiny_llama, small_tokenizer, prompt, "red").log_prob
    torch.testing.assert_close(keyword_log_probs(model, tokenizer, prompt, "red").log_prob, expected)
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_loader_errors_are_one_line_user_errors(tmp_path, monkeypatch):
    from transformers import T5Config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = [
        (tmp_path / "missing", "no such directory"),
        (tmp_path, "not a Hugging Face model directory"),
        ("some-org/some-model", "no such directory"),
    ]
    encoder = tmp_path / "encoder"
    T5Config(vocab_size=10, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2).save_pretrained(encoder)
    cases.append((encoder, "is not a causal language model"))
    for path, message in cases:
        with pytest.raises(UserError) as error:
            load_causal_lm(path)
        assert message in str(error.value) and "\n" not in str(error.value)
