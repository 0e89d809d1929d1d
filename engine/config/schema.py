"""Typed configuration schemas: every key's type, default, allowed values and meaning.

A schema is data, so ``configtest`` can check a file against it and ``configdump`` and the
docs can print it. Unknown keys are errors: a typo must never silently do nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["Key", "Section", "TableOf", "at_least", "between", "validate"]

Problem = tuple[tuple[str, ...], str]  # (key path, message)


@dataclass(frozen=True, slots=True)
class Key:
    """One setting. ``types`` are Python types as TOML decodes them (bool is not a number)."""

    types: tuple[type, ...]
    default: object
    doc: str = ""
    choices: tuple[object, ...] | None = None
    check: Callable[[object], str | None] | None = None
    required: bool = False
    # A list that later layers extend instead of replace (e.g. trusted networks that
    # local.d adds to); override.d still replaces it.
    extend: bool = False


@dataclass(frozen=True, slots=True)
class Section:
    """A table with fixed keys."""

    keys: Mapping[str, Key | Section | TableOf]
    doc: str = ""


@dataclass(frozen=True, slots=True)
class TableOf:
    """A table of tables with names chosen by the user (``[symbols.MY_SYMBOL]``)."""

    item: Section
    doc: str = ""
    default: Mapping[str, object] = field(default_factory=dict)


def at_least(low: float) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        return None if isinstance(value, int | float) and value >= low else f"must be ≥ {low}"

    return check


def between(low: float, high: float) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        ok = isinstance(value, int | float) and low <= value <= high
        return None if ok else f"must be between {low} and {high}"

    return check


def _type_name(types: tuple[type, ...]) -> str:
    names = {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_key(key: Key, value: object, path: tuple[str, ...], out: list[Problem]) -> object:
    types = key.types
    if isinstance(value, bool) and bool not in types:
        out.append((path, f"must be {_type_name(types)}, not {str(value).lower()}"))
        return key.default
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and float in types
        and int not in types
    ):
        value = float(value)
    if not isinstance(value, types):
        out.append((path, f"must be {_type_name(types)}, not {type(value).__name__} {value!r}"))
        return key.default
    if isinstance(value, float) and not math.isfinite(value):
        out.append((path, "must be a finite number"))
        return key.default
    if key.choices is not None and value not in key.choices:
        allowed = ", ".join(repr(c) for c in key.choices)
        out.append((path, f"{value!r} is not one of {allowed}"))
        return key.default
    if key.check is not None:
        message = key.check(value)
        if message:
            out.append((path, message))
            return key.default
    return value


def validate(
    schema: Section, data: Mapping[str, object], path: tuple[str, ...] = ()
) -> tuple[dict[str, object], list[Problem]]:
    """Check ``data`` against ``schema``; return it with defaults filled in, and the problems."""
    problems: list[Problem] = []
    out: dict[str, object] = {}
    for name, value in data.items():
        spec = schema.keys.get(name)
        where = (*path, name)
        if spec is None:
            known = ", ".join(sorted(schema.keys)) or "none"
            problems.append((where, f"unknown key (known here: {known})"))
            continue
        if isinstance(spec, Key):
            out[name] = _check_key(spec, value, where, problems)
        elif not isinstance(value, dict):
            problems.append((where, f"must be a table, not {type(value).__name__}"))
        elif isinstance(spec, Section):
            out[name], more = validate(spec, value, where)
            problems.extend(more)
        else:
            out[name] = _validate_table_of(spec, value, where, problems)
    for name, spec in schema.keys.items():
        if name in out or any(p[0][: len(path) + 1] == (*path, name) for p in problems):
            continue
        if isinstance(spec, Key):
            if spec.required:
                problems.append(((*path, name), "is required"))
            out[name] = spec.default
        elif isinstance(spec, Section):
            out[name], more = validate(spec, {}, (*path, name))
            problems.extend(more)
        else:
            out[name] = _validate_table_of(spec, dict(spec.default), (*path, name), problems)
    return out, problems


def _validate_table_of(
    spec: TableOf, value: Mapping[str, object], path: tuple[str, ...], problems: list[Problem]
) -> dict[str, object]:
    items: dict[str, object] = {}
    for item_name, item in value.items():
        if not isinstance(item, dict):
            problems.append(((*path, item_name), "must be a table"))
            continue
        items[item_name], more = validate(spec.item, item, (*path, item_name))
        problems.extend(more)
    return items
