"""``run_daemon``: real listeners on loopback (TCP port 0, a unix socket in tmp_path),
the MTA driver from ``milterd.mta``, and the SIGTERM/SIGINT drain.

These tests use the real clock: with real sockets an autojumping clock could jump while
the kernel still holds bytes in flight. Nothing here waits on time to pass, except the
drain deadline test, which waits 0.2 s on purpose.
"""

from __future__ import annotations

import logging
import signal
import stat
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from engine import Engine, ScanRequest, ScanResult
from engine.modules.gtube import Gtube
from engine.modules.milter_headers import MilterHeaders
from milterd.daemon import run_daemon
from milterd.mta import MilterReply, SmtpEnvelope, milter_exchange
from milterd.protocol import Accept, AddHeader, ReplyCode
from milterd.settings import MILTER_SECTION, MilterSettings

if TYPE_CHECKING:
    from pathlib import Path

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HEADERS = [("From", "alice@sender.test"), ("To", "bob@example.test"), ("Subject", "Hi")]
BODY = b"Hello\r\n"
SETTINGS = MilterSettings.defaults()
MODULES = (Gtube, MilterHeaders)


@pytest.fixture
async def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real engine with a fixed module list, so later built-in modules cannot change
    the verdicts these tests pin."""
    config = Engine.load_config(
        None,
        {"milter": MILTER_SECTION},
        modules=MODULES,
        environ={"MILTERD_DATA_DIR": str(tmp_path / "data")},
    )
    engine = Engine.from_config(config, modules=MODULES)
    yield engine
    await engine.aclose()  # run_daemon closes it too when it stops; closing twice is fine


class Gated:
    """Delegates to the real engine once ``release`` is set; ``started`` says a scan waits."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.started = trio.Event()
        self.release = trio.Event()

    async def scan(self, request: ScanRequest) -> ScanResult:
        self.started.set()
        await self.release.wait()
        return await self.engine.scan(request)

    async def aclose(self) -> None:
        await self.engine.aclose()


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


def tcp_port(listeners: list[trio.SocketListener]) -> int:
    port = listeners[0].socket.getsockname()[1]
    assert isinstance(port, int)
    return port


async def exchange(stream: trio.abc.Stream, body: bytes = BODY) -> MilterReply:
    with trio.fail_after(10):
        async with stream:
            return await milter_exchange(stream, HEADERS, body, SmtpEnvelope())


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some():
            data += chunk
    return data


