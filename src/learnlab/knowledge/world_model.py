"""Study ``world``: pretrain the tiny world's language model, the substrate of the knowledge studies.

The knowledge studies (Sun et al. 2024, 2025) need a language model that knows things. This study
generates the tiny world (:mod:`world`), its corpus with a held-out split (:mod:`corpus`), trains
a byte-level BPE tokenizer and pretrains a small Llama from scratch, with resumable checkpoints,
then saves model and tokenizer with ``save_pretrained`` into ``<run dir>/model``. Its claims: the
model knows its world (top-1 accuracy of the true attribute on held-out fact prompts >= 90%), it
is a language model of its corpus (held-out perplexity at most 0.05x a unigram model's), and the
built-in Outlandish-like keywords span high to very low prior probability, across the priming
threshold near 1e-3 (Sun et al. 2025, Fig. 2b).

Other studies get the model through :mod:`learnlab.knowledge.substrate`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from learnlab.core import Claim, RunContext, Study, StudyConfig, at_least, at_most, nonnegative, positive, ranged
from learnlab.core.io import write_json, write_text
from learnlab.knowledge.corpus import Corpus, build_corpus
from learnlab.knowledge.outlandish import build_outlandish, keyword_corpus_counts, load_samples, world_keywords, write_jsonl
from learnlab.knowledge.pretraining import PretrainSettings, pack_documents, pretrain
from learnlab.knowledge.probability import greedy_recall, keyword_log_probs, perplexity
from learnlab.knowledge.world import World, build_world
from learnlab.knowledge.world_figures import plot_world_model

ACCURACY_BOUND = 0.90
PERPLEXITY_RATIO_BOUND = 0.05  # held-out perplexity over the add-one unigram model's


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every knob of the world model; the defaults are the ``quick`` preset.

    Attributes:
        subjects_per_theme: subjects per theme, each with one true attribute (>= attributes_per_theme).
        attributes_per_theme: attribute words per theme (2-16), assigned with Zipf-like frequencies.
        zipf_exponent: the k-th most common attribute is held by a share ∝ 1/k**zipf_exponent.
        heldout_templates: fact templates per subject withheld from training (the held-out prompts).
        train_documents, heldout_documents: documents of 3-6 sentences in each split.
        vocab_size: byte-level BPE vocabulary size.
        hidden_size, num_layers, num_heads, intermediate_size: the Llama's shape.
        steps, batch_size, sequence_length: pretraining steps and windows per step.
        learning_rate, warmup_steps, min_learning_rate_ratio, weight_decay, grad_clip_norm: AdamW
            with linear warmup and cosine decay to ``min_learning_rate_ratio * learning_rate``.
        checkpoint_every: steps between resumable checkpoints (a kill loses at most this many).
        samples_per_pair, probes_per_theme: size of the built-in Outlandish-like set.
        eval_batch_size: sequences per evaluation forward pass.
    """

    subjects_per_theme: int = positive(60)
    attributes_per_theme: int = ranged(16, ge=2, le=16)
    zipf_exponent: float = positive(1.0)
    heldout_templates: int = ranged(2, ge=1, le=7)
    train_documents: int = positive(20000)
    heldout_documents: int = positive(400)
    vocab_size: int = ranged(1024, ge=300)  # 256 bytes + specials + merges
    hidden_size: int = positive(128)
    num_layers: int = positive(4)
    num_heads: int = positive(4)
    intermediate_size: int = positive(384)
    steps: int = positive(500)
    batch_size: int = positive(32)
    sequence_length: int = positive(64)
    learning_rate: float = positive(3e-3)
    warmup_steps: int = nonnegative(100)
    min_learning_rate_ratio: float = ranged(0.1, ge=0, le=1)
    weight_decay: float = nonnegative(0.01)
    grad_clip_norm: float = nonnegative(1.0)
    checkpoint_every: int = positive(100)
    samples_per_pair: int = ranged(3, ge=1, le=5)  # the world keeps 5 spare subjects per theme
    probes_per_theme: int = positive(12)
    eval_batch_size: int = positive(64)

    def validate(self) -> None:
        needed = max(self.attributes_per_theme, 3 * self.samples_per_pair + self.probes_per_theme)
        if self.subjects_per_theme < needed:
            raise ValueError(f"subjects_per_theme must be >= {needed} (attributes, samples and probes), got {self.subjects_per_theme}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")

    def pretrain_settings(self) -> PretrainSettings:
        return PretrainSettings(
            steps=self.steps, batch_size=self.batch_size, sequence_length=self.sequence_length,
            learning_rate=self.learning_rate, min_learning_rate_ratio=self.min_learning_rate_ratio,
            warmup_steps=min(self.warmup_steps, self.steps), weight_decay=self.weight_decay,
            grad_clip_norm=self.grad_clip_norm, checkpoint_every=self.checkpoint_every,
            log_every=max(1, min(25, self.steps // 10)),
        )


PRESETS = {
    "smoke": Config(subjects_per_theme=24, attributes_per_theme=8, train_documents=600, heldout_documents=40,
                    vocab_size=400, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, steps=12,
                    batch_size=8, sequence_length=32, warmup_steps=4, checkpoint_every=6, probes_per_theme=10),
    "quick": Config(),
    "full": Config(subjects_per_theme=80, train_documents=60000, heldout_documents=1000, vocab_size=2048,
                   hidden_size=256, num_layers=6, num_heads=8, intermediate_size=768, steps=6000, batch_size=64,
                   sequence_length=128, learning_rate=1e-3, warmup_steps=300, checkpoint_every=500),
}


# --- the study -------------------------------------------------------------------------------------


def _world_and_corpus(config: Config, seed: int) -> tuple[World, Corpus]:
    world = build_world(seed, config.subjects_per_theme, config.attributes_per_theme, config.zipf_exponent)
    corpus = build_corpus(world, seed, config.train_documents, config.heldout_documents, config.heldout_templates)
    return world, corpus


def _prepare_data(config: Config, ctx: RunContext, world: World, corpus: Corpus) -> dict[str, Any]:
    """Write world.json, the corpus, the Outlandish-like files and the tokenizer; return the token stream."""
    from learnlab.knowledge.tokenizer import save_tokenizer, train_tokenizer

    data_dir = ctx.run_dir / "data"
    write_json(data_dir / "world.json", world.to_dict())
    write_text(data_dir / "train.txt", "".join(text + "\n" for text in corpus.train_texts))
    write_text(data_dir / "heldout.txt", "".join(text + "\n" for text in corpus.heldout_texts))
    samples, probes = build_outlandish(world, ctx.seed, config.samples_per_pair, config.probes_per_theme)
    write_jsonl(data_dir / "outlandish.jsonl", samples)
    write_jsonl(data_dir / "probes.jsonl", probes)
    tokenizer = train_tokenizer(corpus.train_texts, config.vocab_size)
    save_tokenizer(tokenizer, ctx.run_dir / "model")
    stream = pack_documents(tokenizer(list(corpus.train_texts))["input_ids"], tokenizer.eos_token_id)
    ctx.log(vocab_size=len(tokenizer), train_tokens=stream.numel(), facts=len(world.facts()))
    return {"stream": stream, "vocab_size": len(tokenizer), "train_tokens": stream.numel()}


def _pretrain(config: Config, ctx: RunContext, stream: torch.Tensor) -> dict[str, Any]:
    from learnlab.knowledge.models import build_world_model, quiet_transformers, world_model_config
    from learnlab.knowledge.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(ctx.run_dir / "model")
    model_config = world_model_config(
        len(tokenizer), config.hidden_size, config.num_layers, config.num_heads, config.intermediate_size,
        max_positions=max(256, 2 * config.sequence_length), bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
    )
    model = build_world_model(model_config, ctx.generator("init").initial_seed()).to(ctx.device)
    settings = config.pretrain_settings()
    started = time.perf_counter()
    with ctx.training_progress("pretrain world model", settings.steps, "pretraining loss") as on_step:
        history = pretrain(model, stream, settings, ctx.seed, ctx.run_dir / "checkpoints", on_step=on_step,
                           on_log=lambda step, loss, lr: ctx.log(step=step, train_loss=loss, learning_rate=lr))
    with quiet_transformers():
        model.save_pretrained(str(ctx.run_dir / "model"))
    parameters = sum(parameter.numel() for parameter in model.parameters())
    return {"steps": history["steps"], "losses": history["losses"], "parameters": parameters,
            "pretrain_seconds": time.perf_counter() - started}


def _unigram_perplexity(tokenizer: Any, train: list[int], texts: tuple[str, ...]) -> float:
    """Perplexity of the add-one unigram model of the training tokens on ``texts`` (a baseline)."""
    counts = Counter(train)
    total, vocab = len(train), len(tokenizer)
    nll, count = 0.0, 0
    for text in texts:
        for token in tokenizer(text)["input_ids"][1:]:
            nll -= math.log((counts.get(token, 0) + 1) / (total + vocab))
            count += 1
    return math.exp(nll / count)


def _evaluate(config: Config, ctx: RunContext, world: World, corpus: Corpus, stream: torch.Tensor) -> dict[str, Any]:
    from learnlab.knowledge.models import load_causal_lm

    model, tokenizer = load_causal_lm(ctx.run_dir / "model", ctx.device)
    batch = config.eval_batch_size
    heldout, trained = corpus.heldout_prompts, corpus.train_prompts
    correct = greedy_recall(model, tokenizer, [p.prompt for p in heldout], [p.attribute for p in heldout], batch)
    train_correct = greedy_recall(model, tokenizer, [p.prompt for p in trained], [p.attribute for p in trained], batch)
    # Ranking among the theme's attribute words (multi-token safe), and the majority-attribute baseline.
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
    heldout_perplexity = perplexity(model, tokenizer, corpus.heldout_texts, batch)
    unigram = _unigram_perplexity(tokenizer, stream.tolist(), corpus.heldout_texts)
    measured = {
        "heldout_fact_accuracy": float(correct.float().mean()),
        "heldout_fact_prompts": len(heldout),
        "heldout_candidate_accuracy": float(sum(ranked) / len(ranked)),
        "train_fact_accuracy": float(train_correct.float().mean()),
        "majority_baseline_accuracy": float(sum(majority) / len(majority)),
        "heldout_perplexity": heldout_perplexity,
        "unigram_perplexity": unigram,
        "heldout_perplexity_to_unigram": heldout_perplexity / unigram,
        **{f"heldout_fact_accuracy_{name}": value for name, value in by_theme.items()},
    }
    measured.update(_keyword_priors(ctx, model, tokenizer, world, corpus, batch))
    ctx.log(**{key: value for key, value in measured.items() if not isinstance(value, dict)})
    return measured


def _keyword_priors(ctx: RunContext, model: Any, tokenizer: Any, world: World, corpus: Corpus, batch: int) -> dict[str, Any]:
    """P_before(keyword | own prefix) of the built-in samples: medians per category, and per keyword and
    prior level on the ``novel`` samples (never-seen subjects, so the prior is the word's own)."""
    samples = load_samples(ctx.run_dir / "data" / "outlandish.jsonl")
    scores = keyword_log_probs(model, tokenizer, [s.prefix for s in samples], [s.keyword for s in samples], batch)
    per_keyword: dict[str, list[float]] = {}
    per_category: dict[str, list[float]] = {}
    for sample, log_prob in zip(samples, scores.log_prob.tolist()):
        per_category.setdefault(sample.category, []).append(log_prob / math.log(10))
        if sample.category == "novel":
            per_keyword.setdefault(sample.keyword, []).append(log_prob)
    keywords = world_keywords(world)
    counts = keyword_corpus_counts(corpus.train_texts, [k for levels in keywords.values() for k in levels.values()])
    table = {
        keyword: {"theme": theme, "prior": level, "median_log10_prob": statistics.median(per_keyword[keyword]) / math.log(10),
                  "corpus_count": counts[keyword]}
        for theme, levels in keywords.items() for level, keyword in levels.items()
    }
    level_median = {
        level: statistics.median(row["median_log10_prob"] for row in table.values() if row["prior"] == level)
        for level in ("high", "low", "very-low")
    }
    return {
        "keyword_priors": table,
        "prior_log10_by_category": {name: statistics.median(values) for name, values in per_category.items()},
        "prior_log10_high": level_median["high"],
        "prior_log10_low": level_median["low"],
        "prior_log10_very_low": level_median["very-low"],
        "keyword_prior_span_log10": level_median["high"] - level_median["very-low"],
    }


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    world, corpus = _world_and_corpus(config, ctx.seed)
    data = ctx.stage("data", lambda: _prepare_data(config, ctx, world, corpus))
    training = ctx.stage("pretrain", lambda: _pretrain(config, ctx, data["stream"]))
    measured = dict(ctx.stage("evaluate", lambda: _evaluate(config, ctx, world, corpus, data["stream"])))
    measured.update(
        parameters=training["parameters"],
        pretrain_seconds=training["pretrain_seconds"],
        final_train_loss=training["losses"][-1],
        train_tokens=data["train_tokens"],
        vocab_size=data["vocab_size"],
    )
    plot_world_model(ctx, training, measured)
    return measured


CLAIMS = (
    Claim(
        "W1",
        "The world model knows its world: top-1 (greedy) recall of the true attribute on held-out fact prompts",
        "substrate requirement (the knowledge studies probe a model that knows its facts)",
        f">= {ACCURACY_BOUND:.0%}",
        (at_least("heldout_fact_accuracy", ACCURACY_BOUND),),
    ),
    Claim(
        "W2",
        "It is a language model of its corpus: perplexity on held-out documents (no sentence of them in training) "
        "at most 0.05 x the unigram model's",
        "substrate requirement (a language model of its corpus, not a bag of words)",
        f"<= {PERPLEXITY_RATIO_BOUND} x unigram perplexity",
        (at_most("heldout_perplexity_to_unigram", PERPLEXITY_RATIO_BOUND),),
    ),
    Claim(
        "W3",
        "The built-in keywords span high to very low prior probability, across the 1e-3 knee "
        "(median over the 'novel' samples, whose subjects the model has never seen)",
        "Sun et al. 2025 Fig. 2b (priming threshold near 1e-3)",
        "spans the knee",
        (at_least("keyword_prior_span_log10", 3.0), at_least("prior_log10_high", -3.0),
         at_most("prior_log10_very_low", -3.0)),
    ),
)

STUDY = Study(
    name="world",
    title="The tiny world and its pretrained language model (substrate of the knowledge studies)",
    paper="learnlab substrate for Sun et al. 2024 (arXiv:2410.21750) and Sun et al. 2025 (arXiv:2504.09522)",
    presets=PRESETS,
    run=run,
    claims=CLAIMS,
    summary="A procedurally generated world, its corpus and tokenizer, and a small Llama pretrained from scratch that knows it.",
    figures=("world_model",),
)
