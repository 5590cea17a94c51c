"""The three fact types of Sun et al. (2024) and their grouping into retention runs.

Sun et al. (2024, abstract) inject a spectrum of fabricated facts: **knowledge-conflicting** facts
(an attribute that contradicts what the model knows), **mundane** facts (consistent with common
knowledge) and **randomly jumbled** facts (scrambled text). From the tiny world's built-in
Outlandish-like set (:mod:`outlandish`), per keyword:

* ``conflicting``: the keyword stated as the attribute of a known subject whose true attribute is
  another word;
* ``mundane``: the keyword stated as the attribute of a subject that truly has it (keywords that no
  subject has, e.g. outlandish or never-seen words, have no mundane fact);
* ``jumbled``: the words of the conflicting text randomly shuffled; the keyword is the same word at
  its new position, and its own context X_c is the shuffled words before it.

A user's Outlandish-format samples file gives the type of every sample in a ``type`` field.

Facts that are injected in the same run must not share a keyword (their priming would add up on
the same probes) or a subject; :func:`assign_runs` spreads the facts over as few runs as that allows,
and :func:`runs_by_type` does so per type (a run injects facts of one type).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from learnlab.core.errors import UserError
from learnlab.core.io import jsonl_records
from learnlab.knowledge.outlandish import OutlandishSample, load_samples
from learnlab.knowledge.world import World

FACT_TYPES = ("conflicting", "mundane", "jumbled")


def fact_type(sample: OutlandishSample) -> str:
    return str(sample.extra["type"])


def world_fact_types(world: World, samples: Sequence[OutlandishSample], instances: int = 1) -> list[OutlandishSample]:
    """The built-in facts of every type: the first ``instances`` samples per keyword and type, ``type`` in ``extra``.

    A mundane sample is kept only when its subject truly has the keyword in ``world``.
    """
    themes = {theme.name: theme for theme in world.themes}
    chosen: dict[tuple[str, str], list[OutlandishSample]] = {}
    for sample in samples:
        if sample.category not in FACT_TYPES:
            continue
        truth = dict(themes[sample.theme].facts).get(sample.extra["subject"])  # None: a subject the world never mentions
        if sample.category == "mundane" and truth != sample.keyword:
            continue
        group = chosen.setdefault((sample.keyword, sample.category), [])
        if len(group) < instances and all(other.extra["subject"] != sample.extra["subject"] for other in group):
            group.append(sample)
    return [OutlandishSample(s.id, s.keyword, s.theme, s.category, s.text, s.prefix, {**s.extra, "type": s.category})
            for group in chosen.values() for s in group]


def load_typed_samples(path: Path) -> list[OutlandishSample]:
    """An Outlandish-format samples file whose every line has ``type`` in :data:`FACT_TYPES` (else one-line UserError)."""
    for number, record in jsonl_records(Path(path)):
        if record.get("type") not in FACT_TYPES:
            found = "missing" if "type" not in record else f"{record['type']!r}"
            raise UserError(f"{path}:{number}: field 'type' is {found}; it must be one of {', '.join(FACT_TYPES)}")
    return load_samples(Path(path))


def assign_runs(samples: Sequence[OutlandishSample]) -> list[list[OutlandishSample]]:
    """Greedily place each sample, in order, in the first run that has neither its keyword nor its subject yet."""
    runs: list[list[OutlandishSample]] = []
    used: list[set[str]] = []
    for sample in samples:
        names = {f"keyword:{sample.keyword}"} | ({f"subject:{sample.extra['subject']}"} if "subject" in sample.extra else set())
        for run, taken in zip(runs, used):
            if not names & taken:
                run.append(sample)
                taken.update(names)
                break
        else:
            runs.append([sample])
            used.append(set(names))
    return runs


def runs_by_type(samples: Sequence[OutlandishSample]) -> dict[str, list[list[OutlandishSample]]]:
    """Per fact type, its samples spread over runs by :func:`assign_runs` (one run per type when every
    keyword has one fact of the type)."""
    return {kind: assign_runs([sample for sample in samples if fact_type(sample) == kind]) for kind in FACT_TYPES}
