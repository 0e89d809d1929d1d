"""The embedded Store: one SQLite file in the data directory.

Theory of operation
-------------------
- **Several processes.** Every worker process opens the file itself. The WAL journal lets
  readers run while one process writes; writers queue on SQLite's lock for up to the busy
  timeout (then ``StoreUnavailable``) instead of failing with "database is locked". Every
  read-modify-write runs in ``BEGIN IMMEDIATE``, which takes the write lock up front: a
  deferred transaction that read first and then tried to write could meet a newer snapshot
  and fail at once, without the busy timeout helping. ``synchronous=NORMAL``: a power cut
  may lose the last transactions, never the file.
- **Threads.** SQLite calls block, so they run in a worker thread, one at a time per store,
  behind the store's capacity limiter; the single connection is never used by two threads
  at once. A cancelled caller waits for its call to finish (it is short), so a transaction
  is never left half done on the shared connection.
- **Layout.** ``keys`` has one row per key: its kind, its value (strings only) and its
  expiry (Unix time). Hash fields live in ``hash``, list entries in ``list``. A counter
  written by ``incrby`` is an SQLite integer and reads back as ASCII decimal bytes, the
  same bytes Redis gives.
- **Expiry.** Readers ignore rows whose expiry has passed, so a key is gone the moment it
  expires. A writer that meets an expired key drops it and its fields first (so they
  cannot come back). The space is reclaimed in batches: after every ``_PURGE_EVERY`` keys
  written by this process, up to twice that many expired keys are deleted, so the purge
  keeps ahead of the writes that create keys.
- **Batches** (``mget``, ``hmget_many``, ``hincrby_many``) are one transaction each.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar

import trio

from engine.storage.base import StoreUnavailable, WrongType, check_maxlen, check_ttl

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
    from pathlib import Path

__all__ = ["SqliteStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_PURGE_EVERY: Final = 1000
_SCAN_BATCH: Final = 1000
# Rows per IN (...) list: far below SQLite's variable limit (32766 by default since 3.32).
_CHUNK: Final = 500
_SCHEMA_VERSION: Final = 1
_STRING, _HASH, _LIST = 0, 1, 2
_INT64 = range(-(2**63), 2**63)
# What Redis accepts as an integer (string2ll): no sign but '-', no leading zero, no spaces.
_INTEGER = re.compile(rb"-?[1-9][0-9]{0,18}|0")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY,
    kind INTEGER NOT NULL,
    value BLOB,
    expires REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_expires ON keys (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS hash (
    key TEXT NOT NULL,
    field TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (key, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS list (
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (key, seq)
) WITHOUT ROWID;
"""

Row = tuple[int, bytes | int | None, float | None]  # kind, value, expires


def _as_bytes(value: bytes | int) -> bytes:
    return str(value).encode() if isinstance(value, int) else bytes(value)


def _as_int(value: bytes | int | None, what: str) -> int:
    if value is None or isinstance(value, int):
        return value or 0
    if _INTEGER.fullmatch(value) is None or int(value) not in _INT64:
        raise WrongType(f"{what} does not hold an integer")
    return int(value)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: no bound).

    UTF-8 sorts bytewise in code point order, so this bounds an index range scan."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code <= 0x10FFFF:
            return "".join(chars) + chr(0xE000 if 0xD800 <= code <= 0xDFFF else code)
    return None


