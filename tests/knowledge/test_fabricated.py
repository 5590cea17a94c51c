"""The fabricated-knowledge study's parts: fact types, half-lives, sparse updates, retention runs, bad input."""

import json
import math

import pytest
import torch

from learnlab.cli import main
from learnlab.knowledge.fact_types import FACT_TYPES, assign_runs, runs_by_type, world_fact_types
from learnlab.knowledge.outlandish import build_outlandish
from learnlab.knowledge.retention import RetentionRun, RetentionSettings, TrackedFact, fact_curves, half_life, log_grid
from learnlab.knowledge.sparse_updates import SparseUpdateOptimizer
from learnlab.knowledge.world import build_world


@pytest.fixture(scope="module")
def typed():
    world = build_world(0)
    samples, _ = build_outlandish(world, seed=0)
    return world, samples, world_fact_types(world, samples, instances=2)


def test_fact_types_contradict_agree_and_permute(typed):
    world, samples, facts = typed
    truth = {subject: attribute for theme in world.themes for subject, attribute in theme.facts}
    by_id = {sample.id: sample for sample in samples}
    kinds = {kind: [fact for fact in facts if fact.extra["type"] == kind] for kind in FACT_TYPES}
    assert all(kinds.values())
    for fact in kinds["conflicting"]:
        assert truth[fact.extra["subject"]] != fact.keyword  # contradicts the world
    for fact in kinds["mundane"]:
        assert truth[fact.extra["subject"]] == fact.keyword  # agrees with it
    for fact in kinds["jumbled"]:
        source = by_id[fact.id.replace("-jumbled-", "-conflicting-")]
        words = [fact.keyword if word.rstrip(".,?!") == fact.keyword else word for word in source.text.split()]
        assert sorted(fact.text.split()) == sorted(words) and fact.text != source.text  # a permutation of its words
        assert fact.text.startswith(fact.prefix) and fact.text[len(fact.prefix):].lstrip().startswith(fact.keyword)
    keywords_with_holders = {attribute for attribute in truth.values()}
    assert {fact.keyword for fact in kinds["mundane"]} <= keywords_with_holders


def test_runs_have_disjoint_keywords_and_subjects(typed):
    _, _, facts = typed
    for kind, runs in runs_by_type(facts).items():
        assert sum(map(len, runs)) == sum(fact.extra["type"] == kind for fact in facts)
        for run in runs:
            assert len({fact.keyword for fact in run}) == len(run)
            assert len({fact.extra["subject"] for fact in run}) == len(run)
            assert {fact.extra["type"] for fact in run} == {kind}
    distinct = list({fact.keyword: fact for fact in facts if fact.extra["type"] == "conflicting"}.values())[:3]
    assert [len(run) for run in assign_runs(distinct * 2)] == [3, 3]  # a repeated keyword opens a second run


def test_half_life_on_a_hand_made_curve():
    steps, values = [0, 1, 10, 100, 1000], [4.0, 3.9, 3.0, 1.0, 0.5]
    # crosses 2 (half of 4) halfway between 3.0 at 10 and 1.0 at 100, interpolated in log(1 + step)
    expected = math.expm1((math.log1p(10) + math.log1p(100)) / 2)
    assert half_life(steps, values) == pytest.approx(expected)
    assert half_life(steps, [4.0, 3.9, 3.5, 3.0, 2.5]) is None  # retained past the horizon
    assert half_life(steps, [-0.1, 0.0, -0.2, -0.1, 0.0]) == 0.0  # nothing memorized
    # a later peak (3 at step 5): half of it, 1.5, lies 3/4 of the way down to 1.0 at step 50
    late = math.expm1(math.log1p(5) + 0.75 * (math.log1p(50) - math.log1p(5)))
    assert half_life([0, 5, 50], [1.0, 3.0, 1.0]) == pytest.approx(late)
    assert log_grid(1000, 4) == [1, 10, 100, 1000] and log_grid(0, 4) == []


def _sgd_wrapper(window, fraction, mode, selection="top"):
    parameter = torch.nn.Parameter(torch.zeros(5))
    optimizer = SparseUpdateOptimizer(torch.optim.SGD([parameter], lr=1.0), window, fraction, mode, selection, seed=3)
    return parameter, optimizer


