import json
import re

import pytest

from learnlab.cli import main
from learnlab.incontext.mesa import PRESETS, STUDY, Config

# Every claim's checks (metric, test, bound or reference and tolerance), pinned: the bounds come from the paper,
# the official code's reference numbers or an exact identity, so loosening one must fail here.
CLAIM_CHECKS = {
    "C1": [("mesa_forward_relative_error_float64", "<=", 1e-8), ("mesa_forward_relative_error_float32", "<=", 1e-4),
           ("mesa_input_grad_relative_error_float64", "<=", 1e-3), ("mesa_lambda_grad_relative_error_float64", "<=", 1e-3),
           ("mesa_grad_relative_error_float32", "<=", 1e-3)],
    "C2": [("lsq_loss_t0", "within", 1.676, 0.10), ("lsq_loss_t10", "within", 0.0856, 0.10),
           ("lsq_max_loss_from_t15", "<=", 2e-3)],
    "C3": [("linear2_mean_loss", "within", 0.431, 0.15)],
    "C4": [("linear1_gd1_sensitivity_cosine", ">=", 0.9), ("linear2_to_linear1_mean_loss", "<=", 1.0)],
    "C5": [("mesa1_to_linear1_mean_loss", "<=", 1.0), ("mesa1_to_linear1_late", "<=", 1.0)],
    "C6": [("linear2_tuned_prompt_ratio_10_to_1", "<=", 0.5)],
    "C7": [("mesa1_to_lsq_late", "<=", 2.0)],
}


def _pinned(check):
    if check.op == "within":
        return (check.metric, "within", check.reference, check.tolerance)
    return (check.metric, check.op, check.bound)


def test_every_claim_checks_the_pinned_metric_and_threshold():
    assert {claim.id: [_pinned(check) for check in claim.checks] for claim in STUDY.claims} == CLAIM_CHECKS


def test_late_window_and_reference_constants():
    from learnlab.incontext import mesa

    assert (mesa.LATE_START, mesa.LSQ_T0, mesa.LSQ_T10, mesa.SANDBOX_MEAN_LOSS) == (20, 1.676, 0.0856, 0.431)


def test_mesa_smoke_run(tmp_path, capsys):
    assert main(["run", "mesa", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    results = json.loads(next(tmp_path.glob("mesa/*/results.json")).read_text())
    assert results["status"] == "ok"
    assert set(STUDY.figures) == {"per_t_loss", "per_t_loss_mesa", "repurposing", "training_curves"}
    assert sorted(results["figures"]) == sorted(f"{name}.png" for name in STUDY.figures)
    verdicts = {claim["id"]: claim["verdict"] for claim in results["claims"]}
    assert verdicts["C1"] == "pass" and verdicts["C2"] == "pass"
    assert set(verdicts) == set(CLAIM_CHECKS)
    assert set(verdicts.values()) <= {"pass", "fail"}
    measured = results["measured"]
    for key in ("linear2", "linear1", "mesa1"):  # the smoke preset tunes every model's EOS and prefix
        assert len(measured[f"{key}_tuned_prompt_errors"]) == len(measured["prompt_examples"])
        assert measured[f"{key}_tuned_prompt_ratio_10_to_1_standard_error"] > 0
    assert measured["linear2_prompt_ratio_10_to_1"] > 0  # the untuned baseline stays reported


@pytest.mark.parametrize("override", ["linear_steps=0", "mesa_lambda_init=0", "mesa_clip=-1",
                                      "sensitivity_positions=99", "kind=circle", "prompt_examples=2,3",
                                      "prompt_tuning_lr=0", "prompt_tuning_lr=nan", "prompt_prefix_length=-1",
                                      "prompt_tuning_steps=0", "prompt_tuned_models=mesa1", "prompt_tuned_models=linear2,gpt",
                                      "end_lr=1e-3", "sensitivity_positions=-1", "micro_batch=0"])
def test_bad_config_is_a_user_error(tmp_path, capsys, override):
    assert main(["run", "mesa", "--preset", "smoke", "--set", override, "--out", str(tmp_path), "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("changes, message", [
    ({"end_lr": 5e-4}, "end_lr must be <= peak_lr and mesa_peak_lr"),
    ({"sensitivity_positions": (10, 50)}, "sensitivity_positions must lie in [0, seq_len)"),
    ({"prompt_examples": (1, 2)}, "prompt_examples must contain 1 and 10"),
    ({"prompt_tuning_lr": float("nan")}, "prompt_tuning_lr must be > 0"),
    ({"seq_len": 20}, "seq_len must be > 20"),
    ({"kind": "circle"}, "kind must be one of full, partial, contracting"),
])
def test_config_rules_name_the_field(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Config(**changes)


def test_training_settings_per_model():
    config = Config()
    linear2, linear1, mesa1 = (config.training(key) for key in ("linear2", "linear1", "mesa1"))
    assert (linear2.steps, linear2.batch_size, linear2.peak_lr, linear2.warmup_steps) == (2500, 256, 3e-4, 1000)
    schedule = linear2.schedule  # the official warmup-cosine: 0 at step 0, peak after warm-up, 1e-5 at step 20 000
    assert schedule(0) == 0.0 and schedule(1000) == pytest.approx(3e-4) and schedule(20000) == pytest.approx(1e-5)
    # The quick mesa recipe: the cosine ends at the run's last step.
    assert (mesa1.steps, mesa1.batch_size, mesa1.peak_lr, mesa1.schedule_steps) == (2400, 128, 3e-3, 2400)
    assert mesa1.schedule(2400) == pytest.approx(1e-5)
    full = PRESETS["full"].training("mesa1")  # the paper's constructed-token mesa model (run_construction_experiments)
    assert (full.steps, full.batch_size, full.peak_lr, full.schedule_steps) == (5000, 256, 4e-4, 20000)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_claim_4_compares_depths_at_one_budget(preset):
    config = PRESETS[preset]
    assert config.training("linear1") == config.training("linear2")


def test_mesa_model_recipe():
    from learnlab.incontext.mesa_runs import build_model as _model

    config = Config()
    mesa, linear = _model(config, "mesa1"), _model(config, "linear1")
    assert (mesa.clip, linear.clip) == (4.0, 1.5)  # paper's constructed-token clip; the sandbox's for the linear models
    assert mesa.blocks[0].attention.lam.tolist() == [1e3] * 4
    assert PRESETS["full"].mesa_lambda_init == 1.0 and PRESETS["full"].mesa_clip == 4.0
