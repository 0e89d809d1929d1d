"""What a symbol is (its policy) and what a check is (the work that may insert it)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.pipeline.stages import Stage
    from engine.task.task import Task

__all__ = ["CheckFn", "CheckSpec", "SymbolSpec", "SymbolType"]

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")

CheckFn = Callable[["Task"], Awaitable[None] | None]


class SymbolType(Enum):
    NORMAL = "normal"  # inserted by a check
    COMPOSITE = "composite"  # computed from other symbols
    INTERNAL = "internal"  # the engine's own (module errors, timeouts)


@dataclass(slots=True, frozen=True)
class SymbolSpec:
    """A named result with its default weight, group and description.

    Scores here are defaults; ``[symbols.NAME]`` in the config replaces them.
    """

    name: str
    score: float = 0.0
    group: str = "misc"
    description: str = ""
    type: SymbolType = SymbolType.NORMAL
    one_shot: bool = True  # inserting it again keeps the strongest weight instead of adding

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"symbol name {self.name!r} must be UPPER_SNAKE_CASE")


@dataclass(slots=True, frozen=True)
class CheckSpec:
    """A unit of work the executor runs: a callback and the symbols it may insert.

    ``run`` may be a plain function (CPU-only checks run inline: a nursery would add cost
    and no concurrency) or a coroutine function (started in the stage's nursery under
    ``timeout`` seconds). ``depends_on`` names other checks of the same stage that must
    finish first. ``priority`` orders PRE and POST checks, highest first.
    """

    name: str
    stage: Stage
    run: CheckFn
    produces: tuple[str, ...]
    module: str
    depends_on: tuple[str, ...] = ()
    priority: int = 0
    timeout: float | None = None
    is_async: bool = False
