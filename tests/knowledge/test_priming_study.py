import json

import pytest

from learnlab.cli import main
from learnlab.core.parallel import read_records


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "priming", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    return out, next((out / "priming").iterdir())


def test_smoke_run_records_every_measurement(smoke_run):
    _, run_dir = smoke_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert set(results["figures"]) == {"priming_scatter.png", "ignore_k.png", "rewrites.png"}
    assert [claim["id"] for claim in results["claims"]] == ["C1", "C2", "C3", "C4"]
    measured = results["measured"]
    assert measured["samples"] == 16 and 0 < measured["rewritten_samples"] < 16  # keywords with a relation only
    assert measured["samples_per_minute"] > 0
    assert set(measured["variants"]) == {"top-0", "top-8", "random-8"}
    records = read_records(run_dir / "items" / "sweep.jsonl")
    assert len(records) == 16 and len({record["id"] for record in records}) == 16
    from scipy.stats import spearmanr

    pooled = spearmanr([r["log_p_before"] for r in records], [r["log_s_prime"] for r in records])[0]
    assert measured["rho_p_before"] == pytest.approx(pooled)
    levels = {str(record.get("prior", record["category"])) for record in records}
    assert set(measured["by_prior_level"]) == levels
    assert sum(entry["samples"] for entry in measured["by_prior_level"].values()) == 16
    for key in ("log_p_before", "log_s_mem", "log_s_prime", "cross_log_s_prime", "text_mean_loss", "keyword_entropy",
                "background_loss_after", "pruning"):
        assert key in records[0], key
    rewritten = [record for record in records if "stepping-stone" in record]
    assert len(rewritten) == measured["rewritten_samples"] and all(r["prior"] in ("low", "very-low") for r in rewritten)
    first = rewritten[0]
    assert "plain-control" in first and "keyword-lead-in" in first
    assert first["stepping-stone"]["text_tokens"] > first["text_tokens"]
    assert measured["lead_in_log10_p_before_gain"] is not None
    assert sum("spaced" in record for record in records) == 8  # every second sample (spaced_every=2)
    assert sum("ablation_pruning" in record for record in records) == 3  # samples 0, 6, 12 (ablation_every=6)
    assert set(measured["ablation_variants"]) == {"top-0", "top-8", "random-8"} and measured["ablation_samples"] == 3


def test_killed_sweep_resumes_without_redoing_finished_samples(smoke_run):
    out, run_dir = smoke_run
    merged = run_dir / "items" / "sweep.jsonl"
    before = read_records(merged)
    # Simulate a kill after five samples: only a part file with five records (the last one torn) is left.
    part = run_dir / "items" / "sweep.part0-of1.jsonl"
    lines = merged.read_text().splitlines()
    part.write_text("\n".join(lines[:5]) + "\n" + lines[5][:40])
    merged.unlink()
    for name in ("results.json", "stages/sweep.json", "stages/analysis.json"):
        (run_dir / name).unlink()
    assert main(["run", "priming", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    after = read_records(merged)
    assert [record["id"] for record in after] == [record["id"] for record in before]
    assert [record["seconds"] for record in after[:5]] == [record["seconds"] for record in before[:5]]  # not redone
    assert after[5]["log_s_prime"] == pytest.approx(before[5]["log_s_prime"], rel=1e-4, abs=1e-4)  # redone, same result
    assert json.loads((run_dir / "stages" / "sweep.json").read_text())["items"] == 16


def test_two_worker_processes_share_the_samples(smoke_run, tmp_path):
    out, run_dir = smoke_run
    assert main(["run", "priming", "--preset", "smoke", "--out", str(out), "--quiet",
                 "--set", "workers=2", "--set", "max_samples=4"]) == 0
    run = next(path for path in (out / "priming").iterdir() if path != run_dir)
    assert {"sweep.part0-of2.jsonl", "sweep.part1-of2.jsonl"} <= {path.name for path in (run / "items").glob("*.part*")}
    assert len(read_records(run / "items" / "sweep.jsonl")) == 4


@pytest.mark.parametrize("settings, message", [
    (["samples=/nonexistent/s.jsonl", "probes=/nonexistent/p.jsonl"], "does not exist"),
    (["model=/some/model"], "background"),
    (["samples=/nonexistent/s.jsonl"], "go together"),
    (["prune_fractions=0.01,0.02"], "0.08"),
])
def test_bad_input_is_one_line_and_exit_code_2(smoke_run, settings, message, capsys):
    out, _ = smoke_run
    arguments = ["run", "priming", "--preset", "smoke", "--out", str(out)]
    for setting in settings:
        arguments += ["--set", setting]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_any_causal_lm_with_user_files(tmp_path, tiny_llama, small_tokenizer, small_corpus):
    from learnlab.knowledge.outlandish import OutlandishSample, Probe, write_jsonl

    model_dir = tmp_path / "my-model"
    tiny_llama.save_pretrained(str(model_dir))
    small_tokenizer.save_pretrained(str(model_dir))
    samples = [OutlandishSample(f"s{index}", keyword, "colors", "fact", f"The {name} is {keyword}.", f"The {name} is")
               for index, (name, keyword) in enumerate([("bo", "mauve"), ("ki", "red"), ("zu", "teal"), ("ra", "blue")])]
    write_jsonl(tmp_path / "samples.jsonl", samples)
    write_jsonl(tmp_path / "probes.jsonl", [Probe("p0", "colors", "The color of the sky is"), Probe("p1", "colors", "The dog is")])
    (tmp_path / "background.txt").write_text("\n".join(small_corpus.train_texts[:60]))
    out = tmp_path / "runs"
    arguments = ["run", "priming", "--preset", "smoke", "--out", str(out), "--quiet", "--set", f"model={model_dir}",
                 "--set", f"background={tmp_path / 'background.txt'}", "--set", f"samples={tmp_path / 'samples.jsonl'}",
                 "--set", f"probes={tmp_path / 'probes.jsonl'}"]
    assert main(arguments) == 0
    assert not (out / "world").exists()  # no world model was needed
    results = json.loads(next((out / "priming").iterdir()).joinpath("results.json").read_text())
    assert results["status"] == "ok" and results["measured"]["samples"] == 4
    assert results["measured"]["rewritten_samples"] == 0  # no rewrites for user data without files
    verdicts = {claim["id"]: claim["verdict"] for claim in results["claims"]}
    assert verdicts["C4"] == "not-run"
