"""The one error the rule language raises while parsing: it always says where."""

from __future__ import annotations

__all__ = ["ExpressionError"]


class ExpressionError(ValueError):
    """A malformed expression; ``column`` (1-based) is where it went wrong."""

    def __init__(self, message: str, column: int) -> None:
        self.message = message
        self.column = column
        super().__init__(f"{message} at column {column}")
