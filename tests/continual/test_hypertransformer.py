"""HyperTransformer and Continual HT: token bookkeeping, the exact mechanics, the episodic sampler, metrics."""

import numpy as np
import pytest
import torch

from learnlab.continual.episodes import UNLABELLED, merged, sample_episodes, sample_sequences
from learnlab.continual.hypertransformer import HTSettings, HyperTransformer, TrainedCNN, generate_chain
from learnlab.continual.learning import (finetune_outcome, logits_episode, merged_outcome, minibatch_accuracy,
                                         prototype_episode, prototypes, sequence_outcome)
from learnlab.continual.meta_training import meta_train
from learnlab.continual.metrics import average_accuracy, backward_transfer, forgetting
from learnlab.continual.target_cnn import CNNSpec, conv_block, forward
from learnlab.core.errors import UserError
from learnlab.data.glyphs import generate_glyphs


@pytest.fixture(scope="module")
def pool():
    return generate_glyphs(24, 8, 16, seed=1)


def _settings(head="embedding", units=6, channels=3, labels=3, trained=0):
    cnn = CNNSpec(channels=channels, conv_layers=4, image_size=16, head=head, head_units=units)
    return HTSettings(cnn=cnn, num_labels=labels, label_dim=8, local_features=4, shared_features=8,
                      transformer_layers=1, heads=2, trained_conv_layers=trained)


def test_token_bookkeeping_per_layer():
    spec = CNNSpec(channels=8, conv_layers=4, image_size=28, head="logits", head_units=20)
    # one token per output channel: in * 3 * 3 weights + a bias; the head: one token per class, flattened map + 1
    assert spec.map_size == 1
    assert spec.layer_tokens() == [(8, 10), (8, 73), (8, 73), (8, 73), (20, 9)]
    assert CNNSpec(channels=4, conv_layers=2, image_size=16, head_units=5).layer_tokens()[-1] == (5, 4 * 16 + 1)
    settings = _settings(channels=8)
    assert settings.token_width(73) == 8 + 73 + 1  # d + slice, rounded up to a multiple of the heads
    assert settings.token_width(10) == 8 + 4 + 8  # d + local + shared features
    model = HyperTransformer(settings)
    x = torch.rand(2, 6, 1, 16, 16)
    weights = model.generate(x, torch.tensor([[0, 1, 2, 0, 1, UNLABELLED]] * 2))
    assert [tuple(w.shape) for w in weights] == [(2, tokens, length) for tokens, length in settings.cnn.layer_tokens()]
    assert [t.layers[0].self_attn.embed_dim for t in model.transformers] == [
        settings.token_width(length) for _, length in settings.cnn.layer_tokens()]


def test_generated_weights_are_invariant_to_permuting_the_support_set():
    torch.manual_seed(0)
    model = HyperTransformer(_settings(head="logits", units=3))
    x, y = torch.rand(2, 7, 1, 16, 16), torch.tensor([[0, 1, 2, 0, 1, 2, UNLABELLED]] * 2)
    order = torch.randperm(7)
    with torch.no_grad():
        a, b = model.generate(x, y), model.generate(x[:, order], y[:, order])
        relabelled = model.generate(x, torch.tensor([[1, 0, 2, 1, 0, 2, UNLABELLED]] * 2))
    assert max(float((p - q).abs().max()) for p, q in zip(a, b)) <= 1e-5
    assert max(float((p - q).abs().max()) for p, q in zip(a, relabelled)) > 1e-3  # labels do matter


def test_batched_cnns_equal_one_cnn_at_a_time():
    torch.manual_seed(1)
    x, weights = torch.rand(3, 5, 2, 8, 8), torch.randn(3, 4, 2 * 9 + 1)
    gamma, beta = torch.rand(4) + 0.5, torch.randn(4)
    batched = conv_block(x, weights, gamma, beta)
    for b in range(3):
        y = torch.nn.functional.conv2d(x[b], weights[b, :, :-1].reshape(4, 2, 3, 3), weights[b, :, -1], padding=1)
        y = torch.nn.functional.max_pool2d(torch.relu(y), 2)
        y = torch.nn.functional.batch_norm(y, None, None, gamma, beta, training=True)
        assert torch.allclose(batched[b], y, atol=1e-5)


