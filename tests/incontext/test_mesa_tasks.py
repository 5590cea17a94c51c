import pytest
import torch

from learnlab.incontext.causal_transformer import CausalTransformer
from learnlab.incontext.dynamics import (
    DynamicsSpec,
    autoregressive_loss,
    constructed_tokens,
    per_step_loss,
    plain_tokens,
    sample_dynamics,
)
from learnlab.incontext.least_squares import (
    clipped_late_loss,
    gd_step_predictions,
    least_squares_predictions,
    per_step_baselines,
    tune_gd_step,
)


def test_full_dynamics_follow_their_teacher():
    batch = sample_dynamics(DynamicsSpec(noise=0.0), 8, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert batch.inputs.shape == batch.targets.shape == (8, 50, 10)
    assert torch.allclose(batch.targets[:, :-1], batch.inputs[:, 1:])
    predicted = batch.inputs @ batch.teacher.transpose(-1, -2)
    assert torch.allclose(predicted, batch.targets, atol=1e-10)
    eye = torch.eye(10, dtype=torch.float64)
    assert torch.allclose(batch.teacher @ batch.teacher.transpose(-1, -2), eye.expand(8, 10, 10), atol=1e-10)
    assert batch.inputs[:, 0].abs().max() <= 1.0


def test_contracting_and_partial_variants():
    contracting = sample_dynamics(DynamicsSpec(kind="contracting", noise=0.0), 16, torch.Generator().manual_seed(1),
                                  dtype=torch.float64)
    eigenvalues = torch.linalg.eigvalsh(contracting.teacher)
    assert eigenvalues.min() >= 0.3 - 1e-9 and torch.allclose(eigenvalues.max(-1).values, torch.full((16,), 0.9, dtype=torch.float64))
    partial = sample_dynamics(DynamicsSpec(kind="partial", obs_dim=5), 4, torch.Generator().manual_seed(2))
    assert partial.inputs.shape == (4, 50, 5)


def test_token_formats():
    states = torch.randn(2, 6, 3)
    tokens = constructed_tokens(states)
    assert tokens.shape == (2, 6, 12)
    assert torch.equal(tokens[..., :3], torch.zeros_like(states))
    assert torch.equal(tokens[..., 3:6], states) and torch.equal(tokens[..., 6:9], states)
    assert torch.equal(tokens[:, 1:, 9:], states[:, :-1]) and torch.equal(tokens[:, 0, 9:], torch.zeros(2, 3))
    assert torch.equal(plain_tokens(states), states)


def test_losses_and_initial_loss():
    batch = sample_dynamics(DynamicsSpec(), 2000, torch.Generator().manual_seed(3))
    zero = torch.zeros_like(batch.targets)
    assert abs(float(autoregressive_loss(zero, batch.targets)) - 10 / 6) < 0.03  # E||s||^2 / 2
    assert torch.allclose(per_step_loss(zero, batch.targets).mean(), autoregressive_loss(zero, batch.targets))


def test_least_squares_curve_and_gd_baseline():
    batch = sample_dynamics(DynamicsSpec(), 512, torch.Generator().manual_seed(4))
    curve = per_step_loss(least_squares_predictions(batch.inputs).double(), batch.targets.double())
    assert abs(float(curve[0]) / 1.676 - 1) < 0.1 and abs(float(curve[10]) / 0.0856 - 1) < 0.2
    assert float(curve[15:].max()) < 2e-3
    eta = tune_gd_step(batch.inputs, batch.targets)
    losses = [float(per_step_loss(gd_step_predictions(batch.inputs, e), batch.targets).mean()) for e in (0.8 * eta, eta, 1.2 * eta)]
    assert losses[1] <= min(losses[0], losses[2])


def test_one_linear_layer_can_be_one_gd_step():
    """Construction: key reads s_{t-1}, value writes s_t into the prediction slot, query reads s_t."""
    d = 3
    model = CausalTransformer(embed_dim=4 * d, layers=("linear",), num_heads=1, key_size=d, clip=0, readout_dim=d)
    eta = 0.3
    with torch.no_grad():
        eye = torch.eye(d)
        block = model.blocks[0].attention
        weights = torch.zeros_like(block.qkv)
        weights[:d, 2 * d:3 * d] = eye          # q = s_t
        weights[d:2 * d, 3 * d:] = eye          # k = s_{t-1}
        weights[2 * d:, d:2 * d] = eye          # v = s_t
        block.qkv.copy_(weights)
        projection = torch.zeros_like(block.projection)
        projection[:d, :d] = eta * eye
        block.projection.copy_(projection)
    states = torch.randn(2, 9, d, dtype=torch.float32)
    assert torch.allclose(model.predict(constructed_tokens(states)), gd_step_predictions(states, eta), atol=1e-5)


def test_per_step_baselines_are_the_curves_of_their_learners():
    test, tuning = (sample_dynamics(DynamicsSpec(seq_len=20), 64, torch.Generator().manual_seed(seed)) for seed in (6, 7))
    baselines = per_step_baselines(test, tuning, ridge=1e-3)
    eta = tune_gd_step(tuning.inputs, tuning.targets)
    assert baselines["gd1_eta"] == eta
    gd = per_step_loss(gd_step_predictions(test.inputs.double(), eta), test.targets.double())
    assert torch.equal(torch.tensor(baselines["gd1_curve"], dtype=torch.float64), gd)
    lsq = per_step_loss(least_squares_predictions(test.inputs, 1e-3).double(), test.targets.double())
    assert torch.equal(torch.tensor(baselines["lsq_curve"], dtype=torch.float64), lsq)
    assert len(baselines["lsq_all_curve"]) == 20
    # Using the latest transition too helps once there are enough transitions to fit W.
    assert sum(baselines["lsq_all_curve"][12:]) < sum(baselines["lsq_curve"][12:])


def test_transformer_kinds_run_and_are_causal():
    tokens = torch.randn(2, 12, 8)
    for kind in ("linear", "softmax", "mesa"):
        model = CausalTransformer(embed_dim=8, layers=(kind, kind), num_heads=2, key_size=4, readout_dim=2, init_std=0.2,
                                  layer_norm=True, mlp_hidden=16)
        changed = tokens.clone()
        changed[:, 7:] += 1.0
        with torch.no_grad():
            assert torch.allclose(model.predict(tokens)[:, :7], model.predict(changed)[:, :7], atol=1e-6)


def test_linear_attention_mask_multiply_equals_masked_matmul():
    """The cached float-mask formulation equals the straightforward masked matmul, values and gradients."""
    from learnlab.incontext.causal_transformer import CausalAttention

    attention = CausalAttention(40, 4, 20, init_std=0.1, generator=torch.Generator().manual_seed(7))
    tokens = torch.randn(3, 50, 40, generator=torch.Generator().manual_seed(8), requires_grad=True)

    def straightforward(x):
        q, k, v = attention.heads(x)
        mask = torch.ones(50, 50, dtype=torch.bool).tril()
        out = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0) @ v
        return torch.nn.functional.linear(out.transpose(1, 2).reshape(3, 50, 80), attention.projection)

    weights = torch.randn(3, 50, 40)
    fast, slow = attention(tokens), straightforward(tokens)
    assert torch.allclose(fast, slow, rtol=1e-5, atol=1e-7)
    fast_grads = torch.autograd.grad((fast * weights).sum(), (tokens, attention.qkv, attention.projection))
    slow_grads = torch.autograd.grad((slow * weights).sum(), (tokens, attention.qkv, attention.projection))
    for a, b in zip(fast_grads, slow_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def _least_squares_mesa_model(d: int, lam: float, clip: float) -> CausalTransformer:
    """Construction: one mesa head with key s_{t-1}, value s_t, query s_t, written into the prediction slot."""
    heads, key_size = 2, d + 2  # a second head and spare key dimensions stay zero
    model = CausalTransformer(embed_dim=4 * d, layers=("mesa",), num_heads=heads, key_size=key_size, clip=clip,
                              readout_dim=d, dtype=torch.float64)
    attention = model.blocks[0].attention
    with torch.no_grad():
        attention.qkv.zero_()
        attention.projection.zero_()
        for j in range(d):
            attention.qkv[j, 2 * d + j] = 1.0                            # q_t = s_t
            attention.qkv[heads * key_size + j, 3 * d + j] = 1.0         # k_t = s_{t-1}
            attention.qkv[2 * heads * key_size + j, d + j] = 1.0         # v_t = s_t
            attention.projection[j, j] = 1.0
        attention.lam.fill_(lam)
    return model


def test_one_mesa_layer_can_be_least_squares_on_every_transition():
    """The mesa layer sees the latest transition (s_{t-1} -> s_t, current token included): with ridge 1/lambda it
    is ``least_squares_predictions(..., skip_latest=False)`` exactly."""
    batch = sample_dynamics(DynamicsSpec(dim=4, seq_len=30), 16, torch.Generator().manual_seed(9), dtype=torch.float64)
    model = _least_squares_mesa_model(4, lam=100.0, clip=0.0)
    with torch.no_grad():
        predictions = model.predict(constructed_tokens(batch.inputs))
    expected = least_squares_predictions(batch.inputs, ridge=1e-2, skip_latest=False)
    assert torch.allclose(predictions, expected, rtol=1e-9, atol=1e-11)
    assert not torch.allclose(predictions, least_squares_predictions(batch.inputs, ridge=1e-2), atol=1e-3)


def test_sandbox_clip_caps_a_least_squares_predictor_above_twice_least_squares():
    """Why the mesa model's clip is 4 (claim C7): clipping exact least squares to ±1.5 costs > 2x at t >= 20."""
    batch = sample_dynamics(DynamicsSpec(), 1024, torch.Generator().manual_seed(10), dtype=torch.float64)
    predictions = least_squares_predictions(batch.inputs, 1e-3)
    late = {clip: clipped_late_loss(predictions, batch.targets, clip, 20) for clip in (1.5, 4.0)}
    exact = clipped_late_loss(predictions, batch.targets, 0, 20)  # clip 0: unclipped
    assert exact == float(per_step_loss(predictions, batch.targets)[20:].mean())
    assert late[1.5] > 2 * exact
    assert late[4.0] == pytest.approx(exact, rel=1e-3)
