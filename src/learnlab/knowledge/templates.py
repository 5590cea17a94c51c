"""The sentence templates of the tiny world's texts: facts, list clauses, narratives and filler.

Every fact template ends with the attribute and a full stop, so its prompt is the text before
`` {attribute}.`` (:func:`prompt_of`). Within a theme, the words between subject and attribute
differ between all templates, list clauses and narratives (see :mod:`corpus` for why).
"""

from __future__ import annotations

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
