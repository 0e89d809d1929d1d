"""Reloading ``milterd run``: SIGHUP (or ``Daemon.reload``, which the signal calls) builds
a new engine from the config directory; new messages use it, a message in flight
finishes on the old one, which is closed afterwards; a refused configuration is logged
(file, line, key) and changes nothing.

Real listeners on loopback and the real clock, as in test_daemon.py. The message lacks
Date and Message-ID: it scores 3.5 (MISSING_DATE 1, MISSING_MID 2.5).
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from engine import Engine, ScanRequest, ScanResult
from engine.modules.gtube import Gtube
from engine.modules.headers import Headers
from engine.modules.milter_headers import MilterHeaders
from milterd.daemon import Daemon
from milterd.mta import MilterReply, SmtpEnvelope, milter_exchange
from milterd.protocol import Accept, ReplyCode
from milterd.settings import MILTER_SECTION, MilterSettings

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from engine import Config

MODULES = (Gtube, Headers, MilterHeaders)
HEADERS = [("From", "alice@sender.test"), ("To", "bob@example.test"), ("Subject", "Hi")]
SETTINGS = MilterSettings.defaults()
LENIENT = "[actions]\ngreylist = false\nreject = 15.0\n"
STRICT = "[actions]\ngreylist = false\nreject = 3.0\n"
REJECTED = ReplyCode(554, "5.7.1 Spam message rejected")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "milterd.toml").write_text(LENIENT, encoding="utf-8")
    return etc


@pytest.fixture
def load_engine(config_dir: Path, tmp_path: Path) -> Callable[[], Engine]:
    """What ``milterd run`` gives the daemon: read the directory afresh, build, validate."""

    def load() -> Engine:
        config = Engine.load_config(
            config_dir,
            {"milter": MILTER_SECTION},
            environ={"MILTERD_DATA_DIR": str(tmp_path / "data")},
            modules=MODULES,
            rules_dir=tmp_path,  # no shipped rule files
        )
        return Engine.from_config(config, modules=MODULES)

    return load


class Held:
    """A real engine whose scans wait while ``hold`` is set; it records its closing."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config: Config = engine.config
        self.hold: trio.Event | None = None
        self.scanning = trio.Event()
        self.closed = trio.Event()

    async def scan(self, request: ScanRequest) -> ScanResult:
        self.scanning.set()
        if self.hold is not None:
            await self.hold.wait()
        return await self.engine.scan(request)

    async def aclose(self) -> None:
        await self.engine.aclose()
        self.closed.set()


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    """A test that expects error records checks them and clears them."""
    caplog.set_level(logging.DEBUG)
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


async def start(nursery: trio.Nursery, daemon: Daemon) -> int:
    listeners = await nursery.start(
        lambda task_status: daemon.serve(["127.0.0.1:0"], task_status=task_status)
    )
    port = listeners[0].socket.getsockname()[1]
    assert isinstance(port, int)
    return port


async def deliver(port: int) -> MilterReply:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            return await milter_exchange(stream, HEADERS, b"Hello\r\n", SmtpEnvelope())


