"""The embedded Store: one SQLite file in the data directory.

Safe with several worker processes (WAL journal, a busy timeout instead of "database is
locked" errors). SQLite calls block, so they run in a worker thread, one at a time per
process, behind the ``sqlite`` capacity limiter. Expired rows are invisible at once and
deleted in batches now and then.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["SqliteStore"]

_PURGE_EVERY = 1000


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._writes = 0

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=5.0, check_same_thread=False, isolation_level=None
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL)"
            )
            self._db = db
        return self._db

    async def _run(self, fn: object, *args: object) -> object:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)  # type: ignore[arg-type]

    async def get(self, key: str) -> bytes | None:
        def query() -> bytes | None:
            row = (
                self._connect()
                .execute(
                    "SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)",
                    (key, time.time()),
                )
                .fetchone()
            )
            return None if row is None else bytes(row[0])

        return await self._run(query)  # type: ignore[return-value]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        expires = None if ttl is None else time.time() + ttl
        self._writes += 1
        purge = self._writes % _PURGE_EVERY == 0

        def write() -> None:
            db = self._connect()
            db.execute(
                "INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)",
                (key, value, expires),
            )
            if purge:
                db.execute(
                    "DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (time.time(),)
                )

        await self._run(write)

    async def delete(self, key: str) -> None:
        await self._run(lambda: self._connect().execute("DELETE FROM kv WHERE key = ?", (key,)))

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
