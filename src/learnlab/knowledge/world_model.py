"""Study ``world``: pretrain the tiny world's language model, the substrate of the knowledge studies.

The knowledge studies (Sun et al. 2024, 2025) need a language model that knows things. This study
generates the tiny world (:mod:`world`), its corpus with a held-out split (:mod:`corpus`), trains
a byte-level BPE tokenizer and pretrains a small Llama from scratch, with resumable checkpoints,
then saves model and tokenizer with ``save_pretrained`` into ``<run dir>/model``. Its claims: the
model knows its world (top-1 accuracy of the true attribute on held-out fact prompts >= 90%), it
is a language model of its corpus (held-out perplexity at most 0.05x a unigram model's), the
built-in Outlandish-like keywords span high to very low prior probability, across the priming
threshold near 1e-3 (Sun et al. 2025, Fig. 2b), without holes, and the model reads its context:
it answers a question about a held-out passage from the passage (in-context recall of fresh
subjects, and of known subjects given an attribute that contradicts the world), at every
passage length up to the longest the corpus holds.

Other studies get the model through :mod:`learnlab.knowledge.substrate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from learnlab.core import Claim, RunContext, Study, StudyConfig, above, at_least, at_most, nonnegative, positive, ranged
from learnlab.core.io import write_json, write_text
from learnlab.knowledge.corpus import Corpus, build_corpus
from learnlab.knowledge import world_evaluation as evaluation
from learnlab.knowledge.outlandish import PRIOR_LEVELS, build_outlandish, load_samples, write_jsonl
from learnlab.knowledge.passages import DocumentMix, recall_prompts
from learnlab.knowledge.pretraining import PretrainSettings, pack_documents, pretrain
from learnlab.knowledge.probability import perplexity
from learnlab.knowledge.world import World, build_world
from learnlab.knowledge.world_figures import plot_recall, plot_world_model

ACCURACY_BOUND = 0.90
RECALL_BOUND = 0.90  # in-context recall of the passage's attribute (W4)
PRIOR_TOP_LOG10 = -1.0  # the samples' P_before reaches up to 1e-1 ...
PRIOR_BOTTOM_LOG10 = -20.0  # ... and down to 1e-20 ...
PRIOR_HOLE_LOG10 = 2.0  # ... with no hole wider than two decades (W6)
PERPLEXITY_RATIO_BOUND = 0.05  # held-out perplexity over the add-one unigram model's


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every knob of the world model; the defaults are the ``quick`` preset.

    Attributes:
        subjects_per_theme: subjects per theme, each with one true attribute (>= attributes_per_theme).
        attributes_per_theme: attribute words per theme (2-16), assigned with Zipf-like frequencies.
        zipf_exponent: the k-th most common attribute is held by a share ∝ 1/k**zipf_exponent.
        heldout_templates: fact templates per subject withheld from training (the held-out prompts).
        train_documents, heldout_documents: documents in each split (held-out: plain documents of
            3-6 sentences; training: those and, by the shares below, the documents of :mod:`passages`).
        passage_share, repetition_share, long_share, copy_document_share: shares of training
            documents that are passages, repetition documents, long documents and copy documents.
        passage_facts: (fewest, most) facts per passage.
        long_document_words: the least number of words of a long document.
        recall_lengths, recall_prompts: passage lengths (facts) of the in-context recall
            evaluation (W4, W5) and prompts per length and group (fresh / contradicting subject).
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
    attributes_per_theme: int = ranged(16, ge=5, le=16)
    zipf_exponent: float = positive(1.0)
    heldout_templates: int = ranged(2, ge=1, le=7)
    train_documents: int = positive(20000)
    heldout_documents: int = positive(400)
    passage_share: float = ranged(0.2, ge=0, le=1)
    repetition_share: float = ranged(0.15, ge=0, le=1)
    long_share: float = ranged(0.03, ge=0, le=1)
    copy_document_share: float = ranged(0.04, ge=0, le=1)
    passage_facts: tuple[int, ...] = positive((2, 16))
    long_document_words: int = positive(200)
    recall_lengths: tuple[int, ...] = positive((2, 4, 8, 16))
    recall_prompts: int = positive(60)
    vocab_size: int = ranged(1024, ge=300)  # 256 bytes + specials + merges
    hidden_size: int = positive(128)
    num_layers: int = positive(4)
    num_heads: int = positive(4)
    intermediate_size: int = positive(384)
    steps: int = positive(1300)
    batch_size: int = positive(8)
    sequence_length: int = positive(256)
    learning_rate: float = positive(3e-3)
    warmup_steps: int = nonnegative(40)
    min_learning_rate_ratio: float = ranged(0.1, ge=0, le=1)
    weight_decay: float = nonnegative(0.01)
    grad_clip_norm: float = nonnegative(1.0)
    checkpoint_every: int = positive(100)
    samples_per_pair: int = ranged(3, ge=1, le=3)  # novel samples use 3 x 7 of the 24 spare subjects per theme
    probes_per_theme: int = positive(12)
    eval_batch_size: int = positive(64)

    def validate(self) -> None:
        needed = max(self.attributes_per_theme, len(PRIOR_LEVELS) * self.samples_per_pair + self.probes_per_theme)
        if self.subjects_per_theme < needed:
            raise ValueError(f"subjects_per_theme must be >= {needed} (attributes, samples and probes), got {self.subjects_per_theme}")
        if len(self.passage_facts) != 2 or self.passage_facts[0] > self.passage_facts[1]:
            raise ValueError(f"passage_facts must be two numbers (fewest, most), got {self.passage_facts}")
        if self.passage_share + self.repetition_share + self.long_share + self.copy_document_share > 1:
            raise ValueError("passage_share + repetition_share + long_share + copy_document_share must be <= 1")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")

    def document_mix(self) -> DocumentMix:
        return DocumentMix(self.passage_share, self.repetition_share, self.long_share, self.copy_document_share,
                           (self.passage_facts[0], self.passage_facts[1]), self.long_document_words)

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
                    passage_facts=(2, 4), long_document_words=60, recall_lengths=(2, 4), recall_prompts=3,
                    vocab_size=400, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, steps=12,
                    batch_size=8, sequence_length=32, warmup_steps=4, checkpoint_every=6, samples_per_pair=1,
                    probes_per_theme=10),
    "quick": Config(),
    "full": Config(subjects_per_theme=80, train_documents=60000, heldout_documents=1000, vocab_size=2048,
                   hidden_size=256, num_layers=6, num_heads=8, intermediate_size=768, steps=6000, batch_size=64,
                   sequence_length=1024, passage_facts=(2, 64), long_document_words=800,
                   recall_lengths=(2, 4, 8, 16, 32, 64), learning_rate=1e-3, warmup_steps=300, checkpoint_every=500),
}


# --- the study -------------------------------------------------------------------------------------


def _world_and_corpus(config: Config, seed: int) -> tuple[World, Corpus]:
    world = build_world(seed, config.subjects_per_theme, config.attributes_per_theme, config.zipf_exponent)
    corpus = build_corpus(world, seed, config.train_documents, config.heldout_documents, config.heldout_templates,
                          mix=config.document_mix())
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
    token_lists = tokenizer(list(corpus.train_texts))["input_ids"]
    stream = pack_documents(token_lists, tokenizer.eos_token_id)
    ctx.log(vocab_size=len(tokenizer), train_tokens=stream.numel(), facts=len(world.facts()))
    return {"stream": stream, "vocab_size": len(tokenizer), "train_tokens": stream.numel(),
            "document_tokens": evaluation.document_tokens(corpus.train_kinds, [len(ids) for ids in token_lists])}


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


def _evaluate(config: Config, ctx: RunContext, world: World, corpus: Corpus, stream: torch.Tensor) -> dict[str, Any]:
    """W1-W6 on the trained model: facts, perplexity, keyword priors and in-context recall."""
    from learnlab.knowledge.models import load_causal_lm

    model, tokenizer = load_causal_lm(ctx.run_dir / "model", ctx.device)
    batch = config.eval_batch_size
    measured = evaluation.fact_recall(model, tokenizer, world, corpus, batch)
    heldout_perplexity = perplexity(model, tokenizer, corpus.heldout_texts, batch)
    unigram = evaluation.unigram_perplexity(tokenizer, stream.tolist(), corpus.heldout_texts)
    measured.update(heldout_perplexity=heldout_perplexity, unigram_perplexity=unigram,
                    heldout_perplexity_to_unigram=heldout_perplexity / unigram)
    samples = load_samples(ctx.run_dir / "data" / "outlandish.jsonl")
    measured.update(evaluation.keyword_priors(model, tokenizer, world, corpus, samples, batch))
    measured.update(evaluation.prior_coverage(measured.pop("sample_log10_priors"), PRIOR_TOP_LOG10, PRIOR_BOTTOM_LOG10))
    prompts = recall_prompts(world, corpus.train_allowed, corpus.reserve, config.recall_lengths, config.recall_prompts, ctx.seed)
    measured.update(evaluation.in_context_recall(model, tokenizer, prompts, batch, RECALL_BOUND))
    restated = recall_prompts(world, corpus.train_allowed, corpus.reserve, config.recall_lengths, config.recall_prompts,
                              ctx.seed, same_wording=True)  # the statement's own words: copying suffices
    copied = evaluation.in_context_recall(model, tokenizer, restated, batch, RECALL_BOUND)
    measured.update({f"restatement_{key}": copied[key] for key in ("recall_accuracy_fresh", "recall_accuracy_contradicting")})
    ctx.log(**{key: value for key, value in measured.items() if not isinstance(value, dict)})
    return measured


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
        document_tokens=data["document_tokens"],
    )
    plot_world_model(ctx, training, measured)
    plot_recall(ctx, measured, RECALL_BOUND)
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
    Claim(
        "W4",
        "The model reads its context: after a held-out passage that states a subject's attribute once, top-1 "
        "recall of that attribute at a later question, for fresh subjects and for known subjects given an attribute "
        "that contradicts the world (context against weights), each >= 90% and above the same question without "
        "the passage",
        "substrate requirement (in-context learning, as in the language models of Sun et al. 2024, 2025)",
        f">= {RECALL_BOUND:.0%} per group",
        (at_least("recall_accuracy_fresh", RECALL_BOUND), at_least("recall_accuracy_contradicting", RECALL_BOUND),
         above("recall_gain_fresh", 0.0), above("recall_gain_contradicting", 0.0)),
    ),
    Claim(
        "W5",
        "Recall holds at every passage length tested (quick: 2, 4, 8, 16 facts; recall_first_length_below "
        "reports the first length below the bound)",
        "substrate requirement (long passages for priming, fabricated knowledge and compression)",
        f">= {RECALL_BOUND:.0%} at every length",
        (at_least("recall_min_over_lengths", RECALL_BOUND),),
    ),
    Claim(
        "W6",
        "The built-in samples' keyword probabilities in their own context, P_before, reach from 1e-1 down to "
        "1e-20 without a hole wider than two decades, so the priming knee can be located",
        "Sun et al. 2025 Fig. 2b (P_before over many orders of magnitude)",
        "1e-1 ... 1e-20, holes <= 2 decades",
        (at_least("prior_log10_max", PRIOR_TOP_LOG10), at_most("prior_log10_min", PRIOR_BOTTOM_LOG10),
         at_most("prior_largest_hole_log10", PRIOR_HOLE_LOG10)),
    ),
)

STUDY = Study(
    name="world",
    title="The tiny world and its pretrained language model (substrate of the knowledge studies)",
    paper="learnlab substrate for Sun et al. 2024 (arXiv:2410.21750) and Sun et al. 2025 (arXiv:2504.09522)",
    presets=PRESETS,
    run=run,
    claims=CLAIMS,
    summary="A procedurally generated world, its corpus and tokenizer, and a small Llama pretrained from scratch "
            "that knows it and reads its context.",
    figures=("world_model", "in_context_recall"),
    # One thread: the same model to the bit as on two, less CPU time, and the other core free for a
    # study beside it (`learnlab reproduce`); `--threads 2` finishes it sooner alone (benchmarks/).
    reference_seconds={"quick": 475},
)
