"""Study ``noisy-icl``: "Linear Transformers are Versatile In-Context Learners" (Vladymyrov et al., NeurIPS 2024).

Noisy in-context linear regression (§2, §6: d = 10, n = 20, x, w ~ N(0, I), one noise level per
sequence, noise-free query, ½·MSE). The study trains linear transformers of three parametrisations
(GD++, DIAG, FULL; §4) at several depths on uniform and categorical noise mixtures, compares them
with closed-form ridge baselines by the *adjusted loss* (loss minus the oracle ridge's with the true
sigma, §6), prints a Table-1-style table beside the paper's, and extracts the algorithm a trained
DIAG model implements (§4–5). It checks:

1. one layer at sigma_max = 0 reaches Table 1's 1.768;
2. ConstRR and AdaRR match Table 1;
3. two-layer DIAG beats two-layer GD++ with noise by Table 1's margin, also from its own random start,
   against a GD++ within 10% of Table 1's (or better);
4. GD++ does not beat ConstRR with noise (it models one noise level), once trained to Table 1's level;
5. DIAG and FULL agree at each depth, both trained by the same start recipe (random starts and their
   own shallower models; no variant starts from another's weights);
6. three-layer DIAG beats ConstRR with much noise, and DIAG improves with depth;
7. the extracted explicit algorithm reproduces the DIAG model and uses adaptive rescaling.

Evaluation detail: every predictor here is linear in the (noise-free, N(0, I)) query, so its expected
½·squared error over the query is ``½ ||w_eff - w||^2`` in closed form; losses are this expectation
averaged over fixed test sequences (Table 1 samples the query instead: same expectation, more
variance). Training uses the same query-averaged loss on fresh sequences drawn every step (online,
as the paper), through the context moments (see :meth:`LinearTransformer.readout_row`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from learnlab.core import (Claim, RunContext, Study, StudyConfig, at_least, at_most, is_true, nonnegative, positive,
                           ranged, within)
from learnlab.incontext.algorithm_extraction import check_extraction
from learnlab.incontext.linear_transformer_variants import OMEGA_NAMES, MomentTraining
from learnlab.incontext.noisy_icl_figures import plot_adjusted_loss, plot_table1, plot_training_curves
from learnlab.incontext.noisy_regression import NoiseDistribution, NoisySet, sample_noisy_set, sample_noisy_tasks
from learnlab.incontext.noisy_table1 import claim_metrics, table1_rows
from learnlab.incontext.noisy_training import (adjusted_test_losses, model_from_parameters, parameter_names,
                                               train_start_group)
from learnlab.incontext.ridge_baselines import RidgeBaselines


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every knob of the study; the defaults are the ``quick`` preset.

    Training (the same for GD++, DIAG and FULL at a given depth, :mod:`~learnlab.incontext.noisy_training`):
    Adam on fresh sequences every step (online, as the paper), linear warm-up over 10% of the steps,
    cosine decay, per-model gradient clipping, the checkpoint with the lowest validation loss, and the
    best of several starts per model and setting (the paper: best of 5 seeds).

    Start recipe (fixed before C5 was measured per depth, the same for every variant, so that
    C5 compares parametrisations, not recipes): ``random_inits`` random starts at each depth, and
    (``warm_start``) the best shallower model *of the same variant* plus identity layers. No model
    starts from another variant's weights: DIAG never from GD++, FULL never from DIAG or GD++. Every
    variant's starts at a depth see the same fresh batches (one data stream per depth), and their
    random starts the same diagonal draws (FULL adds off-diagonal noise). With ``full_layers`` equal
    to ``layers`` (every preset), DIAG and FULL thus get one recipe at every depth.

    Attributes:
        dim, num_context: d and n (paper: 10 and 20).
        layers: depths of the GD++ and DIAG models (paper: 1-7).
        full_layers: depths of the FULL models (a subset of ``layers``).
        sigma_max: uniform mixed-noise settings ``sigma ~ U(0, sigma_max)`` (paper: 0-7).
        categorical: categorical noise sets, each written ``"1/3"`` (paper: ``1/3`` and ``1/3/5``).
        random_inits: random initialisations per model and noise setting at depth 1, 2, ... (the
            last value for deeper ones; 0 is allowed where a warm start exists: from three layers
            on, a random start does not get near a warm one within a CPU budget).
        warm_start: one more start: each depth-L model from the best shallower model of its
            variant plus identity layers (``P = 0``).
        steps: Adam steps per model at depth 1, 2, ... (the last value for deeper ones; paper: 200k).
        learning_rates: peak Adam learning rate at depth 1, 2, ... (the last value for deeper
            ones; paper: 1e-4 for 200k steps). Quick: 3e-3 from three layers on, chosen on validation
            loss: at 1e-2 three-layer DIAG did not leave its warm start at sigma_max = 0, at 1e-3
            neither did it, and GD++ stayed 7x above Table 1 there.
        batch_size: fresh sequences per noise setting and step (paper: 2048), shared by its starts.
        clip_norm: per-model gradient-norm clipping (rare heavy-tailed batches).
        final_lr_fraction: the last step's learning rate over the peak.
        init_scale: std of every initial p, q scalar (FULL: plus 0.1 x that in every entry).
        num_heads: heads per layer (paper's analysis: 1).
        validation_size: held-out sequences per setting for checkpoint and start selection (large:
            a model can fit the bulk and blow up on rare sequences with large ``lambda``).
        eval_every: steps between validation evaluations.
        test_size: sequences per setting for every reported loss (paper: 100k).
        tuning_size: sequences per setting on which the ridge baselines are tuned.
        extraction_size: float64 sequences on which the extracted algorithm is compared to the model.
        workers: processes that share the three training chains (GD++, DIAG, FULL) on the CPU.
    """

    dim: int = positive(10)
    num_context: int = positive(20)
    layers: tuple[int, ...] = positive((1, 2, 3))
    full_layers: tuple[int, ...] = (1, 2, 3)
    sigma_max: tuple[float, ...] = nonnegative((0.0, 1.0, 3.0, 5.0))
    categorical: tuple[str, ...] = ("1/3",)
    random_inits: tuple[int, ...] = nonnegative((2, 2, 0))
    warm_start: bool = True
    steps: tuple[int, ...] = positive((200, 1000, 900))
    learning_rates: tuple[float, ...] = positive((0.01, 0.01, 0.003))
    batch_size: int = positive(256)
    clip_norm: float = positive(1.0)
    final_lr_fraction: float = ranged(0.01, gt=0, le=1)
    init_scale: float = positive(0.01)
    num_heads: int = positive(1)
    validation_size: int = positive(16384)
    eval_every: int = positive(100)
    test_size: int = positive(50000)
    tuning_size: int = positive(20000)
    extraction_size: int = positive(2048)
    workers: int = positive(2)

    def validate(self) -> None:
        if self.num_context <= self.dim:
            raise ValueError(f"num_context must be > dim (AdaRR needs n > d), got {self.num_context} <= {self.dim}")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must be increasing depths, got {self.layers}")
        if not set(self.full_layers) <= set(self.layers) or list(self.full_layers) != sorted(set(self.full_layers)):
            raise ValueError(f"full_layers {self.full_layers} must be increasing depths from layers {self.layers}")
        for variant, depths in (("GD++/DIAG", self.layers), ("FULL", self.full_layers)):
            for position, depth in enumerate(depths):
                if self.random_starts(depth) == 0 and (position == 0 or not self.warm_start):
                    raise ValueError(f"random_inits {self.random_inits} gives {variant} at depth {depth} no start "
                                     "(0 random ones and no shallower warm start)")
        self.noise_settings()  # parses every categorical set

    @staticmethod
    def _per_depth(values: tuple, depth: int):
        return values[min(depth, len(values)) - 1]

    def random_starts(self, depth: int) -> int:
        return self._per_depth(self.random_inits, depth)

    def training_steps(self, depth: int) -> int:
        return self._per_depth(self.steps, depth)

    def learning_rate(self, depth: int) -> float:
        return self._per_depth(self.learning_rates, depth)

    def noise_settings(self) -> list[NoiseDistribution]:
        return [NoiseDistribution.uniform(s) for s in self.sigma_max] + [
            NoiseDistribution.parse_categorical(text) for text in self.categorical
        ]


