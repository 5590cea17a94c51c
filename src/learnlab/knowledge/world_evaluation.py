"""Measurements of the world model (study ``world``): facts, baselines, keyword priors, in-context recall.

Each function takes any causal LM and its tokenizer (see :mod:`probability`) and returns a dict of
plain numbers for the study's record; the claims and their bounds live in the study
(:mod:`world_model`).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from learnlab.knowledge.corpus import Corpus
from learnlab.knowledge.outlandish import PRIOR_LEVELS, OutlandishSample, keyword_corpus_counts, world_keywords
from learnlab.knowledge.passages import GROUPS, RecallPrompt
from learnlab.knowledge.probability import greedy_recall, keyword_log_probs
from learnlab.knowledge.world import World


def document_tokens(kinds: Sequence[str], lengths: Sequence[int]) -> dict[str, dict[str, float]]:
    """Per document kind: how many documents, their share of tokens, and the fewest, median and most tokens."""
    by_kind: dict[str, list[int]] = {}
    for kind, length in zip(kinds, lengths):
        by_kind.setdefault(kind, []).append(length)
    return {kind: {"documents": len(values), "token_share": sum(values) / sum(lengths), "min": min(values),
                   "median": statistics.median(values), "max": max(values)} for kind, values in sorted(by_kind.items())}


def unigram_perplexity(tokenizer: Any, train: list[int], texts: Sequence[str]) -> float:
    """Perplexity of the add-one unigram model of the training tokens on ``texts`` (a baseline)."""
    counts = Counter(train)
    total, vocab = len(train), len(tokenizer)
    nll, count = 0.0, 0
    for text in texts:
        for token in tokenizer(text)["input_ids"][1:]:
            nll -= math.log((counts.get(token, 0) + 1) / (total + vocab))
            count += 1
    return math.exp(nll / count)


def fact_recall(model: Any, tokenizer: Any, world: World, corpus: Corpus, batch: int) -> dict[str, float]:
    """Greedy recall of the true attribute on the held-out and training fact prompts (W1), per theme,
    ranked among the theme's attribute words (multi-token safe), and the majority-attribute baseline."""
    heldout, trained = corpus.heldout_prompts, corpus.train_prompts
    correct = greedy_recall(model, tokenizer, [p.prompt for p in heldout], [p.attribute for p in heldout], batch)
    train_correct = greedy_recall(model, tokenizer, [p.prompt for p in trained], [p.attribute for p in trained], batch)
    pairs = [(p.prompt, candidate) for p in heldout for candidate in world.theme(p.theme).attributes]
    scores = keyword_log_probs(model, tokenizer, [prompt for prompt, _ in pairs], [word for _, word in pairs], batch)
    ranked, start = [], 0
    for prompt in heldout:
        candidates = world.theme(prompt.theme).attributes
        best = int(scores.log_prob[start:start + len(candidates)].argmax())
        ranked.append(candidates[best] == prompt.attribute)
        start += len(candidates)
    majority = [p.attribute == world.theme(p.theme).attributes[0] for p in heldout]
    by_theme = {
        theme.name: float(correct[[p.theme == theme.name for p in heldout]].float().mean()) for theme in world.themes
    }
    return {
        "heldout_fact_accuracy": float(correct.float().mean()),
        "heldout_fact_prompts": len(heldout),
        "heldout_candidate_accuracy": float(sum(ranked) / len(ranked)),
        "train_fact_accuracy": float(train_correct.float().mean()),
        "majority_baseline_accuracy": float(sum(majority) / len(majority)),
        **{f"heldout_fact_accuracy_{name}": value for name, value in by_theme.items()},
    }


