"""Study configs: frozen dataclasses, presets, ``--set key=value`` overrides and config hashes.

A study's ``Config`` is a frozen dataclass (a subclass of :class:`StudyConfig`) whose fields carry
type annotations and, where a value has a valid range, a declared bound (:func:`positive`,
:func:`nonnegative`, :func:`ranged`). Bounds and ``Literal`` choices are checked in one place,
:func:`validate_fields`, when a config is built; rules that tie several fields together go in the
config's ``validate`` method. This module also turns the strings of ``--set`` into values of the
annotated types and rejects anything else with a :class:`UserError` that names the valid choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union

from learnlab.core.errors import UserError

_BOUND_KEY = "learnlab_bounds"
_TRUE = {"1", "true", "yes", "on"}


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The valid range of a config field (of each item, for a tuple field, which must not be empty)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violation(self, value: Any) -> str | None:
        """Why ``value`` is out of range, or None."""
        for bound, holds, text in (
            (self.ge, lambda b: value >= b, ">="), (self.gt, lambda b: value > b, ">"),
            (self.le, lambda b: value <= b, "<="), (self.lt, lambda b: value < b, "<"),
        ):
            if bound is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and holds(bound)):
                return f"{text} {bound:g}"
        return None


def ranged(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None) -> Any:
    """A dataclass field with ``default`` whose value (every item of a tuple) must lie in the given range."""
    return dataclasses.field(default=default, metadata={_BOUND_KEY: Bounds(ge, gt, le, lt)})


def positive(default: Any) -> Any:
    """A field whose value (every item of a tuple) must be > 0 (said as >= 1 for integers)."""
    items = default if isinstance(default, tuple) else (default,)
    if items and all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        return ranged(default, ge=1)
    return ranged(default, gt=0)


def nonnegative(default: Any) -> Any:
    """A field whose value (every item of a tuple) must be >= 0."""
    return ranged(default, ge=0)


def validate_fields(config: Any) -> None:
    """Check every declared bound and every ``Literal`` choice; raise ``ValueError`` naming the field."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        kind = hints.get(field.name)
        if typing.get_origin(kind) is Literal and value not in typing.get_args(kind):
            choices = ", ".join(map(str, typing.get_args(kind)))
            raise ValueError(f"{field.name} must be one of {choices}, got {value!r}")
        bounds = field.metadata.get(_BOUND_KEY)
        if bounds is None:
            continue
        items = value if isinstance(value, tuple) else (value,)
        if not items:
            raise ValueError(f"{field.name} must not be empty")
        for item in items:
            reason = bounds.violation(item)
            if reason is not None:
                raise ValueError(f"{field.name} must be {reason}, got {_shown(value)}")


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Base of every study ``Config``: validates declared bounds on construction, then :meth:`validate`."""

    def __post_init__(self) -> None:
        validate_fields(self)
        self.validate()

    def validate(self) -> None:
        """Rules that tie several fields together; raise ``ValueError`` with a one-line reason."""
_FALSE = {"0", "false", "no", "off"}


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_hash(config: Any, extra: Mapping[str, Any] | None = None) -> str:
    """Short stable hash of every config value (plus ``extra``, e.g. the device)."""
    payload = {"config": config_to_dict(config), "extra": dict(extra or {})}
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def _parse_scalar(text: str, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is Literal:
        choices = typing.get_args(kind)
        for choice in choices:
            if str(choice) == text:
                return choice
        raise UserError(f"--set {key}: {text!r} is not one of {', '.join(map(str, choices))}")
    if origin in (Union, types.UnionType):
        options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if type(None) in typing.get_args(kind) and text.lower() in {"none", "null", ""}:
            return None
        errors = []
        for option in options:
            try:
                return _parse_value(text, option, key)
            except UserError as error:
                errors.append(str(error))
        raise UserError(errors[0] if errors else f"--set {key}: cannot parse {text!r}")
    if kind is bool:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise UserError(f"--set {key}: expected true or false, got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f"--set {key}: expected an integer, got {text!r}") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"--set {key}: expected a number, got {text!r}") from None
    if kind is str:
        return text
    raise UserError(f"--set {key}: values of type {kind} cannot be set from the command line")


def _parse_value(text: str, kind: Any, key: str) -> Any:
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        item_kind = args[0] if args else str
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise UserError(f"--set {key}: expected a comma-separated list, got {text!r}")
        return tuple(_parse_scalar(item, item_kind, key) for item in items)
    return _parse_scalar(text, kind, key)


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """Split ``key=value`` strings; a missing ``=`` is a user error."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def apply_overrides(config: Any, overrides: Mapping[str, str]) -> Any:
    """Return ``config`` with string overrides converted to each field's annotated type.

    Unknown keys, unparsable values and values the config's own validation rejects
    (``__post_init__`` raising ``ValueError``) become :class:`UserError`.
    """
    hints = typing.get_type_hints(type(config))
    names = [field.name for field in dataclasses.fields(config)]
    changes = {}
    for key, text in overrides.items():
        if key not in hints or key not in names:
            raise UserError(f"unknown config key {key!r}; valid keys: {', '.join(names)}")
        changes[key] = _parse_value(text, hints[key], key)
    try:
        return dataclasses.replace(config, **changes)
    except (ValueError, TypeError) as error:
        raise UserError(f"invalid config: {error}") from None