PRESETS = {
    # Every claim's settings (sigma_max 1, 3, 5; three layers; FULL at each), at a few seconds' scale.
    "smoke": Config(categorical=(), random_inits=(1,), steps=(30,), learning_rates=(0.01,),
                    batch_size=64, validation_size=512, eval_every=10, test_size=2000, tuning_size=2000,
                    extraction_size=256, workers=1),
    "quick": Config(),
    # Table 1's grid at (close to) the paper's budget: 200k steps, batch 2048, lr 1e-4, best of 5 seeds; for a GPU.
    "full": Config(layers=(1, 2, 3, 4, 5, 6, 7), full_layers=(1, 2, 3, 4, 5, 6, 7),
                   sigma_max=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0), categorical=("1/3", "1/3/5"),
                   random_inits=(5, 2, 1), steps=(20000, 50000, 200000), learning_rates=(0.003, 0.001, 0.0001),
                   batch_size=2048, validation_size=65536, eval_every=1000, test_size=100000, tuning_size=100000),
}


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    settings = config.noise_settings()
    keys = [noise.key for noise in settings]
    test = [_noisy_set(config, noise, config.test_size, ctx, "test") for noise in settings]
    measured: dict[str, Any] = dict(ctx.stage("baselines", lambda: _baselines(config, ctx, settings, test)))

    # GD++, DIAG and FULL, each depth from random starts and (warm_start) the best shallower model of
    # its own variant: the same start recipe for every variant (no variant starts from another's weights).
    # The three chains are independent: the items of one stage, shared by ``workers`` processes.
    chains = ctx.stage_items("train", list(CHAINS), chain_worker, config, workers=config.workers,
                             description="training chains (variant, every depth)").records
    groups = {name: _with_tensors(group, record["id"]) for record in chains for name, group in record["groups"].items()}
    for name, group in groups.items():
        measured.update({key: value for key, value in group.items() if key.startswith(("adjusted_", "random_start_"))})
        measured[f"best_start_{name}"] = group["best_start"]

    # The algorithm of the deepest DIAG model, on the noisiest uniform setting.
    deepest = config.layers[-1]
    uniform = [noise for noise in settings if noise.kind == "uniform"]
    target = max(uniform, key=lambda noise: noise.levels[0])
    measured.update(ctx.stage("extraction", lambda: _extraction(
        config, ctx, deepest, settings.index(target), target, groups[f"diag{deepest}"])))

    measured.update(claim_metrics(config.layers, config.full_layers, measured, keys, settings))
    measured["table1"] = table1_rows(measured, config.layers, config.full_layers, keys)
    plot_adjusted_loss(ctx, measured, config.layers, config.full_layers, uniform)
    plot_table1(ctx, measured["table1"])
    plot_training_curves(ctx, groups, config.layers, settings)
    return measured


