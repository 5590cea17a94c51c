"""Antithetic ES: the estimator on a quadratic with a known gradient, meta-training, resume after a kill."""

from __future__ import annotations

import pytest
import torch

from learnlab.optim.evolution import ESSettings, antithetic_gradient, flatten, iteration_noise, meta_train

CURVATURES = torch.tensor([0.5, 1.0, 2.0, 4.0])


def quadratic(population: torch.Tensor, iteration: int) -> torch.Tensor:
    return (CURVATURES * population.pow(2)).sum(dim=-1)


def test_estimator_recovers_the_gradient_of_a_quadratic():
    theta = torch.tensor([1.0, -2.0, 0.5, 0.25])
    noise = torch.randn(40000, 4, generator=torch.Generator().manual_seed(0))
    gradient, losses = antithetic_gradient(quadratic, theta, noise, sigma=0.1, normalise=False)
    assert losses.shape == (1, 80000)
    torch.testing.assert_close(gradient, 2 * CURVATURES * theta, rtol=0.05, atol=0.03)


def test_normalisation_divides_each_task_by_its_mean_loss():
    theta = torch.tensor([1.0, -2.0, 0.5, 0.25])
    noise = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))

    def two_tasks(population, iteration):  # the second task is the first scaled by 10
        loss = quadratic(population, iteration)
        return torch.stack([loss, 10 * loss])

    scaled, _ = antithetic_gradient(two_tasks, theta, noise, sigma=0.1)
    single, _ = antithetic_gradient(quadratic, theta, noise, sigma=0.1)
    torch.testing.assert_close(scaled, single)


def test_meta_training_descends_a_quadratic():
    settings = ESSettings(pairs=8, sigma=0.05, learning_rate=0.05, iterations=150, clip=0)
    result = meta_train(quadratic, torch.ones(4), settings, seed=0, normalise=False)
    assert float(quadratic(result.theta[None], 0)) < 0.05 * float(quadratic(torch.ones(1, 4), 0))


def test_resume_after_a_kill_ends_where_an_uninterrupted_run_ends(tmp_path):
    settings = ESSettings(pairs=4, iterations=8, checkpoint_every=1)
    uninterrupted = meta_train(quadratic, torch.ones(4), settings, seed=3)

    def killed_at_five(step, record):
        if step == 5:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "meta.pt"
    with pytest.raises(KeyboardInterrupt):
        meta_train(quadratic, torch.ones(4), settings, seed=3, checkpoint=checkpoint, on_iteration=killed_at_five)
    resumed = meta_train(quadratic, torch.ones(4), settings, seed=3, checkpoint=checkpoint)
    assert resumed.resumed_at == 5 and len(resumed.history) == 8
    torch.testing.assert_close(resumed.theta, uninterrupted.theta, rtol=0, atol=0)


def test_noise_is_a_function_of_seed_and_iteration_and_flatten_inverts():
    assert torch.equal(iteration_noise(1, 7, 3, 5), iteration_noise(1, 7, 3, 5))
    assert not torch.equal(iteration_noise(1, 7, 3, 5), iteration_noise(1, 8, 3, 5))
    meta = {"a": torch.randn(2, 3), "b": torch.randn(4)}
    vector, unflatten = flatten(meta)
    assert vector.shape == (10,)
    back = unflatten(torch.stack([vector, vector]))
    assert back["a"].shape == (2, 2, 3) and torch.equal(back["b"][1], meta["b"])


def test_pairs_sharded_over_two_gloo_processes_equal_one_process(tmp_path):
    import torch.multiprocessing as mp

    from tests.optim.es_worker import quadratic, settings, sharded_rank

    output = tmp_path / "theta.pt"
    mp.spawn(sharded_rank, args=(2, str(tmp_path / "init"), str(output)), nprocs=2, join=True)
    single = meta_train(quadratic, torch.ones(4), settings(), seed=2, normalise=False)
    torch.testing.assert_close(torch.load(output), single.theta, rtol=1e-6, atol=1e-7)