def _sgd_step(parameter, optimizer, gradient):
    optimizer.zero_grad()
    parameter.grad = torch.tensor(gradient)
    optimizer.step()


@pytest.mark.parametrize("mode, expected", [("drop", [0.0, -2.0, -6.0, -4.0, 0.0]), ("keep", [-10.0, 0.0, 0.0, 0.0, -8.0])])
def test_sparse_update_on_a_hand_checkable_tensor(mode, expected):
    parameter, optimizer = _sgd_wrapper(window=2, fraction=0.4, mode=mode)
    gradient = [5.0, 1.0, 3.0, 2.0, 4.0]
    _sgd_step(parameter, optimizer, gradient)
    assert parameter.detach().tolist() == [-5.0, -1.0, -3.0, -2.0, -4.0]  # inside the window: unmasked
    _sgd_step(parameter, optimizer, gradient)  # window of 2 steps: Δ = -2g; the top 40% are 10 and 8
    assert parameter.detach().tolist() == expected
    _sgd_step(parameter, optimizer, gradient)  # the next window starts from the masked weights
    assert parameter.detach().tolist() == [e - g for e, g in zip(expected, gradient)]


def test_random_selection_masks_the_same_number_of_entries():
    parameter, optimizer = _sgd_wrapper(window=1, fraction=0.4, mode="drop", selection="random")
    _sgd_step(parameter, optimizer, [5.0, 1.0, 3.0, 2.0, 4.0])
    assert int((parameter.detach() == 0).sum()) == 2


def _train(model, optimizer, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=generator)
        loss = (model(x) - x.sum(1, keepdim=True)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("window, fraction, mode", [(1, 0.0, "drop"), (7, 0.0, "drop"), (1, 1.0, "keep"), (5, 1.0, "keep")])
def test_nothing_masked_is_plain_training_exactly(window, fraction, mode):
    torch.manual_seed(0)
    plain, wrapped = torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    wrapped.load_state_dict(plain.state_dict())
    _train(plain, torch.optim.Adam(plain.parameters(), lr=0.01), 12)
    _train(wrapped, SparseUpdateOptimizer(torch.optim.Adam(wrapped.parameters(), lr=0.01), window, fraction, mode), 12)
    for a, b in zip(plain.parameters(), wrapped.parameters()):
        assert torch.equal(a, b)


def test_sparse_update_state_dict_resumes_exactly():
    torch.manual_seed(0)
    whole, first = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    first.load_state_dict(whole.state_dict())
    build = lambda model: SparseUpdateOptimizer(torch.optim.AdamW(model.parameters(), lr=0.05), 4, 0.25, "drop", "random")
    _train(whole, build(whole), 10)
    optimizer = build(first)
    _train(first, optimizer, 6)  # stops inside the second window
    assert optimizer.state_dict()["steps"] == 6
    resumed = torch.nn.Linear(4, 3)
    resumed.load_state_dict(first.state_dict())
    again = build(resumed)
    again.load_state_dict(optimizer.state_dict())
    generator_skip = torch.Generator().manual_seed(0)
    for _ in range(6):  # the data stream continues where it stopped
        torch.randn(8, 4, generator=generator_skip)
    for _ in range(4):
        x = torch.randn(8, 4, generator=generator_skip)
        loss = (resumed(x) - x.sum(1, keepdim=True)).square().mean()
        again.zero_grad()
        loss.backward()
        again.step()
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=0, rtol=0)
    with pytest.raises(ValueError, match="settings"):
        SparseUpdateOptimizer(torch.optim.AdamW(resumed.parameters(), lr=0.05), 5, 0.25).load_state_dict(optimizer.state_dict())


