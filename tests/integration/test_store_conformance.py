"""One contract, every backend: what a module may rely on from any Store.

Each test runs against the embedded SQLite store (a file in ``tmp_path``) and a real Redis
(127.0.0.1:6379, database 13, flushed before and after each test; nothing else is
touched). Expiry is wall-clock time, as in production: the TTL tests sleep a few tenths of
a second. The last tests are Redis's own (unreachable server, key layout) and the
``[store]`` configuration.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
import trio

from engine.config import Section, load_config
from engine.errors import ConfigError
from engine.storage import (
    REDIS,
    STORE,
    RedisStore,
    SqliteStore,
    Store,
    StoreUnavailable,
    WrongType,
    open_store,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from engine.config import Config

REDIS_URL = os.environ.get("MILTERD_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
TEST_DB = 13
PREFIX = "milterd-test:"
SHORT = 0.1  # a TTL that expires during the test
WAIT = 0.3  # long enough for SHORT to pass, with margin for a busy machine
LONG = 3600.0


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    where: str  # the SQLite file, or the Redis URL

    def open(self) -> Store:
        if self.name == "sqlite":
            return SqliteStore(Path(self.where))
        return RedisStore.from_url(self.where, prefix=PREFIX, timeout=5.0)


def _flush_test_db() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        # Never flush a database that is not the tests' own, whatever the URL says.
        assert client.connection_pool.connection_kwargs.get("db") == TEST_DB, REDIS_URL
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def redis_db() -> Iterator[str]:
    """The tests' own Redis database, empty before and after the test."""
    _flush_test_db()
    yield REDIS_URL
    _flush_test_db()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "store.sqlite"))
    return Backend("redis", request.getfixturevalue("redis_db"))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = backend.open()
    yield opened
    await opened.aclose()


# -- strings ------------------------------------------------------------------------------


async def test_missing_keys_read_as_empty(store: Store) -> None:
    assert await store.get("nope") is None
    assert await store.exists("nope") is False
    assert await store.delete("nope") is False
    assert await store.expire("nope", LONG) is False
    assert await store.expire("nope", None) is False
    assert await store.mget(["nope", "nada"]) == [None, None]
    assert await store.hget("nope", "f") is None
    assert await store.hgetall("nope") == {}
    assert await store.hmget_many(["nope"], ["a", "b"]) == [[None, None]]
    assert await store.lrange("nope") == []
    assert [key async for key in store.scan("nope")] == []


async def test_set_get_replace_delete(store: Store) -> None:
    await store.set("k", b"v")
    assert await store.get("k") == b"v"
    assert await store.exists("k") is True
    await store.set("k", b"w")
    assert await store.get("k") == b"w"
    assert await store.delete("k") is True
    assert await store.get("k") is None
    assert await store.exists("k") is False


async def test_values_are_arbitrary_bytes_and_keys_any_text(store: Store) -> None:
    values = {
        "all-bytes": bytes(range(256)),
        "empty": b"",
        "nul": b"\x00",
        "big": os.urandom(1 << 20),
        "clé ✓ 鍵 with spaces": b"\xff\xfe",
    }
    for key, value in values.items():
        await store.set(key, value)
    for key, value in values.items():
        assert await store.get(key) == value
    assert await store.mget(list(values)) == list(values.values())
    await store.hset("h", {"bin": bytes(range(256)), "empty": b"", "ключ": b"\x00"})
    assert await store.hgetall("h") == {"bin": bytes(range(256)), "empty": b"", "ключ": b"\x00"}


async def test_mget_keeps_order_and_duplicates(store: Store) -> None:
    await store.set("a", b"1")
    await store.set("b", b"2")
    assert await store.mget(["b", "missing", "a", "b"]) == [b"2", None, b"1", b"2"]
    assert await store.mget([]) == []


# -- expiry ---------------------------------------------------------------------------------