CHAINS = ("full", "gdpp", "diag")  # the longest first: two processes then finish together


def chain_worker(config: Config, ctx: Any) -> Any:
    """Worker factory: item ``variant`` trains that variant at every depth (each warm-started from the
    one before) on the run's validation and test sets (the same random streams in any process)."""
    settings = config.noise_settings()
    test = [_noisy_set(config, noise, config.test_size, ctx, "test") for noise in settings]
    validation = [_noisy_set(config, noise, config.validation_size, ctx, "validation") for noise in settings]

    def process(variant: str) -> dict[str, Any]:
        depths, groups = config.full_layers if variant == "full" else config.layers, {}
        for position, depth in enumerate(depths):
            shallower = [groups[f"{variant}{depths[position - 1]}"]] if config.warm_start and position > 0 else []
            starts = [{key: group[key] for key in parameter_names(variant)} for group in shallower]
            groups[f"{variant}{depth}"] = _train(config, ctx, variant, depth, settings, validation, test, starts)
        return {"groups": groups}

    return process


def _with_tensors(group: dict[str, Any], variant: str) -> dict[str, Any]:
    """A chain record's group with its parameters back as float32 tensors (JSON holds them exactly)."""
    names = parameter_names(variant)
    return {key: torch.tensor(value, dtype=torch.float32) if key in names else value for key, value in group.items()}


def _noisy_set(config: Config, noise: NoiseDistribution, size: int, ctx: Any, stream: str) -> NoisySet:
    return sample_noisy_set(noise, size, ctx.generator(stream, noise.key), config.dim, config.num_context)


