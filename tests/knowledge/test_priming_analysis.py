import math

import numpy as np
import pytest

from learnlab.knowledge import priming_analysis as analysis


def record(log_p_before, log_s_prime, **extra):
    base = {"log_p_before": log_p_before, "log_s_prime": log_s_prime, "log_s_mem": 2.0, "mean_log_prime": log_s_prime / 2,
            "mean_abs_delta_p_probes": 0.01, "text_tokens": 10.0, "text_mean_loss": 3.0, "text_mean_entropy": 2.0,
            "keyword_entropy": 1.0, "cross_log_s_prime": log_s_prime / 3}
    return {**base, **extra}


def test_spearman_and_a_predictor_that_wins():
    rng = np.random.default_rng(0)
    records = [record(-x, x + 0.1 * rng.standard_normal(), text_tokens=float(rng.integers(5, 30)))
               for x in np.linspace(0.5, 40, 60)]
    result = analysis.correlations(records, resamples=200, seed=0)
    assert result["rho_p_before"] < -0.95 and result["rho_p_before_p_value"] < 1e-10
    assert result["p_before_strongest_predictor"] and result["strongest_predictor"] == "log_p_before"
    assert result["rho_p_before_ci_low"] <= result["rho_p_before"] <= result["rho_p_before_ci_high"] < 0
    assert math.isnan(result["predictors"]["text_mean_loss"]["rho"])  # a constant predictor has no rho


def test_hinge_knee_finds_a_planted_breakpoint():
    x = np.linspace(-10, 0, 41)
    y = 0.2 + 1.5 * np.maximum(0.0, -4.0 - x)
    fit = analysis.hinge_knee(x, y)
    assert abs(fit["knee"] - (-4.0)) <= 0.25 and abs(fit["slope"] - 1.5) < 0.1 and fit["r2"] > 0.99


def test_threshold_split_medians_in_log10():
    ln10 = math.log(10)
    records = [record(-5 * ln10, 3 * ln10), record(-4 * ln10, 2 * ln10), record(-1 * ln10, 0.5 * ln10), record(-0.5 * ln10, 0.1 * ln10)]
    result = analysis.threshold_split(records, 1e-3)
    assert result["samples_below_threshold"] == 2 and result["samples_above_threshold"] == 2
    assert result["median_log10_s_prime_below"] == pytest.approx(2.5)
    assert result["median_log10_s_prime_above"] == pytest.approx(0.3)
    assert result["log10_s_prime_gap_at_threshold"] == pytest.approx(2.2)


def test_pruning_and_rewrite_reductions():
    def pruned(prime, mem, loss):
        return {"log_s_prime": prime, "log_s_mem": mem, "background_loss": loss, "dropped_update_share": 0.3, "mean_log_prime": 0}

    records = [{"background_loss_base": 2.0, "log_s_prime": 4.0, "log_s_mem": 6.0,
                "pruning": {"top-0": pruned(4.0, 6.0, 2.02), "top-8": pruned(1.0, 5.0, 2.01), "random-8": pruned(3.0, 6.0, 2.02)},
                "stepping-stone": {"log_s_prime": 1.0, "log_s_mem": 6.0, "log_p_before_gain": 2 * math.log(10), "text_tokens": 20},
                "plain-control": {"log_s_prime": 3.6, "log_s_mem": 6.0, "log_p_before_gain": 0.0, "text_tokens": 21}}] * 3
    summary = analysis.pruning_summary(records)
    assert summary["ignore8_priming_reduction"] == pytest.approx(0.75)
    assert summary["ignore8_memorization_kept"] == pytest.approx(5 / 6)
    assert summary["ignore8_background_loss_increase"] == pytest.approx(0.005)
    assert summary["random8_priming_reduction"] == pytest.approx(0.25) and summary["random8_cuts_less"]
    rewrites = analysis.rewrite_summary(records)
    assert rewrites["stone_priming_reduction"] == pytest.approx(0.75) and rewrites["control_priming_reduction"] == pytest.approx(0.1)
    assert rewrites["stone_log10_p_before_gain"] == pytest.approx(2.0) and rewrites["control_cuts_much_less"]
    assert analysis.reduction(1.0, 0.0) is None and analysis.kept(1.0, -1.0) is None  # nothing to reduce or keep
