import json
import math

import torch

from learnlab.cli import main
from learnlab.core.registry import get_study
from learnlab.knowledge.outlandish import CATEGORIES
from learnlab.knowledge.substrate import ensure_world_model, load_language_model


def test_smoke_run_then_reuse_through_ensure_world_model(tmp_path, capsys):
    assert get_study("world").name == "world"
    assert main(["run", "world", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    assert "W1" in capsys.readouterr().out
    run_dir = next((tmp_path / "world").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and sorted(results["figures"]) == ["in_context_recall.png", "world_model.png"]
    measured = results["measured"]
    for key in ("heldout_fact_accuracy", "heldout_perplexity", "train_fact_accuracy", "keyword_prior_span_log10",
                "recall_accuracy_fresh", "recall_accuracy_contradicting", "recall_min_over_lengths",
                "restatement_recall_accuracy_fresh", "prior_largest_hole_log10"):
        assert isinstance(measured[key], float) and math.isfinite(measured[key]), key  # NaN would be the string "nan"
    assert {claim["verdict"] for claim in results["claims"]} <= {"pass", "fail"}
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (run_dir / "model" / name).exists(), name
    assert (run_dir / "checkpoints" / "state.json").exists()

    handle = ensure_world_model("smoke", out=tmp_path, device="cpu")  # reused: same config hash, no training
    assert handle.run_dir == run_dir
    assert json.loads((run_dir / "results.json").read_text())["finished_at"] == results["finished_at"]
    world = handle.world()
    samples, probes = handle.outlandish()
    assert {s.category for s in samples} == set(CATEGORIES) and len({s.keyword for s in samples}) == 24
    assert handle.texts("heldout") and handle.config.steps == 12
    model, tokenizer = load_language_model("world", preset="smoke", out=tmp_path)
    ids = tokenizer(f"The color of the {world.themes[0].subjects[0]} is", return_tensors="pt")["input_ids"]
    assert torch.isfinite(model(input_ids=ids).logits).all()


def test_bad_config_value_is_a_user_error(tmp_path, capsys):
    assert main(["run", "world", "--preset", "smoke", "--set", "subjects_per_theme=5", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "subjects_per_theme" in error and len(error.strip().splitlines()) == 1