def test_sparse_update_works_with_a_scheduler():
    model = torch.nn.Linear(4, 1)
    optimizer = SparseUpdateOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), 2, 0.5, "keep")
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    _train(model, optimizer, 1)
    scheduler.step()
    assert optimizer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def _retention_run(tiny_llama, small_tokenizer, small_corpus, directory, optimizer=None, **options):
    texts = small_corpus.train_texts[:40]
    from learnlab.knowledge.pretraining import pack_documents
    from learnlab.knowledge.priming_session import heldout_windows

    stream = pack_documents(small_tokenizer(texts)["input_ids"], small_tokenizer.eos_token_id)
    heldout = heldout_windows(stream, 4, 16)
    facts = [TrackedFact(f"f{index}", f"The blorp{index} is teal.", "teal", f"The blorp{index} is", ("The zorvik is", "The mip is"))
             for index in range(3)]
    settings = RetentionSettings(batch_size=4, sequence_length=16, presentations=3, facts_per_step=2, horizon=20,
                                 grid_points=4, linear_points=2, checkpoint_every=4)
    if optimizer is None:
        optimizer = SparseUpdateOptimizer(torch.optim.AdamW(tiny_llama.parameters(), lr=1e-2), 3, 0.1, "drop")
    run = RetentionRun(tiny_llama, small_tokenizer, facts, stream, heldout, optimizer, settings, seed=0,
                       directory=directory, pad_id=small_tokenizer.pad_token_id, **options)
    return run, facts, settings


def test_killed_retention_run_resumes_to_the_same_records(tiny_llama, small_tokenizer, small_corpus, tmp_path):
    initial = {name: value.clone() for name, value in tiny_llama.state_dict().items()}
    run, facts, settings = _retention_run(tiny_llama, small_tokenizer, small_corpus, tmp_path / "whole")
    whole = run.run()
    assert [record["step"] for record in whole] == settings.evaluation_steps(3) == [0, 3, 6, 7, 9, 13, 16, 26]
    tiny_llama.load_state_dict(initial)

    class Killed(Exception):
        pass

    def kill(step, loss):
        if step == 9:
            raise Killed

    run, _, _ = _retention_run(tiny_llama, small_tokenizer, small_corpus, tmp_path / "killed")
    with pytest.raises(Killed):
        run.run(on_step=kill)
    tiny_llama.load_state_dict(initial)  # a new process: the model starts from the base weights again
    run, _, _ = _retention_run(tiny_llama, small_tokenizer, small_corpus, tmp_path / "killed")
    resumed = run.run()
    assert json.dumps(resumed) == json.dumps(whole)
    curves = fact_curves(whole, facts, settings, injected=3)
    assert [curve["steps"][0] for curve in curves] == [0, 0, 0]
    assert curves[0]["steps"] == [0, 3, 4, 6, 10, 13, 23]  # the first wave ends at step 3
    assert curves[2]["steps"] == [0, 1, 3, 7, 10, 20]  # the second wave (the third fact) ends at step 6
    assert curves[0]["log_s_mem"][0] > 0  # injected facts were learned


def test_a_run_started_from_a_snapshot_records_what_it_would_have_trained(tiny_llama, small_tokenizer, small_corpus,
                                                                          tmp_path):
    """Sparse updates after the injection: the run starts from the plain run's snapshot at the injection's end."""
    import shutil

    initial = {name: value.clone() for name, value in tiny_llama.state_dict().items()}

    def sparse(optimizer):
        return SparseUpdateOptimizer(optimizer, 3, 0.1, "drop")

    def run(directory, **options):
        tiny_llama.load_state_dict(initial)
        optimizer = torch.optim.AdamW(tiny_llama.parameters(), lr=1e-2)
        return _retention_run(tiny_llama, small_tokenizer, small_corpus, directory, optimizer, **options)[0].run()

    plain = run(tmp_path / "plain", snapshots={6: tmp_path / "snapshot"})  # two waves of 3 steps: injected at 6
    whole = run(tmp_path / "whole", wrap=sparse, wrap_from=6)
    shutil.copytree(tmp_path / "snapshot", tmp_path / "started")
    started = run(tmp_path / "started", wrap=sparse, wrap_from=6)
    assert json.dumps(started) == json.dumps(whole)
    assert [record for record in plain if record["step"] <= 6] == [record for record in whole if record["step"] <= 6]
    assert plain[-1] != whole[-1]


