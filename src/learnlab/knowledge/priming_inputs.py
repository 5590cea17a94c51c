"""The inputs of the ``priming`` study: samples, probes, rewrites and texts, and the measurement session.

Built-in data come from the tiny world's run (:mod:`learnlab.knowledge.substrate`); a user's
model, Outlandish-format files, rewrite files and background text replace them (see the study's
config). Everything here is deterministic given the config, so every worker process of the sweep
builds the same session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learnlab.core.errors import UserError
from learnlab.knowledge.outlandish import OutlandishSample, Probe, load_probes, load_samples
from learnlab.knowledge.pretraining import pack_documents
from learnlab.knowledge.priming_session import PrimingSession, heldout_windows
from learnlab.knowledge.stepping_stones import CONTROL, STONE, load_rewrites, plain_control, world_rewrites
from learnlab.knowledge.substrate import WorldModel, ensure_world_model


def _required_file(value: str, what: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    return path


def _lines(value: str, what: str) -> list[str]:
    lines = [line for line in _required_file(value, what).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{what} file {value} has no text")
    return lines


@dataclass
class PrimingData:
    """Samples, probes, rewrites and texts of a run (deterministic given the config)."""

    samples: list[OutlandishSample]
    probes: list[Probe]
    rewrites: dict[str, list[OutlandishSample]]
    background_texts: list[str]
    heldout_texts: list[str]


def world_of(config: Any, seed: int, out: Path, device: str) -> WorldModel:
    return ensure_world_model(config.world_preset, seed, out=out, device=device, threads=torch.get_num_threads())


def load_data(config: Any, world: WorldModel | None, tokenizer: Any) -> PrimingData:
    """The run's samples, probes and rewrites (built-in unless files are given) and its texts."""
    if config.samples:
        samples = load_samples(_required_file(config.samples, "samples"))
        probes = load_probes(_required_file(config.probes, "probes"))
    else:
        samples, probes = world.outlandish()
    if config.max_samples and config.max_samples < len(samples):
        step = len(samples) / config.max_samples
        samples = [samples[int(index * step)] for index in range(config.max_samples)]
    themes = {probe.theme for probe in probes}
    orphans = sorted({sample.theme for sample in samples} - themes)
    if orphans:
        raise UserError(f"no probes for theme(s) {', '.join(orphans)} (every sample theme needs probes)")

    def count_tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    if config.stepping_stones:  # the user's stepping stones; controls from a file or built here
        stones = load_rewrites(_required_file(config.stepping_stones, "stepping_stones"), samples)
        controls = (load_rewrites(_required_file(config.controls, "controls"), samples) if config.controls else
                    {sample.id: plain_control(sample, stones[sample.id], count_tokens) for sample in samples
                     if sample.id in stones})
        rewrites = {sample.id: [replace_category(stones[sample.id], STONE), replace_category(controls[sample.id], CONTROL)]
                    for sample in samples if sample.id in stones and sample.id in controls}
    elif world is not None and not config.samples:
        built = {sample.id: world_rewrites(world.world(), sample, count_tokens) for sample in samples}
        rewrites = {key: value for key, value in built.items() if value}
    else:
        rewrites = {}
    background, heldout = background_and_heldout(config, world)
    return PrimingData(samples, probes, rewrites, background, heldout)


def background_and_heldout(config: Any, world: WorldModel | None) -> tuple[list[str], list[str]]:
    """Background documents (the first ``config.background_documents``) and held-out documents: the
    user's files (``background``, ``heldout``; without ``heldout`` the last 10% of the background is
    held out), else the world's training and held-out splits."""
    background = _lines(config.background, "background") if config.background else world.texts("train")
    if config.heldout:
        heldout = _lines(config.heldout, "heldout")
    elif config.background or world is None:  # hold out the last 10% of the user's background text
        cut = max(1, len(background) // 10)
        if len(background) < 2:
            raise UserError(f"background file {config.background} needs at least 2 documents (or give heldout=FILE)")
        background, heldout = background[:-cut], background[-cut:]
    else:
        heldout = world.texts("heldout")
    return background[: config.background_documents], heldout


def replace_category(sample: OutlandishSample, category: str) -> OutlandishSample:
    """``sample`` labelled ``category`` (rewrites from files carry the original's category)."""
    return OutlandishSample(sample.id, sample.keyword, sample.theme, category, sample.text, sample.prefix, sample.extra)


def build_session(config: Any, seed: int, out: Path, device: torch.device) -> tuple[PrimingSession, PrimingData]:
    """Load the model and data and set up the measurement (the same in every worker)."""
    from learnlab.knowledge.models import load_causal_lm

    own_model = config.model in ("", "world")
    world = world_of(config, seed, out, device.type) if own_model or not config.samples else None
    model, tokenizer = world.load(device) if own_model else load_causal_lm(config.model, device)
    data = load_data(config, world, tokenizer)
    factory = world.continued_optimizer(config.learning_rate) if own_model and config.warm_start else None
    background, windows = token_streams(config, tokenizer, data.background_texts, data.heldout_texts)
    session = PrimingSession(model, tokenizer, data.probes, background, windows, config.settings(), seed, factory)
    return session, data


def token_streams(config: Any, tokenizer: Any, background_texts: list[str],
                  heldout_texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed background token stream and ``config.heldout_windows`` held-out windows of
    ``config.heldout_length`` tokens; too little text for one row or window is a :class:`UserError`."""
    eos = getattr(tokenizer, "eos_token_id", None) or 0
    background = pack_documents(tokenizer(background_texts)["input_ids"], eos)
    heldout_stream = pack_documents(tokenizer(heldout_texts)["input_ids"], eos)
    if background.numel() <= config.sequence_length + 1:
        raise UserError(f"background text has {background.numel()} tokens, fewer than one row ({config.sequence_length + 1})")
    if heldout_stream.numel() <= config.heldout_length + 1:
        raise UserError(f"held-out text has {heldout_stream.numel()} tokens, fewer than one window ({config.heldout_length + 1})")
    return background, heldout_windows(heldout_stream, config.heldout_windows, config.heldout_length)
