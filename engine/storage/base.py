"""The Store: one interface for all shared state, whatever backs it.

Values are bytes; keys are strings with a module prefix (``gl:`` for greylisting).
The embedded SQLite backend is the default; a Redis backend for several machines
implements the same protocol.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Store"]


class Store(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value, or None when missing or expired."""

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value``; it expires ``ttl`` seconds from now (never when None)."""

    async def delete(self, key: str) -> None: ...

    async def aclose(self) -> None: ...
