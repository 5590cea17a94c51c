"""Claims: a paper's statement, its source and value, and the test that measured numbers must pass.

A claim's test is built from small checks (:func:`at_most`, :func:`within`, ...) so that the
criterion shown in the report is generated from the very check that decides the verdict.
A check whose metric is missing from the measured values yields the verdict ``not-run``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PASS, FAIL, NOT_RUN = "pass", "fail", "not-run"


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True)
class Check:
    """One comparison of a measured metric against a bound taken from the paper (or a reference computation)."""

    metric: str
    op: str
    bound: float | None = None
    reference: float | None = None
    tolerance: float | None = None

    def describe(self) -> str:
        if self.op == "<=":
            return f"{self.metric} <= {_number(self.bound)}"
        if self.op == ">=":
            return f"{self.metric} >= {_number(self.bound)}"
        if self.op == ">":
            return f"{self.metric} > {_number(self.bound)}"
        if self.op == "<":
            return f"{self.metric} < {_number(self.bound)}"
        if self.op == "within":
            return f"|{self.metric} / {_number(self.reference)} - 1| <= {_number(self.tolerance)}"
        return f"{self.metric} is true"

    def evaluate(self, measured: Mapping[str, Any]) -> bool | None:
        value = measured.get(self.metric)
        if value is None:
            return None
        if self.op == "true":
            return bool(value)
        value = float(value)
        if not math.isfinite(value):
            return False
        if self.op == "<=":
            return value <= self.bound
        if self.op == ">=":
            return value >= self.bound
        if self.op == ">":
            return value > self.bound
        if self.op == "<":
            return value < self.bound
        return abs(value / self.reference - 1.0) <= self.tolerance


def at_most(metric: str, bound: float) -> Check:
    return Check(metric, "<=", bound=bound)


def at_least(metric: str, bound: float) -> Check:
    return Check(metric, ">=", bound=bound)


def above(metric: str, bound: float) -> Check:
    """Strictly greater: ``measured > bound`` (for statements such as "exceeds")."""
    return Check(metric, ">", bound=bound)


def below(metric: str, bound: float) -> Check:
    """Strictly less: ``measured < bound``."""
    return Check(metric, "<", bound=bound)


def within(metric: str, reference: float, tolerance: float) -> Check:
    """Relative tolerance: ``|measured / reference - 1| <= tolerance``."""
    return Check(metric, "within", reference=reference, tolerance=tolerance)


def is_true(metric: str) -> Check:
    return Check(metric, "true")


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, checked against measured values.

    ``checks`` must all hold for the verdict ``pass``. ``paper_value`` is what the paper (or the
    reference computation) reports, as text for the report.
    """

    id: str
    statement: str
    source: str
    paper_value: str
    checks: tuple[Check, ...]

    def metrics(self) -> list[str]:
        return [check.metric for check in self.checks]

    def criterion(self) -> str:
        return " and ".join(check.describe() for check in self.checks)

    def evaluate(self, measured: Mapping[str, Any] | None) -> dict[str, Any]:
        """The claim's record for ``results.json``: its text, measured values and verdict."""
        measured = measured or {}
        outcomes = [check.evaluate(measured) for check in self.checks]
        if any(outcome is None for outcome in outcomes):
            verdict = NOT_RUN
        else:
            verdict = PASS if all(outcomes) else FAIL
        return {
            "id": self.id,
            "statement": self.statement,
            "source": self.source,
            "paper_value": self.paper_value,
            "criterion": self.criterion(),
            "measured": {name: measured.get(name) for name in self.metrics()},
            "verdict": verdict,
        }


def format_measured(values: Mapping[str, Any]) -> str:
    """Compact text of a claim's measured values for tables."""
    parts = []
    for name, value in values.items():
        parts.append(f"{name}={'—' if value is None else _number(value)}")
    return ", ".join(parts)
