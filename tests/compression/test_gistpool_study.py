"""The gistpool study: its run plan, the summaries behind its claims, pinned thresholds, user files, bad input."""

import json
import math

import pytest

from learnlab.cli import main
from learnlab.compression import gistpool_analysis as analysis
from learnlab.compression.gistpool import NEAR_FULL_RECOVERY, STUDY
from learnlab.compression.gistpool_runs import ablation_chain, gistpool_spec, run_plan


def test_run_plan_covers_bounds_rates_ablation_and_lengths_once():
    config = STUDY.config("quick")
    keys = [run.key for run in run_plan(config)]
    assert len(keys) == len(set(keys))
    for seed in range(config.seeds):
        for length in config.lengths:
            assert f"seed{seed}-L{length}-none" in keys and f"seed{seed}-L{length}-full" in keys
            assert f"seed{seed}-L{length}-gisting-r{config.length_rate}" in keys
        for rate in config.rates:
            for name in (f"gisting-r{rate}", f"avgpool-r{rate}", gistpool_spec(rate).name):
                assert f"seed{seed}-L{config.context_length}-{name}" in keys
        for spec in ablation_chain(config.ablation_rate):
            assert f"seed{seed}-L{config.context_length}-{spec.name}" in keys
    assert [spec.name for spec in ablation_chain(4)] == ["gisting-r4", "gisting+shift-r4", "gisting+shift+separate-r4",
                                                         "gistpool+shift+separate-r4"]


def record(seed, length, name, accuracy, loss=1.0):
    method, _, rate = name.partition("-r")
    method = method.split("+")[0]
    return {"seed": seed, "length": length, "name": name, "method": method, "rate": int(rate or 1), "accuracy": accuracy,
            "loss": loss}


def test_recovery_uses_the_bounds_of_the_same_seed_and_length():
    records = [record(0, 8, "none", 0.2), record(0, 8, "full", 0.8), record(0, 8, "gisting-r2", 0.5),
               record(1, 8, "none", 0.0), record(1, 8, "full", 1.0), record(1, 8, "gisting-r2", 1.0)]
    table = analysis.method_table(records)
    assert table["L8/gisting-r2"]["recovery"]["mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert table["L8/gisting-r2"]["accuracy"]["std"] == pytest.approx(0.25)


def test_rate_summary_needs_a_margin_beyond_one_std_at_every_rate():
    records = []
    for seed, jitter in enumerate((-0.02, 0.02)):
        records += [record(seed, 16, "none", 0.1), record(seed, 16, "full", 0.9)]
        records += [record(seed, 16, "gisting-r2", 0.5 + jitter), record(seed, 16, "avgpool-r2", 0.8 + jitter),
                    record(seed, 16, gistpool_spec(2).name, 0.79 + jitter)]
        records += [record(seed, 16, "gisting-r4", 0.5 + jitter), record(seed, 16, "avgpool-r4", 0.51 + jitter),
                    record(seed, 16, gistpool_spec(4).name, 0.4 + jitter)]
    measured = analysis.rate_summary(analysis.method_table(records), 16, (2, 4))
    assert measured["avgpool_over_gisting_in_stds"]["2"] == pytest.approx(15.0)
    assert not measured["avgpool_beats_gisting_at_every_rate"]  # 0.01 apart at r = 4 is within one std (0.02)
    assert not measured["gistpool_matches_avgpool_at_every_rate"]  # 0.11 below at r = 4
    assert measured["gistpool_minus_avgpool_accuracy"]["2"] == pytest.approx(-0.01)  # within one std: matches
    assert measured["gistpool_recovery_at_lowest_rate"] == pytest.approx((0.79 - 0.1) / 0.8)


def test_ablation_summary_names_the_step_that_does_not_improve():
    losses = [2.0, 1.5, 1.6, 0.5]
    records = [record(0, 16, spec.name, 0.5, loss) for spec, loss in zip(ablation_chain(4), losses)]
    measured = analysis.ablation_summary(analysis.method_table(records), 16, 4)
    assert measured["ablation_steps_not_improving"] == ["+separate"] and not measured["ablation_improves_every_step"]


def test_length_summary_falls_only_beyond_one_std():
    records = []
    for seed, jitter in enumerate((-0.05, 0.05)):
        for length, gisting in ((8, 0.9), (16, 0.6)):
            records += [record(seed, length, "none", 0.0), record(seed, length, "full", 1.0),
                        record(seed, length, "gisting-r2", gisting + jitter)]
    measured = analysis.length_summary(analysis.method_table(records), (8, 16), 2)
    assert measured["gisting_falls_with_length"] and measured["full_holds_with_length"]
    assert measured["gisting_recovery_drop"] == pytest.approx(0.3)
    assert analysis.length_summary(analysis.method_table(records), (8,), 2) == {}
    assert math.isinf(analysis._beyond({"mean": 1.0, "std": 0.0}, {"mean": 0.5, "std": 0.0}))


def test_gistpool_claims_are_pinned():
    checks = {claim.id: [(check.metric, check.op, check.bound) for check in claim.checks] for claim in STUDY.claims}
    assert checks == {
        "G1": [("gisting_falls_with_length", "true", None), ("full_holds_with_length", "true", None)],
        "G2": [("avgpool_beats_gisting_at_every_rate", "true", None)],
        "G3": [("gistpool_matches_avgpool_at_every_rate", "true", None), ("gistpool_recovery_at_lowest_rate", ">=", 0.9)],
        "G4": [("ablation_improves_every_step", "true", None)],
    }
    assert NEAR_FULL_RECOVERY == 0.9
    quick = STUDY.config("quick")
    assert quick.rates == (2, 4, 8) and quick.seeds >= 3 and quick.length_rate == 2 and quick.num_layers >= 4
    assert min(quick.lengths) < quick.context_length <= max(quick.lengths) and 128 <= quick.context_length <= 256
    assert set(quick.lengths) <= set(quick.reader_lengths)  # the reader reads every swept length


@pytest.mark.parametrize("setting, message", [("methods=gisting,zip", "methods"),
                                              ("rates=3", "compression rate 3 does not divide the context length 16"),
                                              ("qa_file=x.jsonl", "go together")])
def test_bad_config_exits_2_with_one_line(tmp_path, capsys, setting, message):
    assert main(["run", "gistpool", "--preset", "smoke", "--out", str(tmp_path), "--set", setting]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_malformed_qa_file_exits_2_naming_file_and_line(tmp_path, capsys):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"context": "a b", "question": "q", "answer": "a"}) + "\n" + '{"context": "a"}\n')
    arguments = ["run", "gistpool", "--preset", "smoke", "--out", str(tmp_path / "runs"), "--set", f"model={tmp_path}",
                 "--set", f"qa_file={path}"]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert "qa.jsonl:2:" in error and len(error.splitlines()) == 1


