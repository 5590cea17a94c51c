"""Pretraining a causal LM from scratch on a packed token stream, with resumable checkpoints.

Documents are tokenized (``<|bos|>`` text ``<|eos|>``), concatenated into one stream, and each step
draws ``batch_size`` windows of ``sequence_length + 1`` tokens at offsets drawn from a generator
seeded by (seed, step); the data order therefore depends only on the step, and a resumed run sees
exactly the batches an uninterrupted one would. AdamW with linear warmup and cosine decay
(the usual small-GPT recipe).

Every ``checkpoint_every`` steps the model (safetensors, shared embeddings handled), the
optimizer state and the step are written to ``checkpoint_dir``; files carry the step in their
name and ``state.json`` is written last, so a kill at any moment leaves a consistent checkpoint
and loses at most ``checkpoint_every`` steps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learnlab.core.io import atomic_write, read_json, write_json
from learnlab.core.runtime import derive_seed
from learnlab.core.schedules import WarmupCosine


@dataclass(frozen=True)
class PretrainSettings:
    """Optimisation settings of :func:`pretrain`."""

    steps: int = 2000
    batch_size: int = 32
    sequence_length: int = 64
    learning_rate: float = 3e-3
    min_learning_rate_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip_norm: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 25


def pack_documents(token_lists: Sequence[Sequence[int]], eos_id: int) -> torch.Tensor:
    """Concatenate tokenized documents, each followed by ``eos_id``, into one 1-D stream."""
    stream: list[int] = []
    for ids in token_lists:
        stream.extend(ids)
        stream.append(eos_id)
    return torch.tensor(stream, dtype=torch.long)


def batch_at(stream: torch.Tensor, step: int, batch_size: int, sequence_length: int, seed: int) -> torch.Tensor:
    """The step's batch: ``batch_size`` windows of ``sequence_length + 1`` tokens (inputs and shifted labels)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "pretrain-batch", str(step)))
    span = sequence_length + 1
    if stream.numel() < span:
        raise ValueError(f"token stream ({stream.numel()}) is shorter than one window ({span})")
    offsets = torch.randint(0, stream.numel() - span + 1, (batch_size,), generator=generator)
    return torch.stack([stream[offset:offset + span] for offset in offsets.tolist()])


def learning_rate_at(step: int, settings: PretrainSettings) -> float:
    """Linear warmup to ``learning_rate`` (step 0 at ``1 / warmup_steps`` of it), then cosine decay to
    ``min_learning_rate_ratio`` of it at the last step."""
    return WarmupCosine(settings.learning_rate, settings.warmup_steps, settings.steps, settings.min_learning_rate_ratio)(step)


def make_optimizer(model: torch.nn.Module, settings: PretrainSettings) -> torch.optim.Optimizer:
    """AdamW; biases, norms (1-D tensors) and embeddings get no weight decay."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "embed" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach: the per-tensor loop's update (bit for bit on the CPU) in fewer calls; torch picks the
    # loop on the CPU by default
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(0.9, 0.95), foreach=True)


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    history: dict[str, list]) -> None:
    """Write model + optimizer for ``step``, then ``state.json`` (the commit point), then drop older files."""
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / f"model-{step}.safetensors", lambda temp: save_model(model, str(temp)))
    atomic_write(directory / f"optimizer-{step}.pt", lambda temp: torch.save(optimizer.state_dict(), temp))
    write_json(directory / "state.json", {"step": step, "history": history})
    for path in list(directory.glob("model-*.safetensors")) + list(directory.glob("optimizer-*.pt")):
        if path.stem.rsplit("-", 1)[-1] != str(step):
            path.unlink()


def latest_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The committed ``state.json`` of ``directory`` (``step``, ``history``), or ``None`` when there is none."""
    state_path = directory / "state.json"
    return read_json(state_path) if state_path.exists() else None


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, list]]:
    """Restore the latest checkpoint into ``model`` and ``optimizer``; ``(0, {})`` when there is none."""
    from safetensors.torch import load_model

    state = latest_checkpoint(directory)
    if state is None:
        return 0, {}
    step = int(state["step"])
    load_model(model, str(directory / f"model-{step}.safetensors"), device=str(next(model.parameters()).device))
    optimizer.load_state_dict(torch.load(directory / f"optimizer-{step}.pt", weights_only=True))
    return step, state["history"]


def continued_optimizer(checkpoint_dir: Path, settings: PretrainSettings,
                        learning_rate: float) -> Callable[[torch.nn.Module], torch.optim.Optimizer]:
    """A factory of optimizers that continue pretraining: :func:`make_optimizer` with the latest
    checkpoint's state (AdamW moment estimates) and a fixed ``learning_rate``; each call gets a fresh copy."""
    state = latest_checkpoint(checkpoint_dir)
    if state is None:
        raise FileNotFoundError(f"no pretraining checkpoint in {checkpoint_dir}")
    step = int(state["step"])
    saved = torch.load(checkpoint_dir / f"optimizer-{step}.pt", weights_only=True)

    def build(model: torch.nn.Module) -> torch.optim.Optimizer:
        optimizer = make_optimizer(model, settings)
        optimizer.load_state_dict(copy.deepcopy(saved))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        return optimizer

    return build


def pretrain(model: torch.nn.Module, stream: torch.Tensor, settings: PretrainSettings, seed: int,
             checkpoint_dir: Path | None = None, on_step: Callable[[int, float], None] | None = None,
             on_log: Callable[[int, float, float], None] | None = None) -> dict[str, list]:
    """Train ``model`` (a causal LM taking ``input_ids``/``labels``) on windows of ``stream``.

    Resumes from ``checkpoint_dir`` when it holds a checkpoint. Returns the history
    ``{"steps": [...], "losses": [...]}`` of mean training losses per ``log_every`` steps.
    ``on_step(step, loss)`` is called every step (progress, divergence checks).
    """
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, settings)
    start, history = (0, {}) if checkpoint_dir is None else load_checkpoint(checkpoint_dir, model, optimizer)
    history = {"steps": list(history.get("steps", [])), "losses": list(history.get("losses", []))}
    model.train()
    running, running_count = 0.0, 0
    for step in range(start, settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, settings)
        batch = batch_at(stream, step, settings.batch_size, settings.sequence_length, seed).to(device)
        loss = _causal_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip_norm)
        optimizer.step()
        value = loss.item()
        running, running_count = running + value, running_count + 1
        if on_step is not None:
            on_step(step, value)
        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            history["steps"].append(done)
            history["losses"].append(running / running_count)
            if on_log is not None:
                on_log(done, running / running_count, learning_rate_at(step, settings))
            running, running_count = 0.0, 0
        if checkpoint_dir is not None and (done % settings.checkpoint_every == 0 or done == settings.steps):
            save_checkpoint(checkpoint_dir, model, optimizer, done, history)
    model.eval()
    return history


def _causal_loss(model: Any, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a window batch (inputs ``batch[:, :-1]``, targets ``batch[:, 1:]``)."""
    logits = model(input_ids=batch[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))
