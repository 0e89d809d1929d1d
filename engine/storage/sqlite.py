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
- **Layout.** ``keys`` has one row per key: its kind, its value and its expiry (Unix
  time). A counter written by ``incrby`` is an SQLite integer and reads back as ASCII
  decimal bytes, the same bytes Redis gives. List entries live in ``list``.
- **Hashes are inline while they are short.** A hash's fields sit in its ``keys`` row as
  a JSON object (counters as JSON numbers, so that SQL adds to them; other values as hex
  text, since SQLite's JSON cannot carry a NUL) until the JSON grows past
  ``_INLINE_MAX``; from then on the fields live in ``hash``, one row each, and the row's
  value is NULL (as every hash of layout 1 was). Bayes keeps one two-field hash per
  token, a million of them for two thousand learned messages: with a row for the key
  and a row per field, reading 400 of them cost 1.3 ms of SQLite time and learning one
  message wrote two random pages per token; inline, 0.8 ms and one page, and the file
  is half the size (1M tokens, 2-core EPYC VM). Field names that JSON escapes (quotes,
  backslashes, control characters) work, by way of Python instead of SQL.
- **Expiry.** Readers ignore rows whose expiry has passed, so a key is gone the moment it
  expires. A writer that meets an expired key drops it and its fields first (so they
  cannot come back). The space is reclaimed by a sweep: after every ``_PURGE_EVERY`` keys
  written by this process, the next ``2 * _PURGE_EVERY`` keys in key order are looked at
  and the expired ones deleted, so the sweep goes round the table faster than writes
  fill it. An index on the expiry (layout 1) found them without looking, but cost a
  random page write for every key whose expiry a write moved, and a third of the file.
- **Batches** (``mget``, ``hmget_many``, ``hcounters_many``, ``hincrby_many``) are one
  transaction each. The two Bayes calls, with hundreds of keys, pass their keys as one
  JSON array that SQLite walks with ``json_each``: one statement, prepared once and cached,
  instead of a new ``IN (?, ?, …)`` statement for every length. ``hincrby_many`` writes
  each field of a group of keys with one ``INSERT … SELECT … ON CONFLICT DO UPDATE`` on
  the inline JSON; when a key needs more care (it expired, holds another kind, keeps its
  fields in ``hash``, is about to outgrow inline, or a counter is not an integer or would
  overflow), the batch is rolled back to a savepoint and redone key by key, which gives
  the exact answer (and the exact error).
- **Memory-mapped reads.** Bayes reads land on random pages of a file of tens of
  megabytes: reading them through ``mmap`` rather than SQLite's page cache (2 MB by
  default, one copy per process) about halved their CPU (2.1 → 1.1 ms for 420 tokens in
  layout 1), and shares one copy of the pages between the worker processes, through the
  OS page cache.
- **SQLite 3.38** or later, with its JSON functions (built in since then), is needed.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sqlite3
import time
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar, cast

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
_SCHEMA_VERSION: Final = 2
# Inline hashes up to this many characters of JSON; a longer one keeps its fields in ``hash``.
_INLINE_MAX: Final = 512
# Field names that SQLite's JSON paths can address: none that JSON escapes.
_PLAIN_FIELD: Final = re.compile(r'[^"\\\x00-\x1f]*')
# Address space, not memory: pages are mapped as they are read, and the OS may drop them.
# Beyond this size the rest of a file is read the ordinary way.
_MMAP_SIZE: Final = 1 << 30
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

