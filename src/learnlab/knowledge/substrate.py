"""The world model as a substrate of other studies: find or train it, load it, or load any causal LM.

The knowledge studies need a language model that knows things. :func:`ensure_world_model`
returns the finished ``world`` run of a preset, seed and overrides (the run directory is named by
the config hash; a run made by other code is recomputed), training it first if needed, through
the same machinery as ``learnlab run world``, so a run started by any study or by the command
line is shared and a killed one resumes. :func:`load_language_model` returns either that model or
any Hugging Face causal LM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learnlab.core.errors import DivergenceError
from learnlab.core.io import read_json
from learnlab.core.runs import RunOptions, execute, prepare_run
from learnlab.knowledge.outlandish import OutlandishSample, Probe, load_probes, load_samples
from learnlab.knowledge.world import World
from learnlab.knowledge.world_model import STUDY, Config


@dataclass(frozen=True)
class WorldModel:
    """A finished ``world`` run: where its model, tokenizer and data live, and loaders for them."""

    run_dir: Path

    @property
    def model_dir(self) -> Path:
        """``save_pretrained`` directory of the model and its tokenizer."""
        return self.run_dir / "model"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def config(self) -> Config:
        return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in read_json(self.run_dir / "config.json")["config"].items()})

    def world(self) -> World:
        return World.from_dict(read_json(self.data_dir / "world.json"))

    def texts(self, split: str = "train") -> list[str]:
        """The corpus documents of ``split`` (``train`` or ``heldout``), e.g. background text for insertion."""
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be train or heldout, got {split!r}")
        return (self.data_dir / f"{split}.txt").read_text().splitlines()

    def outlandish(self) -> tuple[list[OutlandishSample], list[Probe]]:
        """The built-in Outlandish-like samples and probes of this world."""
        return load_samples(self.data_dir / "outlandish.jsonl"), load_probes(self.data_dir / "probes.jsonl")

    def continued_optimizer(self, learning_rate: float) -> Any:
        """Factory of optimizers that continue this model's pretraining (AdamW state) at ``learning_rate``."""
        from learnlab.knowledge.pretraining import continued_optimizer

        return continued_optimizer(self.run_dir / "checkpoints", self.config.pretrain_settings(), learning_rate)

    def load(self, device: torch.device | str = "cpu") -> tuple[Any, Any]:
        """``(model, tokenizer)``, in eval mode on ``device``."""
        from learnlab.knowledge.models import load_causal_lm

        return load_causal_lm(self.model_dir, device)


def world_model_options(preset: str = "quick", seed: int = 0, overrides: tuple[str, ...] = (), out: Path | str = "runs",
                        device: str = "auto", threads: int = 1, quiet: bool = True) -> RunOptions:
    return RunOptions(preset=preset, seed=seed, overrides=tuple(overrides), device=device, out=Path(out),
                      quiet=quiet, threads=threads)


def ensure_world_model(preset: str = "quick", seed: int = 0, overrides: tuple[str, ...] = (), out: Path | str = "runs",
                       device: str = "auto", threads: int = 1, quiet: bool = True) -> WorldModel:
    """The world model of this preset/seed/overrides: the finished run in ``out`` if there is one, else trained now.

    Runs go through the same machinery as ``learnlab run world`` (``out/world/<preset>-seed<N>-<hash>/``),
    so a run started by any study or by the command line is shared, and a killed one resumes; the
    caller's thread count and global random states are left as they were. A run that diverged
    raises :class:`DivergenceError`.
    """
    options = world_model_options(preset, seed, overrides, out, device, threads, quiet)
    run_dir = prepare_run(STUDY, options).run_dir
    results = execute(STUDY, options)
    if results.get("status") != "ok":
        raise DivergenceError(f"world model run {run_dir} failed: {results.get('reason')}")
    return WorldModel(run_dir)


def load_language_model(model: str, device: torch.device | str = "cpu", *, preset: str = "quick", seed: int = 0,
                        out: Path | str = "runs", threads: int = 1, quiet: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a study's ``model`` setting.

    ``""`` or ``"world"``: the tiny world model of ``preset``/``seed`` (trained on first use); anything
    else: a local directory or hub name loaded by :func:`models.load_causal_lm`.
    """
    if model in ("", "world"):
        device_name = torch.device(device).type
        return ensure_world_model(preset, seed, out=out, device=device_name, threads=threads, quiet=quiet).load(device)
    from learnlab.knowledge.models import load_causal_lm

    return load_causal_lm(model, device)