def keyword_priors(model: Any, tokenizer: Any, world: World, corpus: Corpus, samples: Sequence[OutlandishSample],
                   batch: int) -> dict[str, Any]:
    """P_before(keyword | own prefix) of the built-in samples: every sample's log10 value
    (``sample_log10_priors``), medians per category, and per keyword and prior level on the ``novel``
    samples (never-seen subjects, so the prior is the word's own)."""
    scores = keyword_log_probs(model, tokenizer, [s.prefix for s in samples], [s.keyword for s in samples], batch)
    log10_priors = [value / math.log(10) for value in scores.log_prob.tolist()]
    per_keyword: dict[str, list[float]] = {}
    per_category: dict[str, list[float]] = {}
    for sample, log10_prior in zip(samples, log10_priors):
        per_category.setdefault(sample.category, []).append(log10_prior)
        if sample.category == "novel":
            per_keyword.setdefault(sample.keyword, []).append(log10_prior)
    keywords = world_keywords(world)
    counts = keyword_corpus_counts(corpus.train_texts, [k for levels in keywords.values() for k in levels.values()])
    table = {
        keyword: {"theme": theme, "prior": level, "median_log10_prob": statistics.median(per_keyword[keyword]),
                  "corpus_count": counts[keyword]}
        for theme, levels in keywords.items() for level, keyword in levels.items()
    }
    level_median = {
        level: statistics.median(row["median_log10_prob"] for row in table.values() if row["prior"] == level)
        for level in PRIOR_LEVELS
    }
    return {
        "sample_log10_priors": log10_priors,
        "prior_log10_by_level": level_median,
        "keyword_priors": table,
        "prior_log10_by_category": {name: statistics.median(values) for name, values in per_category.items()},
        "prior_log10_high": level_median["high"],
        "prior_log10_low": level_median["low"],
        "prior_log10_very_low": level_median["very-low"],
        "keyword_prior_span_log10": level_median["high"] - level_median["very-low"],
    }


def prior_coverage(log10_priors: Sequence[float], top: float, bottom: float) -> dict[str, float]:
    """Range of the samples' log10 P_before and the widest hole within the span [bottom, top] (W6).

    Values outside the span are clipped to its ends, so a span end that no value reaches counts as
    a hole, while gaps beyond the span (e.g. between two never-seen words near 1e-30) do not.
    """
    values = sorted(log10_priors)
    clipped = sorted([bottom, top, *(min(max(value, bottom), top) for value in values)])
    holes = [high - low for low, high in zip(clipped, clipped[1:])]
    return {"prior_log10_max": values[-1], "prior_log10_min": values[0], "prior_largest_hole_log10": max(holes)}


def in_context_recall(model: Any, tokenizer: Any, prompts: Sequence[RecallPrompt], batch: int,
                      bound: float) -> dict[str, Any]:
    """Top-1 (greedy) recall of the passage's attribute after the passage, and of the same question alone.

    Per group (fresh subject / known subject with a contradicting attribute), pooled over the
    passage lengths and per length; for the contradicting group also how often the question alone
    gives the world's attribute (the prior the passage must override). ``recall_first_length_below``
    is the shortest passage length at which either group falls below ``bound``.
    """
    with_passage = greedy_recall(model, tokenizer, [p.context for p in prompts], [p.attribute for p in prompts], batch)
    alone = greedy_recall(model, tokenizer, [p.question for p in prompts], [p.attribute for p in prompts], batch)
    known = [p for p in prompts if p.world_attribute is not None]
    prior = greedy_recall(model, tokenizer, [p.question for p in known], [p.world_attribute for p in known], batch)

    def share(values: torch.Tensor, keep: list[bool]) -> float:
        chosen = values[torch.tensor(keep, dtype=torch.bool)]
        return float(chosen.float().mean()) if chosen.numel() else math.nan

    measured: dict[str, Any] = {"recall_prompts": len(prompts), "recall_by_length": {}}
    for group in GROUPS:
        members = [p.group == group for p in prompts]
        measured[f"recall_accuracy_{group}"] = share(with_passage, members)
        measured[f"recall_accuracy_{group}_no_passage"] = share(alone, members)
        measured[f"recall_gain_{group}"] = measured[f"recall_accuracy_{group}"] - measured[f"recall_accuracy_{group}_no_passage"]
    measured["recall_no_passage_gives_world_attribute"] = share(prior, [True] * len(known))
    lengths = sorted({p.facts for p in prompts})
    for length in lengths:
        measured["recall_by_length"][str(length)] = {
            group: share(with_passage, [p.group == group and p.facts == length for p in prompts]) for group in GROUPS}
    below = [length for length in lengths if min(measured["recall_by_length"][str(length)].values()) < bound]
    measured["recall_first_length_below"] = below[0] if below else None
    measured["recall_min_over_lengths"] = min(min(row.values()) for row in measured["recall_by_length"].values())
    return measured
