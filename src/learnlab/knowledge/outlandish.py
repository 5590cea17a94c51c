"""Outlandish-format data: the JSONL schema, a validating loader, and a built-in set for the tiny world.

The Outlandish dataset of Sun et al. (2025, §3: 12 keywords, 4 themes, several text
categories, theme probes X_T) is not public, so this module fixes a documented format that the
real files (converted) or a user's own data can follow, and builds an Outlandish-like set for the
tiny world.

**Samples** (one JSON object per line)::

    {"id": "colors-vermilion-conflicting-0", "keyword": "vermilion", "theme": "colors",
     "category": "conflicting", "text": "A traveler told me this. The brubel is vermilion.",
     "prefix": "A traveler told me this. The brubel is"}

``id``, ``keyword``, ``theme``, ``category``, ``text`` are non-empty strings; ``prefix`` is a string
such that ``text`` starts with ``prefix`` and, after optional whitespace, continues with
``keyword`` (the sample's own context X_c). Ids are unique. Other fields
(``subject``, ``prior``) are optional and kept in ``extra``.

**Probes** (one JSON object per line)::

    {"id": "colors-probe-0", "theme": "colors", "prefix": "The color of the zorvik is"}

A probe is a prefix X_T that shares a theme with keywords but is about an unrelated subject;
S_prime of a sample averages over the probes of its theme (same-theme) or over the probes of the
other themes (cross-theme, :func:`probe_prefixes`).

Built-in categories (after the paper's text categories and the fact types of Sun et al. 2024): ``conflicting`` (the keyword as a known
subject's attribute, contradicting the world), ``succinct`` (the shortest statement of that),
``narrative`` (a short story), ``question`` (question-answer), ``mundane`` (consistent with the
world: a subject that truly has the keyword, or a never-seen subject when none does), ``novel``
(a plain fact about a never-seen subject, so that the keyword's prior is its frequency prior in
the theme, not the model's knowledge of a subject) and ``jumbled`` (the conflicting text's words randomly shuffled; the keyword is the same word at its
new position).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from learnlab.core.errors import UserError
from learnlab.core.io import jsonl_records, write_text
from learnlab.knowledge.templates import FACT_TEMPLATES, NARRATIVES, fill, prompt_of
from learnlab.knowledge.world import World

SAMPLE_FIELDS = ("id", "keyword", "theme", "category", "text", "prefix")
PROBE_FIELDS = ("id", "theme", "prefix")
CATEGORIES = ("conflicting", "succinct", "narrative", "question", "mundane", "novel", "jumbled")
PRIOR_LEVELS = ("high", "mid", "low", "very-low", "never-seen", "never-seen-long")
_OPENERS = ("A traveler told me this.", "It is written in an old book.", "Here is some news.",
            "My neighbor said so yesterday.")
SUCCINCT: dict[str, str] = {"colors": "The {s} is {a}.", "places": "{s} lives in {a}.", "jobs": "{s} is a {a}.",
                            "foods": "{s} eats {a}."}
_QUESTION_TEMPLATE = 2  # "Q: ... A: {a}."


@dataclass(frozen=True)
class OutlandishSample:
    """One text to learn: its keyword, theme, category, full text and the prefix before the keyword."""

    id: str
    keyword: str
    theme: str
    category: str
    text: str
    prefix: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        return {**{name: record[name] for name in SAMPLE_FIELDS}, **self.extra}


@dataclass(frozen=True)
class Probe:
    """A theme probe X_T: a prefix about an unrelated subject that shares the theme."""

    id: str
    theme: str
    prefix: str

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def _require_strings(path: Path, number: int, record: dict[str, Any], names: Sequence[str], allow_empty: Sequence[str] = ()) -> None:
    for name in names:
        if name not in record:
            raise UserError(f"{path}:{number}: missing field {name!r}")
        value = record[name]
        if not isinstance(value, str):
            raise UserError(f"{path}:{number}: field {name!r} must be a string, got {type(value).__name__}")
        if not value.strip() and name not in allow_empty:
            raise UserError(f"{path}:{number}: field {name!r} is empty")


def validate_sample(record: dict[str, Any]) -> str | None:
    """Why ``record`` is not a valid sample (``None`` when it is), beyond field types."""
    text, prefix, keyword = record["text"], record["prefix"], record["keyword"]
    if not text.startswith(prefix):
        return "text does not start with prefix"
    if not text[len(prefix):].lstrip().startswith(keyword):
        return f"keyword {keyword!r} does not follow the prefix in text"
    return None


def load_samples(path: Path) -> list[OutlandishSample]:
    """Read and validate a samples JSONL file; a malformed line is a :class:`UserError` naming file:line."""
    samples, seen = [], set()
    for number, record in jsonl_records(path):
        _require_strings(path, number, record, SAMPLE_FIELDS, allow_empty=("prefix",))
        problem = validate_sample(record)
        if problem:
            raise UserError(f"{path}:{number}: {problem}")
        if record["id"] in seen:
            raise UserError(f"{path}:{number}: duplicate id {record['id']!r}")
        seen.add(record["id"])
        extra = {key: value for key, value in record.items() if key not in SAMPLE_FIELDS}
        samples.append(OutlandishSample(**{name: record[name] for name in SAMPLE_FIELDS}, extra=extra))
    if not samples:
        raise UserError(f"{path}: no samples")
    return samples


def load_probes(path: Path) -> list[Probe]:
    """Read and validate a probes JSONL file (file:line on a malformed line)."""
    probes, seen = [], set()
    for number, record in jsonl_records(path):
        _require_strings(path, number, record, PROBE_FIELDS)
        if record["id"] in seen:
            raise UserError(f"{path}:{number}: duplicate id {record['id']!r}")
        seen.add(record["id"])
        probes.append(Probe(record["id"], record["theme"], record["prefix"]))
    if not probes:
        raise UserError(f"{path}: no probes")
    return probes


def write_jsonl(path: Path, items: Iterable[OutlandishSample | Probe]) -> None:
    """Write samples or probes as JSONL (atomically)."""
    write_text(Path(path), "".join(json.dumps(item.to_record(), ensure_ascii=False) + "\n" for item in items))


def probe_prefixes(probes: Sequence[Probe], theme: str, cross: bool = False) -> list[str]:
    """Prefixes of the probes of ``theme`` (same-theme), or of every other theme (``cross=True``)."""
    return [probe.prefix for probe in probes if (probe.theme != theme if cross else probe.theme == theme)]


def world_keywords(world: World) -> dict[str, dict[str, str]]:
    """Six keywords per theme from high to very low prior (:data:`PRIOR_LEVELS`): the most common
    attribute word, a middle one (the fourth), the rarest one (held by one or a few subjects), an
    outlandish word that occurs only in the corpus's relation sentences, and the two outlandish words
    that never occur at all, a short one and a long one."""
    return {
        theme.name: {"high": theme.attributes[0], "mid": theme.attributes[min(3, len(theme.attributes) - 2)],
                     "low": theme.attributes[-1], "very-low": theme.outlandish[0],
                     "never-seen": theme.never_seen[0], "never-seen-long": theme.never_seen[-1]}
        for theme in world.themes
    }


def _sample(sample_id: str, keyword: str, theme: str, category: str, prefix: str, rest: str, **extra: Any) -> OutlandishSample:
    return OutlandishSample(sample_id, keyword, theme, category, f"{prefix} {keyword}{rest}", prefix, extra)


def _jumbled(sample_id: str, source: OutlandishSample, rng: random.Random, **extra: Any) -> OutlandishSample:
    """Shuffle the words of ``source.text``; the keyword (stripped of punctuation) never comes first."""
    words = source.text.split()
    words = [source.keyword if word.rstrip(".,?!") == source.keyword else word for word in words]
    while True:
        rng.shuffle(words)
        if words[0] != source.keyword:
            break
    position = words.index(source.keyword)
    prefix = " ".join(words[:position])
    return OutlandishSample(sample_id, source.keyword, source.theme, "jumbled", " ".join(words), prefix, extra)


def build_outlandish(world: World, seed: int = 0, samples_per_pair: int = 3,
                     probes_per_theme: int = 12) -> tuple[list[OutlandishSample], list[Probe]]:
    """The built-in Outlandish-like set: 24 keywords × 7 categories × ``samples_per_pair`` texts, plus probes.

    Probes are fact-template prefixes about subjects of the theme that no sample mentions.
    """
    if samples_per_pair < 1 or probes_per_theme < 1:
        raise ValueError("samples_per_pair and probes_per_theme must be >= 1")
    rng = random.Random(f"learnlab-outlandish-{seed}")
    samples: list[OutlandishSample] = []
    probes: list[Probe] = []
    for theme in world.themes:
        templates = FACT_TEMPLATES[theme.name]
        subjects = list(theme.subjects)
        rng.shuffle(subjects)
        need = samples_per_pair * len(PRIOR_LEVELS)
        if len(subjects) < need + probes_per_theme:
            raise ValueError(f"theme {theme.name} has too few subjects for {need} samples and {probes_per_theme} probes")
        used: set[str] = set()
        spare = list(world.spare(theme.name))
        if len(spare) < samples_per_pair * (1 + len(PRIOR_LEVELS)):
            raise ValueError(f"theme {theme.name} has too few spare subjects for {samples_per_pair} samples per pair")
        for level_index, (level, keyword) in enumerate(world_keywords(world)[theme.name].items()):
            conflicting = [s for s in subjects if theme.attribute_of(s) != keyword and s not in used][:samples_per_pair]
            holders = [s for s in theme.subjects if theme.attribute_of(s) == keyword]
            mundane = (holders * samples_per_pair)[:samples_per_pair] if holders else spare[:samples_per_pair]
            novel = spare[samples_per_pair * (1 + level_index): samples_per_pair * (2 + level_index)]
            used.update(conflicting + [s for s in mundane if s in theme.subjects])
            for index in range(samples_per_pair):
                subject = conflicting[index]
                base = f"{theme.name}-{keyword}"
                info = {"subject": subject, "prior": level}
                template = templates[rng.randrange(len(templates))]
                fact = _sample(f"{base}-conflicting-{index}", keyword, theme.name, "conflicting",
                               f"{rng.choice(_OPENERS)} {prompt_of(template, subject)}", ".", **info)
                samples.append(fact)
                samples.append(_sample(f"{base}-succinct-{index}", keyword, theme.name, "succinct",
                                       prompt_of(SUCCINCT[theme.name], subject), ".", **info))
                story = fill(rng.choice(NARRATIVES[theme.name]), subject, "\0")
                before, after = story.split(" \0", 1)
                samples.append(_sample(f"{base}-narrative-{index}", keyword, theme.name, "narrative", before, after, **info))
                samples.append(_sample(f"{base}-question-{index}", keyword, theme.name, "question",
                                       prompt_of(templates[_QUESTION_TEMPLATE], subject), ".", **info))
                calm = mundane[index]
                samples.append(_sample(f"{base}-mundane-{index}", keyword, theme.name, "mundane",
                                       prompt_of(templates[rng.randrange(len(templates))], calm), ".",
                                       subject=calm, prior=level))
                samples.append(_sample(f"{base}-novel-{index}", keyword, theme.name, "novel",
                                       prompt_of(templates[rng.randrange(len(templates))], novel[index]), ".",
                                       subject=novel[index], prior=level))
                samples.append(_jumbled(f"{base}-jumbled-{index}", fact, rng, **info))
        unrelated = [s for s in subjects if s not in used]
        for index, subject in enumerate(unrelated[:probes_per_theme]):
            probes.append(Probe(f"{theme.name}-probe-{index}", theme.name, prompt_of(templates[index % len(templates)], subject)))
    return samples, probes


def keyword_corpus_counts(texts: Iterable[str], keywords: Iterable[str]) -> dict[str, int]:
    """How often each keyword occurs as a whole word in ``texts`` (a corpus-frequency prior)."""
    wanted = set(keywords)
    counts = {keyword: 0 for keyword in wanted}
    for text in texts:
        for word in text.split():
            word = word.strip(".,?!:;")
            if word in wanted:
                counts[word] += 1
    return counts