def test_cht_with_one_task_equals_ht_and_payload_changes_the_weights(pool):
    torch.manual_seed(2)
    model = HyperTransformer(_settings())
    tasks = sample_sequences(pool, 2, 2, 3, 1, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        single = sequence_outcome(model, tasks[:1], objective="task")
        loss, accuracy = prototype_episode(model, tasks[0])
        chain = generate_chain(model, [(t.support_x, t.support_y) for t in tasks])
        fresh = model.generate(tasks[1].support_x, tasks[1].support_y)
    assert float(single.loss) == float(loss) and torch.equal(single.task_accuracy[0, 0], accuracy)
    assert max(float((p - q).abs().max()) for p, q in zip(chain[1], fresh)) > 1e-4  # theta_0 is fed back in


def test_gradient_reaches_the_first_step_through_the_chain_only(pool):
    torch.manual_seed(3)
    model = HyperTransformer(_settings())
    tasks = sample_sequences(pool, 2, 3, 3, 1, 2, torch.Generator().manual_seed(1))
    norms = {}
    for cut in (False, True):
        chain = generate_chain(model, [(t.support_x, t.support_y) for t in tasks], detach_between_tasks=cut)
        loss = sequence_outcome(model, tasks, loss_tasks=[2], chain=chain).loss
        gradients = torch.autograd.grad(loss, chain[0], allow_unused=True)
        norms[cut] = sum(float((g ** 2).sum()) for g in gradients if g is not None)
    assert norms[False] > 0 and norms[True] == 0


def test_trained_conv_layers_are_parameters_not_generated():
    model = HyperTransformer(_settings(trained=4))
    assert len(model.trained) == 4 and len(model.transformers) == 1  # only the head is generated
    x = torch.rand(2, 3, 1, 16, 16)
    weights = model.generate(x, torch.tensor([[0, 1, 2]] * 2))
    assert torch.equal(weights[0][0], model.trained[0]) and torch.equal(weights[0][1], model.trained[0])
    with pytest.raises(ValueError, match="trained_conv_layers"):
        HyperTransformer(_settings(trained=5))


def test_episodes_and_sequences(pool):
    generator = torch.Generator().manual_seed(0)
    episode = sample_episodes(pool, 3, 4, 2, 3, generator, unlabelled=1)
    assert episode.support_x.shape == (3, 4 * 3, 1, 16, 16) and episode.query_x.shape == (3, 12, 1, 16, 16)
    assert (episode.support_y == UNLABELLED).sum() == 3 * 4 and set(episode.query_y.unique().tolist()) == {0, 1, 2, 3}
    for b in range(3):  # support and query of a class come from that class, without repeats
        for k in range(4):
            images = pool.images[episode.classes[b, k]]
            for x in torch.cat([episode.support_x[b, 3 * k:3 * k + 3], episode.query_x[b][episode.query_y[b] == k]]):
                assert any(torch.equal(x, image) for image in images)
    novel = sample_sequences(pool, 2, 3, 4, 1, 2, generator)
    classes = torch.cat([task.classes for task in novel], dim=1)
    assert all(len(set(row.tolist())) == 12 for row in classes)  # novel classes in every task
    batches = sample_sequences(pool, 2, 3, 4, 1, 2, generator, kind="minibatches")
    assert all(torch.equal(b.classes, batches[0].classes) and torch.equal(b.query_x, batches[0].query_x) for b in batches)
    assert not torch.equal(batches[0].support_x, batches[1].support_x)
    union = merged(novel)
    assert union.support_y[0].tolist() == list(range(12)) and union.ways == 12
    again = sample_episodes(pool, 3, 4, 2, 3, torch.Generator().manual_seed(5))
    assert torch.equal(again.support_x, sample_episodes(pool, 3, 4, 2, 3, torch.Generator().manual_seed(5)).support_x)


@pytest.mark.parametrize("call, message", [
    (lambda pool, g: sample_episodes(pool, 2, 30, 1, 1, g), "need 30 classes but"),
    (lambda pool, g: sample_episodes(pool, 2, 5, 5, 5, g), "need 10 samples per class"),
    (lambda pool, g: sample_sequences(pool, 2, 5, 5, 1, 1, g), "need 25 classes"),
    (lambda pool, g: sample_sequences(pool, 2, 5, 5, 1, 1, g, kind="mixed"), "unknown sequence kind"),
])
def test_too_few_classes_or_samples_are_user_errors(pool, call, message):
    with pytest.raises(UserError, match=message):
        call(pool, torch.Generator())


def test_prototypes_ignore_unlabelled_samples():
    embeddings = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    centres = prototypes(embeddings, torch.tensor([[0, 0, 1, UNLABELLED]]), 2)
    assert torch.equal(centres, torch.tensor([[[2.0, 0.0], [0.0, 2.0]]]))


def test_avalanche_metrics_on_a_hand_made_matrix():
    nan = float("nan")
    accuracy = [[0.9, nan, nan], [0.8, 0.7, nan], [0.85, 0.75, 0.6]]
    assert forgetting(accuracy) == pytest.approx(((0.9 - 0.85) + (0.7 - 0.75)) / 2)
    assert backward_transfer(accuracy) == pytest.approx(-forgetting(accuracy))
    assert forgetting(accuracy, after=1) == pytest.approx(0.1)
    assert average_accuracy(accuracy) == pytest.approx([0.9, 0.75, 0.7333333])
    with pytest.raises(ValueError, match="square"):
        forgetting([[1.0, 0.5]])


def test_scenario_evaluations_shapes_and_baselines(pool):
    torch.manual_seed(4)
    generator = torch.Generator().manual_seed(2)
    tasks = sample_sequences(pool, 2, 3, 3, 1, 2, generator)
    body = TrainedCNN(_settings().cnn)
    finetuned = finetune_outcome(body, tasks, steps=2, learning_rate=1e-2)
    assert finetuned.shape == (3, 3, 2) and torch.isnan(finetuned[0, 1:]).all() and not torch.isnan(finetuned[2]).any()
    merged_model = HyperTransformer(_settings(labels=9))
    with torch.no_grad():
        union = merged_outcome(merged_model, tasks)
        stream = minibatch_accuracy(HyperTransformer(_settings()), sample_sequences(pool, 2, 3, 3, 1, 2, generator,
                                                                                  kind="minibatches"))
        constant = sequence_outcome(body, tasks)
    assert union.shape == (3, 3, 2) and stream.shape == (3, 2)
    # a fixed embedding cannot forget task-incrementally: task 1's accuracy is the same after every task
    assert torch.equal(constant.task_accuracy[1, 0], constant.task_accuracy[0, 0])
    assert torch.equal(constant.task_accuracy[2, 0], constant.task_accuracy[0, 0])


def test_meta_training_resumes_after_a_kill_to_the_same_weights(pool, tmp_path):
    def build():
        torch.manual_seed(5)
        return HyperTransformer(_settings(head="logits", units=3))

    def loss_for(model):
        return lambda generator: logits_episode(model, sample_episodes(pool, 4, 3, 1, 2, generator))

    straight = build()
    history = meta_train(straight, loss_for(straight), 12, 3e-3, seed=0, checkpoint_every=4)
    assert [entry["step"] for entry in history] == [4, 8, 12]

    class Killed(Exception):
        pass

    def kill_at_step_6(step, loss):
        if step == 6:
            raise Killed

    interrupted = build()
    with pytest.raises(Killed):
        meta_train(interrupted, loss_for(interrupted), 12, 3e-3, seed=0, checkpoint=tmp_path / "c.pt",
                   checkpoint_every=4, on_step=kill_at_step_6)
    assert torch.load(tmp_path / "c.pt", weights_only=False)["step"] == 4
    resumed = build()
    again = meta_train(resumed, loss_for(resumed), 12, 3e-3, seed=0, checkpoint=tmp_path / "c.pt", checkpoint_every=4)
    assert again == history
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_output_of_forward_has_the_head_width():
    spec = CNNSpec(channels=2, conv_layers=2, image_size=8, head="embedding", head_units=5)
    weights = [torch.randn(3, tokens, length) for tokens, length in spec.layer_tokens()]
    out = forward(torch.rand(3, 4, 1, 8, 8), weights, [torch.ones(2)] * 2, [torch.zeros(2)] * 2)
    assert out.shape == (3, 4, 5) and np.isfinite(out.numpy()).all()
