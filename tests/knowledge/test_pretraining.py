import pytest
import torch

from learnlab.knowledge.models import build_world_model, world_model_config
from learnlab.knowledge.pretraining import PretrainSettings, batch_at, learning_rate_at, pack_documents, pretrain


class Killed(Exception):
    pass


def fresh_model(tokenizer):
    config = world_model_config(len(tokenizer), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    return build_world_model(config, seed=0)


def test_killed_pretraining_resumes_to_the_same_weights(small_tokenizer, small_corpus, tmp_path):
    stream = pack_documents(small_tokenizer(list(small_corpus.train_texts[:80]))["input_ids"], small_tokenizer.eos_token_id)
    settings = PretrainSettings(steps=6, batch_size=4, sequence_length=16, warmup_steps=2, checkpoint_every=2, log_every=1)
    straight = fresh_model(small_tokenizer)
    history = pretrain(straight, stream, settings, seed=0)

    def kill_at_step_3(step, loss):
        if step == 3:
            raise Killed

    resumed = fresh_model(small_tokenizer)
    with pytest.raises(Killed):
        pretrain(resumed, stream, settings, seed=0, checkpoint_dir=tmp_path, on_step=kill_at_step_3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-2.safetensors", "optimizer-2.pt", "state.json"]
    steps_run = []
    resumed = fresh_model(small_tokenizer)  # a new process: fresh weights, loaded from the checkpoint
    again = pretrain(resumed, stream, settings, seed=0, checkpoint_dir=tmp_path, on_step=lambda s, l: steps_run.append(s))
    assert steps_run == [2, 3, 4, 5]
    assert again["steps"] == history["steps"]
    torch.testing.assert_close(torch.tensor(again["losses"]), torch.tensor(history["losses"]))
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)


def test_batches_depend_only_on_step_and_schedule_shape():
    stream = torch.arange(1000)
    assert torch.equal(batch_at(stream, 5, 4, 8, seed=1), batch_at(stream, 5, 4, 8, seed=1))
    assert not torch.equal(batch_at(stream, 5, 4, 8, seed=1), batch_at(stream, 6, 4, 8, seed=1))
    settings = PretrainSettings(steps=100, learning_rate=1.0, warmup_steps=10, min_learning_rate_ratio=0.1)
    assert learning_rate_at(0, settings) == pytest.approx(0.1) and learning_rate_at(9, settings) == pytest.approx(1.0)
    assert learning_rate_at(99, settings) == pytest.approx(0.1, abs=1e-3)
