"""One contract for every StatBackend: in memory, and on the Store (SQLite and Redis).

The Redis runs use ``MILTERD_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/13``)
under a key prefix of their own, and delete only their own keys afterwards.
"""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
import trio

from engine.stats.backend import MemoryStatBackend, StatBackend
from engine.stats.classifier import BayesParams, classify
from engine.stats.store_backend import StoreStatBackend
from engine.storage import RedisStore, SqliteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from pathlib import Path

    from engine.storage import Store

REDIS_URL = os.environ.get("MILTERD_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
BIG = (1 << 64) - 1


def _redis_answers() -> bool:
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


class CountingStore:
    """A real Store, with a tally of the batched calls a backend makes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[str] = []

    async def hmget_many(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> list[list[bytes | None]]:
        self.calls.append("hmget_many")
        return await self.store.hmget_many(keys, fields)

    async def hcounters_many(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> list[tuple[int, ...]]:
        self.calls.append("hcounters_many")
        return await self.store.hcounters_many(keys, fields)

    async def hincrby_many(
        self, amounts: Mapping[str, Mapping[str, int]], ttl: float | None = None
    ) -> None:
        self.calls.append("hincrby_many")
        await self.store.hincrby_many(amounts, ttl)


@asynccontextmanager
async def opened_store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    if kind == "sqlite":
        sqlite = SqliteStore(tmp_path / "store.sqlite")
        try:
            yield sqlite
        finally:
            await sqlite.aclose()
        return
    if not _redis_answers():
        pytest.skip(f"no Redis answers at {REDIS_URL}")
    redis = RedisStore.from_url(REDIS_URL, prefix=f"milterd-stats-{uuid.uuid4().hex}:")
    try:
        yield redis
    finally:
        for key in [key async for key in redis.scan("")]:
            await redis.delete(key)
        await redis.aclose()


@pytest.fixture
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with opened_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StatBackend]:
    if request.param == "memory":
        yield MemoryStatBackend()
        return
    async with opened_store(request.param, tmp_path) as opened:
        yield StoreStatBackend(opened)


# -- the contract -------------------------------------------------------------------------


async def test_unknown_tokens_read_as_zero(backend: StatBackend) -> None:
    assert await backend.token_counts([]) == []
    assert await backend.token_counts([1, 2, BIG]) == [(0, 0)] * 3
    assert await backend.learn_counts() == (0, 0)


async def test_learn_counts_each_class(backend: StatBackend) -> None:
    await backend.learn([1, 2, BIG], is_spam=True)
    await backend.learn([2, 3], is_spam=False)
    await backend.learn([2], is_spam=True)
    assert await backend.token_counts([1, 2, 3, 4, BIG]) == [
        (1, 0),
        (2, 1),
        (0, 1),
        (0, 0),
        (1, 0),
    ]
    assert await backend.learn_counts() == (2, 1)


async def test_a_message_counts_a_token_once(backend: StatBackend) -> None:
    await backend.learn([7, 7, 7, 8], is_spam=True)
    assert await backend.token_counts([7, 8]) == [(1, 0), (1, 0)]
    assert await backend.learn_counts() == (1, 0)


async def test_unlearn_undoes_a_learn(backend: StatBackend) -> None:
    await backend.learn([1, 2], is_spam=True)
    await backend.learn([1, 2], is_spam=True, delta=-1)
    await backend.learn([1, 2], is_spam=False)  # relearned as ham
    assert await backend.token_counts([1, 2]) == [(0, 1), (0, 1)]
    assert await backend.learn_counts() == (0, 1)


async def test_a_stray_unlearn_never_reads_negative(backend: StatBackend) -> None:
    await backend.learn([5], is_spam=False, delta=-1)
    assert await backend.token_counts([5]) == [(0, 0)]
    assert await backend.learn_counts() == (0, 0)


async def test_users_have_their_own_statistics(backend: StatBackend) -> None:
    await backend.learn([1, 2], is_spam=True)
    await backend.learn([1], is_spam=False, user="alice@example.org")
    await backend.learn([2], is_spam=True, user="bob@example.org")
    assert await backend.token_counts([1, 2]) == [(1, 0), (1, 0)]
    assert await backend.token_counts([1, 2], user="alice@example.org") == [(0, 1), (0, 0)]
    assert await backend.token_counts([1, 2], user="bob@example.org") == [(0, 0), (1, 0)]
    assert await backend.learn_counts(user="alice@example.org") == (0, 1)
    assert await backend.learn_counts(user="carol@example.org") == (0, 0)
    assert await backend.learn_counts() == (1, 0)


async def test_the_classifier_reads_through_a_backend(backend: StatBackend) -> None:
    spammy, hammy = list(range(100, 120)), list(range(200, 220))
    for _ in range(3):
        await backend.learn(spammy, is_spam=True)
        await backend.learn(hammy, is_spam=False)
    tokens = [*spammy[:15], 999]
    spam_learns, ham_learns = await backend.learn_counts()
    counts = await backend.token_counts(tokens)
    result = classify(tokens, counts, spam_learns, ham_learns, BayesParams(min_learns=3))
    assert result.tokens_used == 15
    assert result.probability is not None
    assert result.probability > 0.99


# -- the Store backend --------------------------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "redis"], indirect=True)
async def test_one_round_trip_per_call(store: Store) -> None:
    spy = CountingStore(store)
    backend = StoreStatBackend(spy)  # type: ignore[arg-type]
    tokens = list(range(1000))
    await backend.learn(tokens, is_spam=True)
    assert spy.calls == ["hincrby_many"]
    assert len(await backend.token_counts(tokens)) == 1000
    assert await backend.learn_counts() == (1, 0)
    assert spy.calls == ["hincrby_many", "hcounters_many", "hcounters_many"]


@pytest.mark.parametrize("store", ["sqlite", "redis"], indirect=True)
async def test_key_layout(store: Store) -> None:
    backend = StoreStatBackend(store)
    await backend.learn([0xFF], is_spam=True)
    await backend.learn([0xFF], is_spam=False, user="alice@example.org")
    assert backend.key(0xFF) == "bayes:t:00000000000000ff"
    assert await store.hgetall("bayes:t:00000000000000ff") == {
        "S": b"1",
        "H:alice@example.org": b"1",
    }
    assert await store.hgetall("bayes:learns") == {"S": b"1", "H:alice@example.org": b"1"}


@pytest.mark.parametrize("store", ["sqlite", "redis"], indirect=True)
async def test_tokens_expire_after_their_last_learn(store: Store) -> None:
    # Wall-clock expiry, as in production; margins of 0.2 s or more for a busy machine.
    backend = StoreStatBackend(store, token_ttl=1.0)
    forever = StoreStatBackend(store, prefix="other:", token_ttl=None)
    await backend.learn([1, 2], is_spam=True)
    await forever.learn([1], is_spam=False)
    await trio.sleep(0.6)
    await backend.learn([2], is_spam=True)  # refreshes token 2 and the learn counter
    await trio.sleep(0.6)
    # Token 1 expired at 1.0 s; token 2 and the counter live until 1.6 s.
    assert await backend.token_counts([1, 2]) == [(0, 0), (2, 0)]
    assert await backend.learn_counts() == (2, 0)
    assert await forever.token_counts([1]) == [(0, 1)]


def test_token_ttl_is_checked() -> None:
    with pytest.raises(ValueError, match="token_ttl"):
        StoreStatBackend(MemoryStatBackend(), token_ttl=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["bayes:", "a,b:"])
def test_keys_match_the_key_of_each_token(prefix: str) -> None:
    backend = StoreStatBackend(MemoryStatBackend(), prefix=prefix)  # type: ignore[arg-type]
    tokens = [0, 0xFF, BIG, 0x0123456789ABCDEF, 1 << 63]
    assert backend.keys(tokens) == [backend.key(t) for t in tokens]
    assert backend.keys([]) == []
