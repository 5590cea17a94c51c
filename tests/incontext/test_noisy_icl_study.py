import json

import pytest

from learnlab.cli import main
from learnlab.core.errors import UserError
from learnlab.core.registry import get_study
from learnlab.core.runs import RunOptions, prepare_run
from learnlab.incontext.noisy_icl import CLAIMS, PRESETS, STUDY, Config
from learnlab.incontext.noisy_table1 import attainable_gdpp2, claim_metrics, paper_value


def test_config_validation_and_table():
    for bad, field in (({"layers": (2, 1)}, "layers"), ({"full_layers": (4,)}, "full_layers"),
                       ({"full_layers": (2, 1)}, "full_layers"), ({"categorical": ("1/x",)}, "categorical"),
                       ({"categorical": ("1/-3",)}, "categorical"), ({"num_context": 10}, "num_context"),
                       ({"random_inits": (0,)}, "random_inits"),  # depth 1 has no warm start
                       ({"random_inits": (1, 0), "warm_start": False}, "random_inits"),
                       ({"steps": ()}, "steps"), ({"steps": (10, 0)}, "steps"),
                       ({"learning_rates": (0.01, -1.0)}, "learning_rates"), ({"batch_size": 0}, "batch_size"),
                       ({"clip_norm": 0.0}, "clip_norm"), ({"final_lr_fraction": 1.5}, "final_lr_fraction"),
                       ({"sigma_max": (-1.0,)}, "sigma_max"), ({"sigma_max": ()}, "sigma_max")):
        with pytest.raises(ValueError, match=field):
            Config(**bad)
    quick = PRESETS["quick"]
    assert quick.training_steps(1) == 200 and quick.training_steps(2) == 1000 and quick.training_steps(5) == 900
    assert quick.learning_rate(1) == 0.01 and quick.learning_rate(3) == 0.003
    assert quick.random_starts(3) == 0 and quick.warm_start  # depth 3 starts from warm starts only
    assert [n.key for n in PRESETS["quick"].noise_settings()] == ["u0", "u1", "u3", "u5", "c1_3"]
    assert paper_value("diag1", "u0") == 1.768 and paper_value("constrr", "u5") == 0.365
    assert paper_value("full2", "u0") is None


def test_claims_pin_their_metrics_and_thresholds():
    """Every claim's metrics and thresholds (Table 1's or the reference computations'): a loosened one fails here."""
    checks = {claim.id: [(check.metric, check.op, check.bound, check.reference, check.tolerance) for check in claim.checks]
              for claim in CLAIMS}
    assert list(checks) == ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    assert checks["C1"] == [("adjusted_diag1_u0", "within", None, 1.768, 0.03)]
    assert checks["C2"] == [(f"constrr_matches_table1_u{s}", "true", None, None, None) for s in (1, 3, 5)] + [
        (f"adjusted_adarr_u{s}", "within", None, value, 0.15) for s, value in ((1, 0.003), (3, 0.034), (5, 0.068))]
    assert checks["C3"] == [("diag2_over_gdpp2_max_sigma_ge1", "<=", 0.85, None, None),
                            ("diag2_random_start_over_gdpp2_max_sigma_ge1", "<=", 0.85, None, None),
                            ("gdpp2_over_table1_max_sigma_ge1", "<=", 1.10, None, None)]
    assert checks["C4"] == [("gdpp_over_table1_max_sigma_ge3", "<=", 1.10, None, None),
                            ("gdpp_over_constrr_min_sigma_ge3", ">=", 0.95, None, None)]
    assert checks["C5"] == [(f"full_diag_max_relative_gap_depth{depth}", "<=", 0.15, None, None) for depth in (1, 2, 3)]
    assert checks["C6"] == [("diag3_over_constrr_max_sigma_ge3", "<=", 1.0, None, None),
                            ("diag_loss_falls_with_depth", "true", None, None, None)]
    assert checks["C7"] == [("extraction_max_abs_error_float64", "<=", 1e-6, None, None),
                            ("extraction_omega_yy_rescaling", ">=", 0.01, None, None)]


KEYS = ("u0", "u1", "u3", "u5", "c1_3")


def _verdicts(changes: dict[str, float]) -> dict[str, str]:
    """C3-C5 verdicts, apart from ``changes``, when GD++-2 scores Table 1's value, DIAG-2 (best and random start)
    0.8 x that, GD++-3 ConstRR's value, FULL DIAG's, and every other model Table 1's value."""
    config = Config(sigma_max=(0.0, 1.0, 3.0, 5.0), categorical=("1/3",))
    measured = {}
    for key in KEYS:
        for name in ("constrr", "adarr", "gdpp1", "diag1", "diag3"):
            measured[f"adjusted_{name}_{key}"] = paper_value(name, key)
        measured[f"adjusted_gdpp2_{key}"] = paper_value("gdpp2", key)
        measured[f"adjusted_diag2_{key}"] = measured[f"random_start_adjusted_diag2_{key}"] = (
            0.8 * measured[f"adjusted_gdpp2_{key}"])
        measured[f"adjusted_gdpp3_{key}"] = paper_value("constrr", key)
    measured.update(changes)
    for depth in (1, 2, 3):
        for key in KEYS:
            measured.setdefault(f"adjusted_full{depth}_{key}", measured[f"adjusted_diag{depth}_{key}"])
    measured.update(claim_metrics(config.layers, config.full_layers, measured, list(KEYS), config.noise_settings()))
    return {claim.id: claim.evaluate(measured)["verdict"] for claim in CLAIMS if claim.id in ("C3", "C4", "C5")}


