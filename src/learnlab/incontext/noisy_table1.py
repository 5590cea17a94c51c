"""Table 1 of Vladymyrov et al. (2024): adjusted evaluation loss of every model and baseline (§6, Table 1).

The adjusted loss is a predictor's ½·MSE minus the oracle ridge's (true ``sigma_tau``) on the same
sequences. Columns: uniform noise ``sigma ~ U(0, sigma_max)`` for ``sigma_max = 0..7`` (keys ``u0`` ..
``u7``), then the categorical sets ``{1, 3}`` and ``{1, 3, 5}`` (``c1_3``, ``c1_3_5``), the keys of
:attr:`learnlab.incontext.noisy_regression.NoiseDistribution.key`. Rows: ``<variant><layers>`` for
the linear transformers (``gdpp2``, ``diag3``, ``full7``, ...; Table 1 gives one row for every
one-layer model) and the ridge baselines ``constrr``, ``adarr``, ``tunedrr``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TABLE1_COLUMNS = ("u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "c1_3", "c1_3_5")
TABLE1 = {
    "1 layer": (1.768, 1.639, 1.396, 1.175, 1.015, 0.907, 0.841, 0.806, 1.007, 0.819),
    "gdpp2": (0.341, 0.295, 0.243, 0.265, 0.347, 0.366, 0.440, 0.530, 0.305, 0.427),
    "diag2": (0.265, 0.214, 0.173, 0.188, 0.219, 0.242, 0.254, 0.259, 0.201, 0.246),
    "gdpp3": (0.019, 0.021, 0.071, 0.161, 0.259, 0.344, 0.454, 0.530, 0.222, 0.422),
    "diag3": (0.013, 0.015, 0.048, 0.087, 0.109, 0.118, 0.121, 0.123, 0.098, 0.119),
    "full3": (0.012, 0.015, 0.049, 0.075, 0.101, 0.117, 0.124, 0.127, 0.076, 0.113),
    "gdpp4": (9.9e-5, 0.014, 0.066, 0.160, 0.258, 0.344, 0.454, 0.530, 0.222, 0.422),
    "diag4": (1.2e-4, 0.006, 0.024, 0.041, 0.050, 0.059, 0.065, 0.073, 0.043, 0.062),
    "gdpp7": (2.65e-12, 0.009, 0.066, 0.161, 0.265, 0.344, 0.454, 0.530, 0.222, 0.422),
    "diag7": (2.5e-12, 0.002, 0.014, 0.027, 0.040, 0.047, 0.052, 0.059, 0.018, 0.046),
    "full7": (2.5e-12, 0.002, 0.010, 0.025, 0.035, 0.047, 0.050, 0.057, 0.010, 0.035),
    "constrr": (0.0, 0.009, 0.066, 0.161, 0.265, 0.365, 0.454, 0.530, 0.222, 0.422),
    "adarr": (0.0, 0.003, 0.016, 0.034, 0.053, 0.068, 0.081, 0.092, 0.051, 0.084),
    "tunedrr": (0.0, 0.002, 0.010, 0.023, 0.037, 0.049, 0.060, 0.068, 0.021, 0.054),
}


# Reference computation (ours), not in the paper: 2-layer GD++ optimised directly, apart from any training
# recipe (:func:`learnlab.incontext.noisy_training.fit_on_fixed_set`: full-batch L-BFGS in float64 on 30k
# fixed sequences, 6 starts near a GD step; the best start's adjusted loss on 100k fresh sequences; the two
# sets drawn by sample_noisy_set with generators seeded 1 and 2).
# Below Table 1's GD++-2 at sigma_max 0-3, whose values sit in local optima of the landscape that
# our direct optimisation also finds (0.339 and 0.287 at sigma_max 0 and 1, vs Table 1's 0.341, 0.295).
GDPP2_DIRECT_OPTIMUM = {"u0": 0.269, "u1": 0.221, "u3": 0.210, "u5": 0.374}


def attainable_gdpp2(column: str) -> float | None:
    """What 2-layer GD++ can attain: the lower of Table 1's value and :data:`GDPP2_DIRECT_OPTIMUM` (or None)."""
    values = [value for value in (paper_value("gdpp2", column), GDPP2_DIRECT_OPTIMUM.get(column)) if value is not None]
    return min(values) if values else None


def paper_value(row: str, column: str) -> float | None:
    """Table 1's adjusted loss for a row (``diag3``, ``constrr``, ...; 1-layer models share a row), or None."""
    if row in ("gdpp1", "diag1", "full1", "gd1"):
        row = "1 layer"
    if row not in TABLE1 or column not in TABLE1_COLUMNS:
        return None
    return TABLE1[row][TABLE1_COLUMNS.index(column)]