Row = tuple[int, bytes | int | str | None, float | None]  # kind, value, expires


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
        self._sweep_after: str | None = None  # where this process's purge goes on from

    # -- plumbing -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            if sqlite3.sqlite_version_info < (3, 38, 0):  # json_each, json_extract, ->>
                raise sqlite3.OperationalError(f"needs SQLite 3.38+, not {sqlite3.sqlite_version}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                check_same_thread=False,  # one thread at a time, by the limiter
                isolation_level=None,  # we BEGIN and COMMIT ourselves
            )
            try:
                self._prepare(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _prepare(self, db: sqlite3.Connection) -> None:
        """WAL mode and the schema. Workers that open a new file together (the supervisor
        starts them at once) can find it locked while another switches it to WAL, a
        step SQLite's busy handler does not wait for: that is tried again, within the
        busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.01
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA mmap_size={_MMAP_SIZE}")
                # IMMEDIATE: processes opening a new file together create it one at a time.
                with _transaction(db, immediate=True):
                    if db.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
                        _create_schema(db)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)  # in the store's worker thread
            pause = min(pause * 2, 0.2)

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
                    _, self._sweep_after, _ = _sweep(db, self._sweep_after, 2 * _PURGE_EVERY)
                except sqlite3.OperationalError as exc:
                    # The caller's write is committed: a purge that met a busy file waits
                    # for the next round rather than failing it.
                    log.debug("sqlite store %s: purge skipped: %s", self.path, exc)
            return result

        return await self._run(write)

    async def _read(
        self, fn: Callable[[sqlite3.Connection, float], T], *, transaction: bool = True
    ) -> T:
        """Run ``fn(db, now)`` on one snapshot of the database (a single statement is one
        by itself: ``transaction=False``)."""

        def read(db: sqlite3.Connection) -> T:
            if not transaction:
                return fn(db, time.time())
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
            assert isinstance(row[1], bytes | int)  # a string's value is never NULL or text
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
            value = _as_int(None if row is None else cast("bytes | int", row[1]), key) + amount
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
            if row[1] is not None:
                value = _inline(row[1]).get(field)
                return None if value is None else _as_bytes(value)
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
            row = _open_container(db, key, _HASH, ttl, now)
            _write_fields(db, key, row, {field: bytes(value) for field, value in values.items()})

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
            return {field: _as_bytes(value) for field, value in _fields(db, key, row).items()}

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
                # One query per chunk: the live keys with their kind and inline fields,
                # joined to the wanted fields of the hashes kept in ``hash``.
                rows = db.execute(
                    "SELECT k.key, k.kind, k.value, h.field, h.value FROM keys AS k"
                    " LEFT JOIN hash AS h ON k.value IS NULL AND h.key = k.key"
                    f" AND h.field IN ({_marks(len(wanted))})"
                    f" WHERE k.key IN ({_marks(len(chunk))})"
                    " AND (k.expires IS NULL OR k.expires > ?)",
                    (*wanted, *chunk, now),
                )
                for key, kind, inline, field, value in rows:
                    if kind != _HASH:
                        raise WrongType(f"{key} does not hold a hash")
                    if inline is not None:
                        found = _inline(inline)
                        values.update(((key, f), _as_bytes(found[f])) for f in wanted if f in found)
                    elif field is not None:
                        values[key, field] = _as_bytes(value)
            return [[values.get((key, field)) for field in fields] for key in keys]

        return await self._read(hmget_many)

    async def hcounters_many(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> list[tuple[int, ...]]:
        if not keys:
            return []
        if not fields:
            return [() for _ in keys]
        wanted = json.dumps(list(keys), ensure_ascii=False)
        if "\\u0000" in wanted or not all(map(_PLAIN_FIELD.fullmatch, fields)):
            # SQLite's JSON would end a key at its NUL, and cannot address a field whose
            # name JSON escapes: the general road.
            rows = await self.hmget_many(keys, fields)
            return [
                tuple(_as_int(v, key) for v in row) for key, row in zip(keys, rows, strict=True)
            ]
        sql = _counters_sql(len(fields))
        params = (wanted, *fields, *[f'$."{field}"' for field in fields])
        zero = (0,) * len(fields)

        def hcounters_many(db: sqlite3.Connection, now: float) -> list[tuple[int, ...]]:
            out = [zero] * len(keys)
            rows = db.execute(sql, (*params, now))
            # Rows only for the keys that exist: most Bayes tokens of a message are unknown.
            if len(fields) == 2:  # Bayes: (spam, ham), unpacked without a list per row
                for index, kind, a, b in rows:
                    if kind != _HASH:
                        raise WrongType(f"{keys[index]} does not hold a hash")
                    if a.__class__ is not int or b.__class__ is not int:
                        a, b = _counter(a, keys[index]), _counter(b, keys[index])
                    out[index] = (a, b)
                return out
            for index, kind, *values in rows:
                if kind != _HASH:
                    raise WrongType(f"{keys[index]} does not hold a hash")
                out[index] = tuple(
                    [v if v.__class__ is int else _counter(v, keys[index]) for v in values]
                )
            return out

        # One statement is one snapshot: no BEGIN … COMMIT around it.
        return await self._read(hcounters_many, transaction=False)

    async def hincrby_many(
        self, amounts: Mapping[str, Mapping[str, int]], ttl: float | None = None
    ) -> None:
        check_ttl(ttl)
        todo = {key: fields for key, fields in amounts.items() if fields}
        if not todo:
            return
        groups = _group_amounts(todo)

        def hincrby_many(db: sqlite3.Connection, now: float) -> None:
            if groups is not None:
                db.execute("SAVEPOINT hincrby_many")
                if _hincrby_groups(db, groups, ttl, now):
                    db.execute("RELEASE hincrby_many")
                    return
                db.execute("ROLLBACK TO hincrby_many")
                db.execute("RELEASE hincrby_many")
            for key, fields in todo.items():
                _hincrby(db, key, fields, ttl, now)

        await self._write(hincrby_many, keys=len(todo))

    # -- lists ----------------------------------------------------------------------------

    async def lpush_trim(
        self, key: str, *values: bytes, maxlen: int, ttl: float | None = None
    ) -> None:
        check_ttl(ttl)
        check_maxlen(maxlen)
        if not values:
            return

        def lpush_trim(db: sqlite3.Connection, now: float) -> None:
            _open_container(db, key, _LIST, ttl, now)
            # The head has the lowest sequence number: new entries go below it.
            (head,) = db.execute("SELECT min(seq) FROM list WHERE key = ?", (key,)).fetchone()
            head = 0 if head is None else head
            db.executemany(
                "INSERT INTO list (key, seq, value) VALUES (?, ?, ?)",
                ((key, head - n, bytes(value)) for n, value in enumerate(values, 1)),
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

        def purge(db: sqlite3.Connection) -> int:
            deleted, ends = 0, 0
            while deleted < limit and ends < 2:  # twice to the end: every key seen once
                found, self._sweep_after, at_end = _sweep(
                    db, self._sweep_after, _SCAN_BATCH, limit - deleted
                )
                deleted += found
                ends += at_end
            return deleted

        return await self._run(purge)

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
    # Layout 1 indexed the expiry for the purge, which now sweeps the keys in order: the
    # index cost a random page write per token a learn touched, and a third of the file.
    db.execute("DROP INDEX IF EXISTS keys_expires")
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
) -> Row | None:
    """Make sure ``key`` is a live hash or list (creating it) and apply ``ttl``; return its
    row as it was, or None when it was created (a new hash starts inline and empty)."""
    row = _live_for_write(db, key, now)
    expires = None if ttl is None else now + ttl
    if row is None:
        db.execute(
            "INSERT INTO keys (key, kind, value, expires) VALUES (?, ?, ?, ?)",
            (key, kind, "{}" if kind == _HASH else None, expires),
        )
        return None
    _expect(row, kind, key)
    if ttl is not None:
        db.execute("UPDATE keys SET expires = ? WHERE key = ?", (expires, key))
    return row


def _inline(text: object) -> dict[str, bytes | int]:
    """The fields of an inline hash (its row's JSON text): counters as ``int``, other
    values as ``bytes``."""
    fields: dict[str, bytes | int | str] = json.loads(cast("str", text))
    for field, value in fields.items():
        if isinstance(value, str):
            fields[field] = bytes.fromhex(value)
    return cast("dict[str, bytes | int]", fields)


def _inline_json(fields: Mapping[str, bytes | int]) -> str:
    """Inline hash text: a value that is a canonical 64-bit integer (``b"42"`` too) as a
    JSON number, which SQL can add to; any other bytes as hex (JSON text cannot carry NUL
    through SQLite). Field names raw, not escaped, so that SQLite's paths find them."""
    out: dict[str, int | str] = {}
    for field, value in fields.items():
        if isinstance(value, int):
            out[field] = value
        elif _INTEGER.fullmatch(value) is not None and int(value) in _INT64:
            out[field] = int(value)
        else:
            out[field] = bytes(value).hex()
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def _fields(db: sqlite3.Connection, key: str, row: Row) -> dict[str, bytes | int]:
    """Every field of the live hash ``key`` whose row is ``row``."""
    if row[1] is not None:
        return _inline(row[1])
    return dict(db.execute("SELECT field, value FROM hash WHERE key = ?", (key,)).fetchall())


def _write_fields(
    db: sqlite3.Connection, key: str, row: Row | None, updates: Mapping[str, bytes | int]
) -> None:
    """Set ``updates`` in the hash ``key`` (``row`` as ``_open_container`` returned it),
    inline while the hash stays short, in ``hash`` from the write that makes it long."""
    if row is None or row[1] is not None:
        fields = {} if row is None else _inline(row[1])
        fields.update(updates)
        text = _inline_json(fields)
        if len(text) <= _INLINE_MAX:
            db.execute("UPDATE keys SET value = ? WHERE key = ?", (text, key))
            return
        db.execute("UPDATE keys SET value = NULL WHERE key = ?", (key,))
        updates = fields
    db.executemany(
        "INSERT OR REPLACE INTO hash (key, field, value) VALUES (?, ?, ?)",
        [(key, field, value) for field, value in updates.items()],
    )


def _hincrby(
    db: sqlite3.Connection,
    key: str,
    amounts: Mapping[str, int],
    ttl: float | None,
    now: float,
) -> dict[str, int]:
    row = _open_container(db, key, _HASH, ttl, now)
    current: Mapping[str, bytes | int]
    if row is None or row[1] is not None:
        current = {} if row is None else _inline(row[1])
    else:
        marks = _marks(len(amounts))
        current = dict(
            db.execute(
                f"SELECT field, value FROM hash WHERE key = ? AND field IN ({marks})",
                (key, *amounts),
            ).fetchall()
        )
    out: dict[str, int] = {}
    for field, amount in amounts.items():
        value = _as_int(current.get(field), f"{key} {field}") + amount
        if value not in _INT64:
            raise WrongType(f"{key} {field}: increment would overflow")
        out[field] = value
    _write_fields(db, key, row, out)
    return out


def _counter(value: bytes | str | None, key: str) -> int:
    """A counter that did not come out of SQLite as an integer: hex text from an inline
    hash, bytes from ``hash``, or nothing."""
    return _as_int(bytes.fromhex(value) if isinstance(value, str) else value, key)


@functools.cache
def _counters_sql(n_fields: int) -> str:
    """The ``hcounters_many`` query for ``n_fields`` fields: ``?1`` the keys (JSON),
    ``?2`` … the fields, then their JSON paths (``$."S"``: made once in Python, not once
    a row in SQL, 0.15 ms a 400-token read), the last parameter now. One row per live key, with its index in
    the array (``json_each``'s ``key``), its kind and the values (0 when missing), from
    the inline hash (``json_extract``) or from ``hash`` for a hash kept there."""
    values = ", ".join(
        f"coalesce(CASE WHEN k.value IS NULL"
        f" THEN (SELECT value FROM hash WHERE key = k.key AND field = ?{i + 2})"
        f" ELSE json_extract(k.value, ?{i + 2 + n_fields}) END, 0)"
        for i in range(n_fields)
    )
    return (
        f"SELECT j.key, k.kind, {values} FROM json_each(?1) AS j"
        " JOIN keys AS k ON k.key = j.value"
        f" WHERE k.expires IS NULL OR k.expires > ?{2 * n_fields + 2}"
    )


# ?1 the keys (JSON), ?2 the field, ?3 the amount, ?4 now, ?5 the expiry (ttl only).
_HINCRBY_UPSERT: Final = (
    "INSERT INTO keys (key, kind, value, expires)"
    f" SELECT value, {_HASH}, json_object(?2, ?3), {{expires}} FROM json_each(?1) WHERE true"
    " ON CONFLICT (key) DO UPDATE SET"
    " value = json_set(value, '$.\"' || ?2 || '\"',"
    " coalesce(json_extract(value, '$.\"' || ?2 || '\"'), 0) + ?3){refresh}"
    f" WHERE kind = {_HASH} AND value IS NOT NULL AND (expires IS NULL OR expires > ?4)"
    f" AND length(value) < {_INLINE_MAX}"
    " AND typeof(coalesce(json_extract(value, '$.\"' || ?2 || '\"'), 0)) = 'integer'"
    " AND typeof(coalesce(json_extract(value, '$.\"' || ?2 || '\"'), 0) + ?3) = 'integer'"
)
_UPSERT_TTL: Final = _HINCRBY_UPSERT.format(expires="?5", refresh=", expires = excluded.expires")
_UPSERT_KEEP: Final = _HINCRBY_UPSERT.format(expires="NULL", refresh="")

_Group = tuple[list[tuple[str, int]], str, int]  # (field, amount) pairs, keys as JSON, count


def _group_amounts(todo: Mapping[str, Mapping[str, int]]) -> list[_Group] | None:
    """The keys grouped by their amounts, for one statement per group and field; None when
    the batch must go key by key (an amount SQLite cannot bind, a key or a field name that
    SQLite's JSON cannot carry)."""
    by_amounts: dict[tuple[tuple[str, int], ...], list[str]] = {}
    last: Mapping[str, int] | None = None
    bucket: list[str] = []
    for key, fields in todo.items():
        if fields is not last:  # Bayes shares one mapping between all its keys: one lookup
            last = fields
            bucket = by_amounts.setdefault(tuple(fields.items()), [])
        bucket.append(key)
    groups: list[_Group] = []
    for pairs, keys in by_amounts.items():
        if any(amount not in _INT64 or not _PLAIN_FIELD.fullmatch(f) for f, amount in pairs):
            return None
        encoded = json.dumps(keys, ensure_ascii=False)
        if "\\u0000" in encoded:
            return None
        groups.append((list(pairs), encoded, len(keys)))
    return groups


def _hincrby_groups(
    db: sqlite3.Connection, groups: list[_Group], ttl: float | None, now: float
) -> bool:
    """``hincrby_many`` with a statement per group and field, for inline hashes; False
    (with part of it done: the caller rolls back) when a key needs the careful road: it
    expired, it is not a hash, it keeps its fields in ``hash``, it is about to outgrow
    inline, or a counter is not an integer or would overflow (SQLite makes a float of an
    overflowing sum)."""
    upsert = _UPSERT_KEEP if ttl is None else _UPSERT_TTL
    expires = () if ttl is None else (now + ttl,)
    for pairs, encoded, count in groups:
        for field, amount in pairs:
            written = db.execute(upsert, (encoded, field, amount, now, *expires)).rowcount
            if written != count:
                return False
    return True


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


def _sweep(
    db: sqlite3.Connection, after: str | None, examine: int, limit: int | None = None
) -> tuple[int, str | None, bool]:
    """Look at up to ``examine`` keys after ``after`` (None: from the first) in key order
    and delete the expired ones among them, at most ``limit``, with their fields, in one
    transaction. Returns how many went, where the next sweep goes on from, and whether
    this one reached the last key (the next one starts over)."""
    now = time.time()
    with _transaction(db, immediate=True):
        sql = "SELECT key, kind, expires FROM keys"
        rows = db.execute(
            sql
            + (
                " WHERE key > ? ORDER BY key LIMIT ?"
                if after is not None
                else " ORDER BY key LIMIT ?"
            ),
            (after, examine) if after is not None else (examine,),
        ).fetchall()
        expired: list[tuple[str, int]] = []
        last = after
        for key, kind, expires in rows:
            if expires is not None and expires <= now:
                if limit is not None and len(expired) == limit:
                    break  # the next sweep starts at this one
                expired.append((key, kind))
            last = key
        else:
            if len(rows) < examine:
                last = None
        for key, kind in expired:
            if kind != _STRING:
                _drop_children(db, key, kind)
        db.executemany("DELETE FROM keys WHERE key = ?", [(key,) for key, _ in expired])
    return len(expired), last, last is None
