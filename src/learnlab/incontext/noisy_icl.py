"""Study ``noisy-icl``: "Linear Transformers are Versatile In-Context Learners" (Vladymyrov et al., NeurIPS 2024).

Noisy in-context linear regression (d = 10, n = 20, x, w ~ N(0, I), one noise level per sequence,
noise-free query, ½·MSE). The study trains linear transformers of three parametrisations (GD++,
DIAG, FULL) at several depths on uniform and categorical noise mixtures, compares them with
closed-form ridge baselines by the *adjusted loss* (loss minus the oracle ridge's with the true
sigma), prints a Table-1-style table beside the paper's, and extracts the algorithm a trained DIAG
model implements. It checks:

1. one layer at sigma_max = 0 reaches Table 1's 1.768;
2. ConstRR and AdaRR match Table 1;
3. two-layer DIAG beats two-layer GD++ with noise;
4. GD++ does not beat ConstRR with noise (it models one noise level);
5. DIAG and FULL agree at equal depth (FULL trained by the same protocol on its own: random starts
   and its own shallower models, never from DIAG weights);
6. three-layer DIAG beats ConstRR with much noise, and DIAG improves with depth;
7. the extracted explicit algorithm reproduces the DIAG model and uses adaptive rescaling.

Evaluation detail: every predictor here is linear in the (noise-free, N(0, I)) query, so its expected
½·squared error over the query is ``½ ||w_eff - w||^2`` in closed form; losses are this expectation
averaged over fixed test sequences (Table 1 samples the query instead: same expectation, more
variance). Training uses the same query-averaged loss on fresh sequences drawn every step (online,
as the paper), through the context moments (see :meth:`LinearTransformer.readout_row`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from learnlab.core import Claim, RunContext, Study, at_least, at_most, is_true, within
from learnlab.core.io import pyplot
from learnlab.incontext.algorithm_extraction import ExtractedAlgorithm
from learnlab.incontext.linear_transformer_variants import (
    OMEGA_NAMES,
    LinearTransformer,
    MomentTraining,
    context_moments,
    query_averaged_loss,
    train_online,
)
from learnlab.incontext.noisy_regression import NoiseDistribution, sample_noisy_moments, sample_noisy_tasks
from learnlab.incontext.ridge_baselines import SpectralRidge, tune_constant_ridge, tune_one_step_gd, tune_tuned_ridge

# Table 1 of the paper (adjusted eval loss), notes §5. Columns: sigma_max = 0..7, then {1,3}, {1,3,5}.
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
VARIANT_LABELS = {"gdpp": "GD++", "diag": "DIAG", "full": "FULL"}


def paper_value(row: str, column: str) -> float | None:
    """Table 1's adjusted loss for a row (``diag3``, ``constrr``, ...; 1-layer models share a row)."""
    if row in ("gdpp1", "diag1", "full1", "gd1"):
        row = "1 layer"
    if row not in TABLE1 or column not in TABLE1_COLUMNS:
        return None
    return TABLE1[row][TABLE1_COLUMNS.index(column)]