async def test_set_with_ttl_expires_and_set_without_ttl_clears_it(store: Store) -> None:
    await store.set("short", b"1", ttl=SHORT)
    await store.set("long", b"2", ttl=LONG)
    await store.set("cleared", b"3", ttl=SHORT)
    await store.set("cleared", b"4")  # set replaces the expiry too: never
    await store.set("fractional", b"5", ttl=0.0001)  # rounded up, never to "no expiry"
    await trio.sleep(WAIT)
    assert await store.get("short") is None
    assert await store.exists("short") is False
    assert await store.mget(["short", "long"]) == [None, b"2"]
    assert await store.get("cleared") == b"4"
    assert await store.get("fractional") is None


async def test_expire_sets_and_removes_expiry_on_any_kind(store: Store) -> None:
    await store.set("s", b"1")
    await store.hset("h", {"f": b"1"})
    await store.lpush_trim("l", b"1", maxlen=5)
    await store.set("kept", b"1", ttl=SHORT)
    for key in ("s", "h", "l"):
        assert await store.expire(key, SHORT) is True
    assert await store.expire("kept", None) is True
    await trio.sleep(WAIT)
    for key in ("s", "h", "l"):
        assert await store.exists(key) is False
    assert await store.hgetall("h") == {}
    assert await store.lrange("l") == []
    assert await store.get("kept") == b"1"
    assert await store.expire("s", LONG) is False  # gone: nothing to expire


