"""The embedded Store on a real SQLite file: what only SQLite has (the shared contract is in
test_store_conformance.py)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest
import trio

from engine.storage import SqliteStore, StoreUnavailable

if TYPE_CHECKING:
    from pathlib import Path


def _rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    db.close()
    return count


async def test_two_stores_share_one_file(tmp_path: Path) -> None:
    """Worker processes each open the file; what one writes the other reads."""
    first, second = SqliteStore(tmp_path / "s.sqlite"), SqliteStore(tmp_path / "s.sqlite")
    await first.set("k", b"v")
    assert await second.get("k") == b"v"
    await first.aclose()
    await second.aclose()


async def test_the_file_is_in_wal_mode_with_its_directory_created(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "new" / "dir" / "s.sqlite")
    await store.set("k", b"v")
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    await store.aclose()


async def test_a_writer_waits_for_another_process_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path, busy_timeout=0.2)
    await store.set("k", b"1")
    other = sqlite3.connect(path, isolation_level=None)  # another process, holding the lock
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailable, match="locked"):
        await store.set("k", b"2")
    assert await store.get("k") == b"1"  # readers are not blocked by a writer (WAL)
    other.execute("ROLLBACK")
    other.close()
    await store.set("k", b"3")
    assert await store.get("k") == b"3"
    await store.aclose()


async def test_an_unusable_path_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    store = SqliteStore(tmp_path / "file" / "s.sqlite")  # its directory is a file
    with pytest.raises(StoreUnavailable, match=r"s\.sqlite"):
        await store.get("k")
    await store.aclose()


async def test_expired_keys_are_purged_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path)
    for i in range(10):
        await store.set(f"short:{i}", b"1", ttl=0.05)
        await store.hset(f"hash:{i}", {"a": b"1", "b": b"2"}, ttl=0.05)
        await store.lpush_trim(f"list:{i}", b"1", maxlen=3, ttl=0.05)
    await store.set("long", b"2", ttl=3600)
    await trio.sleep(0.1)  # real time: expiry is wall-clock based, like the records it guards
    assert _rows(path, "keys") == 31  # invisible, not yet deleted
    assert await store.purge_expired(limit=25) == 25
    assert await store.purge_expired() == 5
    assert (_rows(path, "keys"), _rows(path, "hash"), _rows(path, "list")) == (1, 0, 0)
    assert await store.get("long") == b"2"
    await store.aclose()


async def test_writes_purge_on_their_own(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path)
    for i in range(10):
        await store.set(f"short:{i}", b"1", ttl=0.05)
    await trio.sleep(0.1)
    await store.hincrby_many({f"tok:{i}": {"s": 1} for i in range(1000)})  # 1000 keys written
    assert _rows(path, "keys") == 1000
    await store.aclose()


async def test_the_first_layout_is_carried_over(tmp_path: Path) -> None:
    """Greylisting's records from the first, strings-only layout survive the upgrade."""
    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL)")
        db.execute("INSERT INTO kv VALUES ('gl:kept', x'0102', NULL)")
        db.execute("INSERT INTO kv VALUES ('gl:expired', x'03', 1.0)")
    db.close()
    store = SqliteStore(path)
    assert await store.get("gl:kept") == b"\x01\x02"
    assert await store.get("gl:expired") is None
    await store.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'kv'").fetchone() is None
    db.close()
