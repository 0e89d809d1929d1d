"""The SQLite store's own layout: short hashes inline in their key's row, long ones in
``hash``, layout 1 files carried over, the expiry sweep, and batches that are all or
nothing (what the conformance suite cannot see from outside)."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

import pytest
import trio

from engine.storage import SqliteStore, WrongType

if TYPE_CHECKING:
    from pathlib import Path


def rows(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        found = db.execute(sql, params).fetchall()
    db.close()
    return found


async def test_short_hashes_live_in_their_keys_row(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path)
    one = {"S": 1}
    await store.hincrby_many(dict.fromkeys(["bayes:t:01", "bayes:t:02"], one), ttl=3600)
    await store.hset("mixed", {"n": b"42", "blob": b"\x00\xff", "odd": b"007"})
    await store.aclose()
    assert rows(path, "SELECT value FROM keys WHERE key = 'bayes:t:01'") == [('{"S":1}',)]
    (mixed,) = rows(path, "SELECT value FROM keys WHERE key = 'mixed'")
    assert json.loads(str(mixed[0])) == {"n": 42, "blob": "00ff", "odd": "303037"}
    assert rows(path, "SELECT count(*) FROM hash") == [(0,)]


async def test_a_hash_that_grows_long_moves_to_the_hash_table(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path)
    await store.hincrby("h", {"first": 1})
    await store.hincrby_many({"h": {f"field-{i:03d}": i for i in range(100)}})
    await store.hincrby_many({"h": {"first": 1}})
    assert rows(path, "SELECT value FROM keys WHERE key = 'h'") == [(None,)]
    assert rows(path, "SELECT count(*) FROM hash WHERE key = 'h'") == [(101,)]
    assert await store.hcounters_many(["h"], ["first", "field-099"]) == [(2, 99)]
    assert await store.hget("h", "field-050") == b"50"
    await store.delete("h")
    assert rows(path, "SELECT count(*) FROM hash") == [(0,)]
    await store.aclose()


async def test_a_refused_batch_changes_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    await store.set("string", b"1")
    await store.hincrby("top", {"f": 2**63 - 1})
    one = {"f": 1}
    for batch in ({"a": one, "string": one, "b": one}, {"a": one, "top": one, "b": one}):
        with pytest.raises(WrongType):
            await store.hincrby_many(batch, ttl=60)
        assert await store.hcounters_many(["a", "b", "top"], ["f"]) == [(0,), (0,), (2**63 - 1,)]
    await store.aclose()


async def test_a_layout_1_file_is_read_and_written(tmp_path: Path) -> None:
    """Layout 1 kept every hash's fields in ``hash`` and indexed the expiry."""
    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE keys (key TEXT PRIMARY KEY, kind INTEGER NOT NULL, value BLOB,"
            " expires REAL) WITHOUT ROWID;"
            "CREATE INDEX keys_expires ON keys (expires) WHERE expires IS NOT NULL;"
            "CREATE TABLE hash (key TEXT NOT NULL, field TEXT NOT NULL, value BLOB NOT NULL,"
            " PRIMARY KEY (key, field)) WITHOUT ROWID;"
            "CREATE TABLE list (key TEXT NOT NULL, seq INTEGER NOT NULL, value BLOB NOT NULL,"
            " PRIMARY KEY (key, seq)) WITHOUT ROWID;"
            "INSERT INTO keys VALUES ('bayes:t:01', 1, NULL, NULL), ('gl:x', 0, x'01', NULL);"
            "INSERT INTO hash VALUES ('bayes:t:01', 'S', 3), ('bayes:t:01', 'H', x'37');"
            "PRAGMA user_version = 1;"
        )
    db.close()
    store = SqliteStore(path)
    assert await store.hcounters_many(["bayes:t:01", "bayes:t:02"], ["S", "H"]) == [(3, 7), (0, 0)]
    one = {"S": 1}
    await store.hincrby_many(dict.fromkeys(["bayes:t:01", "bayes:t:02"], one))
    assert await store.hgetall("bayes:t:01") == {"S": b"4", "H": b"7"}
    assert await store.hgetall("bayes:t:02") == {"S": b"1"}
    assert await store.get("gl:x") == b"\x01"
    await store.aclose()
    assert rows(path, "PRAGMA user_version") == [(2,)]
    assert rows(path, "SELECT name FROM sqlite_master WHERE type = 'index'") == []


async def test_the_sweep_goes_round_the_whole_table(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path)
    for i in range(30):
        await store.set(f"k:{i:02d}", b"1", ttl=0.05 if i % 3 else 3600)
    await trio.sleep(0.1)
    assert await store.purge_expired(limit=7) == 7
    assert await store.purge_expired(limit=7) == 7
    assert await store.purge_expired() == 6  # then round again from the first key
    assert rows(path, "SELECT count(*) FROM keys") == [(10,)]
    assert await store.purge_expired() == 0
    await store.aclose()