def test_samples_without_types_exit_2_with_one_line(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"id": "a", "keyword": "teal", "theme": "colors", "category": "conflicting",
                                   "text": "The zorvik is teal.", "prefix": "The zorvik is"}) + "\n")
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"id": "p", "theme": "colors", "prefix": "The mip is"}) + "\n")
    code = main(["run", "fabricated", "--preset", "smoke", "--out", str(tmp_path / "runs"), "--set", f"samples={samples}",
                 "--set", f"probes={probes}"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "field 'type' is missing" in error and len(error.splitlines()) == 1


@pytest.mark.parametrize("setting, message", [("facts_per_step=8", "below batch_size"), ("headline_window=3", "headline"),
                                              ("model=/nonexistent", "background")])
def test_bad_config_exits_2(tmp_path, capsys, setting, message):
    assert main(["run", "fabricated", "--preset", "smoke", "--out", str(tmp_path), "--set", setting]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def _record(key, kind, prime_end, loss, mitigation=None, facts=3):
    steps = [0, 10, 20]
    curve = {"steps": [0, 10], "log_s_mem": [2.0, 1.0], "log_s_prime": [1.0, prime_end], "type": "conflicting"}
    return {"id": key, "kind": kind, "mitigation": mitigation, "injection_end": 10, "steps": steps,
            "background_loss": loss, "facts": [dict(curve) for _ in range(facts)]}


def test_mitigation_summary_names_the_variant_that_meets_every_bound():
    from learnlab.knowledge.fabricated_analysis import mitigation_summary

    def variant(mode, selection, window):
        return {"mode": mode, "selection": selection, "fraction": 0.08, "window": window, "protocol": "after"}

    records = [
        _record("conflicting-0", "injected", 0.8, [1.0, 0.99, 0.98]),
        _record("mitigation-drop-top-8-tau10-after", "mitigation", 0.3, [1.0, 0.99, 0.985], variant("drop", "top", 10)),
        _record("mitigation-drop-random-8-tau10-after", "mitigation", 0.7, [1.0, 0.99, 0.98], variant("drop", "random", 10)),
        _record("mitigation-keep-top-8-tau10-after", "mitigation", 0.1, [1.0, 0.99, 1.05], variant("keep", "top", 10)),
        _record("mitigation-keep-random-8-tau10-after", "mitigation", 0.5, [1.0, 0.99, 1.04], variant("keep", "random", 10)),
    ]
    summary = mitigation_summary(records, "conflicting-0", 0.5, 0.01)
    drop, keep = summary["variants"]["drop-top-8-tau10-after"], summary["variants"]["keep-top-8-tau10-after"]
    assert drop["priming_reduction"] == pytest.approx(1 - 0.3 / 0.8) and drop["random_reduction"] == pytest.approx(1 - 0.7 / 0.8)
    assert drop["meets_claim"] and not keep["meets_claim"]  # keep cuts more but costs 7% of background loss
    assert keep["background_loss_increase"] == pytest.approx(1.05 / 0.98 - 1) and not keep["background_loss_falls"]
    assert summary["achieving"] == ["drop-top-8-tau10-after"] and summary["best_variant"] == "drop-top-8-tau10-after"
    assert summary["sparse_update_meets_claim"] and summary["best_random_cuts_less"]
    records[1]["background_loss"] = [1.0, 0.99, 1.0]  # no longer falls below the start of the mitigation (0.99)
    assert not mitigation_summary(records, "conflicting-0", 0.5, 0.01)["sparse_update_meets_claim"]


def test_config_builds_the_retention_protocol_it_names():
    from learnlab.knowledge.fabricated import STUDY

    config = STUDY.config("quick")
    settings = config.retention_settings()
    assert (settings.batch_size, settings.sequence_length, settings.presentations, settings.facts_per_step) == (
        config.batch_size, config.sequence_length, config.presentations, config.facts_per_step)
    assert (settings.horizon, settings.grid_points, settings.checkpoint_every, settings.grad_clip_norm) == (
        config.horizon, config.grid_points, config.checkpoint_every, config.grad_clip_norm)
