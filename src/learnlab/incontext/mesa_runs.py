"""The trained models of the ``mesa`` study: their architectures and their online training.

Three models (von Oswald et al. 2023, §4-5, on the constructed tokens): a 2-layer and a 1-layer
linear-attention Transformer and a 1-layer mesa Transformer. Each is trained online on fresh
dynamics and scored per time step on the run's fixed test sequences. The three trainings are the
independent items of one stage: on the CPU they run side by side, one process and one thread each.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from learnlab.core.io import load_tensors, module_weights, save_tensors
from learnlab.incontext.causal_transformer import CausalTransformer
from learnlab.incontext.dynamics import DynamicsBatch
from learnlab.incontext.sequence_training import train_autoregressive

MODELS = {"linear2": ("linear TF, 2 layers", ("linear", "linear")), "linear1": ("linear TF, 1 layer", ("linear",)),
          "mesa1": ("mesa TF, 1 layer", ("mesa",))}  # key: (label, attention kind per layer)


def build_model(config: Any, key: str, generator: torch.Generator | None = None) -> CausalTransformer:
    """Model ``key`` of :data:`MODELS` with the study's sizes, clips and mesa settings."""
    mesa = "mesa" in MODELS[key][1]
    return CausalTransformer(embed_dim=4 * config.dim, layers=MODELS[key][1], num_heads=config.num_heads,
                             key_size=config.key_size, clip=config.mesa_clip if mesa else config.clip, readout_dim=config.dim,
                             init_std=config.init_std, mesa_chunk_size=config.mesa_chunk_size or None,
                             mesa_lambda_init=config.mesa_lambda_init, generator=generator)


def train_model(config: Any, ctx: Any, key: str, test: DynamicsBatch) -> dict[str, Any]:
    """Train model ``key`` online on fresh dynamics; its weights, test-loss history and final per-t curve."""
    settings = config.training(key)
    model = build_model(config, key, ctx.generator(key, "init")).to(ctx.device)
    inputs, targets = test.inputs.to(ctx.device), test.targets.to(ctx.device)
    started = time.perf_counter()
    with ctx.training_progress(f"train {key}", settings.steps, f"{key} training loss") as on_step:
        history = train_autoregressive(model, config.spec, settings, inputs, targets,
                                       ctx.generator(key, "data", device=ctx.device), on_step=on_step,
                                       on_eval=lambda step, loss: ctx.log(model=key, step=step, test_loss=loss))
    seconds = time.perf_counter() - started
    curve = history.final_curve.cpu()  # the last step's evaluation: the final per-t curve
    return {**module_weights(model), "steps": history.steps, "test_losses": history.test_losses, "curve": curve.tolist(),
            "seconds_per_step": seconds / settings.steps}


def train_worker(payload: tuple[Any, str], ctx: Any) -> Any:
    """Worker factory: item ``key`` trains model ``key`` and saves its weights under the payload's directory."""
    config, directory = payload
    test = config.spec.sample(config.test_sequences, ctx.generator("test"))  # the run's test sequences

    def process(key: str) -> dict[str, Any]:
        result = train_model(config, ctx, key, test)
        weights = {name: value for name, value in result.items() if isinstance(value, torch.Tensor)}
        save_tensors(Path(directory) / f"{key}.safetensors", weights)
        return {name: value for name, value in result.items() if name not in weights}

    return process


def trained_models(config: Any, ctx: Any) -> dict[str, dict[str, Any]]:
    """Every model's training result (weights included), as the items of the stage ``training``."""
    directory = ctx.stages_dir / "models"  # one process per model on the CPU (stage_items: in-process elsewhere)
    records = ctx.stage_items("training", list(MODELS), train_worker, (config, str(directory)), workers=len(MODELS),
                              description="training (models)").records
    return {record["id"]: {**record, **load_tensors(directory / f"{record['id']}.safetensors")} for record in records}