@dataclass(frozen=True)
class Config:
    """Every knob of the study; the defaults are the ``quick`` preset.

    Training protocol (the same for GD++, DIAG and FULL at a given depth): Adam on **fresh online
    batches** (every step draws ``batch_size`` new sequences per noise setting, as the paper does;
    no fixed pool to overfit), a linear warm-up over 10% of the steps and a cosine decay to
    ``final_lr_fraction`` of the peak, per-model gradient-norm clipping, and the checkpoint with the
    lowest loss on ``validation_size`` held-out sequences per setting. Each model and setting is
    trained from several starts at once (one batched optimiser); the best start on validation is
    reported (the paper: best of 5 seeds).

    Attributes:
        dim, num_context: d and n (paper: 10 and 20).
        layers: depths of the GD++ and DIAG models (paper: 1-7).
        full_layers: depths of the FULL models. FULL never sees a trained DIAG or GD++ weight: its
            starts are random ones and (``warm_start``) its own best shallower model plus identity
            layers.
        sigma_max: uniform mixed-noise settings ``sigma ~ U(0, sigma_max)`` (paper: 0-7).
        categorical: categorical noise sets, each written ``"1/3"`` (paper: ``1/3`` and ``1/3/5``).
        random_inits: random initialisations per model and noise setting at depth 1, 2, ... (the
            last value for deeper ones; 0 is allowed where a warm start exists: from three layers
            on, a random start does not get near a warm one within a CPU budget).
        warm_start: more candidate starts: each depth-L model from the best shallower model of its
            variant plus identity layers (``P = 0``), and (``diag_from_gdpp``) each DIAG model from
            the best GD++ model of its depth.
        diag_from_gdpp: the GD++ warm start for DIAG (GD++ is DIAG with ``q_y = 0``).
        steps: Adam steps per model at depth 1, 2, ... (the last value for deeper ones; paper: 200k).
        learning_rates: peak Adam learning rate at depth 1, 2, ... (the last value for deeper
            ones; paper: 1e-4 for 200k steps). From three layers on the ``omega_yy lambda`` terms
            (lambda ~ n (d + sigma^2), heavy-tailed) make large steps unstable.
        batch_size: fresh sequences per noise setting and step (paper: 2048), shared by the
            setting's starts.
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
    """

    dim: int = 10
    num_context: int = 20
    layers: tuple[int, ...] = (1, 2, 3)
    full_layers: tuple[int, ...] = (1, 2, 3)
    sigma_max: tuple[float, ...] = (0.0, 1.0, 3.0, 5.0)
    categorical: tuple[str, ...] = ("1/3",)
    random_inits: tuple[int, ...] = (2, 1, 0)
    warm_start: bool = True
    diag_from_gdpp: bool = True
    steps: tuple[int, ...] = (200, 400, 900)
    learning_rates: tuple[float, ...] = (0.01, 0.01, 0.001)
    batch_size: int = 256
    clip_norm: float = 1.0
    final_lr_fraction: float = 0.01
    init_scale: float = 0.01
    num_heads: int = 1
    validation_size: int = 16384
    eval_every: int = 100
    test_size: int = 50000
    tuning_size: int = 20000
    extraction_size: int = 2048

    def __post_init__(self) -> None:
        positive = ("dim", "num_context", "batch_size", "num_heads", "validation_size", "eval_every", "test_size",
                    "tuning_size", "extraction_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_context <= self.dim:
            raise ValueError(f"AdaRR needs num_context > dim, got {self.num_context} <= {self.dim}")
        if not self.steps or min(self.steps) < 1:
            raise ValueError(f"steps must be one or more step counts >= 1 (per depth), got {self.steps}")
        if not self.learning_rates or min(self.learning_rates) <= 0:
            raise ValueError(f"learning_rates must be positive numbers (per depth), got {self.learning_rates}")
        if not self.random_inits or min(self.random_inits) < 0:
            raise ValueError(f"random_inits must be counts >= 0 (per depth), got {self.random_inits}")
        for name in ("clip_norm", "init_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must be in (0, 1], got {self.final_lr_fraction}")
        if not self.layers or min(self.layers) < 1 or list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must be increasing depths >= 1, got {self.layers}")
        if not set(self.full_layers) <= set(self.layers) or list(self.full_layers) != sorted(set(self.full_layers)):
            raise ValueError(f"full_layers {self.full_layers} must be increasing depths from layers {self.layers}")
        for variant, depths in (("GD++/DIAG", self.layers), ("FULL", self.full_layers)):
            for position, depth in enumerate(depths):
                if self.random_starts(depth) == 0 and (position == 0 or not self.warm_start):
                    raise ValueError(f"{variant} at depth {depth} would have no start: random_inits "
                                     f"{self.random_inits} gives 0 and there is no shallower warm start")
        if min(self.sigma_max, default=0.0) < 0:
            raise ValueError(f"sigma_max values must be >= 0, got {self.sigma_max}")
        if not self.sigma_max and not self.categorical:
            raise ValueError("need at least one noise setting")
        for text in self.categorical:
            self._parse_levels(text)

    @staticmethod
    def _per_depth(values: tuple, depth: int):
        return values[min(depth, len(values)) - 1]

    def random_starts(self, depth: int) -> int:
        return self._per_depth(self.random_inits, depth)

    def training_steps(self, depth: int) -> int:
        return self._per_depth(self.steps, depth)

    def learning_rate(self, depth: int) -> float:
        return self._per_depth(self.learning_rates, depth)

    @staticmethod
    def _parse_levels(text: str) -> tuple[float, ...]:
        try:
            levels = tuple(float(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"categorical sets are written like 1/3, got {text!r}") from None
        if not levels or min(levels) < 0:
            raise ValueError(f"categorical noise levels must be >= 0, got {text!r}")
        return levels

    def noise_settings(self) -> list[NoiseDistribution]:
        return [NoiseDistribution.uniform(s) for s in self.sigma_max] + [
            NoiseDistribution.categorical(self._parse_levels(text)) for text in self.categorical
        ]


PRESETS = {
    "smoke": Config(layers=(1, 2), full_layers=(1,), sigma_max=(0.0, 3.0), categorical=(), random_inits=(1,), steps=(30,),
                    learning_rates=(0.01,), batch_size=64, validation_size=512, eval_every=10, test_size=2000,
                    tuning_size=2000, extraction_size=256),
    "quick": Config(),
    # Table 1's grid at (close to) the paper's budget: 200k steps, batch 2048, lr 1e-4, best of 5 seeds; for a GPU.
    "full": Config(layers=(1, 2, 3, 4, 5, 6, 7), full_layers=(1, 2, 3, 4, 5, 6, 7),
                   sigma_max=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0), categorical=("1/3", "1/3/5"),
                   random_inits=(5, 2, 1), steps=(20000, 50000, 200000), learning_rates=(0.003, 0.001, 0.0001),
                   batch_size=2048, validation_size=65536, eval_every=1000, test_size=100000, tuning_size=100000),
}


@dataclass
class NoisySet:
    """Sequences of one noise setting, kept as what the models and baselines need.

    ``moments`` ``(N, d+1, d+1)`` = ``sum_j e_j e_j^T`` over the context, ``teacher`` ``(N, d)``,
    ``oracle_loss`` ``(N,)`` = the oracle ridge's query-averaged loss (float64).
    """

    moments: torch.Tensor
    teacher: torch.Tensor
    oracle_loss: torch.Tensor
    spectral: SpectralRidge


def _noisy_set(config: Config, noise: NoiseDistribution, size: int, generator: torch.Generator) -> NoisySet:
    chunks_m, chunks_w, chunks_s = [], [], []
    for start in range(0, size, 50000):
        batch = sample_noisy_tasks(noise, min(50000, size - start), generator, config.dim, config.num_context,
                                   dtype=torch.float64)
        chunks_m.append(context_moments(batch.tokens(), config.num_context))
        chunks_w.append(batch.w)
        chunks_s.append(batch.noise_std)
    moments, teacher, sigma = torch.cat(chunks_m), torch.cat(chunks_w), torch.cat(chunks_s)
    spectral = SpectralRidge.from_moments(moments, config.num_context)
    oracle = spectral.query_averaged_loss(spectral.rotate(teacher), sigma.pow(2))
    return NoisySet(moments, teacher, oracle, spectral)


def _baselines(config: Config, ctx: RunContext, settings: list[NoiseDistribution], test: list[NoisySet]) -> dict[str, Any]:
    """Tune ConstRR, TunedRR and one-step GD per setting; adjusted test losses of all baselines."""
    result: dict[str, Any] = {}
    with ctx.progress("ridge baselines", len(settings)) as bar:
        for noise, data in zip(settings, test):
            key = noise.key
            tuning = _noisy_set(config, noise, config.tuning_size, ctx.generator("tuning", key))
            ridge = tune_constant_ridge(tuning.spectral, tuning.teacher)
            tuned = tune_tuned_ridge(tuning.spectral, tuning.teacher)
            eta = tune_one_step_gd(tuning.moments[:, :-1, -1], tuning.teacher)
            rotated = data.spectral.rotate(data.teacher)
            estimate = data.spectral.ols_noise_variance()
            losses = {
                "constrr": data.spectral.query_averaged_loss(rotated, ridge),
                "adarr": data.spectral.query_averaged_loss(rotated, estimate),
                "tunedrr": data.spectral.query_averaged_loss(rotated, tuned.multiplier * estimate.clamp(max=tuned.threshold)),
                "gd1": query_averaged_loss(eta * data.moments[:, :-1, -1], data.teacher),
            }
            for name, loss in losses.items():
                result[f"adjusted_{name}_{key}"] = (loss - data.oracle_loss).mean().item()
            result[f"oracle_loss_{key}"] = data.oracle_loss.mean().item()
            result[f"constrr_lambda_{key}"] = ridge
            result[f"tunedrr_threshold_{key}"] = tuned.threshold
            result[f"tunedrr_multiplier_{key}"] = tuned.multiplier
            result[f"gd1_eta_{key}"] = eta
            ctx.log(setting=noise.name, **{name: result[f"adjusted_{name}_{key}"] for name in losses})
            bar.advance(1)
    return result


def _parameter_names(variant: str) -> tuple[str, ...]:
    return ("projection", "key_query") if variant == "full" else ("p", "q")


def _model_from(config: Config, variant: str, depth: int, parameters: dict[str, torch.Tensor],
                dtype: torch.dtype = torch.float32) -> LinearTransformer:
    count = parameters[_parameter_names(variant)[0]].shape[0]
    model = LinearTransformer(config.dim, depth, variant, config.num_heads, count, dtype=dtype)
    with torch.no_grad():
        for name in _parameter_names(variant):
            getattr(model, name).copy_(parameters[name].to(dtype))
    return model


def _train_group(config: Config, ctx: RunContext, variant: str, depth: int, settings: list[NoiseDistribution],
                 validation: list[NoisySet], test: list[NoisySet],
                 warm_starts: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Train ``variant`` at ``depth`` for every noise setting and start at once; keep the best start.

    Starts: ``config.random_starts(depth)`` random ones, then one per entry of ``warm_starts``
    (trained ``p, q`` of shape ``(settings, L', H, 2 or 1)`` with ``L' <= depth``: the first ``L'``
    layers are copied, the remaining layers start as the identity (``p = 0``), a missing ``q_y``
    (GD++) starts at 0). For FULL, ``warm_starts`` hold trained shallower FULL ``projection,
    key_query`` (the extra layers start with ``P = 0``, the identity). Every step draws fresh
    sequences per setting (online, as the paper), shared by that setting's starts.
    """
    name = f"{variant}{depth}"
    num_settings = len(settings)
    random_starts = config.random_starts(depth)
    starts = random_starts + len(warm_starts)
    steps, lr = config.training_steps(depth), config.learning_rate(depth)
    count = num_settings * starts
    model = LinearTransformer(config.dim, depth, variant, config.num_heads, count, config.init_scale,
                              generator=ctx.generator(name, "init"))
    with torch.no_grad():
        if variant == "full":  # shallower FULL models plus identity layers (P = 0)
            size = config.dim + 1
            projection = model.projection.view(num_settings, starts, depth, config.num_heads, size, size)
            key_query = model.key_query.view(num_settings, starts, depth, config.num_heads, size, size)
            for offset, start in enumerate(warm_starts):
                index, copied = random_starts + offset, start["projection"].shape[1]
                projection[:, index, :copied] = start["projection"]
                projection[:, index, copied:] = 0.0
                key_query[:, index, :copied] = start["key_query"]
        else:
            p = model.p.view(num_settings, starts, depth, config.num_heads, 2)
            q = model.q.view(num_settings, starts, depth, config.num_heads, -1)
            for offset, start in enumerate(warm_starts):
                index, copied = random_starts + offset, start["p"].shape[1]
                p[:, index, :copied] = start["p"]
                p[:, index, copied:] = 0.0  # extra layers start as the identity
                q[:, index, :copied] = 0.0
                q[:, index, :copied, :, : start["q"].shape[-1]] = start["q"][..., : q.shape[-1]]

    def expand(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unsqueeze(1).expand(num_settings, starts, *tensor.shape[1:]).reshape(count, *tensor.shape[1:])

    generator = ctx.generator(name, "data")

    def draw(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        moments, teacher = sample_noisy_moments(settings, config.batch_size, generator, config.dim, config.num_context)
        return expand(moments), expand(teacher)

    val_moments = expand(torch.stack([v.moments.float() for v in validation]))
    val_teacher = expand(torch.stack([v.teacher.float() for v in validation]))
    val_oracle = torch.tensor([v.oracle_loss.mean().item() for v in validation]).repeat_interleave(starts)
    settings_training = MomentTraining(steps, config.batch_size, lr, config.final_lr_fraction, config.eval_every,
                                       clip_norm=config.clip_norm)
    with ctx.progress(f"train {name} ({count} models)", steps) as bar:

        def on_step(step: int, loss: float) -> None:
            ctx.check_finite(loss, f"{name} training loss at step {step}")
            bar.advance(1, loss=loss / count)

        history = train_online(model, draw, settings_training, (val_moments, val_teacher), on_step)
    curves = (torch.tensor(history.losses) - val_oracle).T.reshape(num_settings, starts, -1)  # adjusted
    final = (torch.tensor(history.best_losses) - val_oracle).reshape(num_settings, starts).nan_to_num(math.inf)
    best = final.argmin(1)
    result: dict[str, Any] = {"steps": history.steps, "best_start": best.tolist(),
                              "curves": curves[torch.arange(num_settings), best].tolist(),
                              "start_final_losses": final.tolist()}
    for key in _parameter_names(variant):
        parameter = getattr(model, key).detach().view(num_settings, starts, *getattr(model, key).shape[1:])
        result[key] = parameter[torch.arange(num_settings), best].clone()
    best_model = _model_from(config, variant, depth, result)
    with torch.no_grad():
        for index, (noise, data) in enumerate(zip(settings, test)):
            losses = []
            for start in range(0, data.moments.shape[0], 10000):
                chunk = data.moments[start:start + 10000].float().unsqueeze(0).expand(num_settings, -1, -1, -1)
                weights = best_model.effective_weights(chunk)[index].double()
                losses.append(query_averaged_loss(weights, data.teacher[start:start + 10000]))
            adjusted = (torch.cat(losses) - data.oracle_loss).mean().item()
            result[f"adjusted_{name}_{noise.key}"] = adjusted
            ctx.log(model=name, setting=noise.name, adjusted_test_loss=adjusted, best_start=int(best[index]))
    return result


def _extraction(config: Config, ctx: RunContext, depth: int, index: int, noise: NoiseDistribution,
                parameters: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Extract the omegas of a trained DIAG model and run the explicit algorithm against it (float64)."""
    single = {key: parameters[key][index:index + 1] for key in ("p", "q")}
    model = _model_from(config, "diag", depth, single, dtype=torch.float64)
    batch = sample_noisy_tasks(noise, config.extraction_size, ctx.generator("extraction"), config.dim,
                               config.num_context, dtype=torch.float64)
    tokens = batch.tokens()
    algorithm = ExtractedAlgorithm.from_model(model)
    with torch.no_grad():
        model_prediction = model.predict(tokens)
        token_prediction = -model(tokens)[:, -1, -1]
        trace = algorithm.run(batch.x, batch.y, batch.x_query)
        no_rescaling = algorithm.without("omega_yy").predict(batch.x, batch.y, batch.x_query)
    scale = model_prediction.abs().max().item()
    target = batch.y_query
    result: dict[str, Any] = {
        "extraction_max_abs_error_float64": (trace.prediction - model_prediction).abs().max().item(),
        "extraction_token_path_max_abs_error_float64": (trace.prediction - token_prediction).abs().max().item(),
        "extraction_prediction_scale": scale,
        # |omega_yy lambda^l| averaged over sequences, at the layer where it is largest: how much
        # the adaptive rescaling (1 + omega_yy lambda^l) moves the implicit model.
        "extraction_omega_yy_rescaling": (trace.rescaling - 1).abs().mean(-1).max().item(),
        "extraction_loss_with_omega_yy": 0.5 * (trace.prediction - target).pow(2).mean().item(),
        "extraction_loss_without_omega_yy": 0.5 * (no_rescaling - target).pow(2).mean().item(),
        "extraction_model": f"DIAG, {depth} layers, {noise.name}",
        "extraction_algorithm": algorithm.describe(),
    }
    for layer, omegas in enumerate(algorithm.layers, start=1):
        for name in OMEGA_NAMES:
            result[f"extracted_{name}_layer{layer}"] = getattr(omegas, name)
    ctx.log(**{k: v for k, v in result.items() if not isinstance(v, str)})
    return result


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    settings = config.noise_settings()
    keys = [noise.key for noise in settings]
    test = [_noisy_set(config, noise, config.test_size, ctx.generator("test", noise.key)) for noise in settings]
    validation = [_noisy_set(config, noise, config.validation_size, ctx.generator("validation", noise.key))
                  for noise in settings]
    measured: dict[str, Any] = {}
    measured.update(ctx.stage("baselines", lambda: _baselines(config, ctx, settings, test)))

    groups: dict[str, dict[str, Any]] = {}
    for variant in ("gdpp", "diag"):
        for position, depth in enumerate(config.layers):
            starts = []
            if config.warm_start and position > 0:  # the best shallower model of this variant
                starts.append(groups[f"{variant}{config.layers[position - 1]}"])
            if config.warm_start and config.diag_from_gdpp and variant == "diag":  # the best GD++ model of this depth
                starts.append(groups[f"gdpp{depth}"])
            starts = [{key: group[key] for key in ("p", "q")} for group in starts]
            groups[f"{variant}{depth}"] = ctx.stage(
                f"train_{variant}{depth}",
                lambda: _train_group(config, ctx, variant, depth, settings, validation, test, starts),
            )
    # FULL is trained on its own: random starts and its own shallower models, never DIAG's weights.
    for position, depth in enumerate(config.full_layers):
        starts = []
        if config.warm_start and position > 0:
            shallower = groups[f"full{config.full_layers[position - 1]}"]
            starts.append({key: shallower[key] for key in ("projection", "key_query")})
        groups[f"full{depth}"] = ctx.stage(
            f"train_full{depth}",
            lambda: _train_group(config, ctx, "full", depth, settings, validation, test, starts),
        )
    for name, group in groups.items():
        measured.update({key: value for key, value in group.items() if key.startswith("adjusted_")})
        measured[f"best_start_{name}"] = group["best_start"]

    deepest = config.layers[-1]
    uniform = [noise for noise in settings if noise.kind == "uniform"]
    target = max(uniform, key=lambda noise: noise.levels[0]) if uniform else settings[-1]
    measured.update(ctx.stage("extraction", lambda: _extraction(
        config, ctx, deepest, settings.index(target), target, groups[f"diag{deepest}"])))

    measured.update(_claim_metrics(config, measured, keys, settings))
    measured["table1"] = _table(config, measured, keys)
    _plot_adjusted_loss(ctx, config, measured, settings)
    _plot_table(ctx, measured["table1"])
    _plot_training(ctx, config, groups, settings)
    return measured


def _claim_metrics(config: Config, measured: dict[str, Any], keys: list[str], settings: list[NoiseDistribution]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    noisy_uniform = [n.key for n in settings if n.kind == "uniform" and n.levels[0] >= 1]
    very_noisy = [n.key for n in settings if n.kind == "uniform" and n.levels[0] >= 3]
    # C2: ConstRR within 5% or 0.005 absolute of Table 1; AdaRR scalars are checked with within().
    for key in keys:
        reference = paper_value("constrr", key)
        value = measured.get(f"adjusted_constrr_{key}")
        if reference is not None and value is not None and key != "u0":
            out[f"constrr_matches_table1_{key}"] = bool(abs(value - reference) <= 0.005 or abs(value / reference - 1) <= 0.05)
    # C3: two-layer DIAG vs two-layer GD++.
    if 2 in config.layers and noisy_uniform:
        out["diag2_over_gdpp2_max_sigma_ge1"] = max(measured[f"adjusted_diag2_{k}"] / measured[f"adjusted_gdpp2_{k}"]
                                                    for k in noisy_uniform)
    # C4: GD++ (every depth) vs ConstRR.
    if very_noisy:
        out["gdpp_over_constrr_min_sigma_ge3"] = min(
            measured[f"adjusted_gdpp{depth}_{k}"] / measured[f"adjusted_constrr_{k}"]
            for depth in config.layers for k in very_noisy)
    # C5: FULL vs DIAG at equal depth, every setting.
    gaps = [abs(measured[f"adjusted_full{depth}_{k}"] / measured[f"adjusted_diag{depth}_{k}"] - 1)
            for depth in config.full_layers for k in keys]
    if gaps:
        out["full_diag_max_relative_gap"] = max(gaps)
    # C6: three-layer DIAG vs ConstRR, and depth.
    if 3 in config.layers and very_noisy:
        out["diag3_over_constrr_max_sigma_ge3"] = max(measured[f"adjusted_diag3_{k}"] / measured[f"adjusted_constrr_{k}"]
                                                      for k in very_noisy)
    if len(config.layers) > 1:
        out["diag_loss_falls_with_depth"] = all(
            measured[f"adjusted_diag{b}_{k}"] < measured[f"adjusted_diag{a}_{k}"]
            for a, b in zip(config.layers, config.layers[1:]) for k in keys)
    return out


def _table(config: Config, measured: dict[str, Any], keys: list[str]) -> list[dict[str, Any]]:
    """Table-1-style rows: model, column, measured adjusted loss and the paper's value."""
    rows = [f"{variant}{depth}" for depth in config.layers for variant in ("gdpp", "diag", "full")
            if variant != "full" or depth in config.full_layers]
    rows += ["gd1", "constrr", "adarr", "tunedrr"]
    table = []
    for row in rows:
        for key in keys:
            value = measured.get(f"adjusted_{row}_{key}")
            if value is not None:
                table.append({"model": row, "setting": key, "measured": value, "paper": paper_value(row, key)})
    return table


def _plot_adjusted_loss(ctx: RunContext, config: Config, measured: dict[str, Any], settings: list[NoiseDistribution]) -> None:
    """Adjusted loss against sigma_max per depth and variant, with the ridge baselines (Fig. 2 style)."""
    plt = pyplot()
    uniform = [n for n in settings if n.kind == "uniform"]
    if not uniform:
        return
    xs = [n.levels[0] for n in uniform]
    figure, axis = plt.subplots(figsize=(7.5, 5))
    styles = {"gdpp": "--", "diag": "-", "full": ":"}
    for depth_index, depth in enumerate(config.layers):
        for variant in ("gdpp", "diag", "full"):
            if variant == "full" and depth not in config.full_layers:
                continue
            ys = [max(measured[f"adjusted_{variant}{depth}_{n.key}"], 1e-6) for n in uniform]
            axis.plot(xs, ys, styles[variant], marker="o", color=f"C{depth_index}", label=f"{VARIANT_LABELS[variant]}, {depth} layer(s)")
    for name, color in (("constrr", "black"), ("adarr", "grey"), ("tunedrr", "silver")):
        ys = [max(measured[f"adjusted_{name}_{n.key}"], 1e-6) for n in uniform]
        axis.plot(xs, ys, "-s", color=color, linewidth=2, label={"constrr": "ConstRR", "adarr": "AdaRR", "tunedrr": "TunedRR"}[name])
    axis.set_yscale("log")
    axis.set_xlabel("sigma_max (sigma ~ U(0, sigma_max))")
    axis.set_ylabel("adjusted loss (½·MSE − oracle ridge)")
    axis.set_title("Noisy in-context regression: adjusted loss vs noise")
    axis.legend(fontsize=7, ncol=2)
    ctx.save_figure(figure, "adjusted_loss_vs_sigma")


def _plot_table(ctx: RunContext, table: list[dict[str, Any]]) -> None:
    """Table 1 layout: one row per model, 'measured (paper)' per noise setting."""
    plt = pyplot()
    models = list(dict.fromkeys(row["model"] for row in table))
    columns = list(dict.fromkeys(row["setting"] for row in table))
    cells = {(row["model"], row["setting"]): row for row in table}
    text = []
    for model in models:
        line = []
        for column in columns:
            row = cells.get((model, column))
            if row is None:
                line.append("")
            else:
                paper = "—" if row["paper"] is None else f"{row['paper']:.3g}"
                line.append(f"{row['measured']:.3g} ({paper})")
        text.append(line)
    figure, axis = plt.subplots(figsize=(1.7 * len(columns) + 1.5, 0.32 * len(models) + 1.2))
    axis.axis("off")
    rendered = axis.table(cellText=text, rowLabels=models, colLabels=columns, loc="center")
    rendered.auto_set_font_size(False)
    rendered.set_fontsize(8)
    axis.set_title("Adjusted eval loss: measured (Table 1)", fontsize=10)
    ctx.save_figure(figure, "table1")


def _plot_training(ctx: RunContext, config: Config, groups: dict[str, dict[str, Any]], settings: list[NoiseDistribution]) -> None:
    """Validation adjusted loss during training (best start per setting), one panel per setting."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(settings), figsize=(3.6 * len(settings), 3.4), squeeze=False)
    styles = {"gdpp": "--", "diag": "-", "full": ":"}
    for index, (axis, noise) in enumerate(zip(axes[0], settings)):
        for name, group in groups.items():
            variant, depth = name.rstrip("0123456789"), int(name.lstrip("gdpfulia"))
            curve = [max(value, 1e-6) for value in group["curves"][index]]
            axis.plot(group["steps"], curve, styles[variant], color=f"C{config.layers.index(depth)}", label=name)
        axis.set_yscale("log")
        axis.set_title(noise.name, fontsize=9)
        axis.set_xlabel("step")
    axes[0][0].set_ylabel("validation adjusted loss")
    axes[0][-1].legend(fontsize=6)
    figure.tight_layout()
    ctx.save_figure(figure, "training_curves")


CLAIMS = (
    Claim(
        "C1",
        "A one-layer linear transformer at sigma_max = 0 reaches Table 1's adjusted loss",
        "Table 1; notes §4 (analytic 1-step GD optimum 1.774)",
        "1.768",
        (within("adjusted_diag1_u0", 1.768, 0.03),),
    ),
    Claim(
        "C2",
        "ConstRR (within 5% or 0.005) and AdaRR (within 15%) match Table 1 at sigma_max in {1, 3, 5}",
        "Table 1",
        "ConstRR 0.009/0.161/0.365; AdaRR 0.003/0.034/0.068",
        (is_true("constrr_matches_table1_u1"), is_true("constrr_matches_table1_u3"), is_true("constrr_matches_table1_u5"),
         within("adjusted_adarr_u1", 0.003, 0.15), within("adjusted_adarr_u3", 0.034, 0.15),
         within("adjusted_adarr_u5", 0.068, 0.15)),
    ),
    Claim(
        "C3",
        "Two-layer DIAG beats two-layer GD++ for every sigma_max >= 1",
        "Table 1, §6",
        "DIAG 0.214/0.188/0.242 vs GD++ 0.295/0.265/0.366",
        (at_most("diag2_over_gdpp2_max_sigma_ge1", 1.0),),
    ),
    Claim(
        "C4",
        "GD++ (one effective noise level) does not beat ConstRR with noise: >= 0.95 x ConstRR at sigma_max >= 3",
        "Table 1, §6",
        "GD++ ≈ ConstRR",
        (at_least("gdpp_over_constrr_min_sigma_ge3", 0.95),),
    ),
    Claim(
        "C5",
        "DIAG and FULL (trained independently, from its own random and shallower-FULL starts) agree within 15% at equal depth (every noise setting)",
        "Table 1, §6",
        "DIAG ≈ FULL",
        (at_most("full_diag_max_relative_gap", 0.15),),
    ),
    Claim(
        "C6",
        "Three-layer DIAG beats ConstRR at sigma_max >= 3, and the DIAG loss falls with depth",
        "Table 1, Fig. 2",
        "0.087/0.118 vs 0.161/0.365",
        (at_most("diag3_over_constrr_max_sigma_ge3", 1.0), is_true("diag_loss_falls_with_depth")),
    ),
    Claim(
        "C7",
        "The extracted explicit algorithm reproduces the trained DIAG model (float64), and omega_yy is non-zero with noise",
        "§4–5, Lemma A.1, Thm 4.1",
        "exact; adaptive rescaling used",
        (at_most("extraction_max_abs_error_float64", 1e-6), at_least("extraction_omega_yy_rescaling", 0.01)),
    ),
)

STUDY = Study(
    name="noisy-icl",
    title="Linear transformers are versatile in-context learners",
    paper="Vladymyrov, von Oswald, Sandler, Ge. NeurIPS 2024. arXiv:2402.14180",
    presets=PRESETS,
    run=run,
    claims=CLAIMS,
    summary="Linear transformers on noisy in-context regression discover noise-adaptive algorithms that beat constant ridge.",
)
