"""The embedded Store on a real SQLite file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from engine.storage import SqliteStore

if TYPE_CHECKING:
    from pathlib import Path


async def test_set_get_delete(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    assert await store.get("k") is None
    await store.set("k", b"v")
    assert await store.get("k") == b"v"
    await store.set("k", b"w")
    assert await store.get("k") == b"w"
    await store.delete("k")
    assert await store.get("k") is None
    await store.aclose()


async def test_expired_values_are_gone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    await store.set("short", b"1", ttl=0.05)
    await store.set("long", b"2", ttl=3600)
    await trio.sleep(0.1)  # real time: expiry is wall-clock based, like the records it guards
    assert await store.get("short") is None
    assert await store.get("long") == b"2"
    await store.aclose()


async def test_two_stores_share_one_file(tmp_path: Path) -> None:
    """Worker processes each open the file; what one writes the other reads."""
    first, second = SqliteStore(tmp_path / "s.sqlite"), SqliteStore(tmp_path / "s.sqlite")
    await first.set("k", b"v")
    assert await second.get("k") == b"v"
    await first.aclose()
    await second.aclose()
