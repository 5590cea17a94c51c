"""Stepping-stone rewrites, their plain control, and a keyword-stating lead-in (Sun et al. 2025, §5).

A stepping-stone rewrite reaches the surprising keyword "through intermediate, less surprising
concepts", by "adding intermediate explanatory clauses" (§5, Fig. 5), so that the keyword's
probability in its own context rises before learning, and priming falls. For the tiny world the
less surprising concept is the common attribute the keyword is a kind of (:data:`world.RELATED_TO`,
stated in the corpus both ways round), and the clause is inserted right before the keyword:

    The color of the brubel is vermilion.
    The color of the brubel is a shade of red, and one shade of red is vermilion.   (stepping stone)
    The color of the brubel is, as people say, so we heard, vermilion.               (plain control)

The **plain control** is a rewrite of the same text at the same place and of (as nearly as
possible) the same token length, with neutral words instead of the related concepts. The third
variant, the **keyword lead-in**, places a sentence that already states the keyword before the
original text (a known fact with the keyword, or "Red and blue are colors, and so is vermilion."):
the keyword can then be copied from the context, a different mechanism from stepping stones.

Only keywords the world relates to a common attribute get stepping stones. For other data,
rewrites come from a file in the samples format (same ids and keywords; see :func:`load_rewrites`)
or from any function ``OutlandishSample -> OutlandishSample``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from learnlab.core.errors import UserError
from learnlab.knowledge.outlandish import OutlandishSample, load_samples
from learnlab.knowledge.passages import RELATION_TEMPLATES
from learnlab.knowledge.templates import FACT_TEMPLATES, fill
from learnlab.knowledge.world import World

Rewriter = Callable[[OutlandishSample], OutlandishSample]
THEME_KINDS: dict[str, str] = {"colors": "colors", "places": "cities", "jobs": "jobs", "foods": "foods"}
NEUTRAL_PHRASES: tuple[str, ...] = ("as people say", "so we heard", "as the story goes", "without a doubt",
                                    "as we were told", "and this is true", "in those days", "or so they say")
STONE = "stepping-stone"
CONTROL = "plain-control"
LEAD_IN = "keyword-lead-in"


def _split_at_keyword(sample: OutlandishSample) -> tuple[str, str, str]:
    """``(prefix, article, rest)``: the text before the keyword without a trailing article "a", that
    article (``"a"`` or ``""``), and the text after the keyword."""
    rest = sample.text[len(sample.prefix):].lstrip()[len(sample.keyword):]
    prefix, article = sample.prefix, ""
    if prefix.endswith(" a") or prefix == "a":
        prefix, article = prefix[:-1].rstrip(), "a"
    return prefix, article, rest


def _rewritten(sample: OutlandishSample, before_keyword: str, category: str, **extra: str) -> OutlandishSample:
    _, _, rest = _split_at_keyword(sample)
    return OutlandishSample(f"{sample.id}+{category}", sample.keyword, sample.theme, category,
                            f"{before_keyword} {sample.keyword}{rest}", before_keyword,
                            {**sample.extra, "rewrite_of": sample.id, **extra})


def bridge_clause(theme: str, keyword: str, common: str) -> tuple[str, str]:
    """The explanatory clause that leads from ``common`` to ``keyword``: ``(clause, article)``,
    e.g. ``("a shade of red, and one shade of red is", "")`` or, for jobs,
    ``("a kind of farmer, and one kind of farmer is a", "a")``."""
    forward, reverse = RELATION_TEMPLATES[theme]
    kind = forward.split("{w} is ", 1)[1].rstrip(".").format(c=common)  # "a shade of red"
    lead = reverse.split(" {w}", 1)[0].format(c=common)  # "One shade of red is" / "One kind of farmer is a"
    return f"{kind}, and {lead[0].lower()}{lead[1:]}", "a" if lead.endswith(" a") else ""


def world_stepping_stone(world: World, sample: OutlandishSample) -> OutlandishSample | None:
    """``sample`` with the explanatory clause through the related common attribute before its keyword;
    ``None`` when the world relates the keyword to nothing."""
    common = world.theme(sample.theme).related(sample.keyword)
    if common is None:
        return None
    prefix, _, _ = _split_at_keyword(sample)
    clause, _ = bridge_clause(sample.theme, sample.keyword, common)
    return _rewritten(sample, f"{prefix} {clause}".strip(), STONE, related=common)


def plain_control(sample: OutlandishSample, target: OutlandishSample, count_tokens: Callable[[str], int],
                  phrases: Sequence[str] = NEUTRAL_PHRASES) -> OutlandishSample:
    """``sample`` with neutral phrases inserted before its keyword (where ``target`` puts its clause),
    as close as possible in token count to ``target``; the phrases never mention the keyword.

    Phrases are drawn (seeded by the sample id) and added while that brings the token count closer.
    """
    rng = random.Random(f"learnlab-control-{sample.id}")
    prefix, article, _ = _split_at_keyword(sample)
    goal = count_tokens(target.text)
    chosen: list[str] = []
    best: OutlandishSample | None = None
    while True:
        chosen.append(rng.choice(tuple(phrases)))
        before = f"{prefix}, {', '.join(chosen)}," + (f" {article}" if article else "")
        candidate = _rewritten(sample, before.lstrip(", "), CONTROL)
        if best is not None and abs(count_tokens(candidate.text) - goal) >= abs(count_tokens(best.text) - goal):
            return best
        best = candidate


def with_lead_in(sample: OutlandishSample, lead_in: str, category: str) -> OutlandishSample:
    """``sample`` with ``lead_in`` placed before its text (and its prefix), tagged with ``category``."""
    lead_in = lead_in.strip()
    prefix = f"{lead_in} {sample.prefix}" if sample.prefix else lead_in
    extra = {**sample.extra, "rewrite_of": sample.id, "lead_in": lead_in}
    return OutlandishSample(f"{sample.id}+{category}", sample.keyword, sample.theme, category,
                            f"{lead_in} {sample.text}", prefix, extra)


def world_lead_in(world: World, theme_name: str, keyword: str) -> str:
    """A sentence that states ``keyword``: a known subject's fact with it, else a list of the theme's
    two most common attributes "and so is" the keyword."""
    theme = world.theme(theme_name)
    holders = [subject for subject, attribute in theme.facts if attribute == keyword]
    if holders:
        return fill(FACT_TEMPLATES[theme_name][0], holders[0], keyword)
    first, second = theme.attributes[:2]
    kind = THEME_KINDS.get(theme_name, theme_name)
    return fill(f"{first} and {second} are {kind}, and so is {keyword}.", "", "")


def world_rewrites(world: World, sample: OutlandishSample,
                   count_tokens: Callable[[str], int]) -> list[OutlandishSample]:
    """The stepping stone, its plain control and the keyword lead-in of ``sample`` (none when the
    world relates its keyword to nothing)."""
    stone = world_stepping_stone(world, sample)
    if stone is None:
        return []
    lead = with_lead_in(sample, world_lead_in(world, sample.theme, sample.keyword), LEAD_IN)
    return [stone, plain_control(sample, stone, count_tokens), lead]


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
