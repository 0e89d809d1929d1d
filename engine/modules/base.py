"""What a module is: a class that declares its symbols, its settings and its checks.

A module is one file in ``engine/modules/``::

    class Headers(Module):
        name = "headers"
        symbols = (SymbolSpec("MISSING_DATE", 1.0, "headers", "Message date is missing"),)
        settings_schema = Section({"max_received": Key((int,), 50)})

        @check(produces=("MISSING_DATE",))
        def date(self, task: Task) -> None:
            if "date" not in task.message.headers:
                task.insert_result("MISSING_DATE")

Every module's settings table (``[headers]``) gets ``enabled = true`` for free. Nothing is
global: what a module needs from outside (data directory, maps, config) reaches it
through ``ModuleContext``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

from engine.config.schema import Key, Section
from engine.pipeline.stages import Stage
from engine.symbols.spec import CheckSpec, SymbolSpec

if TYPE_CHECKING:
    from pathlib import Path

    from engine.config.loader import Config
    from engine.dns import Resolver
    from engine.maps import Maps
    from engine.storage import Store

__all__ = ["Module", "ModuleContext", "check"]

F = TypeVar("F", bound=Callable[..., object])
_CHECK_ATTR = "__milterd_check__"


@dataclass(slots=True, frozen=True)
class ModuleContext:
    """What the engine hands every module at construction."""

    config: Config
    data_dir: Path
    rules_dir: Path
    # Every map by name, the site's copy (<config_dir>/maps/) before the shipped one.
    maps: Maps
    store: Store
    dns: Resolver


@dataclass(slots=True, frozen=True)
class _CheckDecl:
    produces: tuple[str, ...]
    stage: Stage
    depends_on: tuple[str, ...]
    priority: int
    timeout: float | None


def check(
    *,
    produces: tuple[str, ...],
    stage: Stage = Stage.FILTER,
    depends_on: tuple[str, ...] = (),
    priority: int = 0,
    timeout: float | None = None,
) -> Callable[[F], F]:
    """Mark a method as a check. ``depends_on`` names checks as ``module.method``."""

    def mark(fn: F) -> F:
        setattr(fn, _CHECK_ATTR, _CheckDecl(produces, stage, depends_on, priority, timeout))
        return fn

    return mark


class Module:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    # Usually fixed per class; a module whose symbols come from configuration (regexp
    # rules) sets them per instance in ``setup``.
    symbols: tuple[SymbolSpec, ...] = ()
    settings_schema: ClassVar[Section] = Section({})

    def __init__(self, ctx: ModuleContext, settings: Mapping[str, object]) -> None:
        self.ctx = ctx
        self.settings = settings
        self.setup()

    def setup(self) -> None:
        """Load maps and precompute; raise ``ConfigError`` for bad settings."""

    @classmethod
    def schema(cls) -> Section:
        keys = dict(cls.settings_schema.keys)
        keys.setdefault("enabled", Key((bool,), True, f"Run the {cls.name} module."))
        return Section(keys, cls.description)

    def config_path(self, symbol: str) -> tuple[str, ...]:
        """Where the configuration declares ``symbol``, for error messages: the module's
        own section, unless its symbols come from elsewhere (rules)."""
        return (self.name,)

    def checks(self) -> list[CheckSpec]:
        out = []
        for attr, fn in inspect.getmembers(type(self), callable):
            decl = getattr(fn, _CHECK_ATTR, None)
            if not isinstance(decl, _CheckDecl):
                continue
            bound = getattr(self, attr)
            out.append(
                CheckSpec(
                    name=f"{self.name}.{attr}",
                    stage=decl.stage,
                    run=bound,
                    produces=decl.produces,
                    module=self.name,
                    depends_on=decl.depends_on,
                    priority=decl.priority,
                    timeout=decl.timeout,
                    is_async=inspect.iscoroutinefunction(fn),
                )
            )
        return out

    async def aclose(self) -> None:
        """Release what ``setup`` acquired (connections, files)."""