async def test_reload_applies_to_new_messages_and_lets_the_one_in_flight_finish(
    load_engine: Callable[[], Engine], config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = Held(load_engine())
    held: Engine = old  # type: ignore[assignment]  # a stand-in with the engine's interface
    daemon = Daemon(held, SETTINGS, load_engine=load_engine)
    in_flight: list[MilterReply] = []
    delivered = trio.Event()

    async def deliver_held(port: int) -> None:
        in_flight.append(await deliver(port))
        delivered.set()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start(nursery, daemon)
            assert (await deliver(port)).final == Accept()  # before: 3.5 < 15

            old.hold = trio.Event()
            old.scanning = trio.Event()
            nursery.start_soon(deliver_held, port)
            await old.scanning.wait()  # a message is at end of message, on the old engine

            (config_dir / "milterd.toml").write_text(STRICT, encoding="utf-8")
            assert await daemon.reload() is True
            assert daemon.engines.current is not held
            assert daemon.engines.busy(held) == 1
            assert not old.closed.is_set()  # not while a scan runs on it

            assert (await deliver(port)).final == REJECTED  # after: 3.5 ≥ 3
            assert not in_flight

            old.hold.set()
            await old.closed.wait()  # closed once its last scan finished
            await delivered.wait()
            nursery.cancel_scope.cancel()
    [reply] = in_flight
    assert reply.final == Accept()  # judged by the configuration it started under
    assert "configuration reloaded; the previous engine closes after its 1 scan in flight" in (
        caplog.text
    )


async def test_sighup_reloads(
    load_engine: Callable[[], Engine], config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(load_engine(), SETTINGS, load_engine=load_engine)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start(nursery, daemon)
            assert (await deliver(port)).final == Accept()
            (config_dir / "milterd.toml").write_text(STRICT, encoding="utf-8")
            signal.raise_signal(signal.SIGHUP)
            await daemon.next_reload()
            assert (await deliver(port)).final == REJECTED
            nursery.cancel_scope.cancel()
    assert "reloading the configuration" in caplog.text
    assert "configuration reloaded" in caplog.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[actions]\nreject = "low"\n\n[settings.x]\nsymbols_disabled = ["NOPE"]\n',
            [
                "milterd.toml:2: actions.reject: must be a number or true/false, not str 'low'",
            ],
        ),
        (
            '[actions]\nreject = 3.0\n\n[settings.x]\nip = "10.0.0.0/8"\n'
            'symbols_disabled = ["NOPE"]\n',
            [
                "milterd.toml:6: settings.x.symbols_disabled: unknown symbol NOPE "
                "(no enabled module declares it)",
            ],
        ),
        ("[actions\nreject = 3.0\n", ["milterd.toml:1: "]),
    ],
    ids=["schema", "engine", "toml"],
)
async def test_a_refused_configuration_changes_nothing(
    load_engine: Callable[[], Engine],
    config_dir: Path,
    caplog: pytest.LogCaptureFixture,
    text: str,
    expected: list[str],
) -> None:
    engine = load_engine()
    daemon = Daemon(engine, SETTINGS, load_engine=load_engine)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start(nursery, daemon)
            (config_dir / "milterd.toml").write_text(text, encoding="utf-8")
            signal.raise_signal(signal.SIGHUP)
            await daemon.next_reload()
            assert daemon.engines.current is engine
            assert (await deliver(port)).final == Accept()  # still 15 to reject
            nursery.cancel_scope.cancel()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    path = str(config_dir / "milterd.toml")
    assert errors[-1].startswith("reload refused (")
    assert errors[-1].endswith("; still serving with the previous configuration")
    for line in expected:
        assert any(
            e.startswith(f"reload: {path.removesuffix('milterd.toml')}{line}") for e in errors
        ), (
            line,
            errors,
        )
    caplog.clear()  # the errors were the point


async def test_milter_settings_change_only_at_restart(
    load_engine: Callable[[], Engine], config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(load_engine(), SETTINGS, load_engine=load_engine)
    (config_dir / "milterd.toml").write_text(LENIENT + '[milter]\nreject_message = "No"\n')
    async with trio.open_nursery() as nursery:
        await start(nursery, daemon)
        assert await daemon.reload() is True
        nursery.cancel_scope.cancel()
    assert "reload: [milter] settings changed; they take effect at the next restart" in (
        caplog.text
    )


async def test_sighup_without_a_configuration_only_says_so(
    load_engine: Callable[[], Engine], caplog: pytest.LogCaptureFixture
) -> None:
    engine = load_engine()
    daemon = Daemon(engine, SETTINGS)
    async with trio.open_nursery() as nursery:
        await start(nursery, daemon)
        signal.raise_signal(signal.SIGHUP)
        with trio.fail_after(10):
            await daemon.next_reload()
        assert daemon.engines.current is engine
        nursery.cancel_scope.cancel()
    assert "started without a configuration to reload" in caplog.text
