"""Measure memorization and priming of one sample at a time, with ignore-k and rewrites.

:class:`PrimingSession` holds a causal LM, its tokenizer, the theme probes, background text and
held-out text, and measures for each Outlandish-format sample (Sun et al. 2025, §3–§5):

* before learning: P_before(keyword | own prefix) and on every probe, plus the other candidate
  predictors of priming (text length in tokens, mean token loss and mean next-token entropy of
  the text, entropy of the next-token distribution where the keyword starts);
* after inserting it (:func:`insertion.insert_sample`, one minibatch row for K steps):
  S_mem, S_prime over same-theme probes and over cross-theme probes (§3), the mean
  log-ratio and mean absolute probability change on the probes (free of the denominator
  artefact of a mean of ratios), and the held-out background loss;
* ignore-k (:mod:`update_pruning`) at every fraction, top-k and random-k: S_mem, S_prime and the
  background loss of the pruned weights;
* optionally the spaced variant (e.g. 3 presentations 20 steps apart), an optimizer ablation (the
  same insertion with another, fresh optimizer, e.g. plain SGD, and ignore-k on its update), and rewrites of the sample
  (stepping stones, a plain control) inserted in its place, with S_mem measured in the original
  context.

The model is restored bit-exactly to its base weights after every insertion, so samples are
independent and their order does not matter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from learnlab.core.runtime import derive_seed
from learnlab.knowledge.insertion import (
    BaseWeights,
    InsertionSettings,
    insert_sample,
    priming_scores,
    same_and_cross_scores,
    select_scores,
)
from learnlab.knowledge.outlandish import OutlandishSample, Probe, probe_prefixes
from learnlab.knowledge.probability import (KeywordScores, encode_pair, heldout_loss, keyword_log_probs, model_device,
                                            pad_rows, pad_token_id)
from learnlab.knowledge.update_pruning import Scope, ignore_topk, parameter_snapshot


@dataclass(frozen=True)
class PrimingSettings:
    """The protocol of a priming measurement.

    Attributes:
        insertion: how a sample is learned (K presentations, batch, optimizer, learning rate).
        spaced: the spaced-presentation variant, or ``None`` to skip it.
        ablation: an insertion with a fresh optimizer of its own (e.g. plain SGD), measured with
            ignore-k at ``ablation_fractions`` (top-k and the controls), or ``None``.
        prune_fractions: ignore-k fractions k (0 = the unpruned update).
        prune_controls: further selections measured at every k > 0 (``random``, ``bottom``).
        prune_scope: rank update magnitudes per tensor or globally.
        eval_batch_size: prompts per evaluation forward pass.
        verify_restore: check after every insertion that the base weights are bit-identical.
    """

    insertion: InsertionSettings = field(default_factory=InsertionSettings)
    spaced: InsertionSettings | None = None
    ablation: InsertionSettings | None = None
    ablation_fractions: tuple[float, ...] = (0.0, 0.08)
    prune_fractions: tuple[float, ...] = (0.0, 0.01, 0.02, 0.04, 0.08, 0.16)
    prune_controls: tuple[str, ...] = ("random",)
    prune_scope: Scope = "tensor"
    eval_batch_size: int = 64
    verify_restore: bool = True


def variant_name(selection: str, fraction: float) -> str:
    """Key of an ignore-k variant in a record, e.g. ``top-8`` or ``random-8`` (k in percent)."""
    return f"{selection}-{100 * fraction:g}"


class PrimingSession:
    """A model, its probes and background data, ready to measure priming sample by sample.

    Args:
        model, tokenizer: any causal LM (``model(input_ids=..., attention_mask=...).logits``) and its tokenizer.
        probes: theme probes X_T; a sample's same-theme probes are those of its theme.
        background: 1-D token stream for the insertion minibatches' other rows.
        heldout: 2-D tensor of held-out token windows; the background loss is their mean token loss.
        settings: the protocol.
        seed: draws the background rows (identical for every sample) and the random-k masks.
        optimizer_factory: builds the insertion optimizer for the model (e.g. continuing its
            pretraining state, :func:`pretraining.continued_optimizer`); default: a fresh one of
            ``settings.insertion.optimizer``.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, probes: Sequence[Probe], background: torch.Tensor,
                 heldout: torch.Tensor, settings: PrimingSettings, seed: int,
                 optimizer_factory: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.probes = list(probes)
        self.background = background
        self.heldout = heldout
        self.settings = settings
        self.seed = seed
        self.optimizer_factory = optimizer_factory
        self.pad_id = pad_token_id(tokenizer)
        self.base = BaseWeights(model)
        self.base_parameters = parameter_snapshot(model)
        self._probe_cache: dict[tuple[str, str], KeywordScores] = {}
        self.model.eval()
        self.base_background_loss = self.background_loss()

    # --- evaluations ---------------------------------------------------------------------------

    def _scores(self, prefixes: Sequence[str], keyword: str) -> KeywordScores:
        return keyword_log_probs(self.model, self.tokenizer, prefixes, keyword, self.settings.eval_batch_size)

    def background_loss(self) -> float:
        """Mean next-token loss of the current model on the held-out windows."""
        return heldout_loss(self.model, self.heldout, self.settings.eval_batch_size)

    def probe_prompts(self, theme: str) -> tuple[list[str], list[str]]:
        """Same-theme and cross-theme probe prefixes of ``theme``."""
        return probe_prefixes(self.probes, theme), probe_prefixes(self.probes, theme, cross=True)

    def probes_before(self, keyword: str, theme: str) -> KeywordScores:
        """P_before(keyword | probe) on the same-theme then the cross-theme probes (cached: base model only)."""
        key = (keyword, theme)
        if key not in self._probe_cache:
            same, cross = self.probe_prompts(theme)
            self._probe_cache[key] = self._scores([*same, *cross], keyword)
        return self._probe_cache[key]

    @torch.no_grad()
    def predictors(self, sample: OutlandishSample) -> dict[str, float]:
        """Candidate predictors of priming other than P_before (§4 compares them), from the base model."""
        text_ids = list(self.tokenizer(sample.text)["input_ids"])
        prefix_ids, _ = encode_pair(self.tokenizer, sample.prefix, sample.keyword)
        ids, mask = pad_rows([text_ids, prefix_ids], self.pad_id)
        device = model_device(self.model)
        logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
        log_probs = logits.log_softmax(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        steps = len(text_ids) - 1
        token_loss = -log_probs[0, :steps].gather(1, torch.tensor(text_ids[1:])[:, None])[:, 0]
        return {
            "text_tokens": float(len(text_ids)),
            "text_mean_loss": float(token_loss.mean()),
            "text_mean_entropy": float(entropy[0, :steps].mean()),
            "keyword_entropy": float(entropy[1, len(prefix_ids) - 1]),
        }

    # --- insertion -----------------------------------------------------------------------------

    def _insert(self, text: str, settings: InsertionSettings, fresh: bool = False) -> list[float]:
        """Insert ``text``; ``fresh`` ignores ``optimizer_factory`` (a new ``settings.optimizer``)."""
        optimizer = self.optimizer_factory(self.model) if self.optimizer_factory is not None and not fresh else None
        return insert_sample(self.model, list(self.tokenizer(text)["input_ids"]), self.background, settings, self.seed,
                             pad_id=self.pad_id, optimizer=optimizer)

    def _score(self, sample: OutlandishSample, own_before: KeywordScores, probes_before: KeywordScores) -> dict[str, float]:
        """Memorization (``sample``'s own prefix) and same-theme priming of the current weights."""
        same, _ = self.probe_prompts(sample.theme)
        after = self._scores([sample.prefix, *same], sample.keyword)
        scores = priming_scores(own_before, select_scores(after, slice(0, 1)), probes_before, select_scores(after, slice(1, None)))
        return {"log_s_mem": scores.log_s_mem, "log_s_prime": scores.log_s_prime, "mean_log_prime": scores.mean_log_prime}

    def measure(self, sample: OutlandishSample, rewrites: Sequence[OutlandishSample] = (),
                spaced: bool = True, ablation: bool = False) -> dict[str, Any]:
        """Every measurement of one sample (see the module docstring); the model is at base on return."""
        started = time.perf_counter()
        same, cross = self.probe_prompts(sample.theme)
        if not same:
            raise ValueError(f"no probes for theme {sample.theme!r} (sample {sample.id})")
        before_probes = self.probes_before(sample.keyword, sample.theme)
        same_before = select_scores(before_probes, slice(0, len(same)))
        own_before = self._scores([sample.prefix], sample.keyword)
        record: dict[str, Any] = {
            "keyword": sample.keyword, "theme": sample.theme, "category": sample.category,
            **{key: value for key, value in sample.extra.items() if isinstance(value, (str, int, float))},
            **self.predictors(sample),
        }
        self.model.eval()
        try:
            losses = self._insert(sample.text, self.settings.insertion)
            after = self._scores([sample.prefix, *same, *cross], sample.keyword)
            own_after, probes_after = select_scores(after, slice(0, 1)), select_scores(after, slice(1, None))
            record.update(same_and_cross_scores(own_before, own_after, before_probes, probes_after, len(same)))
            record["mean_abs_delta_p_probes"] = float(
                (probes_after.log_prob[:len(same)].exp() - same_before.log_prob.exp()).abs().mean())
            record["keyword_tokens"] = int(own_before.num_tokens[0])
            record["insertion_final_loss"] = losses[-1]
            record["background_loss_base"] = self.base_background_loss
            record["background_loss_after"] = self.background_loss()
            record["pruning"] = self._pruning(sample, own_before, same_before, self.settings.prune_fractions)
        finally:
            self.base.restore(self.settings.verify_restore)
        if ablation and self.settings.ablation is not None:
            try:
                self._insert(sample.text, self.settings.ablation, fresh=True)
                record["ablation_pruning"] = self._pruning(sample, own_before, same_before, self.settings.ablation_fractions)
            finally:
                self.base.restore(self.settings.verify_restore)
        if spaced and self.settings.spaced is not None:
            record["spaced"] = self._learn(sample, self.settings.spaced, sample, own_before, same_before)
        for rewrite in rewrites:
            record[rewrite.category] = self._rewrite(sample, rewrite, own_before, same_before)
        record["seconds"] = time.perf_counter() - started
        return record

    def _pruning(self, sample: OutlandishSample, own_before: KeywordScores, probes_before: KeywordScores,
                 fractions: Sequence[float]) -> dict[str, Any]:
        """Ignore-k at every fraction and control selection, each from the same learned weights."""
        learned = parameter_snapshot(self.model)
        parameters = dict(self.model.named_parameters())
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "ignore-k", sample.id))
        results = {}
        variants = [("top", fraction) for fraction in fractions]
        variants += [(selection, fraction) for selection in self.settings.prune_controls for fraction in fractions if fraction > 0]
        for selection, fraction in variants:
            with torch.no_grad():
                for name, value in learned.items():
                    parameters[name].copy_(value)
            stats = ignore_topk(self.model, self.base_parameters, fraction, selection, self.settings.prune_scope, generator)
            results[variant_name(selection, fraction)] = {
                **self._score(sample, own_before, probes_before),
                "background_loss": self.background_loss(), "dropped_update_share": stats["dropped_update_share"],
            }
        return results

    def _learn(self, learned: OutlandishSample, settings: InsertionSettings, original: OutlandishSample,
               own_before: KeywordScores, probes_before: KeywordScores) -> dict[str, float]:
        """Insert ``learned`` with ``settings``; S_mem in ``original``'s context and S_prime on its probes."""
        try:
            self._insert(learned.text, settings)
            return self._score(original, own_before, probes_before)
        finally:
            self.base.restore(self.settings.verify_restore)

    def _rewrite(self, sample: OutlandishSample, rewrite: OutlandishSample, own_before: KeywordScores,
                 probes_before: KeywordScores) -> dict[str, float]:
        """A rewrite inserted instead of ``sample``: its own P_before, and S_mem (original context), S_prime."""
        rewrite_before = float(self._scores([rewrite.prefix], rewrite.keyword).log_prob[0])
        result = self._learn(rewrite, self.settings.insertion, sample, own_before, probes_before)
        return {**result, "log_p_before": rewrite_before,
                "log_p_before_gain": rewrite_before - float(own_before.log_prob[0]),
                "text_tokens": float(len(self.tokenizer(rewrite.text)["input_ids"]))}


def heldout_windows(stream: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """``count`` evenly spaced windows of ``length + 1`` tokens from a held-out token stream (deterministic)."""
    span = length + 1
    if stream.numel() < span:
        raise ValueError(f"held-out stream ({stream.numel()} tokens) is shorter than one window ({span})")
    starts = torch.linspace(0, stream.numel() - span, count).round().long()
    return torch.stack([stream[start:start + span] for start in starts.tolist()])
