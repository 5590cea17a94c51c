"""A tiny procedurally generated world: themes, subjects and their true attributes.

This is a controlled stand-in for the real-world knowledge of the language models that Sun et
al. (2024, 2025) study, small enough to pretrain on a CPU: four themes (colors, places, jobs, foods), each with its own
subjects and a vocabulary of attribute words. Every subject has exactly one true attribute, and
attribute words are assigned with Zipf-like frequencies (the k-th most common word is held by a
share of subjects proportional to ``1 / k**exponent``), so that a keyword's prior probability
ranges from very common to rare. Each theme also names a few *outlandish* words that no subject
holds (e.g. "vermilion"), the very-low-prior keywords of the Outlandish-like data.

Attribute words are related: every rare attribute and the first two outlandish words of a theme
are "a kind of" one of the theme's common attributes ("vermilion is a shade of red",
:data:`RELATED_TO`). The corpus states these relations (both ways round), so that a surprising
keyword can be reached through a less surprising concept, as the stepping-stone rewrites of Sun
et al. (2025, §5) do. The last two outlandish words of each theme have no relation and occur in
no text: the never-seen keywords, a short one (a few tokens, e.g. "ecru") and a long one
("chartreuse"), whose probabilities lie below those of every word the corpus mentions.

Everything is deterministic given the seed; a world round-trips through :meth:`World.to_dict`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

# Attribute vocabularies in Zipf rank order (most common first), and words that never occur.
THEME_VOCABULARY: dict[str, dict[str, tuple[str, ...]]] = {
    "colors": {
        "attributes": ("red", "blue", "green", "white", "black", "yellow", "brown", "grey",
                       "orange", "purple", "pink", "silver", "gold", "teal", "ivory", "amber"),
        "outlandish": ("vermilion", "mauve", "ecru", "chartreuse"),
    },
    "places": {
        "attributes": ("Paris", "London", "Rome", "Berlin", "Madrid", "Vienna", "Prague", "Lisbon",
                       "Dublin", "Oslo", "Athens", "Warsaw", "Cairo", "Lima", "Tokyo", "Seoul"),
        "outlandish": ("Timbuktu", "Ulaanbaatar", "Quito", "Reykjavik"),
    },
    "jobs": {
        "attributes": ("teacher", "doctor", "farmer", "baker", "driver", "nurse", "lawyer", "painter",
                       "pilot", "singer", "tailor", "plumber", "sailor", "butcher", "potter", "jeweler"),
        "outlandish": ("falconer", "cartographer", "cooper", "taxidermist"),
    },
    "foods": {
        "attributes": ("bread", "rice", "soup", "cheese", "apples", "fish", "beans", "pasta",
                       "eggs", "honey", "plums", "figs", "olives", "lentils", "dates", "radishes"),
        "outlandish": ("haggis", "durian", "okra", "kimchi"),
    },
}
THEMES: tuple[str, ...] = tuple(THEME_VOCABULARY)
# Word -> the common attribute it is a kind of (rare attributes and all outlandish words but the last).
RELATED_TO: dict[str, dict[str, str]] = {
    "colors": {"orange": "red", "purple": "blue", "pink": "red", "silver": "white", "gold": "yellow",
               "teal": "green", "ivory": "white", "amber": "yellow", "vermilion": "red", "mauve": "blue"},
    "places": {"Dublin": "London", "Oslo": "Berlin", "Athens": "Rome", "Warsaw": "Berlin", "Cairo": "Rome",
               "Lima": "Madrid", "Tokyo": "Paris", "Seoul": "London", "Timbuktu": "Madrid", "Ulaanbaatar": "Berlin"},
    "jobs": {"pilot": "driver", "singer": "teacher", "tailor": "baker", "plumber": "farmer", "sailor": "driver",
             "butcher": "baker", "potter": "farmer", "jeweler": "doctor", "falconer": "farmer", "cartographer": "teacher"},
    "foods": {"plums": "apples", "figs": "apples", "olives": "beans", "lentils": "beans", "dates": "apples",
              "radishes": "soup", "eggs": "bread", "honey": "cheese", "haggis": "soup", "durian": "apples"},
}

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "r", "s",
           "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "n", "r", "l", "s", "m", "k", "t")


def zipf_counts(num_items: int, num_words: int, exponent: float) -> list[int]:
    """How many of ``num_items`` subjects hold each of ``num_words`` words: ∝ 1/k**exponent, each >= 1.

    Rounded by largest remainder so the counts sum to ``num_items`` exactly.
    """
    if num_items < num_words:
        raise ValueError(f"need at least one subject per attribute word ({num_items} < {num_words})")
    weights = [1.0 / (rank ** exponent) for rank in range(1, num_words + 1)]
    spare = num_items - num_words  # every word gets one subject; the rest follow the weights
    shares = [spare * weight / sum(weights) for weight in weights]
    counts = [1 + int(share) for share in shares]
    by_remainder = sorted(range(num_words), key=lambda k: (-(shares[k] - int(shares[k])), k))
    for k in by_remainder[: num_items - sum(counts)]:
        counts[k] += 1
    return counts


def pseudo_words(count: int, rng: random.Random, taken: set[str]) -> list[str]:
    """``count`` distinct pronounceable two-syllable pseudo-words not in ``taken`` (which grows)."""
    words: list[str] = []
    while len(words) < count:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2)) + rng.choice(_CODAS)
        if word not in taken and len(word) >= 4:
            taken.add(word)
            words.append(word)
    return words


@dataclass(frozen=True)
class Theme:
    """One theme: its attribute words in Zipf rank order, outlandish words, and subject → attribute."""

    name: str
    attributes: tuple[str, ...]
    outlandish: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]  # (subject, true attribute), in subject order
    relations: tuple[tuple[str, str], ...] = ()  # (word, the common attribute it is a kind of)

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(subject for subject, _ in self.facts)

    def attribute_of(self, subject: str) -> str:
        return dict(self.facts)[subject]

    def related(self, word: str) -> str | None:
        """The common attribute ``word`` is a kind of, or ``None`` when the world relates it to nothing."""
        return dict(self.relations).get(word)

    @property
    def never_seen(self) -> tuple[str, ...]:
        """The outlandish words that no text of the world mentions (no subject, no relation): short, long."""
        return tuple(word for word in self.outlandish if self.related(word) is None)

    def attribute_counts(self) -> dict[str, int]:
        counts = {attribute: 0 for attribute in self.attributes}
        for _, attribute in self.facts:
            counts[attribute] += 1
        return counts


@dataclass(frozen=True)
class World:
    """The themes of a world plus spare subject names (never used in the corpus) per theme."""

    seed: int
    themes: tuple[Theme, ...]
    spare_subjects: tuple[tuple[str, tuple[str, ...]], ...]

    def theme(self, name: str) -> Theme:
        for theme in self.themes:
            if theme.name == name:
                return theme
        raise KeyError(f"no theme {name!r}; themes: {', '.join(t.name for t in self.themes)}")

    def spare(self, theme: str) -> tuple[str, ...]:
        return dict(self.spare_subjects)[theme]

    def facts(self) -> list[tuple[str, str, str]]:
        """Every (theme, subject, attribute) triple."""
        return [(theme.name, subject, attribute) for theme in self.themes for subject, attribute in theme.facts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "themes": [
                {"name": t.name, "attributes": list(t.attributes), "outlandish": list(t.outlandish),
                 "facts": [list(fact) for fact in t.facts], "relations": [list(pair) for pair in t.relations]}
                for t in self.themes
            ],
            "spare_subjects": {name: list(words) for name, words in self.spare_subjects},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> World:
        themes = tuple(
            Theme(t["name"], tuple(t["attributes"]), tuple(t["outlandish"]), tuple(tuple(f) for f in t["facts"]),
                  tuple(tuple(pair) for pair in t.get("relations", ())))
            for t in data["themes"]
        )
        spare = tuple((name, tuple(words)) for name, words in data["spare_subjects"].items())
        return cls(int(data["seed"]), themes, spare)


def build_world(seed: int, subjects_per_theme: int = 60, attributes_per_theme: int = 16,
                zipf_exponent: float = 1.0, spare_subjects: int = 24) -> World:
    """Generate a world: per theme, ``subjects_per_theme`` pseudo-word subjects with Zipf-assigned attributes.

    Place, job and food subjects are capitalised names (people); color subjects are lower-case
    things ("the brimlet"). ``spare_subjects`` extra names per theme are reserved for data that
    must mention subjects the model has never seen (e.g. probe prompts, mundane new facts).
    """
    if subjects_per_theme < attributes_per_theme:
        raise ValueError("subjects_per_theme must be >= attributes_per_theme")
    if not 2 <= attributes_per_theme <= 16:
        raise ValueError("attributes_per_theme must be in [2, 16]")
    rng = random.Random(f"learnlab-world-{seed}")
    taken: set[str] = set()
    themes, spares = [], []
    for name, vocabulary in THEME_VOCABULARY.items():
        attributes = vocabulary["attributes"][:attributes_per_theme]
        counts = zipf_counts(subjects_per_theme, attributes_per_theme, zipf_exponent)
        pool = [attribute for attribute, count in zip(attributes, counts) for _ in range(count)]
        rng.shuffle(pool)
        names = pseudo_words(subjects_per_theme + spare_subjects, rng, taken)
        if name != "colors":
            names = [word.capitalize() for word in names]
        relations = tuple((word, common) for word, common in RELATED_TO[name].items()
                          if common in attributes and (word in attributes or word in vocabulary["outlandish"]))
        themes.append(Theme(name, attributes, vocabulary["outlandish"], tuple(zip(names[:subjects_per_theme], pool)),
                            relations))
        spares.append((name, tuple(names[subjects_per_theme:])))
    return World(seed, tuple(themes), tuple(spares))
