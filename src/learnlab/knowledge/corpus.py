"""The tiny world's text corpus: varied templates, a held-out split and fact prompts.

A model "knows its world" only if it can state a fact in words it never saw that fact in
(the knowledge-extraction view of Allen-Zhu and Li, "Physics of Language Models: Part 3.1"). So every
subject's fact is written with eight templates per theme; for each subject a few templates
(``heldout_templates``) are *withheld*: the training corpus never states that subject's fact in
them, although it uses the same templates for other subjects and states the fact in the other
templates, in lists, narratives and question-answer pairs. The held-out fact prompts are exactly
these withheld (subject, template) pairs, cut before the attribute; top-1 accuracy on them
measures knowledge, not recall of a string. Held-out documents (for perplexity) are built from the
withheld pairs, and of their list, narrative and filler sentences only those that no training
document contains are kept, so no held-out sentence appears in training.

Every fact template ends with the attribute and a full stop, so its prompt is the text before
`` {attribute}.``. Within a theme, the words between subject and attribute differ between all
templates, list clauses and narratives, so the immediate context of a withheld fact
("<subject> <connector>") never occurs in training either.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from learnlab.knowledge.passages import DocumentMix, DocumentWriter, Reserve, build_reserve
from learnlab.knowledge.templates import CLAUSES, FACT_TEMPLATES, FILLER, NARRATIVES, fill, prompt_of
from learnlab.knowledge.world import World

@dataclass(frozen=True)
class FactPrompt:
    """A fact template cut before the attribute: the model should continue ``prompt`` with `` attribute``."""

    theme: str
    subject: str
    attribute: str
    template: int
    prompt: str


@dataclass(frozen=True)
class Corpus:
    """Training and held-out documents plus the fact prompts used to measure knowledge.

    ``train_allowed`` maps each subject to the templates its facts may be stated in during training;
    ``reserve`` holds the fresh names of passages (training) and of the held-out recall prompts;
    ``train_kinds`` the kind of every training document (``facts``, ``passage``, ``repetition``, ``long``, ``copy``).
    """

    train_texts: tuple[str, ...]
    heldout_texts: tuple[str, ...]
    heldout_prompts: tuple[FactPrompt, ...]
    train_prompts: tuple[FactPrompt, ...]
    heldout_pairs: frozenset[tuple[str, int]]  # (subject, template index) never stated in training
    train_allowed: dict[str, list[int]] = field(default_factory=dict)
    reserve: Reserve = Reserve((), ())
    train_kinds: tuple[str, ...] = ()


def heldout_template_choice(world: World, heldout_templates: int, seed: int) -> dict[str, tuple[int, ...]]:
    """For every subject, the template indices in which its fact is withheld from training."""
    rng = random.Random(f"learnlab-heldout-{seed}")
    choice = {}
    for theme in world.themes:
        count = len(FACT_TEMPLATES[theme.name])
        for subject in theme.subjects:
            choice[subject] = tuple(sorted(rng.sample(range(count), heldout_templates)))
    return choice


def split_sentences(text: str) -> list[str]:
    """The sentences of a document (split after each full stop)."""
    return [part for part in re.split(r"(?<=\.)\s+", text.strip()) if part]


def _document(rng: random.Random, world: World, allowed: dict[str, list[int]], num_sentences: int) -> list[str]:
    """The pieces of a document (a fact, a list, a narrative or a filler sentence each), in order."""
    facts = world.facts()
    sentences: list[str] = []
    for _ in range(num_sentences):
        kind = rng.random()
        theme, subject, attribute = rng.choice(facts)
        if kind < 0.62:
            templates = allowed[subject]
            if not templates:
                continue
            sentences.append(fill(FACT_TEMPLATES[theme][rng.choice(templates)], subject, attribute))
        elif kind < 0.77:
            picked = [rng.choice(facts) for _ in range(rng.randint(2, 4))]
            clauses = [CLAUSES[t].format(s=s, a=a) for t, s, a in picked]
            lead = rng.choice(("Here is what we know: ", "In short, ", "", "As the list says, "))
            sentences.append(fill(lead + ", ".join(clauses[:-1]) + " and " + clauses[-1] + ".", "", ""))
        elif kind < 0.90:
            sentences.append(fill(rng.choice(NARRATIVES[theme]), subject, attribute))
        else:
            sentences.append(rng.choice(FILLER))
    return sentences


def _training_document(writer: DocumentWriter, world: World, allowed: dict[str, list[int]],
                       sentences: tuple[int, int]) -> tuple[str, str]:
    """One training document and its kind, drawn by the mix (plain fact documents as before)."""
    rng, mix = writer.rng, writer.mix
    draw = rng.random()
    if draw < mix.passage_share:
        return "passage", writer.passage(gap=_document(rng, world, allowed, rng.randint(0, 2)))
    if draw < mix.passage_share + mix.repetition_share:
        return "repetition", writer.repetition(rng.randint(4, 12))
    if draw < mix.passage_share + mix.repetition_share + mix.long_share:
        return "long", writer.long(_document(rng, world, allowed, rng.randint(*sentences)))
    if draw < mix.passage_share + mix.repetition_share + mix.long_share + mix.copy_document_share:
        return "copy", writer.copy(rng.randint(*mix.passage_facts))
    pieces = _document(rng, world, allowed, rng.randint(*sentences))
    if rng.random() < mix.relation_share:
        pieces.insert(0, writer.relation())
    return "facts", " ".join(pieces)


def build_corpus(world: World, seed: int, train_documents: int = 20000, heldout_documents: int = 400,
                 heldout_templates: int = 2, sentences_per_document: tuple[int, int] = (3, 6),
                 mix: DocumentMix | None = None) -> Corpus:
    """Generate the corpus of ``world`` (deterministic by ``seed``).

    Training documents state each fact only in its non-withheld templates (plus lists and
    narratives); beside these plain documents they hold the passages, repetition and long documents
    and relation sentences of :mod:`passages` (``mix``; ``DocumentMix(0, 0, 0, 0, relation_share=0)``
    gives plain documents only). Held-out documents (for perplexity) are plain ones that state facts
    only in withheld templates, plus the lists, narratives and filler (drawn from another random
    stream) none of whose sentences occur in any training document.
    """
    mix = mix or DocumentMix()
    count = len(next(iter(FACT_TEMPLATES.values())))
    if not 1 <= heldout_templates < count:
        raise ValueError(f"heldout_templates must be in [1, {count - 1}]")
    withheld = heldout_template_choice(world, heldout_templates, seed)
    train_allowed = {s: [t for t in range(count) if t not in withheld[s]] for s in withheld}
    heldout_allowed = {s: list(withheld[s]) for s in withheld}
    reserve = build_reserve(world, mix.train_reserve, mix.heldout_reserve)
    train_rng = random.Random(f"learnlab-corpus-train-{seed}")
    heldout_rng = random.Random(f"learnlab-corpus-heldout-{seed}")
    writer = DocumentWriter(world, train_allowed, reserve.train, mix, train_rng)
    documents = [_training_document(writer, world, train_allowed, sentences_per_document) for _ in range(train_documents)]
    train = tuple(text for _, text in documents)
    seen = {sentence for text in train for sentence in split_sentences(text)}
    heldout: list[str] = []
    low, high = sentences_per_document
    while len(heldout) < heldout_documents:  # keep only pieces none of whose sentences occur in training
        pieces = _document(heldout_rng, world, heldout_allowed, heldout_rng.randint(low, high))
        kept = [piece for piece in pieces if not any(sentence in seen for sentence in split_sentences(piece))]
        if kept:
            heldout.append(" ".join(kept))
    heldout_prompts, train_prompts = [], []
    prompt_rng = random.Random(f"learnlab-corpus-prompts-{seed}")
    for theme, subject, attribute in world.facts():
        templates = FACT_TEMPLATES[theme]
        for index in withheld[subject]:
            heldout_prompts.append(FactPrompt(theme, subject, attribute, index, prompt_of(templates[index], subject)))
        index = prompt_rng.choice(train_allowed[subject])
        train_prompts.append(FactPrompt(theme, subject, attribute, index, prompt_of(templates[index], subject)))
    pairs = frozenset((s, t) for s, ts in withheld.items() for t in ts)
    return Corpus(train, tuple(heldout), tuple(heldout_prompts), tuple(train_prompts), pairs, train_allowed, reserve,
                  tuple(kind for kind, _ in documents))
