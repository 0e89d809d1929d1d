"""Bayes through the real engine, on the embedded SQLite store and on a real Redis.

Redis runs use ``MILTERD_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/13``) under a
key prefix of their own, and delete only their own keys afterwards. The engines hold the
Bayes module and a test module that inserts what a message asks for (``X-Insert``),
forces an action (``X-Force``) or fails (``X-Crash``), so the score is the test's to set.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from engine import Action, Engine, Envelope, ScanRequest
from engine.modules import Module, check
from engine.modules.bayes import Bayes
from engine.pipeline.stages import Stage
from engine.stats.store_backend import StoreStatBackend
from engine.storage import RedisStore, StoreUnavailable
from engine.symbols import SymbolSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from engine.task import Task

REDIS_URL = os.environ.get("MILTERD_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")

SPAM_WORDS = [
    *("cheap", "pills", "discount", "pharmacy", "offer", "limited", "time", "click", "here"),
    *("buy", "now", "viagra", "replica", "watches", "winner", "prize", "claim", "casino"),
    *("bonus", "unsubscribe", "guaranteed", "income"),
]
HAM_WORDS = [
    *("meeting", "agenda", "project", "report", "quarterly", "review", "schedule", "team"),
    *("lunch", "notes", "release", "patch", "build", "server", "deploy", "budget"),
    *("minutes", "friday", "thanks", "regards"),
]
NEW_WORDS = [
    *("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"),
    *("juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"),
]


class Scorer(Module):
    """``X-Insert: BIG NEG`` inserts symbols, ``X-Force: reject`` forces the action from a
    post-filter, ``X-Crash: yes`` makes a check fail (``ENGINE_MODULE_ERROR``)."""

    name = "scorer"
    symbols = (
        SymbolSpec("ONE", 1.0, "test", "One point"),
        SymbolSpec("BIG", 10.0, "test", "Ten points"),
        SymbolSpec("NEG", -3.0, "test", "Minus three"),
    )

    @check(produces=("ONE", "BIG", "NEG"))
    def insert(self, task: Task) -> None:
        if task.message.headers.get("x-crash"):
            raise RuntimeError("asked to fail")
        for name in (task.message.headers.get("x-insert") or "").split():
            task.insert_result(name)

    @check(produces=(), stage=Stage.POST)
    def force(self, task: Task) -> None:
        value = task.message.headers.get("x-force")
        if value:
            task.force_action(Action.parse(value), self.name)


def message(words: tuple[str, ...] | list[str], seed: int, *headers: str, n: int = 40) -> bytes:
    """A message of ``n`` words drawn from ``words``, different for every seed."""
    rnd = random.Random(seed)
    body = " ".join(rnd.choice(words) for _ in range(n))
    head = [
        f"From: Sender {seed} <s{seed}@sender.test>",
        "To: rcpt@example.test",
        f"Subject: {' '.join(rnd.choice(words) for _ in range(4))}",
        f"Message-ID: <{words[0]}.{seed}@sender.test>",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


def spam(seed: int, *headers: str) -> bytes:
    return message(SPAM_WORDS, seed, *headers)


def ham(seed: int, *headers: str) -> bytes:
    return message(HAM_WORDS, seed, *headers)


def request(raw: bytes, rcpt: str = "rcpt@example.test") -> ScanRequest:
    return ScanRequest(envelope=Envelope(rcpts=(rcpt,)), raw=raw)


def _redis_answers() -> bool:
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", "redis"])
async def build(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Engine]]:
    """``build(toml)`` → an engine (Bayes + Scorer) on this test's store, ``toml`` added to
    its configuration."""
    prefix = f"milterd-bayes-{uuid.uuid4().hex}:"
    store = ""
    if request.param == "redis":
        if not _redis_answers():
            pytest.skip(f"no Redis answers at {REDIS_URL}")
        store = f'[store]\nbackend = "redis"\n[redis]\nurl = "{REDIS_URL}"\nprefix = "{prefix}"\n'
    made: list[Engine] = []

    def make(toml: str = "", url: str | None = None) -> Engine:
        conf = tmp_path / f"conf{len(made)}"
        conf.mkdir()
        text = f'[options]\ndata_dir = "{tmp_path / "data"}"\n' + (store if url is None else "")
        if url is not None:
            text += f'[store]\nbackend = "redis"\n[redis]\nurl = "{url}"\ntimeout = 0.5\n'
        (conf / "milterd.toml").write_text(text + toml)
        modules = [Bayes, Scorer]
        engine = Engine.from_config(Engine.load_config(conf, modules=modules), modules=modules)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.aclose()
    if request.param == "redis":
        cleaner = RedisStore.from_url(REDIS_URL, prefix=prefix)
        for key in [key async for key in cleaner.scan("")]:
            await cleaner.delete(key)
        await cleaner.aclose()


MIN3 = "[bayes]\nmin_learns = 3\n"


async def train(
    engine: Engine, n: int = 3, rcpt: str = "rcpt@example.test", first: int = 0
) -> None:
    for i in range(first, first + n):
        assert await engine.learn(request(spam(100 + i), rcpt), is_spam=True)
        assert await engine.learn(request(ham(200 + i), rcpt), is_spam=False)


async def test_bayes_speaks_once_both_classes_have_min_learns(
    build: Callable[..., Engine],
) -> None:
    engine = build(MIN3)
    before = await engine.scan(request(spam(1)))
    assert not set(before.symbols) & {"BAYES_SPAM", "BAYES_HAM"}
    await train(engine, 2)
    assert "BAYES_SPAM" not in (await engine.scan(request(spam(1)))).symbols  # 2 < 3 learns
    await train(engine, 1, first=2)
    spam_result = await engine.scan(request(spam(1)))
    ham_result = await engine.scan(request(ham(2)))
    spammy, hammy = spam_result.symbols["BAYES_SPAM"], ham_result.symbols["BAYES_HAM"]
    assert 0 < spammy.score <= 5.1
    assert -3.0 <= hammy.score < 0
    assert spammy.options[0].endswith("%")
    assert float(spammy.options[0].rstrip("%")) > 90
    assert "BAYES_HAM" not in spam_result.symbols


async def test_learning_twice_is_refused_and_the_other_class_moves_it(
    build: Callable[..., Engine],
) -> None:
    engine = build(MIN3)
    raw = spam(7)
    learned = await engine.learn(request(raw), is_spam=True)
    assert (learned.learned, learned.message) == (True, "learned as spam")
    again = await engine.learn(request(raw), is_spam=True)
    assert (bool(again), again.message) == (False, "already learned as spam")
    # The copy in the mailbox: LF line ends and the headers the delivery added.
    delivered = b"Received: from mx by imap with LMTP\nDelivered-To: rcpt@example.test\n"
    delivered += raw.replace(b"\r\n", b"\n")
    assert not await engine.learn(request(delivered), is_spam=True)
    moved = await engine.learn(request(delivered), is_spam=False)
    assert (moved.learned, moved.message) == (True, "relearned as ham (was spam)")
    assert await StoreStatBackend(engine.store).learn_counts() == (0, 1)
    back = await engine.learn(request(raw), is_spam=True)
    assert back.message == "relearned as spam (was ham)"
    assert await StoreStatBackend(engine.store).learn_counts() == (1, 0)


async def test_too_few_tokens_are_neither_learned_nor_classified(
    build: Callable[..., Engine],
) -> None:
    engine = build(MIN3 + "min_tokens = 60\n")
    await train(engine)  # 40 words and headers: over 60 tokens
    short = message(SPAM_WORDS, 9, n=3)
    refused = await engine.learn(request(short), is_spam=True)
    assert not refused
    assert refused.message.startswith("not learned: too few tokens")
    result = await engine.scan(request(short))
    assert not set(result.symbols) & {"BAYES_SPAM", "BAYES_HAM"}
    assert "BAYES_SPAM" in (await engine.scan(request(spam(9)))).symbols


async def test_per_user_statistics_are_the_recipients_own(
    build: Callable[..., Engine],
) -> None:
    engine = build(MIN3 + "per_user = true\n")
    await train(engine, rcpt="Alice@Example.test")
    for_alice = await engine.scan(request(spam(1), "alice@example.test"))
    for_bob = await engine.scan(request(spam(1), "bob@example.test"))
    assert "BAYES_SPAM" in for_alice.symbols
    assert "BAYES_SPAM" not in for_bob.symbols
    backend = StoreStatBackend(engine.store)
    assert await backend.learn_counts("alice@example.test") == (3, 3)
    assert await backend.learn_counts() == (0, 0)


async def test_autolearn_learns_clear_verdicts_and_heeds_its_guards(
    build: Callable[..., Engine],
) -> None:
    engine = build(MIN3 + "[bayes.autolearn]\nenabled = true\nspam_threshold = 8.0\n")
    backend = StoreStatBackend(engine.store)

    async def scan_counts(raw: bytes) -> tuple[int, int]:
        await engine.scan(request(raw))
        return await backend.learn_counts()

    assert await scan_counts(spam(1, "X-Insert: ONE")) == (0, 0)  # score 1: not clear
    assert await scan_counts(spam(2, "X-Insert: BIG")) == (1, 0)  # 10, add header
    assert await scan_counts(spam(2, "X-Insert: BIG")) == (1, 0)  # the same message
    assert await scan_counts(spam(3, "X-Insert: BIG", "X-Force: reject")) == (1, 0)
    assert await scan_counts(spam(4, "X-Insert: BIG", "X-Crash: yes")) == (1, 0)
    assert await scan_counts(ham(5, "X-Insert: NEG")) == (1, 1)  # -3, no action
    assert await scan_counts(ham(6, "X-Insert: NEG", "X-Force: add header")) == (1, 1)


async def test_autolearn_defers_to_a_bayes_that_strongly_disagrees(
    build: Callable[..., Engine],
) -> None:
    engine = build(
        MIN3 + "[bayes.autolearn]\nenabled = true\nspam_threshold = 8.0\nmax_imbalance = 100.0\n"
    )
    await train(engine)
    hammy = await engine.scan(request(ham(50, "X-Insert: BIG")))
    assert hammy.action is Action.ADD_HEADER
    assert "BAYES_HAM" in hammy.symbols  # Bayes thinks otherwise, strongly: no autolearn
    assert await StoreStatBackend(engine.store).learn_counts() == (3, 3)
    # Words Bayes never saw: no strong opinion, so the verdict teaches.
    unknown = await engine.scan(request(message(NEW_WORDS, 52, "X-Insert: BIG")))
    assert "BAYES_HAM" not in unknown.symbols
    assert await StoreStatBackend(engine.store).learn_counts() == (4, 3)


async def test_autolearn_is_off_by_default(build: Callable[..., Engine]) -> None:
    engine = build(MIN3)
    await engine.scan(request(spam(2, "X-Insert: BIG")))
    assert await StoreStatBackend(engine.store).learn_counts() == (0, 0)


async def test_an_unavailable_store_costs_the_bayes_verdict_only(
    build: Callable[..., Engine], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = build(MIN3 + "[bayes.autolearn]\nenabled = true\n", url=f"redis://127.0.0.1:{port}/0")
    with caplog.at_level(logging.WARNING, logger="engine.modules.bayes"):
        result = await engine.scan(request(spam(1, "X-Insert: BIG")))
    assert set(result.symbols) == {"BIG"}
    assert result.action is Action.ADD_HEADER
    assert "store unavailable" in caplog.text
    with pytest.raises(StoreUnavailable):
        await engine.learn(request(spam(1)), is_spam=True)