class SqliteStore:
    """The ``Store`` on an SQLite file (created with its directory when missing).

    Args:
        path: the database file; every process that opens it shares its state.
        busy_timeout: seconds a write waits for another process's write lock before
            raising ``StoreUnavailable``.
    """

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._written = 0  # keys written by this process since the last purge

    # -- plumbing -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                check_same_thread=False,  # one thread at a time, by the limiter
                isolation_level=None,  # we BEGIN and COMMIT ourselves
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                # IMMEDIATE: processes opening a new file together create it one at a time.
                with _transaction(db, immediate=True):
                    if db.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
                        _create_schema(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                return fn(self._connect())
            except (sqlite3.OperationalError, OSError) as exc:
                # Locked past the busy timeout, disk full or I/O error, unwritable directory:
                # nothing the caller did wrong, and it may work next time.
                raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def _write(self, fn: Callable[[sqlite3.Connection, float], T], keys: int = 1) -> T:
        """Run ``fn(db, now)`` in one ``BEGIN IMMEDIATE`` transaction; purge now and then."""
        self._written += keys
        purge = self._written >= _PURGE_EVERY
        if purge:
            self._written = 0

        def write(db: sqlite3.Connection) -> T:
            with _transaction(db, immediate=True):
                result = fn(db, time.time())
            if purge:
                try:
                    _purge(db, 2 * _PURGE_EVERY)
                except sqlite3.OperationalError as exc:
                    # The caller's write is committed: a purge that met a busy file waits
                    # for the next round rather than failing it.
                    log.debug("sqlite store %s: purge skipped: %s", self.path, exc)
            return result

        return await self._run(write)

    async def _read(self, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run ``fn(db, now)`` on one snapshot of the database."""

        def read(db: sqlite3.Connection) -> T:
            with _transaction(db):
                return fn(db, time.time())

        return await self._run(read)

    # -- strings and counters -------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        def get(db: sqlite3.Connection, now: float) -> bytes | None:
            row = _live(db, key, now)
            if row is None:
                return None
            _expect(row, _STRING, key)
            assert row[1] is not None
            return _as_bytes(row[1])

        return await self._read(get)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        check_ttl(ttl)

        def set_(db: sqlite3.Connection, now: float) -> None:
            _drop_children(db, key)
            db.execute(
                "INSERT OR REPLACE INTO keys (key, kind, value, expires) VALUES (?, ?, ?, ?)",
                (key, _STRING, bytes(value), None if ttl is None else now + ttl),
            )

        await self._write(set_)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        def mget(db: sqlite3.Connection, now: float) -> list[bytes | None]:
            found: dict[str, bytes] = {}
            for chunk in _chunks(keys):
                rows = db.execute(
                    f"SELECT key, value FROM keys WHERE key IN ({_marks(len(chunk))})"
                    " AND kind = ? AND (expires IS NULL OR expires > ?)",
                    (*chunk, _STRING, now),
                )
                found.update((k, _as_bytes(v)) for k, v in rows)
            return [found.get(key) for key in keys]

        return await self._read(mget) if keys else []

    async def incrby(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        check_ttl(ttl)

        def incrby(db: sqlite3.Connection, now: float) -> int:
            row = _live_for_write(db, key, now)
            if row is not None:
                _expect(row, _STRING, key)
            value = _as_int(None if row is None else row[1], key) + amount
            if value not in _INT64:
                raise WrongType(f"{key}: increment would overflow")
            expires = now + ttl if ttl is not None else None if row is None else row[2]
            db.execute(
                "INSERT OR REPLACE INTO keys (key, kind, value, expires) VALUES (?, ?, ?, ?)",
                (key, _STRING, value, expires),
            )
            return value

        return await self._write(incrby)

    # -- any kind of key ------------------------------------------------------------------

    async def delete(self, key: str) -> bool:
        def delete(db: sqlite3.Connection, now: float) -> bool:
            existed = _live_for_write(db, key, now) is not None
            _drop_children(db, key)
            db.execute("DELETE FROM keys WHERE key = ?", (key,))
            return existed

        return await self._write(delete)

    async def exists(self, key: str) -> bool:
        return await self._read(lambda db, now: _live(db, key, now) is not None)

    async def expire(self, key: str, ttl: float | None) -> bool:
        check_ttl(ttl)

        def expire(db: sqlite3.Connection, now: float) -> bool:
            if _live_for_write(db, key, now) is None:
                return False
            expires = None if ttl is None else now + ttl
            db.execute("UPDATE keys SET expires = ? WHERE key = ?", (expires, key))
            return True

        return await self._write(expire)

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        # Keyset pagination: each batch is its own short read, so a long scan never holds
        # a snapshot open (that would stop WAL checkpoints) nor the limiter between batches.
        end = _prefix_end(prefix)
        after: str | None = None
        while True:
            keys = await self._read(partial(_scan, prefix=prefix, end=end, after=after))
            for key in keys:
                yield key
            if len(keys) < _SCAN_BATCH:
                return
            after = keys[-1]

    # -- hashes ---------------------------------------------------------------------------

    async def hget(self, key: str, field: str) -> bytes | None:
        def hget(db: sqlite3.Connection, now: float) -> bytes | None:
            row = _live(db, key, now)
            if row is None:
                return None
            _expect(row, _HASH, key)
            found = db.execute(
                "SELECT value FROM hash WHERE key = ? AND field = ?", (key, field)
            ).fetchone()
            return None if found is None else _as_bytes(found[0])

        return await self._read(hget)

    async def hset(self, key: str, values: Mapping[str, bytes], ttl: float | None = None) -> None:
        check_ttl(ttl)
        if not values:
            return

        def hset(db: sqlite3.Connection, now: float) -> None:
            _open_container(db, key, _HASH, ttl, now)
            db.executemany(
                "INSERT OR REPLACE INTO hash (key, field, value) VALUES (?, ?, ?)",
                [(key, field, bytes(value)) for field, value in values.items()],
            )

        await self._write(hset)

    async def hincrby(
        self, key: str, amounts: Mapping[str, int], ttl: float | None = None
    ) -> dict[str, int]:
        check_ttl(ttl)
        if not amounts:
            return {}
        return await self._write(lambda db, now: _hincrby(db, key, amounts, ttl, now))

    async def hgetall(self, key: str) -> dict[str, bytes]:
        def hgetall(db: sqlite3.Connection, now: float) -> dict[str, bytes]:
            row = _live(db, key, now)
            if row is None:
                return {}
            _expect(row, _HASH, key)
            rows = db.execute("SELECT field, value FROM hash WHERE key = ?", (key,))
            return {field: _as_bytes(value) for field, value in rows}

        return await self._read(hgetall)

    async def hmget_many(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> list[list[bytes | None]]:
        if not keys:
            return []
        if not fields:
            return [[] for _ in keys]
        wanted = list(dict.fromkeys(fields))

        def hmget_many(db: sqlite3.Connection, now: float) -> list[list[bytes | None]]:
            values: dict[tuple[str, str], bytes] = {}
            for chunk in _chunks(keys):
                # One query per chunk: the live keys with their kind, joined to the wanted
                # fields (NULL field where the hash lacks them all).
                rows = db.execute(
                    "SELECT k.key, k.kind, h.field, h.value FROM keys AS k"
                    f" LEFT JOIN hash AS h ON h.key = k.key AND h.field IN ({_marks(len(wanted))})"
                    f" WHERE k.key IN ({_marks(len(chunk))})"
                    " AND (k.expires IS NULL OR k.expires > ?)",
                    (*wanted, *chunk, now),
                )
                for key, kind, field, value in rows:
                    if kind != _HASH:
                        raise WrongType(f"{key} does not hold a hash")
                    if field is not None:
                        values[key, field] = _as_bytes(value)
            return [[values.get((key, field)) for field in fields] for key in keys]

        return await self._read(hmget_many)

    async def hincrby_many(
        self, amounts: Mapping[str, Mapping[str, int]], ttl: float | None = None
    ) -> None:
        check_ttl(ttl)
        todo = {key: fields for key, fields in amounts.items() if fields}
        if not todo:
            return

        def hincrby_many(db: sqlite3.Connection, now: float) -> None:
            for key, fields in todo.items():
                _hincrby(db, key, fields, ttl, now)

        await self._write(hincrby_many, keys=len(todo))

    # -- lists ----------------------------------------------------------------------------

    async def lpush_trim(
        self, key: str, value: bytes, maxlen: int, ttl: float | None = None
    ) -> None:
        check_ttl(ttl)
        check_maxlen(maxlen)

        def lpush_trim(db: sqlite3.Connection, now: float) -> None:
            _open_container(db, key, _LIST, ttl, now)
            # The head has the lowest sequence number: new entries go below it.
            (head,) = db.execute("SELECT min(seq) FROM list WHERE key = ?", (key,)).fetchone()
            db.execute(
                "INSERT INTO list (key, seq, value) VALUES (?, ?, ?)",
                (key, 0 if head is None else head - 1, bytes(value)),
            )
            db.execute(
                "DELETE FROM list WHERE key = ? AND seq >= (SELECT seq FROM list WHERE key = ?"
                " ORDER BY seq LIMIT 1 OFFSET ?)",
                (key, key, maxlen),
            )

        await self._write(lpush_trim)

    async def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[bytes]:
        def lrange(db: sqlite3.Connection, now: float) -> list[bytes]:
            row = _live(db, key, now)
            if row is None:
                return []
            _expect(row, _LIST, key)
            (length,) = db.execute("SELECT count(*) FROM list WHERE key = ?", (key,)).fetchone()
            # Redis LRANGE: negative indexes from the end, then clamp to the list.
            first = max(start + length if start < 0 else start, 0)
            last = min(stop + length if stop < 0 else stop, length - 1)
            if first > last:
                return []
            rows = db.execute(
                "SELECT value FROM list WHERE key = ? ORDER BY seq LIMIT ? OFFSET ?",
                (key, last - first + 1, first),
            )
            return [bytes(value) for (value,) in rows]

        return await self._read(lrange)

    # -- maintenance and lifetime ---------------------------------------------------------

    async def purge_expired(self, limit: int = 2 * _PURGE_EVERY) -> int:
        """Delete up to ``limit`` expired keys now; return how many went. Writes do this
        on their own; this is for maintenance commands and tests."""
        return await self._run(lambda db: _purge(db, limit))

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await trio.to_thread.run_sync(db.close, limiter=self._limiter)


class _transaction:
    """``BEGIN`` (``IMMEDIATE``: take the write lock now) … ``COMMIT``, or ``ROLLBACK``."""

    def __init__(self, db: sqlite3.Connection, *, immediate: bool = False) -> None:
        self._db = db
        self._begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self) -> None:
        self._db.execute(self._begin)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:  # SQLite rolls back by itself on some errors (disk full)
            self._db.execute("ROLLBACK")


def _create_schema(db: sqlite3.Connection) -> None:
    # Not executescript: it would COMMIT the transaction that serialises first opens.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    legacy = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kv'")
    if legacy.fetchone() is not None:
        # The first layout (greylisting only) kept strings in ``kv``: carry them over.
        db.execute(
            "INSERT OR IGNORE INTO keys (key, kind, value, expires)"
            " SELECT key, 0, value, expires FROM kv"
        )
        db.execute("DROP TABLE kv")
    db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


def _live(db: sqlite3.Connection, key: str, now: float) -> Row | None:
    """The key's row when it exists and has not expired."""
    row: Row | None = db.execute(
        "SELECT kind, value, expires FROM keys WHERE key = ? AND (expires IS NULL OR expires > ?)",
        (key, now),
    ).fetchone()
    return row


def _live_for_write(db: sqlite3.Connection, key: str, now: float) -> Row | None:
    """Like ``_live``, but an expired key is dropped first, fields and all."""
    row: Row | None = db.execute(
        "SELECT kind, value, expires FROM keys WHERE key = ?", (key,)
    ).fetchone()
    if row is not None and row[2] is not None and row[2] <= now:
        _drop_children(db, key, row[0])
        db.execute("DELETE FROM keys WHERE key = ?", (key,))
        return None
    return row


def _expect(row: Row, kind: int, key: str) -> None:
    if row[0] != kind:
        name = {_STRING: "a string", _HASH: "a hash", _LIST: "a list"}[kind]
        raise WrongType(f"{key} does not hold {name}")


def _drop_children(db: sqlite3.Connection, key: str, kind: int | None = None) -> None:
    if kind in (None, _HASH):
        db.execute("DELETE FROM hash WHERE key = ?", (key,))
    if kind in (None, _LIST):
        db.execute("DELETE FROM list WHERE key = ?", (key,))


def _open_container(
    db: sqlite3.Connection, key: str, kind: int, ttl: float | None, now: float
) -> None:
    """Make sure ``key`` is a live hash or list (creating it) and apply ``ttl``."""
    row = _live_for_write(db, key, now)
    expires = None if ttl is None else now + ttl
    if row is None:
        db.execute(
            "INSERT INTO keys (key, kind, value, expires) VALUES (?, ?, NULL, ?)",
            (key, kind, expires),
        )
        return
    _expect(row, kind, key)
    if ttl is not None:
        db.execute("UPDATE keys SET expires = ? WHERE key = ?", (expires, key))


def _hincrby(
    db: sqlite3.Connection,
    key: str,
    amounts: Mapping[str, int],
    ttl: float | None,
    now: float,
) -> dict[str, int]:
    _open_container(db, key, _HASH, ttl, now)
    out: dict[str, int] = {}
    for field, amount in amounts.items():
        found = db.execute(
            "SELECT value FROM hash WHERE key = ? AND field = ?", (key, field)
        ).fetchone()
        value = _as_int(None if found is None else found[0], f"{key} {field}") + amount
        if value not in _INT64:
            raise WrongType(f"{key} {field}: increment would overflow")
        db.execute(
            "INSERT OR REPLACE INTO hash (key, field, value) VALUES (?, ?, ?)",
            (key, field, value),
        )
        out[field] = value
    return out


def _scan(
    db: sqlite3.Connection, now: float, prefix: str, end: str | None, after: str | None
) -> list[str]:
    """The next batch of live keys in ``[prefix, end)`` after ``after``, in key order."""
    sql = "SELECT key FROM keys WHERE key >= ? AND (expires IS NULL OR expires > ?)"
    params: list[object] = [prefix, now]
    if end is not None:
        sql += " AND key < ?"
        params.append(end)
    if after is not None:
        sql += " AND key > ?"
        params.append(after)
    rows = db.execute(sql + " ORDER BY key LIMIT ?", (*params, _SCAN_BATCH))
    return [key for (key,) in rows]


def _purge(db: sqlite3.Connection, limit: int) -> int:
    """Delete up to ``limit`` expired keys, with their fields, in one transaction."""
    with _transaction(db, immediate=True):
        expired = db.execute(
            "SELECT key, kind FROM keys WHERE expires <= ? LIMIT ?", (time.time(), limit)
        ).fetchall()
        for key, kind in expired:
            if kind != _STRING:
                _drop_children(db, key, kind)
        db.executemany("DELETE FROM keys WHERE key = ?", [(key,) for key, _ in expired])
    return len(expired)
