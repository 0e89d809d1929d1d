"""The symbol registry: every symbol and check, validated once before the first scan.

Validation (pluggy's ``_verify_hook`` idea) happens at start and at reload, never mid-scan:
duplicate names, checks that insert undeclared symbols, dependencies on unknown checks or
on checks of another stage, and dependency cycles are all refused here.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from engine.errors import EngineError
from engine.pipeline.stages import Stage

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from engine.symbols.spec import CheckSpec, SymbolSpec

__all__ = ["RegistryError", "SymbolRegistry"]

_ORDERED_BY_PRIORITY = (Stage.PRE, Stage.POST, Stage.IDEMPOTENT)


class RegistryError(EngineError):
    """A module declared something inconsistent (a bug in the module, not in the mail)."""


class SymbolRegistry:
    def __init__(self) -> None:
        self._symbols: dict[str, SymbolSpec] = {}
        self._checks: dict[str, CheckSpec] = {}
        self._by_stage: dict[Stage, list[CheckSpec]] = {}

    @property
    def symbols(self) -> Mapping[str, SymbolSpec]:
        return self._symbols

    @property
    def checks(self) -> Mapping[str, CheckSpec]:
        return self._checks

    def add_symbol(self, spec: SymbolSpec) -> None:
        if spec.name in self._symbols:
            raise RegistryError(f"symbol {spec.name} is declared twice")
        self._symbols[spec.name] = spec

    def add_check(self, check: CheckSpec) -> None:
        if check.name in self._checks:
            raise RegistryError(f"check {check.name} is declared twice")
        self._checks[check.name] = check

    def replace_symbol(self, name: str, **changes: object) -> None:
        """Apply configured policy (score, group, description) over a declared default."""
        self._symbols[name] = dataclasses.replace(self._symbols[name], **changes)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Check the whole graph; afterwards ``checks_for`` gives each stage's run order."""
        for check in self._checks.values():
            if check.stage is Stage.COMPOSITE:
                raise RegistryError(
                    f"check {check.name}: the composite stage belongs to composite expressions; "
                    "use POST to act on the score"
                )
            for name in check.produces:
                if name not in self._symbols:
                    raise RegistryError(f"check {check.name} inserts undeclared symbol {name}")
            for dep in check.depends_on:
                other = self._checks.get(dep)
                if other is None:
                    raise RegistryError(f"check {check.name} depends on unknown check {dep}")
                if other.stage is not check.stage:
                    raise RegistryError(
                        f"check {check.name} ({check.stage.value}) depends on {dep} "
                        f"of another stage ({other.stage.value}); stages already run in order"
                    )
        self._by_stage = {stage: self._order(stage) for stage in Stage}

    def checks_for(self, stage: Stage) -> list[CheckSpec]:
        return self._by_stage.get(stage, [])

    def _order(self, stage: Stage) -> list[CheckSpec]:
        checks = [c for c in self._checks.values() if c.stage is stage]
        if stage in _ORDERED_BY_PRIORITY:
            checks.sort(key=lambda c: -c.priority)
        return _toposort(checks)


def _toposort(checks: Iterable[CheckSpec]) -> list[CheckSpec]:
    """Stable topological order: a check comes after everything it depends on."""
    pending = list(checks)
    by_name = {c.name: c for c in pending}
    done: set[str] = set()
    visiting: set[str] = set()
    order: list[CheckSpec] = []

    def visit(check: CheckSpec, path: tuple[str, ...]) -> None:
        if check.name in done:
            return
        if check.name in visiting:
            raise RegistryError("dependency cycle: " + " -> ".join((*path, check.name)))
        visiting.add(check.name)
        for dep in check.depends_on:
            visit(by_name[dep], (*path, check.name))
        visiting.discard(check.name)
        done.add(check.name)
        order.append(check)

    for check in pending:
        visit(check, ())
    return order