def test_claims_pass_when_the_effect_holds_and_fail_when_it_or_the_training_falls_short():
    assert _verdicts({}) == {"C3": "pass", "C4": "pass", "C5": "pass"}
    # C3: DIAG only 10% better than GD++ (Table 1: 27-34%), also when only its random start falls short
    assert _verdicts({"adjusted_diag2_u3": 0.9 * paper_value("gdpp2", "u3")})["C3"] == "fail"
    assert _verdicts({"random_start_adjusted_diag2_u5": 0.9 * paper_value("gdpp2", "u5")})["C3"] == "fail"
    # C3 and C4 fail when GD++ is under-trained (> 1.10 x Table 1), although the ratios then look better
    assert _verdicts({"adjusted_gdpp2_u1": 1.2 * paper_value("gdpp2", "u1")})["C3"] == "fail"
    assert _verdicts({"adjusted_gdpp3_u3": 1.2 * 0.161})["C4"] == "fail"
    assert _verdicts({"adjusted_gdpp3_u5": 0.9 * 0.365})["C4"] == "fail"  # GD++ beats ConstRR by 10%
    # Table 1's own two-layer rows pass C3 (DIAG/GD++ 0.66-0.73)
    table1_diag2 = {f"{prefix}_diag2_{k}": paper_value("diag2", k) for k in KEYS
                    for prefix in ("adjusted", "random_start_adjusted")}
    assert _verdicts(table1_diag2)["C3"] == "pass"
    # The direct optimisation of GD++-2 (reported beside C3) lies below Table 1's local optimum
    assert attainable_gdpp2("u1") < paper_value("gdpp2", "u1") / 1.10
    # C5: 10% apart at every depth passes; 20% at one setting of one depth fails
    assert _verdicts({f"adjusted_full{d}_{k}": 1.1 * paper_value(f"diag{d}", k) for d in (1, 3) for k in KEYS}
                     )["C5"] == "pass"
    assert _verdicts({"adjusted_full3_c1_3": 1.2 * 0.098})["C5"] == "fail"
    assert _verdicts({"adjusted_full1_u0": 1.2 * 1.768})["C5"] == "fail"
    # Table 1's own 3-layer FULL row is 22% below its DIAG row at {1, 3} (0.076 vs 0.098)
    assert _verdicts({f"adjusted_full3_{k}": paper_value("full3", k) for k in KEYS})["C5"] == "fail"


def test_smoke_run(tmp_path, capsys):
    smoke = PRESETS["smoke"]
    # the settings every claim needs: sigma_max 0 (C1), 1, 3, 5 (C2-C4, C6); depths 1-3 (C3-C6); FULL at 1-3 (C5);
    # a random start at depth 2 (C3)
    assert {0.0, 1.0, 3.0, 5.0} <= set(smoke.sigma_max) and {1, 2, 3} <= set(smoke.layers)
    assert {1, 2, 3} <= set(smoke.full_layers) and smoke.random_starts(2) >= 1
    assert main(["run", "noisy-icl", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    assert "C7" in capsys.readouterr().out
    run_dir = prepare_run(get_study("noisy-icl"), RunOptions(preset="smoke", out=tmp_path)).run_dir
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert results["figures"] == sorted(f"{name}.png" for name in STUDY.figures)
    measured = results["measured"]
    # every claim is evaluated: each metric it reads is measured, and the verdict is pass or fail
    assert [claim["id"] for claim in results["claims"]] == [claim.id for claim in CLAIMS]
    for claim in results["claims"]:
        assert None not in claim["measured"].values(), claim["id"]
        assert claim["verdict"] in ("pass", "fail"), claim["id"]
    verdicts = {claim["id"]: claim["verdict"] for claim in results["claims"]}
    assert verdicts["C7"] == "pass" and measured["extraction_max_abs_error_float64"] < 1e-10
    assert measured["extraction_token_path_max_abs_error_float64"] < 1e-10
    assert measured["adjusted_constrr_u0"] == pytest.approx(0.0, abs=1e-3)  # noise-free: OLS is the oracle
    assert measured["adjusted_gd1_u0"] == pytest.approx(0.5 * 10 * (1 - 20 / 31), rel=0.05)  # one-step GD optimum
    rows = {(row["model"], row["setting"]): row for row in measured["table1"]}
    models = ["gdpp1", "diag1", "full1", "gdpp2", "diag2", "full2", "gdpp3", "diag3", "full3", "gd1", "constrr", "adarr",
              "tunedrr"]
    assert list(rows) == [(model, key) for model in models for key in ("u0", "u1", "u3", "u5")]
    assert rows[("diag2", "u3")]["paper"] == 0.188 and rows[("full1", "u0")]["paper"] == 1.768
    assert rows[("gdpp1", "u1")]["paper"] == 1.639 and rows[("tunedrr", "u5")]["paper"] == 0.049


def test_bad_override_is_a_user_error():
    study = get_study("noisy-icl")
    with pytest.raises(UserError):
        prepare_run(study, RunOptions(preset="smoke", overrides=("layers=0",)))
