"""The scan pipeline: stage order, pre-result short cut, concurrency, isolation, time limits
and cancellation. All timing runs on trio's autojump clock (virtual seconds)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from engine import Action, Engine, ScanRequest
from engine.api import SCAN_TIMEOUT
from engine.modules import Module, check
from engine.pipeline.executor import MODULE_ERROR, MODULE_TIMEOUT
from engine.pipeline.stages import Stage
from engine.symbols import SymbolSpec

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import pytest

    from engine import ScanResult
    from engine.task import Task

RAW = b"Subject: t\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n"


class Recorder(Module):
    """Base of the test modules: remembers which checks ran, and when (virtual time)."""

    name = "rec"
    symbols = tuple(
        SymbolSpec(n, 1.0, "rec")
        for n in ("PRE_HIGH", "PRE_LOW", "F_ONE", "F_TWO", "F_THREE", "F_SYNC", "CLS", "POST")
    )

    def setup(self) -> None:
        self.ran: list[str] = []
        self.at: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.ran.append(name)
        self.at[name] = trio.current_time()


def symbols(result: ScanResult) -> set[str]:
    return set(result.symbols)


async def scan(engine: Engine, raw: bytes = RAW) -> ScanResult:
    return await engine.scan(ScanRequest(raw=raw))


def recorder(engine: Engine) -> Recorder:
    [module] = [m for m in engine.modules if isinstance(m, Recorder)]
    return module


# -- stage order and the pre-result --------------------------------------------------------


class AllStages(Recorder):
    @check(produces=("PRE_HIGH",), stage=Stage.PRE, priority=10)
    def pre_high(self, task: Task) -> None:
        self.mark("pre_high")
        task.insert_result("PRE_HIGH")
        if b"STOP" in task.message.body:
            task.set_pre_result(Action.SOFT_REJECT, self.name, "try later")

    @check(produces=("PRE_LOW",), stage=Stage.PRE, priority=1)
    def pre_low(self, task: Task) -> None:
        self.mark("pre_low")
        task.insert_result("PRE_LOW")

    @check(produces=("F_ONE",))
    async def filter_async(self, task: Task) -> None:
        await trio.lowlevel.checkpoint()
        self.mark("filter_async")
        task.insert_result("F_ONE")

    @check(produces=("F_SYNC",))
    def filter_sync(self, task: Task) -> None:
        self.mark("filter_sync")
        task.insert_result("F_SYNC")

    @check(produces=("CLS",), stage=Stage.CLASSIFY)
    def classify(self, task: Task) -> None:
        self.mark("classify")
        task.insert_result("CLS")

    @check(produces=("POST",), stage=Stage.POST)
    def post(self, task: Task) -> None:
        self.mark("post")
        task.insert_result("POST")

    @check(produces=(), stage=Stage.IDEMPOTENT)
    def idempotent(self, task: Task) -> None:
        self.mark("idempotent")
        task.milter.add_headers.append(("X-Seen", ",".join(sorted(task.scored))))


async def test_stages_run_in_order(build_engine: Callable[..., Engine]) -> None:
    engine = build_engine(AllStages)
    result = await scan(engine)
    assert recorder(engine).ran == [
        "pre_high",
        "pre_low",
        "filter_sync",
        "filter_async",
        "classify",
        "post",
        "idempotent",
    ]
    assert symbols(result) == {"PRE_HIGH", "PRE_LOW", "F_ONE", "F_SYNC", "CLS", "POST"}
    assert result.score == 6.0
    assert result.action is Action.ADD_HEADER
    assert result.forced is None
    # The idempotent stage saw the final symbols.
    assert result.add_headers == (("X-Seen", "CLS,F_ONE,F_SYNC,POST,PRE_HIGH,PRE_LOW"),)


async def test_pre_result_skips_everything_but_idempotent(
    build_engine: Callable[..., Engine],
) -> None:
    engine = build_engine(AllStages)
    result = await scan(engine, RAW + b"STOP\r\n")
    assert recorder(engine).ran == ["pre_high", "idempotent"]
    assert symbols(result) == {"PRE_HIGH"}
    assert result.action is Action.SOFT_REJECT
    assert result.score == 1.0
    assert result.messages == {"smtp_message": "try later"}
    assert result.forced is not None
    assert result.forced.module == "rec"
    assert result.add_headers == (("X-Seen", "PRE_HIGH"),)


# -- concurrency and dependencies ----------------------------------------------------------


class Concurrent(Recorder):
    @check(produces=("F_ONE",))
    async def one(self, task: Task) -> None:
        await trio.sleep(1)
        self.mark("one")
        task.insert_result("F_ONE")

    @check(produces=("F_TWO",))
    async def two(self, task: Task) -> None:
        await trio.sleep(1)
        self.mark("two")
        task.insert_result("F_TWO")

    @check(produces=("F_THREE",), depends_on=("rec.one",))
    async def three(self, task: Task) -> None:
        assert task.has("F_ONE")
        await trio.sleep(1)
        self.mark("three")
        task.insert_result("F_THREE")

    @check(produces=("F_SYNC",), depends_on=("rec.three", "rec.two"))
    def after_three(self, task: Task) -> None:
        assert task.has("F_THREE")
        assert task.has("F_TWO")
        self.mark("after_three")
        task.insert_result("F_SYNC")


async def test_async_filters_run_concurrently_and_dependencies_wait(
    build_engine: Callable[..., Engine], autojump_clock: trio.testing.MockClock
) -> None:
    engine = build_engine(Concurrent)
    start = trio.current_time()
    result = await scan(engine)
    at = {name: t - start for name, t in recorder(engine).at.items()}
    assert at == {"one": 1.0, "two": 1.0, "three": 2.0, "after_three": 2.0}
    assert trio.current_time() - start == 2.0
    assert symbols(result) == {"F_ONE", "F_TWO", "F_THREE", "F_SYNC"}


class SyncChain(Recorder):
    @check(produces=("F_TWO",), depends_on=("rec.one",))
    def two(self, task: Task) -> None:
        assert task.has("F_ONE")
        self.mark("two")
        task.insert_result("F_TWO")

    @check(produces=("F_ONE",))
    def one(self, task: Task) -> None:
        self.mark("one")
        task.insert_result("F_ONE")

    @check(produces=("F_THREE",))
    async def three(self, task: Task) -> None:
        self.mark("three")
        task.insert_result("F_THREE")


async def test_sync_checks_run_inline_in_dependency_order(
    build_engine: Callable[..., Engine],
) -> None:
    engine = build_engine(SyncChain)
    result = await scan(engine)
    # Sync checks whose dependencies are done run inline before any async check starts.
    assert recorder(engine).ran == ["one", "two", "three"]
    assert symbols(result) == {"F_ONE", "F_TWO", "F_THREE"}


async def test_sync_only_filter_stage_runs_in_dependency_order(
    build_engine: Callable[..., Engine],
) -> None:
    class OnlySync(SyncChain):
        three = None  # type: ignore[assignment]  # drop the async check: no nursery needed

    engine = build_engine(OnlySync)
    result = await scan(engine)
    assert recorder(engine).ran == ["one", "two"]
    assert symbols(result) == {"F_ONE", "F_TWO"}


# -- isolation: errors ---------------------------------------------------------------------


class Failing(Recorder):
    @check(produces=("PRE_HIGH",), stage=Stage.PRE)
    def pre(self, task: Task) -> None:
        task.insert_result("PRE_HIGH")

    @check(produces=("F_ONE",))
    def boom(self, task: Task) -> None:
        task.insert_result("F_ONE")
        raise RuntimeError("module bug")

    @check(produces=("F_TWO",))
    async def async_boom(self, task: Task) -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError("another bug")

    @check(produces=("F_THREE",), depends_on=("rec.async_boom",))
    async def after_failure(self, task: Task) -> None:
        task.insert_result("F_THREE")

    @check(produces=("F_SYNC",))
    def undeclared(self, task: Task) -> None:
        task.insert_result("NOBODY_DECLARED_THIS")

    @check(produces=("POST",), stage=Stage.POST)
    def post(self, task: Task) -> None:
        task.insert_result("POST")

    @check(produces=(), stage=Stage.IDEMPOTENT)
    def idem_boom(self, task: Task) -> None:
        raise KeyError("late")


async def test_failing_checks_become_module_error_and_the_scan_completes(
    build_engine: Callable[..., Engine], caplog: pytest.LogCaptureFixture
) -> None:
    engine = build_engine(Failing)
    with caplog.at_level(logging.ERROR, logger="engine.pipeline.executor"):
        result = await scan(engine)
    assert symbols(result) == {"PRE_HIGH", "F_ONE", "F_THREE", "POST", MODULE_ERROR}
    assert sorted(result.symbols[MODULE_ERROR].options) == [
        "rec.async_boom",
        "rec.boom",
        "rec.undeclared",
    ]
    assert result.symbols[MODULE_ERROR].score == 0.0
    assert result.score == 4.0
    assert result.action is Action.GREYLIST
    assert result.partial is False
    failed = sorted(r.getMessage() for r in caplog.records)
    assert failed == [
        "check rec.async_boom (module rec) failed",
        "check rec.boom (module rec) failed",
        "check rec.idem_boom (module rec) failed",
        "check rec.undeclared (module rec) failed",
    ]
    assert all(r.exc_info is not None for r in caplog.records)


# -- time limits ---------------------------------------------------------------------------


class Slow(Recorder):
    @check(produces=("PRE_HIGH",), stage=Stage.PRE)
    def pre(self, task: Task) -> None:
        task.insert_result("PRE_HIGH")

    @check(produces=("F_ONE",), timeout=0.5)
    async def own_timeout(self, task: Task) -> None:
        task.insert_result("F_ONE", options=["before"])
        await trio.sleep(10)
        task.insert_result("F_ONE", options=["never"])

    @check(produces=("F_TWO",))
    async def default_timeout(self, task: Task) -> None:
        await trio.sleep(2)  # check_timeout = 1.5
        task.insert_result("F_TWO")

    @check(produces=("F_THREE",))
    async def in_time(self, task: Task) -> None:
        await trio.sleep(1.4)
        task.insert_result("F_THREE")

    @check(produces=("POST",), stage=Stage.POST)
    async def post(self, task: Task) -> None:
        await trio.sleep(float(task.message.headers.get("x-post-sleep") or 0))
        task.insert_result("POST")

    @check(produces=(), stage=Stage.IDEMPOTENT)
    async def idem(self, task: Task) -> None:
        await trio.sleep(float(task.message.headers.get("x-idem-sleep") or 0))
        self.mark("idem")


async def test_check_past_its_timeout_becomes_module_timeout(
    build_engine: Callable[..., Engine],
    write_config: Callable[[str, str], Path],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_config("milterd.toml", "[options]\ncheck_timeout = 1.5\n")
    engine = build_engine(Slow)
    start = trio.current_time()
    result = await scan(engine)
    assert trio.current_time() - start == 1.5
    assert symbols(result) == {"PRE_HIGH", "F_ONE", "F_THREE", "POST", MODULE_TIMEOUT}
    assert result.symbols["F_ONE"].options == ("before",)
    assert sorted(result.symbols[MODULE_TIMEOUT].options) == [
        "rec.default_timeout",
        "rec.own_timeout",
    ]
    assert result.partial is False
    assert sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == [
        "check rec.default_timeout timed out after 1.5s",
        "check rec.own_timeout timed out after 0.5s",
    ]


async def test_scan_deadline_gives_a_partial_result(
    build_engine: Callable[..., Engine],
    write_config: Callable[[str, str], Path],
    autojump_clock: trio.testing.MockClock,
) -> None:
    write_config("milterd.toml", "[options]\ntask_timeout = 1.0\ncheck_timeout = 5.0\n")
    engine = build_engine(Slow)
    start = trio.current_time()
    result = await scan(engine)
    # 1 s of filters, then the idempotent stage (which takes no time here).
    assert trio.current_time() - start == 1.0
    assert symbols(result) == {"PRE_HIGH", "F_ONE", MODULE_TIMEOUT, SCAN_TIMEOUT}
    assert result.symbols[MODULE_TIMEOUT].options == ("rec.own_timeout",)
    assert result.partial is True
    assert result.score == 2.0
    assert result.action is Action.NO_ACTION
    assert recorder(engine).ran == ["idem"]
    assert result.to_json()["partial"] is True


async def test_scan_deadline_during_post_keeps_the_filters(
    build_engine: Callable[..., Engine],
    write_config: Callable[[str, str], Path],
    autojump_clock: trio.testing.MockClock,
) -> None:
    write_config("milterd.toml", "[options]\ntask_timeout = 3.0\ncheck_timeout = 5.0\n")
    engine = build_engine(Slow)
    result = await scan(engine, b"X-Post-Sleep: 4\r\n" + RAW)
    assert symbols(result) == {
        "PRE_HIGH",
        "F_ONE",
        "F_TWO",
        "F_THREE",
        MODULE_TIMEOUT,
        SCAN_TIMEOUT,
    }
    assert result.partial is True
    assert result.score == 4.0
    assert result.action is Action.GREYLIST


async def test_idempotent_stage_has_its_own_short_budget(
    build_engine: Callable[..., Engine],
    write_config: Callable[[str, str], Path],
    autojump_clock: trio.testing.MockClock,
) -> None:
    write_config("milterd.toml", "[options]\ncheck_timeout = 5.0\n")
    engine = build_engine(Slow)
    start = trio.current_time()
    result = await scan(engine, b"X-Idem-Sleep: 30\r\n" + RAW)
    assert trio.current_time() - start == 2.0 + 1.0  # slowest filter, then the 1 s budget
    assert recorder(engine).ran == []
    assert result.partial is False
    assert MODULE_TIMEOUT in result.symbols  # own_timeout; the idempotent cut is silent


# -- cancellation --------------------------------------------------------------------------


async def test_cancellation_from_outside_propagates(
    build_engine: Callable[..., Engine], autojump_clock: trio.testing.MockClock
) -> None:
    engine = build_engine(Slow)
    outcome: list[ScanResult] = []
    with trio.move_on_after(0.25) as scope:
        outcome.append(await scan(engine))
    assert scope.cancelled_caught
    assert outcome == []
    assert recorder(engine).ran == []  # the idempotent stage did not run either
    assert trio.current_time() == 0.25


async def test_cancelled_caller_gets_cancelled_even_from_sync_checks(
    build_engine: Callable[..., Engine],
) -> None:
    engine = build_engine(SyncOnlyModule)
    outcome: list[ScanResult] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        outcome.append(await scan(engine))
    assert scope.cancelled_caught
    assert outcome == []
    assert recorder(engine).ran == []


class SyncOnlyModule(Recorder):
    @check(produces=("F_ONE",))
    def one(self, task: Task) -> None:
        self.mark("one")
        task.insert_result("F_ONE")


async def test_engine_without_checks_still_scans(build_engine: Callable[..., Engine]) -> None:
    engine = build_engine()
    result = await scan(engine)
    assert result.symbols == {}
    assert result.action is Action.NO_ACTION
    assert result.score == 0.0
    async with engine as same:
        assert same is engine