def test_a_users_decoder_and_qa_file(tmp_path):
    from learnlab.knowledge.models import build_world_model, world_model_config
    from tests.knowledge.conftest import word_tokenizer

    words = [f"w{index}" for index in range(12)] + ["which", "?"]
    tokenizer = word_tokenizer(words)
    model = build_world_model(world_model_config(len(tokenizer), hidden_size=16, num_layers=2, num_heads=2,
                                                 intermediate_size=32, max_positions=64), seed=0)
    model_dir = tmp_path / "model"
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    lines = [json.dumps({"context": " ".join(f"w{(index + step) % 12}" for step in range(10)), "question": "which ?",
                         "answer": f"w{index % 12}"}) for index in range(20)]
    (tmp_path / "qa.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "runs"
    assert main(["run", "gistpool", "--preset", "smoke", "--out", str(out), "--quiet", "--set", f"model={model_dir}",
                 "--set", f"qa_file={tmp_path / 'qa.jsonl'}"]) == 0
    results = json.loads(next((out / "gistpool").iterdir()).joinpath("results.json").read_text())
    assert results["status"] == "ok"
    table = results["measured"]["methods"]
    assert set(table) == {f"L16/{name}" for name in ("none", "full", "gisting-r2", "avgpool-r2", gistpool_spec(2).name,
                                                     "gisting-r4", "avgpool-r4", gistpool_spec(4).name,
                                                     "gisting+shift-r2", "gisting+shift+separate-r2")}
    assert {claim["id"]: claim["verdict"] for claim in results["claims"]}["G1"] == "not-run"  # one length only


def test_world_passages_ask_about_a_fact_the_passage_states(tmp_path):
    from types import SimpleNamespace

    from learnlab.compression.tasks import world_passage_records
    from learnlab.knowledge.world import build_world
    from learnlab.knowledge.world_model import STUDY as WORLD

    config = WORLD.config("smoke")
    world = build_world(0, config.subjects_per_theme, config.attributes_per_theme, config.zipf_exponent)
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0}))
    world_model = SimpleNamespace(world=lambda: world, config=config, run_dir=tmp_path)
    records = world_passage_records(world_model, facts=4, count=9, seed=1)
    assert len(records) == 9 and len({record["context"] for record in records}) == 9
    for record in records:
        assert f" {record['answer']}" in record["context"] and record["question"] not in record["context"]
        assert record["context"].endswith(".")


def test_world_reader_needs_no_qa_file():
    with pytest.raises(ValueError, match="model=world"):
        STUDY.config("smoke").__class__(model="world", qa_file="qa.jsonl")
    assert STUDY.config("smoke").__class__(model="world", context_length=128).sweep_lengths == (128,)
