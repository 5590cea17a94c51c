"""Every claim's metrics and thresholds of the knowledge studies, pinned: a loosened threshold fails here."""

from learnlab.knowledge.fabricated import STUDY as FABRICATED
from learnlab.knowledge.priming import STUDY as PRIMING
from learnlab.knowledge.world_model import STUDY as WORLD


def checks(study):
    return {claim.id: [(check.metric, check.op, check.bound if check.op != "within" else (check.reference, check.tolerance))
                       for check in claim.checks] for claim in study.claims}


def test_world_claims_are_pinned():
    assert checks(WORLD) == {
        "W1": [("heldout_fact_accuracy", ">=", 0.90)],
        "W2": [("heldout_perplexity_to_unigram", "<=", 0.05)],
        "W3": [("keyword_prior_span_log10", ">=", 3.0), ("prior_log10_high", ">=", -3.0),
               ("prior_log10_very_low", "<=", -3.0)],
        "W4": [("recall_accuracy_fresh", ">=", 0.90), ("recall_accuracy_contradicting", ">=", 0.90),
               ("recall_gain_fresh", ">", 0.0), ("recall_gain_contradicting", ">", 0.0)],
        "W5": [("recall_min_over_lengths", ">=", 0.90)],
        "W6": [("prior_log10_max", ">=", -1.0), ("prior_log10_min", "<=", -20.0), ("prior_largest_hole_log10", "<=", 2.0)],
    }
    assert WORLD.config("quick").recall_lengths == (2, 4, 8, 16) and WORLD.config("quick").sequence_length >= 256


def test_priming_claims_are_pinned():
    assert checks(PRIMING) == {
        "C1": [("rho_p_before", "<", 0.0), ("rho_p_before_p_value", "<", 0.01), ("p_before_strongest_predictor", "true", None)],
        "C2": [("log10_s_prime_gap_at_threshold", ">", 0.0)],
        "C3": [("ignore8_priming_reduction", ">=", 0.5), ("ignore8_memorization_kept", ">=", 0.5),
               ("ignore8_background_loss_increase", "<", 0.01), ("random8_cuts_less", "true", None)],
        "C4": [("stone_log10_p_before_gain", ">=", 1.0), ("stone_priming_reduction", ">=", 0.5),
               ("stone_memorization_kept", ">=", 0.5), ("control_cuts_much_less", "true", None)],
    }
    assert PRIMING.config("quick").threshold == 1e-3 and PRIMING.config("quick").batch_size >= 16


def test_fabricated_claims_are_pinned():
    assert checks(FABRICATED) == {
        "F1": [("conflicting_outlasts_mundane", "true", None), ("conflicting_outlasts_jumbled", "true", None)],
        "F2": [("conflicting_primes_more_than_mundane_at_start", "true", None),
               ("conflicting_primes_more_than_jumbled_at_start", "true", None),
               ("conflicting_primes_more_than_mundane_at_end", "true", None),
               ("conflicting_primes_more_than_jumbled_at_end", "true", None)],
        "F3": [("best_priming_reduction", ">=", 0.5), ("best_background_loss_increase", "<=", 0.01),
               ("best_background_loss_falls", "true", None), ("best_random_cuts_less", "true", None)],
    }
    quick = FABRICATED.config("quick")
    assert quick.horizon >= 1000 and quick.presentations == 20 and quick.facts_per_step < quick.batch_size
