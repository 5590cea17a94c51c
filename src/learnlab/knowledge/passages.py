"""Documents that make the world model read its context: passages, repetition and long documents.

A language model uses its context: a name mentioned once is likely to come back, and a question
about a text is answered from the text. The plain fact documents of :mod:`corpus` teach none of
that, so the corpus also holds

* **passages**: several facts about subjects (fresh pseudo-words from a reserve that never names
  a world subject, and known subjects, some given an attribute that contradicts the world),
  followed later in the same document by questions or restatements whose answer only the passage
  gives;
* **repetition** documents: a few subjects and their attribute words recur (real text is bursty),
  and earlier sentences are copied verbatim, so the model learns induction and copying;
* **long** documents: a long passage, then unrelated text, then its questions, so that the answer
  lies far back in the context;
* **copy** documents: a passage told twice, word for word (a dense copying signal);
* **relations** between attribute words ("Vermilion is a shade of red.", "One shade of red is
  vermilion."), the less surprising concepts that stepping stones (Sun et al. 2025, §5) pass through.

Known subjects are only ever stated in their non-withheld templates (:mod:`corpus`), so the
held-out fact prompts stay unseen. :func:`recall_prompts` builds the held-out in-context recall
prompts (world claims W4, W5) from the held-out reserve, whose names occur in no training text.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from learnlab.knowledge.templates import CLAUSES, FACT_TEMPLATES, NARRATIVES, fill, prompt_of
from learnlab.knowledge.world import World, pseudo_words

# Both directions of "word is a kind of common", per theme: (forward, reverse).
RELATION_TEMPLATES: dict[str, tuple[str, str]] = {
    "colors": ("{w} is a shade of {c}.", "One shade of {c} is {w}."),
    "places": ("{w} is a city like {c}.", "One city like {c} is {w}."),
    "jobs": ("A {w} is a kind of {c}.", "One kind of {c} is a {w}."),
    "foods": ("{w} is a dish like {c}.", "One dish like {c} is {w}."),
}
PASSAGE_OPENERS = ("Here is a story.", "Read this carefully.", "This is what the letter said.",
                   "In this tale, things are as follows.", "Listen to this.")
QUERY_OPENERS = ("Now some questions.", "Remember the story?", "Let us check.", "", "And so,")
COPY_OPENERS = ("Again:", "As I said,", "I repeat:", "")
RETELL_OPENERS = ("Once more, word for word.", "Let me say it again.", "Here it is again.", "To repeat the story.")
GROUPS = ("fresh", "contradicting")  # the two groups of claim W4; "consistent" facts also occur in passages


@dataclass(frozen=True)
class DocumentMix:
    """Which documents the training corpus holds beside the plain fact documents.

    Attributes:
        passage_share, repetition_share, long_share, copy_document_share: probability of each kind
            per document (the rest are plain fact documents of :mod:`corpus`).
        passage_facts: (fewest, most) facts per passage.
        long_document_words: a long document has at least this many words.
        fresh_share, contradicting_share: shares of passage facts about a fresh subject and about a
            known subject with an attribute that contradicts the world (the rest state the truth).
        relation_share: probability that a plain document opens with a relation sentence.
        same_wording_share: probability that a question may reuse the wording of the statement (a
            restatement that can be copied); otherwise it uses another template.
        copy_share: probability that a sentence of a repetition document copies an earlier one verbatim.
        train_reserve, heldout_reserve: sizes of the two disjoint reserves of fresh names. The
            training reserve is large (most of the pseudo-words there are) so that a fresh name
            rarely recurs across documents: its later mentions can only be completed by copying.
    """

    passage_share: float = 0.2
    repetition_share: float = 0.15
    long_share: float = 0.03
    copy_document_share: float = 0.04
    passage_facts: tuple[int, int] = (2, 16)
    long_document_words: int = 200
    fresh_share: float = 0.5
    contradicting_share: float = 0.3
    relation_share: float = 0.1
    same_wording_share: float = 0.3
    copy_share: float = 0.25
    train_reserve: int = 60000
    heldout_reserve: int = 400

    def __post_init__(self) -> None:
        if not 1 <= self.passage_facts[0] <= self.passage_facts[1]:
            raise ValueError(f"passage_facts must be (low, high) with 1 <= low <= high, got {self.passage_facts}")
        if self.passage_share + self.repetition_share + self.long_share + self.copy_document_share > 1:
            raise ValueError("passage_share + repetition_share + long_share + copy_document_share must be <= 1")
        if self.fresh_share + self.contradicting_share > 1:
            raise ValueError("fresh_share + contradicting_share must be <= 1")


@dataclass(frozen=True)
class Reserve:
    """Fresh subject names never used as world subjects or spares: one list per split, disjoint."""

    train: tuple[str, ...]
    heldout: tuple[str, ...]


@dataclass(frozen=True)
class PassageFact:
    """One fact of a passage: theme, subject, the attribute the passage gives, and its group."""

    theme: str
    subject: str
    attribute: str
    group: str  # fresh, contradicting or consistent


@dataclass(frozen=True)
class RecallPrompt:
    """A held-out passage and a later question: the model should continue ``context`` with `` attribute``."""

    group: str
    facts: int
    subject: str
    context: str  # the passage, then the question cut before the attribute
    question: str  # the question alone (the same prompt without the passage)
    attribute: str  # what the passage says
    world_attribute: str | None  # what the world says (known subjects), else None


def build_reserve(world: World, train: int, heldout: int) -> Reserve:
    """Two disjoint lists of fresh lower-case pseudo-words, none a world subject or spare (any case)."""
    taken = {name.lower() for theme in world.themes for name in (*theme.subjects, *world.spare(theme.name))}
    taken |= {word.lower() for theme in world.themes for word in (*theme.attributes, *theme.outlandish)}
    words = pseudo_words(train + heldout, random.Random(f"learnlab-reserve-{world.seed}"), taken)
    return Reserve(tuple(words[:train]), tuple(words[train:]))


def named(theme: str, word: str) -> str:
    """A fresh name as the theme writes subjects (color subjects are lower-case things, others names)."""
    return word if theme == "colors" else word.capitalize()


def relation_sentence(theme: str, word: str, common: str, reverse: bool) -> str:
    text = RELATION_TEMPLATES[theme][int(reverse)].format(w=word, c=common)
    return text[0].upper() + text[1:]


def relation_sentences(world: World) -> list[str]:
    """Every relation of the world, both ways round."""
    return [relation_sentence(theme.name, word, common, reverse)
            for theme in world.themes for word, common in theme.relations for reverse in (False, True)]


class DocumentWriter:
    """Writes the new document kinds for one split (its fact templates, names and random stream).

    Args:
        world: the world.
        allowed: per known subject, the fact-template indices its true or contradicting facts may use.
        names: the fresh names of this split.
        mix: the document mix.
        rng: the split's random stream.
    """

    def __init__(self, world: World, allowed: dict[str, list[int]], names: Sequence[str], mix: DocumentMix,
                 rng: random.Random) -> None:
        self.world, self.allowed, self.names, self.mix, self.rng = world, allowed, list(names), mix, rng
        self.templates = FACT_TEMPLATES
        self.facts = world.facts()

    # --- facts -----------------------------------------------------------------------------------

    def _template_choices(self, theme: str, subject: str) -> list[int]:
        known = subject in self.allowed
        return self.allowed[subject] if known else list(range(len(self.templates[theme])))

    def statement(self, fact: PassageFact, avoid: int | None = None) -> tuple[str, int]:
        """The fact in one of its subject's templates (not ``avoid`` where there is a choice), and that index."""
        choices = self._template_choices(fact.theme, fact.subject)
        if avoid is not None and len(choices) > 1:
            choices = [index for index in choices if index != avoid]
        index = self.rng.choice(choices)
        return fill(self.templates[fact.theme][index], fact.subject, fact.attribute), index

    def query(self, fact: PassageFact, avoid: int | None) -> str:
        """A later question or restatement of ``fact`` cut before the attribute (another template than ``avoid``)."""
        choices = self._template_choices(fact.theme, fact.subject)
        if avoid is not None and len(choices) > 1:
            choices = [index for index in choices if index != avoid]
        return prompt_of(self.templates[fact.theme][self.rng.choice(choices)], fact.subject)

    def fact(self, group: str | None = None, theme: str | None = None) -> PassageFact:
        """A passage fact of ``group`` (drawn by the mix when ``None``)."""
        if group is None:
            draw = self.rng.random()
            group = ("fresh" if draw < self.mix.fresh_share else
                     "contradicting" if draw < self.mix.fresh_share + self.mix.contradicting_share else "consistent")
        if group == "fresh":
            theme = theme or self.rng.choice(self.world.themes).name
            return PassageFact(theme, named(theme, self.rng.choice(self.names)), self.attribute(theme), group)
        candidates = [fact for fact in self.facts if theme is None or fact[0] == theme]
        theme, subject, true = self.rng.choice(candidates)
        if group == "consistent":
            return PassageFact(theme, subject, true, group)
        return PassageFact(theme, subject, self.attribute(theme, avoid=true), group)

    def attribute(self, theme: str, avoid: str | None = None) -> str:
        """An attribute word of ``theme`` drawn as often as the world's subjects hold it (not ``avoid``), so
        that what a fresh subject is told keeps the world's Zipf-like frequencies."""
        while True:
            _, word = self.rng.choice(self.world.theme(theme).facts)
            if word != avoid:
                return word

    def passage_facts(self, count: int) -> list[PassageFact]:
        """``count`` facts about distinct subjects."""
        facts: list[PassageFact] = []
        while len(facts) < count:
            fact = self.fact()
            if all(fact.subject != other.subject for other in facts):
                facts.append(fact)
        return facts

    # --- documents -------------------------------------------------------------------------------

    def passage(self, count: int | None = None, gap: Sequence[str] = ()) -> str:
        """A passage of ``count`` facts, ``gap`` sentences, then questions about at least half of them in random order."""
        low, high = self.mix.passage_facts
        facts = self.passage_facts(count if count is not None else self.rng.randint(low, high))
        stated = [self.statement(fact) for fact in facts]
        asked = self.rng.sample(range(len(facts)), self.rng.randint((len(facts) + 1) // 2, len(facts)))
        queries = [f"{self.query(facts[i], None if self.rng.random() < self.mix.same_wording_share else stated[i][1])} "
                   f"{facts[i].attribute}." for i in asked]
        pieces = [self.rng.choice(PASSAGE_OPENERS), *(text for text, _ in stated), *gap,
                  self.rng.choice(QUERY_OPENERS), *queries]
        return " ".join(piece for piece in pieces if piece)

    def repetition(self, sentences: int) -> str:
        """A few subjects that recur, in varied wording, with some earlier sentences copied verbatim."""
        cast = [self.fact(self.rng.choice(("fresh", "consistent"))) for _ in range(self.rng.randint(1, 3))]
        written: list[str] = []
        for _ in range(sentences):
            if written and self.rng.random() < self.mix.copy_share:
                opener = self.rng.choice(COPY_OPENERS)
                written.append(f"{opener} {self.rng.choice(written)}".strip())
                continue
            fact = self.rng.choice(cast)
            form = self.rng.random()
            if form < 0.6:
                written.append(self.statement(fact)[0])
            elif form < 0.8:
                written.append(fill(self.rng.choice(NARRATIVES[fact.theme]), fact.subject, fact.attribute))
            else:
                written.append(fill(CLAUSES[fact.theme].format(s=fact.subject, a=fact.attribute) + ".", "", ""))
        return " ".join(written)

    def long(self, filler: Sequence[str]) -> str:
        """A long passage whose questions come after ``filler`` and a repetition block (>= ``long_document_words``)."""
        low, high = self.mix.passage_facts
        gap = list(filler)
        text = self.passage(self.rng.randint(max(low, high // 2), high), gap)
        while len(text.split()) < self.mix.long_document_words:
            gap.append(self.repetition(self.rng.randint(3, 6)))
            text = self.passage(self.rng.randint(max(low, high // 2), high), gap)
        return text

    def copy(self, count: int) -> str:
        """``count`` facts, then the same sentences again verbatim: every later token can be copied."""
        stated = [self.statement(fact)[0] for fact in self.passage_facts(count)]
        return " ".join([self.rng.choice(PASSAGE_OPENERS), *stated, self.rng.choice(RETELL_OPENERS), *stated])

    def relation(self) -> str:
        theme = self.rng.choice([theme for theme in self.world.themes if theme.relations])
        word, common = self.rng.choice(theme.relations)
        return relation_sentence(theme.name, word, common, self.rng.random() < 0.5)


def recall_prompts(world: World, allowed: dict[str, list[int]], reserve: Reserve, lengths: Sequence[int],
                   per_length: int, seed: int, mix: DocumentMix | None = None, same_wording: bool = False) -> list[RecallPrompt]:
    """Held-out in-context recall prompts (claims W4, W5): per passage length and group, ``per_length`` passages.

    The queried fact is of the group (a fresh subject from the held-out reserve, or a known subject
    with a contradicting attribute); the other facts follow the mix, their fresh subjects also from
    the held-out reserve. The question uses another template than the statement (with
    ``same_wording``: the statement's own template, a restatement that copying can complete).
    """
    mix = mix or DocumentMix()
    writer = DocumentWriter(world, allowed, reserve.heldout, mix, random.Random(f"learnlab-recall-{seed}"))
    prompts = []
    for length in lengths:
        for group in GROUPS:
            for _ in range(per_length):
                target = writer.fact(group)
                others = [fact for fact in writer.passage_facts(length + 1) if fact.subject != target.subject][: length - 1]
                facts = others + [target]
                writer.rng.shuffle(facts)
                stated = [writer.statement(fact) for fact in facts]
                index = stated[facts.index(target)][1]
                question = (prompt_of(writer.templates[target.theme][index], target.subject) if same_wording
                            else writer.query(target, index))
                opener = writer.rng.choice(PASSAGE_OPENERS)
                context = " ".join([opener, *(text for text, _ in stated), question])
                true = world.theme(target.theme).attribute_of(target.subject) if group != "fresh" else None
                prompts.append(RecallPrompt(group, length, target.subject, context, question, target.attribute, true))
    return prompts
