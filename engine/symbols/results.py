"""Symbols inserted during a scan, and how they add up to a score."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.symbols.spec import SymbolSpec

__all__ = ["ScoredSymbol", "SymbolHit", "score_symbols"]


@dataclass(slots=True)
class SymbolHit:
    """A symbol as a check inserted it: a dynamic weight (multiplies the score) and options."""

    name: str
    weight: float = 1.0
    options: list[str] = field(default_factory=list)
    hidden: bool = False  # counted in the score, not listed (composite policy remove_symbol)


@dataclass(slots=True, frozen=True)
class ScoredSymbol:
    """A symbol in the result: what it added (``score``) and its configured weight."""

    name: str
    score: float
    metric_score: float
    description: str
    group: str
    options: tuple[str, ...]


def score_symbols(
    hits: Mapping[str, SymbolHit],
    specs: Mapping[str, SymbolSpec],
    group_max: Mapping[str, float],
) -> tuple[float, dict[str, ScoredSymbol]]:
    """Σ score * weight, with each group's positive total capped at its ``max_score``.

    Symbols are taken in insertion order, so a cap trims the contributions that came
    last; negative scores are never capped (a whitelist must always be able to pull a
    score down).
    """
    total = 0.0
    group_sum: dict[str, float] = {}
    out: dict[str, ScoredSymbol] = {}
    for name, hit in hits.items():
        spec = specs[name]
        contribution = spec.score * hit.weight
        if not math.isfinite(contribution):
            contribution = 0.0
        cap = group_max.get(spec.group)
        if cap is not None and contribution > 0:
            used = group_sum.get(spec.group, 0.0)
            contribution = max(0.0, min(contribution, cap - used))
            group_sum[spec.group] = used + contribution
        total += contribution
        if hit.hidden:
            continue
        out[name] = ScoredSymbol(
            name,
            round(contribution, 6),
            spec.score,
            spec.description,
            spec.group,
            tuple(hit.options),
        )
    return round(total, 6), out