async def test_tcp_listener_on_port_zero(
    nursery: trio.Nursery, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    listeners = await nursery.start(
        lambda task_status: run_daemon(
            engine, SETTINGS, listen=["127.0.0.1:0"], task_status=task_status
        )
    )
    port = tcp_port(listeners)
    assert port != 0
    assert f"milter listening on 127.0.0.1:{port}" in caplog.text

    ham = await exchange(await trio.open_tcp_stream("127.0.0.1", port))
    assert ham.final == Accept()
    assert [a.name for a in ham.edits if isinstance(a, AddHeader)] == [
        "X-Spamd-Result",
        "X-Spam-Status",
    ]
    spam = await exchange(await trio.open_tcp_stream("127.0.0.1", port), f"{GTUBE}\r\n".encode())
    assert spam.final == ReplyCode(554, "5.7.1 Gtube pattern")
    nursery.cancel_scope.cancel()


async def test_concurrent_connections(nursery: trio.Nursery, engine: Engine) -> None:
    listeners = await nursery.start(
        lambda task_status: run_daemon(
            engine, SETTINGS, listen=["127.0.0.1:0"], task_status=task_status
        )
    )
    port = tcp_port(listeners)
    finals: list[object] = []

    async def one(n: int) -> None:
        body = f"{GTUBE}\r\n".encode() if n % 2 else BODY
        finals.append(
            (n % 2, (await exchange(await trio.open_tcp_stream("127.0.0.1", port), body)).final)
        )

    async with trio.open_nursery() as clients:
        for n in range(8):
            clients.start_soon(one, n)
    assert sorted(finals, key=str) == sorted(
        [(0, Accept())] * 4 + [(1, ReplyCode(554, "5.7.1 Gtube pattern"))] * 4, key=str
    )
    nursery.cancel_scope.cancel()


async def test_unix_socket_listener(nursery: trio.Nursery, engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "run" / "m.sock"
    settings = replace(SETTINGS, socket_mode=0o600)
    listeners = await nursery.start(
        lambda task_status: run_daemon(
            engine, settings, listen=["unix:" + str(path)], task_status=task_status
        )
    )
    assert len(listeners) == 1
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    reply = await exchange(await trio.open_unix_socket(str(path)))
    assert reply.final == Accept()
    nursery.cancel_scope.cancel()


async def test_stale_unix_socket_is_replaced(
    nursery: trio.Nursery, engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "m.sock"
    stale = trio.socket.socket(trio.socket.AF_UNIX)
    await stale.bind(str(path))
    stale.close()  # the file stays behind, as after a crash
    listeners = await nursery.start(
        lambda task_status: run_daemon(
            engine, SETTINGS, listen=["unix:" + str(path)], task_status=task_status
        )
    )
    assert listeners
    assert (await exchange(await trio.open_unix_socket(str(path)))).final == Accept()
    nursery.cancel_scope.cancel()


async def test_unix_socket_path_taken_by_a_file_is_refused(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="is not a socket"):
        await run_daemon(engine, SETTINGS, listen=["unix:" + str(path)])
    assert path.read_text() == "not a socket"


async def test_tcp_and_unix_together(nursery: trio.Nursery, engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    listeners = await nursery.start(
        lambda task_status: run_daemon(
            engine, SETTINGS, listen=["127.0.0.1:0", "unix:" + str(path)], task_status=task_status
        )
    )
    assert len(listeners) == 2
    assert (
        await exchange(await trio.open_tcp_stream("127.0.0.1", tcp_port(listeners)))
    ).final == Accept()
    assert (await exchange(await trio.open_unix_socket(str(path)))).final == Accept()
    nursery.cancel_scope.cancel()


async def test_http_ping_on_the_milter_port(nursery: trio.Nursery, engine: Engine) -> None:
    listeners = await nursery.start(
        lambda task_status: run_daemon(
            engine, SETTINGS, listen=["127.0.0.1:0"], task_status=task_status
        )
    )
    stream = await trio.open_tcp_stream("127.0.0.1", tcp_port(listeners))
    async with stream:
        await stream.send_all(b"GET /ping HTTP/1.1\r\nHost: mx\r\nUser-Agent: lb-probe\r\n\r\n")
        answer = await read_to_eof(stream)
    assert (
        answer
        == b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npong\r\n"
    )
    nursery.cancel_scope.cancel()


async def test_garbage_closes_only_that_connection(
    nursery: trio.Nursery, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    listeners = await nursery.start(
        lambda task_status: run_daemon(
            engine, SETTINGS, listen=["127.0.0.1:0"], task_status=task_status
        )
    )
    port = tcp_port(listeners)
    other = await trio.open_tcp_stream("127.0.0.1", port)  # a healthy connection, opened first
    bad = await trio.open_tcp_stream("127.0.0.1", port)
    async with bad:
        await bad.send_all(b"\x00\x00\x00\x03Zzz")
        assert await read_to_eof(bad) == b""
    warnings = [
        r for r in caplog.records if r.name == "milterd.session" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "protocol error" in warnings[0].getMessage()
    assert "127.0.0.1:" in warnings[0].getMessage()  # the peer is named
    assert (await exchange(other)).final == Accept()
    nursery.cancel_scope.cancel()


# -- stopping --------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_an_idle_daemon(
    engine: Engine, signum: signal.Signals, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                lambda task_status: run_daemon(
                    engine, SETTINGS, listen=["127.0.0.1:0"], task_status=task_status
                )
            )
            port = tcp_port(listeners)
            signal.raise_signal(signum)
    assert f"{signum.name}: no new connections" in caplog.text
    assert "stopped" in [r.getMessage() for r in caplog.records]
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_sigterm_drains_the_message_in_flight(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    gated = Gated(engine)
    replies: list[MilterReply] = []

    async def mta(port: int) -> None:
        replies.append(await exchange(await trio.open_tcp_stream("127.0.0.1", port)))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                lambda task_status: run_daemon(
                    gated,
                    SETTINGS,
                    listen=["127.0.0.1:0"],
                    drain_seconds=30.0,  # type: ignore[arg-type]
                    task_status=task_status,
                )
            )
            port = tcp_port(listeners)
            nursery.start_soon(mta, port)
            await gated.started.wait()  # the message is at end of message, being scanned
            signal.raise_signal(signal.SIGTERM)
            await trio.testing.wait_all_tasks_blocked()  # the daemon took the signal in
            assert "SIGTERM: no new connections; draining for up to 30s" in caplog.text
            with pytest.raises(
                OSError, match="all attempts to connect"
            ):  # the listener is closed ...
                await trio.open_tcp_stream("127.0.0.1", port)
            assert not replies  # ... and the scan is still waiting
            gated.release.set()
    [reply] = replies
    assert reply.final == Accept()
    assert [a.name for a in reply.edits if isinstance(a, AddHeader)] == [
        "X-Spamd-Result",
        "X-Spam-Status",
    ]
    assert "stopped" in [r.getMessage() for r in caplog.records]


async def test_drain_deadline_cuts_off_a_scan_that_never_ends(engine: Engine) -> None:
    gated = Gated(engine)  # never released
    settings = replace(SETTINGS, scan_timeout=60.0)
    outcome: list[BaseException] = []

    async def mta(stream: trio.abc.Stream) -> None:
        try:
            async with stream:
                await milter_exchange(stream, HEADERS, BODY, SmtpEnvelope())
        except trio.BrokenResourceError as exc:
            outcome.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                lambda task_status: run_daemon(
                    gated,
                    settings,
                    listen=["127.0.0.1:0"],
                    drain_seconds=0.2,  # type: ignore[arg-type]
                    task_status=task_status,
                )
            )
            nursery.start_soon(mta, await trio.open_tcp_stream("127.0.0.1", tcp_port(listeners)))
            await gated.started.wait()
            started = trio.current_time()
            signal.raise_signal(signal.SIGTERM)
    # The daemon stopped after the drain deadline, and the MTA saw the connection close
    # without an answer (Postfix then applies its milter_default_action).
    assert 0.2 <= trio.current_time() - started < 5
    [error] = outcome
    assert "closed the connection" in str(error)
