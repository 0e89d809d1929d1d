"""State shared across messages, processes and instances, behind one Store interface.

``open_store`` builds the configured backend: ``SqliteStore`` (the default) or
``RedisStore``. See ``engine.storage.base`` for the interface and docs/storage.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.storage.base import Store, StoreError, StoreUnavailable, WrongType
from engine.storage.config import REDIS, STORE, open_store
from engine.storage.sqlite import SqliteStore

if TYPE_CHECKING:
    from engine.storage.redis import RedisStore

__all__ = [
    "REDIS",
    "STORE",
    "RedisStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WrongType",
    "open_store",
]


def __getattr__(name: str) -> object:
    # redis-py takes 0.16 s to import: a daemon on the SQLite store, and every CLI command,
    # should not pay for it.
    if name == "RedisStore":
        from engine.storage.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