def _baselines(config: Config, ctx: RunContext, settings: list[NoiseDistribution], test: list[NoisySet]) -> dict[str, Any]:
    """Tune ConstRR, TunedRR and one-step GD per setting; adjusted test losses of all baselines."""
    result: dict[str, Any] = {}
    with ctx.progress("ridge baselines", len(settings)) as bar:
        for noise, data in zip(settings, test):
            key = noise.key
            tuning = _noisy_set(config, noise, config.tuning_size, ctx, "tuning")
            baselines = RidgeBaselines.tune(tuning.spectral, tuning.teacher, tuning.alpha)
            losses = baselines.query_averaged_losses(data.spectral, data.teacher, data.alpha)
            for name, loss in losses.items():
                result[f"adjusted_{name}_{key}"] = (loss - data.oracle_loss).mean().item()
            result[f"oracle_loss_{key}"] = data.oracle_loss.mean().item()
            result.update({f"{name}_{key}": value for name, value in baselines.tuned_values().items()})
            ctx.log(setting=noise.name, **{name: result[f"adjusted_{name}_{key}"] for name in losses})
            bar.advance(1)
    return result


def _train(config: Config, ctx: Any, variant: str, depth: int, settings: list[NoiseDistribution],
           validation: list[NoisySet], test: list[NoisySet], warm_starts: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """One start group (random starts, then ``warm_starts``) per setting; adjusted test loss of its best start."""
    name, random_starts = f"{variant}{depth}", config.random_starts(depth)
    training = MomentTraining(config.training_steps(depth), config.batch_size, config.learning_rate(depth),
                              config.final_lr_fraction, config.eval_every, clip_norm=config.clip_norm)
    count = len(settings) * (random_starts + len(warm_starts))
    with ctx.training_progress(f"train {name} ({count} models)", training.steps, f"{name} training loss") as on_step:
        # one init and data stream per depth: every variant's starts see the same draws and batches
        group = train_start_group(variant, depth, settings, validation, training, num_context=config.num_context,
                                  random_starts=random_starts, warm_starts=warm_starts, num_heads=config.num_heads,
                                  init_scale=config.init_scale, init_generator=ctx.generator(f"depth{depth}", "init"),
                                  data_generator=ctx.generator(f"depth{depth}", "data"), on_step=on_step)
    result: dict[str, Any] = {"steps": group.steps, "best_start": group.best_start, "curves": group.curves,
                              "start_final_losses": group.start_final_losses, **group.parameters}
    model = model_from_parameters(variant, group.parameters, config.dim)
    for noise, adjusted, best in zip(settings, adjusted_test_losses(model, test), group.best_start):
        result[f"adjusted_{name}_{noise.key}"] = adjusted
        ctx.log(model=name, setting=noise.name, adjusted_test_loss=adjusted, best_start=best)
    if group.random_parameters is not None:  # the random starts alone (no warm start): C3
        # where the best start is a random one (random starts come first) it is also the best random start,
        # whose loss was just measured: only the other settings are evaluated
        other = [index for index, best in enumerate(group.best_start) if best >= random_starts]
        losses = {index: result[f"adjusted_{name}_{noise.key}"] for index, noise in enumerate(settings)}
        if other:
            names = parameter_names(variant)
            random_model = model_from_parameters(variant, {key: group.random_parameters[key][other] for key in names}, config.dim)
            losses.update(zip(other, adjusted_test_losses(random_model, [test[index] for index in other])))
        for index, noise in enumerate(settings):
            result[f"random_start_adjusted_{name}_{noise.key}"] = losses[index]
    return result


def _extraction(config: Config, ctx: RunContext, depth: int, index: int, noise: NoiseDistribution,
                parameters: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Extract the omegas of a trained DIAG model and run the explicit algorithm against it (float64)."""
    single = {key: parameters[key][index:index + 1] for key in parameter_names("diag")}
    model = model_from_parameters("diag", single, config.dim, dtype=torch.float64)
    batch = sample_noisy_tasks(noise, config.extraction_size, ctx.generator("extraction"), config.dim,
                               config.num_context, dtype=torch.float64)
    check = check_extraction(model, batch)
    result: dict[str, Any] = {
        "extraction_max_abs_error_float64": check.max_abs_error,
        "extraction_token_path_max_abs_error_float64": check.token_path_max_abs_error,
        "extraction_prediction_scale": check.prediction_scale,
        "extraction_omega_yy_rescaling": check.omega_yy_rescaling,
        "extraction_loss_with_omega_yy": check.loss_with_omega_yy,
        "extraction_loss_without_omega_yy": check.loss_without_omega_yy,
        "extraction_model": f"DIAG, {depth} layers, {noise.name}",
        "extraction_algorithm": check.algorithm.describe(),
    }
    for layer, omegas in enumerate(check.algorithm.layers, start=1):
        for name in OMEGA_NAMES:
            result[f"extracted_{name}_layer{layer}"] = getattr(omegas, name)
    ctx.log(**{k: v for k, v in result.items() if not isinstance(v, str)})
    return result


CLAIMS = (
    Claim("C1", "A one-layer linear transformer at sigma_max = 0 reaches Table 1's adjusted loss",
          "Table 1; §4 (one-step GD optimum, 1.774 by reference computation)", "1.768",
          (within("adjusted_diag1_u0", 1.768, 0.03),)),
    Claim("C2", "ConstRR (within 5% or 0.005) and AdaRR (within 15%) match Table 1 at sigma_max in {1, 3, 5}",
          "Table 1", "ConstRR 0.009/0.161/0.365; AdaRR 0.003/0.034/0.068",
          (is_true("constrr_matches_table1_u1"), is_true("constrr_matches_table1_u3"),
           is_true("constrr_matches_table1_u5"), within("adjusted_adarr_u1", 0.003, 0.15),
           within("adjusted_adarr_u3", 0.034, 0.15), within("adjusted_adarr_u5", 0.068, 0.15))),
    Claim("C3", "Two-layer DIAG beats two-layer GD++ by Table 1's margin (DIAG/GD++ <= 0.85) at every sigma_max >= 1, "
          "also from its own random start alone, with GD++ trained as far as the paper's (<= 1.10 x Table 1's GD++-2; "
          "against a direct optimisation of GD++-2, reported: gdpp2_over_attainable_max_sigma_ge1, "
          "diag2_over_attainable_gdpp2_max_sigma_ge1)",
          "Table 1, §6", "DIAG/GD++ 0.73/0.71/0.66 at sigma_max 1/3/5 (0.214/0.188/0.242 vs 0.295/0.265/0.366)",
          (at_most("diag2_over_gdpp2_max_sigma_ge1", 0.85), at_most("diag2_random_start_over_gdpp2_max_sigma_ge1", 0.85),
           at_most("gdpp2_over_table1_max_sigma_ge1", 1.10))),
    Claim("C4", "GD++ (one effective noise level) does not beat ConstRR with noise: trained to within 10% of Table 1's "
          "GD++, it stays >= 0.95 x ConstRR at sigma_max >= 3 (every depth with a Table 1 GD++ value)",
          "Table 1, §6", "GD++ ≈ ConstRR (depth 3: 0.161/0.344 vs 0.161/0.365)",
          (at_most("gdpp_over_table1_max_sigma_ge3", 1.10), at_least("gdpp_over_constrr_min_sigma_ge3", 0.95))),
    Claim("C5", "DIAG and FULL, trained by one start recipe (random starts and their own shallower model), agree within "
          "15% at each depth (every noise setting)",
          "Table 1, §6", "DIAG ≈ FULL (depth 3: 0.087/0.118 vs 0.075/0.117 at sigma_max 3/5)",
          tuple(at_most(f"full_diag_max_relative_gap_depth{depth}", 0.15) for depth in (1, 2, 3))),
    Claim("C6", "Three-layer DIAG beats ConstRR at sigma_max >= 3, and the DIAG loss falls with depth",
          "Table 1, Fig. 2", "0.087/0.118 vs 0.161/0.365",
          (at_most("diag3_over_constrr_max_sigma_ge3", 1.0), is_true("diag_loss_falls_with_depth"))),
    Claim("C7", "The extracted explicit algorithm reproduces the trained DIAG model (float64), and omega_yy is "
          "non-zero with noise",
          "§4–5, Lemma A.1, Thm 4.1", "exact; adaptive rescaling used",
          (at_most("extraction_max_abs_error_float64", 1e-6), at_least("extraction_omega_yy_rescaling", 0.01))),
)

STUDY = Study(
    name="noisy-icl",
    title="Linear transformers are versatile in-context learners",
    paper="Vladymyrov, von Oswald, Sandler, Ge. NeurIPS 2024. arXiv:2402.14180",
    presets=PRESETS,
    run=run,
    claims=CLAIMS,
    figures=("adjusted_loss_vs_sigma", "table1", "training_curves"),
    summary="Linear transformers on noisy in-context regression discover noise-adaptive algorithms that beat constant ridge.",
    reference_seconds={"quick": 165},
)
