"""The engine's exception tree.

    EngineError                 anything the engine refuses or cannot do
    ├── ConfigError             bad configuration: file, line, key and why (one or many)
    └── ScanError               a scan could not produce a result at all

A module never raises out of a scan: the executor turns its failures into symbols.
Only configuration problems (at start or reload) and bugs surface as exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigProblem", "EngineError", "ScanError"]


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


@dataclass(slots=True, frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration, located as precisely as we can."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(EngineError):
    """The configuration is refused; ``problems`` lists every reason found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ScanError(EngineError):
    """A scan failed as a whole (never raised for a module's own failure)."""
