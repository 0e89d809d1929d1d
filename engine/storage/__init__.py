"""State shared across messages and processes, behind one Store interface."""

from engine.storage.base import Store
from engine.storage.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store"]