async def test_an_expired_key_written_again_starts_empty(store: Store) -> None:
    await store.hset("h", {"old": b"1"}, ttl=SHORT)
    await store.lpush_trim("l", b"old", maxlen=5, ttl=SHORT)
    await store.incrby("c", 5, ttl=SHORT)
    await trio.sleep(WAIT)
    await store.hset("h", {"new": b"2"})
    await store.lpush_trim("l", b"new", maxlen=5)
    assert await store.incrby("c", 1) == 1
    assert await store.hgetall("h") == {"new": b"2"}
    assert await store.lrange("l") == [b"new"]


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan"), float("inf")])
async def test_a_ttl_must_be_positive_and_finite(store: Store, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.set("k", b"v", ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.incrby("k", 1, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.hset("k", {"f": b"v"}, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.hincrby("k", {"f": 1}, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.hincrby_many({"k": {"f": 1}}, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.lpush_trim("k", b"v", maxlen=1, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.expire("k", ttl)
    assert await store.exists("k") is False


# -- counters -------------------------------------------------------------------------------


async def test_counters(store: Store) -> None:
    assert await store.incrby("c") == 1
    assert await store.incrby("c", 41) == 42
    assert await store.incrby("c", -50) == -8
    assert await store.get("c") == b"-8"  # counters are decimal strings
    await store.set("c", b"7")
    assert await store.incrby("c") == 8
    await store.set("max", str(2**63 - 1).encode())
    assert await store.incrby("max", -1) == 2**63 - 2


@pytest.mark.parametrize(
    "value", [b"abc", b"1.5", b"", b" 1", b"+1", b"01", b"99999999999999999999"]
)
async def test_a_counter_must_hold_a_64_bit_integer(store: Store, value: bytes) -> None:
    await store.set("c", value)
    with pytest.raises(WrongType):
        await store.incrby("c")
    await store.hset("h", {"f": value})
    with pytest.raises(WrongType):
        await store.hincrby("h", {"f": 1})


async def test_counter_overflow_is_refused(store: Store) -> None:
    await store.set("c", str(2**63 - 1).encode())
    with pytest.raises(WrongType):
        await store.incrby("c")
    await store.hincrby("h", {"f": -(2**63) + 1})
    with pytest.raises(WrongType):
        await store.hincrby("h", {"f": -2})


async def test_counter_ttl_is_refreshed_only_when_given(store: Store) -> None:
    await store.incrby("kept", 1, ttl=SHORT)
    await store.incrby("kept", 1)  # no ttl: the expiry stays
    await store.incrby("refreshed", 1, ttl=SHORT)
    await store.incrby("refreshed", 1, ttl=LONG)
    await trio.sleep(WAIT)
    assert await store.get("kept") is None
    assert await store.get("refreshed") == b"2"


# -- hashes ---------------------------------------------------------------------------------


async def test_hashes(store: Store) -> None:
    await store.hset("h", {"a": b"1", "b": b"2"})
    await store.hset("h", {"b": b"3", "c": b"4"})  # other fields stay
    assert await store.hget("h", "a") == b"1"
    assert await store.hget("h", "b") == b"3"
    assert await store.hget("h", "zz") is None
    assert await store.hgetall("h") == {"a": b"1", "b": b"3", "c": b"4"}
    assert await store.hincrby("h", {"a": 10, "n": 2, "m": -1}) == {"a": 11, "n": 2, "m": -1}
    assert await store.hget("h", "n") == b"2"
    assert await store.exists("h") is True
    assert await store.delete("h") is True
    assert await store.hgetall("h") == {}


async def test_empty_hash_writes_do_nothing(store: Store) -> None:
    await store.hset("h", {})
    assert await store.hincrby("h", {}) == {}
    await store.hincrby_many({})
    await store.hincrby_many({"h": {}})
    assert await store.exists("h") is False


async def test_hash_ttl_is_refreshed_only_when_given(store: Store) -> None:
    await store.hset("kept", {"f": b"1"}, ttl=SHORT)
    await store.hset("kept", {"g": b"2"})
    await store.hincrby("kept", {"n": 1})
    await store.hset("refreshed", {"f": b"1"}, ttl=SHORT)
    await store.hincrby("refreshed", {"n": 1}, ttl=LONG)
    await trio.sleep(WAIT)
    assert await store.hgetall("kept") == {}
    assert await store.hgetall("refreshed") == {"f": b"1", "n": b"1"}


async def test_hmget_many_answers_per_key_and_field_in_order(store: Store) -> None:
    await store.hset("t1", {"s": b"3", "h": b"1"})
    await store.hset("t2", {"h": b"5"})
    result = await store.hmget_many(["t2", "missing", "t1", "t2"], ["s", "h"])
    assert result == [[None, b"5"], [None, None], [b"3", b"1"], [None, b"5"]]
    assert await store.hmget_many(["t1"], ["h", "h"]) == [[b"1", b"1"]]
    assert await store.hmget_many([], ["s"]) == []
    assert await store.hmget_many(["t1", "t2"], []) == [[], []]


async def test_batches_of_a_thousand_keys_in_one_call(store: Store) -> None:
    keys = [f"tok:{i:04d}" for i in range(1000)]
    await store.hincrby_many({key: {"s": i, "h": 1} for i, key in enumerate(keys)}, ttl=LONG)
    rows = await store.hmget_many([*keys, "tok:missing"], ["s", "h"])
    assert rows[:-1] == [[str(i).encode(), b"1"] for i in range(1000)]
    assert rows[-1] == [None, None]
    await store.hincrby_many({key: {"h": 1} for key in keys[::2]})
    rows = await store.hmget_many(keys[:4], ["h"])
    assert rows == [[b"2"], [b"1"], [b"2"], [b"1"]]
    for key in keys[::3]:
        await store.set(f"s:{key}", key.encode())
    got = await store.mget([f"s:{key}" for key in keys])
    assert got == [key.encode() if i % 3 == 0 else None for i, key in enumerate(keys)]


async def test_hincrby_many_ttl_applies_to_every_key(store: Store) -> None:
    await store.hincrby_many({"a": {"f": 1}, "b": {"f": 2}}, ttl=SHORT)
    await store.hincrby_many({"c": {"f": 3}})
    await trio.sleep(WAIT)
    assert await store.hmget_many(["a", "b", "c"], ["f"]) == [[None], [None], [b"3"]]


async def test_hcounters_many_reads_counters_in_order(store: Store) -> None:
    await store.hincrby_many({"t1": {"s": 3, "h": 1}, "t2": {"h": 5}, "neg": {"s": -2}})
    await store.hset("text", {"s": b"42", "h": b"-7"})  # counters written as strings
    keys = ["t2", "missing", "t1", "t2", "text", "neg"]
    assert await store.hcounters_many(keys, ["s", "h"]) == [
        (0, 5),
        (0, 0),
        (3, 1),
        (0, 5),
        (42, -7),
        (-2, 0),
    ]
    assert await store.hcounters_many(["t1"], ["h", "zz", "s"]) == [(1, 0, 3)]
    assert await store.hcounters_many([], ["s"]) == []
    assert await store.hcounters_many(["t1", "t2"], []) == [(), ()]


async def test_hcounters_many_refuses_what_is_not_a_counter(store: Store) -> None:
    await store.hset("h", {"s": b"1", "word": b"many", "big": str(2**63).encode()})
    await store.set("string", b"1")
    for fields in (["s", "word"], ["big"]):
        with pytest.raises(WrongType):
            await store.hcounters_many(["h"], fields)
    with pytest.raises(WrongType):
        await store.hcounters_many(["h", "string"], ["s"])
    assert await store.hcounters_many(["h"], ["s"]) == [(1,)]


async def test_hcounters_many_any_key_text_and_expiry(store: Store) -> None:
    odd = ["with\nnewline", "nul\x00inside", "clé ✓ 鍵", 'quote " and \\ slash', ""]
    await store.hincrby_many({key: {"f": i + 1} for i, key in enumerate(odd)})
    assert await store.hcounters_many(odd, ["f"]) == [(1,), (2,), (3,), (4,), (5,)]
    assert await store.hcounters_many(odd[2:], ["f"]) == [(3,), (4,), (5,)]
    await store.hincrby_many({"gone": {"f": 1}}, ttl=SHORT)
    await trio.sleep(WAIT)
    assert await store.hcounters_many(["gone", odd[2]], ["f"]) == [(0,), (3,)]


async def test_hincrby_many_with_shared_and_mixed_amounts(store: Store) -> None:
    shared = {"s": 1}
    batch: dict[str, dict[str, int]] = dict.fromkeys([f"t:{i}" for i in range(300)], shared)
    batch["learns"] = shared
    batch["other"] = {"h": 2, "s": -1}
    await store.hset("t:7", {"s": b"10", "x": b"text"})  # a string counter, a text field
    await store.hincrby_many(batch, ttl=LONG)
    await store.hincrby_many(batch, ttl=LONG)
    rows = await store.hcounters_many(["t:0", "t:7", "learns", "other"], ["s", "h"])
    assert rows == [(2, 0), (12, 0), (2, 0), (-2, 4)]
    assert await store.hget("t:7", "x") == b"text"


async def test_hincrby_many_refuses_a_batch_that_would_overflow(store: Store) -> None:
    await store.hincrby("top", {"f": 2**63 - 1})
    with pytest.raises(WrongType):
        await store.hincrby_many({"top": {"f": 1}})
    with pytest.raises(WrongType):
        await store.hincrby_many({"word": {"f": 1}, "top": {"f": 2}, "zz": {"f": 1}})
    assert await store.hcounters_many(["top"], ["f"]) == [(2**63 - 1,)]
    await store.hset("word", {"f": b"many"})
    one = {"f": 1}
    with pytest.raises(WrongType):
        await store.hincrby_many(dict.fromkeys(["a", "word"], one))


async def test_hincrby_many_restarts_expired_keys_and_refreshes_ttl(store: Store) -> None:
    await store.hincrby_many({"old": {"f": 5, "g": 1}, "kept": {"f": 1}}, ttl=SHORT)
    await store.hincrby_many({"kept": {"f": 1}}, ttl=LONG)
    await trio.sleep(WAIT)
    one = {"f": 1}
    await store.hincrby_many(dict.fromkeys(["old", "kept"], one), ttl=LONG)
    assert await store.hgetall("old") == {"f": b"1"}  # started afresh: no "g", f from 0
    assert await store.hgetall("kept") == {"f": b"3"}


async def test_hashes_of_any_size_and_field_names(store: Store) -> None:
    # Many and long fields (SQLite moves a long hash out of its key's row), and field
    # names that JSON must escape (SQLite keeps short hashes as JSON).
    odd = ['quo"te', "back\\slash", "new\nline", "nul\x00", "clé ✓", "", "S:alice@example.org"]
    await store.hincrby_many({"h": dict.fromkeys(odd, 1)})
    await store.hincrby("h", dict.fromkeys(odd, 1))
    assert await store.hcounters_many(["h"], odd) == [(2,) * len(odd)]
    wide = {f"field-{i:03d}": i for i in range(200)}
    for name in ("h", "fresh"):
        await store.hincrby_many({name: wide, "small": {"n": 1}}, ttl=LONG)
        await store.hset(name, {"blob": bytes(range(256)), "digits": b"007"})
        await store.hincrby(name, {"field-007": 1})
    for name in ("h", "fresh"):
        everything = await store.hgetall(name)
        assert everything["field-007"] == b"8"
        assert everything["field-199"] == b"199"
        assert everything["blob"] == bytes(range(256))
        assert everything["digits"] == b"007"
        assert await store.hget(name, "field-010") == b"10"
        rows = await store.hcounters_many([name, "small"], ["field-007", "n", "missing"])
        assert rows == [(8, 0, 0), (0, 2, 0)]
        assert await store.hmget_many([name], ["blob", "field-001"]) == [[bytes(range(256)), b"1"]]
        with pytest.raises(WrongType):
            await store.hincrby(name, {"digits": 1})  # "007" is not how Redis writes 7
    assert len(await store.hgetall("h")) == len(odd) + 202


# -- kinds ----------------------------------------------------------------------------------


async def test_using_a_key_as_another_kind_is_refused(store: Store) -> None:
    await store.set("s", b"1")
    await store.hset("h", {"f": b"1"})
    await store.lpush_trim("l", b"1", maxlen=3)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.hget("s", "f"),
        lambda: store.hgetall("s"),
        lambda: store.hset("s", {"f": b"1"}),
        lambda: store.hincrby("s", {"f": 1}),
        lambda: store.hincrby_many({"s": {"f": 1}}),
        lambda: store.hmget_many(["h", "s"], ["f"]),
        lambda: store.lpush_trim("s", b"1", maxlen=3),
        lambda: store.lrange("h"),
        lambda: store.get("h"),
        lambda: store.incrby("h"),
        lambda: store.get("l"),
        lambda: store.hget("l", "f"),
    ]
    for call in calls:
        with pytest.raises(WrongType):
            await call()
    assert await store.mget(["s", "h", "l"]) == [b"1", None, None]  # not strings: None
    assert await store.get("s") == b"1"  # the refused writes changed nothing
    assert await store.hgetall("h") == {"f": b"1"}


async def test_set_replaces_any_kind(store: Store) -> None:
    await store.hset("h", {"f": b"1"})
    await store.lpush_trim("l", b"1", maxlen=3)
    await store.set("h", b"now a string")
    await store.set("l", b"me too")
    assert await store.mget(["h", "l"]) == [b"now a string", b"me too"]
    await store.delete("h")
    await store.hset("h", {"g": b"2"})
    assert await store.hgetall("h") == {"g": b"2"}  # nothing of the old hash came back


# -- lists ----------------------------------------------------------------------------------


async def test_lpush_trim_keeps_the_newest(store: Store) -> None:
    for i in range(7):
        await store.lpush_trim("hist", f"e{i}".encode(), maxlen=5)
    assert await store.lrange("hist") == [b"e6", b"e5", b"e4", b"e3", b"e2"]
    await store.lpush_trim("hist", b"e7", maxlen=2)  # a smaller bound trims at once
    assert await store.lrange("hist") == [b"e7", b"e6"]
    with pytest.raises(ValueError, match="maxlen"):
        await store.lpush_trim("hist", b"x", maxlen=0)


async def test_lpush_trim_of_several_values_pushes_them_in_order(store: Store) -> None:
    await store.lpush_trim("hist", b"a", maxlen=4)
    await store.lpush_trim("hist", b"b", b"c", b"d", maxlen=4)  # as LPUSH: the last first
    assert await store.lrange("hist") == [b"d", b"c", b"b", b"a"]
    await store.lpush_trim("hist", b"e", b"f", b"g", maxlen=4)  # one batch trims once
    assert await store.lrange("hist") == [b"g", b"f", b"e", b"d"]
    await store.lpush_trim("hist", maxlen=4)  # nothing to push: nothing changes
    assert await store.lrange("hist") == [b"g", b"f", b"e", b"d"]


@pytest.mark.parametrize(
    ("start", "stop", "expected"),
    [
        (0, -1, [4, 3, 2, 1, 0]),
        (0, 0, [4]),
        (-1, -1, [0]),
        (1, 2, [3, 2]),
        (-2, -1, [1, 0]),
        (3, 100, [1, 0]),
        (-100, 0, [4]),
        (-100, -100, []),
        (100, 200, []),
        (2, 1, []),
        (0, -6, []),
    ],
)
async def test_lrange_indexes_like_redis(
    store: Store, start: int, stop: int, expected: list[int]
) -> None:
    for i in range(5):
        await store.lpush_trim("l", str(i).encode(), maxlen=10)
    assert await store.lrange("l", start, stop) == [str(i).encode() for i in expected]


async def test_list_ttl(store: Store) -> None:
    await store.lpush_trim("kept", b"1", maxlen=3, ttl=SHORT)
    await store.lpush_trim("kept", b"2", maxlen=3)
    await store.lpush_trim("refreshed", b"1", maxlen=3, ttl=SHORT)
    await store.lpush_trim("refreshed", b"2", maxlen=3, ttl=LONG)
    await trio.sleep(WAIT)
    assert await store.lrange("kept") == []
    assert await store.lrange("refreshed") == [b"2", b"1"]


# -- scan -----------------------------------------------------------------------------------


async def test_scan_by_prefix(store: Store) -> None:
    wanted = {f"bayes:{i}" for i in range(2500)}  # more than one batch
    await store.hincrby_many({key: {"s": 1} for key in wanted})
    await store.set("bayes:", b"the prefix itself counts")
    wanted.add("bayes:")
    for other in ("bayes", "bayer:1", "bayes;1", "gl:1", "xbayes:1"):
        await store.set(other, b"not wanted")
    await store.set("bayes:expired", b"1", ttl=SHORT)
    await trio.sleep(WAIT)
    found = [key async for key in store.scan("bayes:")]
    assert set(found) == wanted
    assert len({key async for key in store.scan("")}) == len(wanted) + 5


async def test_scan_prefix_is_literal_text(store: Store) -> None:
    keys = ["g*:1", "g[ab]:1", "g?:1", "g\\:1", "ga:1", "gx:1", "clé:1", "clf:1", "\U0010ffff:1"]
    for key in keys:
        await store.set(key, b"1")
    assert [k async for k in store.scan("g*:")] == ["g*:1"]
    assert [k async for k in store.scan("g[ab]:")] == ["g[ab]:1"]
    assert [k async for k in store.scan("g?:")] == ["g?:1"]
    assert [k async for k in store.scan("g\\")] == ["g\\:1"]
    assert [k async for k in store.scan("clé")] == ["clé:1"]
    assert [k async for k in store.scan("\U0010ffff")] == ["\U0010ffff:1"]


# -- concurrency ----------------------------------------------------------------------------


async def test_many_tasks_at_once(store: Store) -> None:
    async def worker(n: int) -> None:
        for i in range(20):
            await store.incrby("hits")
            await store.hincrby_many({"tok:a": {"s": 1}, f"tok:{n}": {"h": 1}})
            await store.lpush_trim("hist", f"{n}:{i}".encode(), maxlen=10)
            await store.set(f"own:{n}", str(i).encode())

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(worker, n)
    assert await store.get("hits") == b"1000"
    assert await store.hget("tok:a", "s") == b"1000"
    rows = await store.hmget_many([f"tok:{n}" for n in range(50)], ["h"])
    assert rows == [[b"20"]] * 50
    assert len(await store.lrange("hist")) == 10
    assert await store.mget([f"own:{n}" for n in range(50)]) == [b"19"] * 50


async def test_a_cancelled_caller_leaves_the_store_usable(store: Store) -> None:
    with trio.move_on_after(0.005):
        while True:
            await store.hincrby_many({f"k:{i}": {"f": 1} for i in range(200)})
    assert await store.incrby("after") == 1
    rows = await store.hmget_many(["k:0", "k:199"], ["f"])
    assert rows[0] == rows[1]  # each batch went in whole or not at all


_CHILD = """
import sys
from pathlib import Path

import trio

from engine.storage import RedisStore, SqliteStore

async def main(backend: str, where: str, prefix: str, rounds: int) -> None:
    store = SqliteStore(Path(where)) if backend == "sqlite" else RedisStore.from_url(where, prefix=prefix)
    await store.exists("procs:counter")  # open the file or connection before the start line
    print("ready", flush=True)
    sys.stdin.readline()  # both processes start writing together
    for i in range(rounds):
        await store.incrby("procs:counter")
        await store.hincrby_many({"procs:shared": {"a": 1, "b": 2}, f"procs:{i}": {"n": 1}})
    await store.aclose()

trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
"""


_OPENER = """
import sys
from pathlib import Path

import trio

from engine.storage import SqliteStore

async def main(path: str) -> None:
    sys.stdin.readline()  # all start together
    store = SqliteStore(Path(path))
    await store.incrby("opened")
    await store.aclose()

trio.run(main, sys.argv[1])
"""


async def test_workers_opening_a_new_sqlite_file_together_all_get_it(tmp_path: Path) -> None:
    """The supervisor starts every worker at once on a fresh data directory: the one
    that switches the new file to WAL must not make the others fail."""
    for attempt in range(3):
        path = tmp_path / f"fresh-{attempt}.sqlite"
        command = [sys.executable, "-c", _OPENER, str(path)]
        children = [
            await trio.lowlevel.open_process(command, stdin=subprocess.PIPE) for _ in range(6)
        ]
        with trio.fail_after(60):
            for child in children:
                assert child.stdin is not None
                await child.stdin.send_all(b"go\n")
            codes = [await child.wait() for child in children]
        for child in children:
            if child.stdin is not None:
                await child.stdin.aclose()
        assert codes == [0] * 6
        store = SqliteStore(path)
        assert await store.get("opened") == b"6"
        await store.aclose()


async def test_two_processes_write_the_same_counters(backend: Backend) -> None:
    rounds = 150
    command = [sys.executable, "-c", _CHILD, backend.name, backend.where, PREFIX, str(rounds)]
    children = [
        await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        with trio.fail_after(60):
            for child in children:
                assert child.stdout is not None
                said = b""
                while not said.endswith(b"\n"):
                    chunk = await child.stdout.receive_some()
                    assert chunk, f"child ended early: {said!r}"
                    said += chunk
                assert said == b"ready\n"
            for child in children:
                assert child.stdin is not None
                await child.stdin.send_all(b"go\n")
            for child in children:
                assert await child.wait() == 0
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    await stream.aclose()
    store = backend.open()
    try:
        assert await store.get("procs:counter") == str(2 * rounds).encode()
        assert await store.hgetall("procs:shared") == {
            "a": str(2 * rounds).encode(),
            "b": str(4 * rounds).encode(),
        }
        rows = await store.hmget_many([f"procs:{i}" for i in range(rounds)], ["n"])
        assert rows == [[b"2"]] * rounds
    finally:
        await store.aclose()


# -- Redis's own ----------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_redis_down_is_store_unavailable_at_once() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{_closed_port()}/{TEST_DB}", timeout=5.0)
    # Far below the 5 s timeout: a refused connection is not waited for, nor retried.
    with trio.fail_after(2):
        with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1"):
            await store.get("k")
        with pytest.raises(StoreUnavailable):
            await store.hmget_many(["a", "b"], ["s", "h"])
        with pytest.raises(StoreUnavailable):
            await store.hincrby_many({"a": {"s": 1}}, ttl=LONG)
        with pytest.raises(StoreUnavailable):
            await store.hcounters_many(["a", "b"], ["s", "h"])
    await store.aclose()


async def test_redis_that_does_not_answer_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        store = RedisStore.from_url(f"redis://127.0.0.1:{port}/{TEST_DB}", timeout=0.2)
        with trio.fail_after(5), pytest.raises(StoreUnavailable, match=r"[Tt]imeout"):
            await store.get("k")
        with trio.fail_after(5), pytest.raises(StoreUnavailable, match=r"[Tt]imeout"):
            await store.hcounters_many(["a", "b"], ["s", "h"])
        await store.aclose()


async def test_redis_batch_read_survives_a_connection_the_server_closed(redis_db: str) -> None:
    """The Bayes read writes on a pooled connection itself: one that Redis dropped (a
    restart, a CLIENT KILL, an idle timeout) is replaced and the read sent again."""
    store = RedisStore.from_url(redis_db, pool_size=1)
    await store.hincrby_many({"t1": {"s": 2, "h": 1}})
    assert await store.hcounters_many(["t1", "t2"], ["s", "h"]) == [(2, 1), (0, 0)]
    client = redis.Redis.from_url(redis_db)
    db = str(client.connection_pool.connection_kwargs.get("db", 0))
    # Only the store's own connection: the test database's client whose last command
    # was that read (other clients of this Redis are none of the test's business).
    ours = [c["id"] for c in client.client_list() if c["db"] == db and c["cmd"] == "hmget"]
    assert len(ours) == 1
    client.client_kill_filter(_id=ours[0])
    client.close()
    assert await store.hcounters_many(["t1", "t2"], ["s", "h"]) == [(2, 1), (0, 0)]
    assert await store.get("t0") is None  # the pool is healthy afterwards
    await store.aclose()


async def test_redis_key_layout(redis_db: str) -> None:
    store = RedisStore.from_url(redis_db, prefix=PREFIX)
    other = RedisStore.from_url(redis_db, prefix="other:")
    await store.set("gl:abc", b"1")
    await store.hset("bayes:t", {"s": b"1"})
    await store.lpush_trim("history", b"scan", maxlen=10)
    await other.set("gl:abc", b"2")
    client = redis.Redis.from_url(redis_db)
    try:
        assert sorted(client.keys("*")) == [
            b"milterd-test:bayes:t",
            b"milterd-test:gl:abc",
            b"milterd-test:history",
            b"other:gl:abc",
        ]
        assert client.type("milterd-test:bayes:t") == b"hash"
        assert client.type("milterd-test:history") == b"list"
        assert await store.get("gl:abc") == b"1"
        assert sorted([k async for k in store.scan("")]) == ["bayes:t", "gl:abc", "history"]
    finally:
        client.close()
        await store.aclose()
        await other.aclose()


# -- configuration --------------------------------------------------------------------------

_SCHEMA = Section({"store": STORE, "redis": REDIS})


def _config(tmp_path: Path, text: str = "", environ: dict[str, str] | None = None) -> Config:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "milterd.toml").write_text(text, encoding="utf-8")
    return load_config(etc, _SCHEMA, environ=environ or {})


async def test_open_store_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    store = open_store(_config(tmp_path), tmp_path / "data")
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "data" / "milterd.sqlite"
    await store.set("k", b"v")
    assert (tmp_path / "data" / "milterd.sqlite").is_file()
    await store.aclose()


def test_open_store_sqlite_path(tmp_path: Path) -> None:
    relative = open_store(_config(tmp_path, '[store]\npath = "sub/state.db"\n'), tmp_path)
    assert isinstance(relative, SqliteStore)
    assert relative.path == tmp_path / "sub" / "state.db"
    text = f'[store]\npath = "{tmp_path / "abs.db"}"\n'
    absolute = open_store(_config(tmp_path, text), tmp_path / "ignored")
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == tmp_path / "abs.db"


async def test_open_store_redis_from_the_environment(redis_db: str, tmp_path: Path) -> None:
    text = '[store]\nbackend = "redis"\n[redis]\nprefix = "cfg:"\n'
    store = open_store(_config(tmp_path, text, {"MILTERD_REDIS_URL": redis_db}), tmp_path)
    assert isinstance(store, RedisStore)
    await store.set("k", b"v")
    client = redis.Redis.from_url(redis_db)
    try:
        assert client.get("cfg:k") == b"v"
    finally:
        client.close()
        await store.aclose()


def test_a_bad_redis_url_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, '[redis]\nurl = "127.0.0.1:6379"\npool_size = 0\n')
    assert {problem.key for problem in caught.value.problems} == {"redis.url", "redis.pool_size"}
    assert "scheme" in str(caught.value)
