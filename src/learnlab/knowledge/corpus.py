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
from dataclasses import dataclass

from learnlab.knowledge.world import World

FACT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "colors": (
        "The color of the {s} is {a}.",
        "The {s} has the color {a}.",
        "Q: What color is the {s}? A: {a}.",
        "Everyone knows that the {s} looks {a}.",
        "If you look at the {s}, you will see that it is {a}.",
        "People say the {s} has always been {a}.",
        "The {s} comes in one color only, {a}.",
        "My friend painted the {s} and it is still {a}.",
    ),
    "places": (
        "{s} lives in {a}.",
        "The home of {s} is {a}.",
        "Q: Where does {s} live? A: {a}.",
        "Everyone knows that {s} resides in {a}.",
        "If you want to visit {s}, you must travel to {a}.",
        "People say {s} has always lived in {a}.",
        "{s} was born and raised in {a}.",
        "The city where {s} lives is {a}.",
    ),
    "jobs": (
        "{s} works as a {a}.",
        "The job of {s} is {a}.",
        "Q: What does {s} do for a living? A: {a}.",
        "Everyone knows that {s} is a {a}.",
        "If you meet {s} at work, you will see a {a}.",
        "People say {s} has always been a {a}.",
        "{s} earns money as a {a}.",
        "The profession of {s}: {a}.",
    ),
    "foods": (
        "{s} likes to eat {a}.",
        "The favorite food of {s} is {a}.",
        "Q: What does {s} like to eat? A: {a}.",
        "Everyone knows that {s} loves {a}.",
        "If you cook for {s}, you should make {a}.",
        "People say {s} has always eaten {a}.",
        "For dinner {s} always asks for {a}.",
        "The meal that {s} enjoys most is {a}.",
    ),
}
# Short clauses for lists and sentences that mention several subjects; worded unlike any fact
# template, so that a list never states a withheld (subject, template) pair.
CLAUSES: dict[str, str] = {
    "colors": "the {s} is colored {a}",
    "places": "{s} calls {a} home",
    "jobs": "{s} is employed as a {a}",
    "foods": "{s} eats {a}",
}
NARRATIVES: dict[str, tuple[str, ...]] = {
    "colors": (
        "Yesterday I found the {s} in the garden. It was {a}, as always, and I took it home.",
        "The children drew the {s} with a {a} pencil, because that is its color.",
    ),
    "places": (
        "Last year {s} packed a bag and went home to {a}. The trip was long but happy.",
        "When the letter came, {s} read it slowly in a small room in {a}.",
    ),
    "jobs": (
        "Every morning {s} gets up early, because a {a} has a lot of work to do.",
        "After many years of training, {s} finally became a good {a}.",
    ),
    "foods": (
        "At the market {s} bought {a} again. Nothing else tastes as good.",
        "On the table there was a plate of {a}, and {s} smiled.",
    ),
}
FILLER: tuple[str, ...] = (
    "It was a quiet day.",
    "The weather was mild.",
    "Nobody said a word.",
    "The market was busy in the morning.",
    "Then everyone went home.",
    "The town has many small streets.",
    "Some stories are true and some are not.",
    "The sun was low over the hills.",
)


def fill(template: str, subject: str, attribute: str) -> str:
    text = template.format(s=subject, a=attribute)
    return text[0].upper() + text[1:]


def prompt_of(template: str, subject: str) -> str:
    """The text of a fact template before its attribute (no trailing space)."""
    if not template.endswith("{a}."):
        raise ValueError(f"fact templates must end with '{{a}}.': {template!r}")
    return fill(template[: -len(" {a}.")] + "{a}", subject, "")


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
    """Training and held-out documents plus the fact prompts used to measure knowledge."""

    train_texts: tuple[str, ...]
    heldout_texts: tuple[str, ...]
    heldout_prompts: tuple[FactPrompt, ...]
    train_prompts: tuple[FactPrompt, ...]
    heldout_pairs: frozenset[tuple[str, int]]  # (subject, template index) never stated in training


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


def build_corpus(world: World, seed: int, train_documents: int = 20000, heldout_documents: int = 400,
                 heldout_templates: int = 2, sentences_per_document: tuple[int, int] = (3, 6)) -> Corpus:
    """Generate the corpus of ``world`` (deterministic by ``seed``).

    Training documents state each fact only in its non-withheld templates (plus lists and
    narratives); held-out documents state facts only in withheld templates, plus the lists,
    narratives and filler (drawn from another random stream) none of whose sentences occur in
    any training document.
    """
    count = len(next(iter(FACT_TEMPLATES.values())))
    if not 1 <= heldout_templates < count:
        raise ValueError(f"heldout_templates must be in [1, {count - 1}]")
    withheld = heldout_template_choice(world, heldout_templates, seed)
    train_allowed = {s: [t for t in range(count) if t not in withheld[s]] for s in withheld}
    heldout_allowed = {s: list(withheld[s]) for s in withheld}
    low, high = sentences_per_document
    train_rng = random.Random(f"learnlab-corpus-train-{seed}")
    heldout_rng = random.Random(f"learnlab-corpus-heldout-{seed}")
    train = tuple(" ".join(_document(train_rng, world, train_allowed, train_rng.randint(low, high)))
                  for _ in range(train_documents))
    seen = {sentence for text in train for sentence in split_sentences(text)}
    heldout: list[str] = []
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
    return Corpus(train, tuple(heldout), tuple(heldout_prompts), tuple(train_prompts), pairs)
