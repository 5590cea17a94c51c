"""Stepping-stone augmentation and its length-matched plain control (Sun et al. 2025, §5.2).

A stepping-stone rewrite reaches the surprising keyword "through intermediate, less surprising
concepts" (§5), so that the keyword's probability in its own context rises before
learning, and priming falls. How the paper wrote its rewrites is not specified in detail; here they are
built from the tiny world's structure, as a lead-in placed before the original text:

* if some subject of the world truly has the keyword as its attribute, the lead-in states that
  known fact ("The color of the zorbin is amber."): the keyword first appears where the model
  already expects it, and its later occurrence can be read from the context;
* otherwise (a word the world never uses, e.g. "vermilion") the lead-in relates it to the
  theme's two most common attributes ("Red and blue are colors, and so is vermilion.").

The control is a rewrite of the same token length without stepping stones: neutral corpus
sentences ("It was a quiet day.") before the original text. Both rewrites keep the original
text verbatim at their end, so memorization can be measured in the original context.

For other data, rewrites come from a file in the samples format (same ids and keywords; see
:func:`load_rewrites`) or from any function ``OutlandishSample -> OutlandishSample``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from learnlab.core.errors import UserError
from learnlab.knowledge.corpus import FACT_TEMPLATES, FILLER, fill
from learnlab.knowledge.outlandish import OutlandishSample, load_samples
from learnlab.knowledge.world import World

Rewriter = Callable[[OutlandishSample], OutlandishSample]
THEME_KINDS: dict[str, str] = {"colors": "colors", "places": "cities", "jobs": "jobs", "foods": "foods"}


def with_lead_in(sample: OutlandishSample, lead_in: str, category: str) -> OutlandishSample:
    """``sample`` with ``lead_in`` placed before its text (and its prefix), tagged with ``category``."""
    lead_in = lead_in.strip()
    prefix = f"{lead_in} {sample.prefix}" if sample.prefix else lead_in
    extra = {**sample.extra, "rewrite_of": sample.id, "lead_in": lead_in}
    return OutlandishSample(f"{sample.id}+{category}", sample.keyword, sample.theme, category,
                            f"{lead_in} {sample.text}", prefix, extra)


def world_lead_in(world: World, theme_name: str, keyword: str) -> str:
    """The stepping stones towards ``keyword`` from the world's structure (see the module docstring)."""
    theme = world.theme(theme_name)
    holders = [subject for subject, attribute in theme.facts if attribute == keyword]
    if holders:
        return fill(FACT_TEMPLATES[theme_name][0], holders[0], keyword)
    first, second = theme.attributes[:2]
    kind = THEME_KINDS.get(theme_name, theme_name)
    return fill(f"{first} and {second} are {kind}, and so is {keyword}.", "", "")


def world_stepping_stone(world: World) -> Rewriter:
    """A rewriter for samples about ``world``: the world lead-in before the original text."""

    def rewrite(sample: OutlandishSample) -> OutlandishSample:
        return with_lead_in(sample, world_lead_in(world, sample.theme, sample.keyword), "stepping-stone")

    return rewrite


def length_matched_control(sample: OutlandishSample, target: OutlandishSample, count_tokens: Callable[[str], int],
                           filler: Sequence[str] = FILLER) -> OutlandishSample:
    """``sample`` behind neutral filler sentences, as close as possible in token count to ``target``.

    Sentences are drawn (seeded by the sample id) and added while that brings the token count
    of the text closer to ``target``'s; the keyword never occurs in the lead-in.
    """
    rng = random.Random(f"learnlab-control-{sample.id}")
    goal = count_tokens(target.text)
    sentences: list[str] = []
    best = sample
    while True:
        sentences.append(rng.choice(tuple(filler)))
        candidate = with_lead_in(sample, " ".join(sentences), "plain-control")
        if abs(count_tokens(candidate.text) - goal) >= abs(count_tokens(best.text) - goal):
            return best if best is not sample else candidate
        best = candidate


def load_rewrites(path: Path, samples: Sequence[OutlandishSample]) -> dict[str, OutlandishSample]:
    """Rewrites from a samples-format JSONL file, by the id of the sample each rewrites.

    Every record's ``id`` must be a sample id and its ``keyword`` that sample's keyword (one
    line, ``file: what``, otherwise). Samples without a rewrite are simply not compared.
    """
    by_id = {sample.id: sample for sample in samples}
    rewrites = {}
    for rewrite in load_samples(path):
        original = by_id.get(rewrite.id)
        if original is None:
            raise UserError(f"{path}: rewrite id {rewrite.id!r} is not a sample id")
        if rewrite.keyword != original.keyword:
            raise UserError(f"{path}: rewrite {rewrite.id!r} has keyword {rewrite.keyword!r}, the sample has {original.keyword!r}")
        rewrites[rewrite.id] = rewrite
    return rewrites