def table1_rows(measured: Mapping[str, Any], layers: Sequence[int], full_layers: Sequence[int],
                columns: Sequence[str]) -> list[dict[str, Any]]:
    """Table-1-style rows ``{model, setting, measured, paper}`` of every ``adjusted_<model>_<column>`` measured.

    Models: GD++, DIAG and (at ``full_layers``) FULL per depth of ``layers``, then one-step GD and the
    ridge baselines.
    """
    models = [f"{variant}{depth}" for depth in layers for variant in ("gdpp", "diag", "full")
              if variant != "full" or depth in full_layers]
    table = []
    for model in models + ["gd1", "constrr", "adarr", "tunedrr"]:
        for column in columns:
            value = measured.get(f"adjusted_{model}_{column}")
            if value is not None:
                table.append({"model": model, "setting": column, "measured": value, "paper": paper_value(model, column)})
    return table


def claim_metrics(layers: Sequence[int], full_layers: Sequence[int], measured: Mapping[str, Any], keys: Sequence[str],
                  settings: Sequence[Any]) -> dict[str, Any]:
    """The metrics the ``noisy-icl`` claims C2-C6 read, from the adjusted losses ``adjusted_<model>_<setting>``
    of models at ``layers`` (FULL at ``full_layers``) over the noise ``settings`` (keys ``keys``)."""
    out: dict[str, Any] = {}
    noisy_uniform = [n.key for n in settings if n.kind == "uniform" and n.levels[0] >= 1]
    very_noisy = [n.key for n in settings if n.kind == "uniform" and n.levels[0] >= 3]
    # C2: ConstRR within 5% or 0.005 absolute of Table 1; AdaRR scalars are checked with within().
    for key in keys:
        reference = paper_value("constrr", key)
        if reference is not None and key != "u0":
            value = measured[f"adjusted_constrr_{key}"]
            out[f"constrr_matches_table1_{key}"] = bool(abs(value - reference) <= 0.005 or abs(value / reference - 1) <= 0.05)
    # C3: two-layer DIAG (its best start, and its best random start alone) over two-layer GD++, and GD++
    # over what it can attain (one-sided: a GD++ stuck in a poor local optimum would make C3 easy).
    if 2 in layers and noisy_uniform:
        gdpp2 = {k: measured[f"adjusted_gdpp2_{k}"] for k in noisy_uniform}
        out["diag2_over_gdpp2_max_sigma_ge1"] = max(measured[f"adjusted_diag2_{k}"] / gdpp2[k] for k in noisy_uniform)
        if f"random_start_adjusted_diag2_{noisy_uniform[0]}" in measured:
            out["diag2_random_start_over_gdpp2_max_sigma_ge1"] = max(
                measured[f"random_start_adjusted_diag2_{k}"] / gdpp2[k] for k in noisy_uniform)
        table = {k: paper_value("gdpp2", k) for k in noisy_uniform if paper_value("gdpp2", k)}
        if table:  # GD++ trained as far as the paper's: within 10% of Table 1 (as C4's check)
            out["gdpp2_over_table1_max_sigma_ge1"] = max(gdpp2[k] / value for k, value in table.items())
        attainable = {k: attainable_gdpp2(k) for k in noisy_uniform if attainable_gdpp2(k)}
        if attainable:  # reported, not checked: against a direct optimisation of GD++-2 (below Table 1's)
            out["gdpp2_over_attainable_max_sigma_ge1"] = max(gdpp2[k] / value for k, value in attainable.items())
            out["diag2_over_attainable_gdpp2_max_sigma_ge1"] = max(
                measured[f"adjusted_diag2_{k}"] / value for k, value in attainable.items())
    # C4: GD++ vs ConstRR at every depth with a Table 1 GD++ value, after checking that GD++ is trained
    # there (one-sided, as Table 1's GD++ may itself be under-trained).
    cells = [(depth, k) for depth in layers for k in very_noisy if paper_value(f"gdpp{depth}", k)]
    if cells:
        out["gdpp_over_table1_max_sigma_ge3"] = max(
            measured[f"adjusted_gdpp{depth}_{k}"] / paper_value(f"gdpp{depth}", k) for depth, k in cells)
        out["gdpp_over_constrr_min_sigma_ge3"] = min(
            measured[f"adjusted_gdpp{depth}_{k}"] / measured[f"adjusted_constrr_{k}"] for depth, k in cells)
    # C5: FULL vs DIAG at equal depth, every setting, one metric per depth.
    for depth in full_layers:
        out[f"full_diag_max_relative_gap_depth{depth}"] = max(
            abs(measured[f"adjusted_full{depth}_{k}"] / measured[f"adjusted_diag{depth}_{k}"] - 1) for k in keys)
    # C6: three-layer DIAG vs ConstRR, and depth.
    if 3 in layers and very_noisy:
        out["diag3_over_constrr_max_sigma_ge3"] = max(measured[f"adjusted_diag3_{k}"] / measured[f"adjusted_constrr_{k}"]
                                                      for k in very_noisy)
    if len(layers) > 1:
        out["diag_loss_falls_with_depth"] = all(
            measured[f"adjusted_diag{b}_{k}"] < measured[f"adjusted_diag{a}_{k}"]
            for a, b in zip(layers, layers[1:]) for k in keys)
    return out
