"""The milter daemon under concurrent load and against misbehaving clients, over real sockets.

milterd runs in-process (``run_daemon`` started with ``nursery.start`` on 127.0.0.1:0, the
real engine with GTUBE patterns on); each client plays Postfix with
``MilterConnection(Role.MTA)``: the offer Postfix makes with ``milter_protocol = 6``, then
the commands the negotiated flags say Postfix would send, waiting only for the replies
they say are owed.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import trio

from engine import Engine
from milterd.daemon import run_daemon
from milterd.protocol import (
    NEED_DATA,
    Accept,
    Action,
    ActionFlag,
    AddHeader,
    BodyChunk,
    ChangeHeader,
    Command,
    Connect,
    Continue,
    Data,
    Discard,
    EndOfHeaders,
    EndOfMessage,
    Event,
    Family,
    Header,
    Helo,
    Macros,
    MailFrom,
    MilterConnection,
    Negotiate,
    NegotiateReply,
    Progress,
    ProtocolFlag,
    Quarantine,
    Quit,
    RcptTo,
    Reject,
    ReplyCode,
    Role,
    TempFail,
)
from milterd.protocol.codec import COMMAND_OF
from milterd.settings import MILTER_SECTION, MilterSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

#: What Postfix offers with ``milter_protocol = 6``.
POSTFIX_OFFER = Negotiate(6, ActionFlag(0x1FF), ProtocolFlag(0x1FFFFF))
GTUBE_TAIL = "JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
FINAL = (Accept, Reject, TempFail, Discard, ReplyCode)
DEADLINE = 30.0  # seconds: a bound on each test, never a measurement


@pytest.fixture
async def milter_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, offline_dns: str
) -> AsyncIterator[int]:
    """milterd serving on 127.0.0.1:<port>; after the test, no ERROR was logged."""
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "milterd.toml").write_text(
        f'[options]\ngtube_patterns = "all"\ndata_dir = "{tmp_path / "data"}"\n'
    )
    environ = {"MILTERD_DNS_NAMESERVERS": offline_dns}
    config = Engine.load_config(config_dir, {"milter": MILTER_SECTION}, environ=environ)
    engine = Engine.from_config(config)
    settings = MilterSettings.from_section(config.section("milter"))
    async with engine, trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(run_daemon, engine, settings, listen=["127.0.0.1:0"])
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# -- a client playing Postfix ---------------------------------------------------------------


@dataclass
class Expect:
    """What one kind of message must get back."""

    body_line: str
    final: Action
    spam_header: bool
    subject: str | None = None  # the rewritten Subject, if any


KINDS = {
    "plain": Expect("shall we have lunch on friday?", Accept(), spam_header=False),
    "reject": Expect("X" + GTUBE_TAIL, ReplyCode(554, "5.7.1 Gtube pattern"), spam_header=False),
    "add_header": Expect("Y" + GTUBE_TAIL, Accept(), spam_header=True),
    "rewrite": Expect("Z" + GTUBE_TAIL, Accept(), spam_header=True, subject="*** SPAM *** message"),
}


class Client:
    """One milter connection, Postfix's side."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = MilterConnection(Role.MTA)

    @classmethod
    async def connect(cls, port: int) -> Client:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        reply = await client.send(POSTFIX_OFFER)
        assert isinstance(reply, NegotiateReply)
        return client

    async def receive(self) -> Action | Event:
        while True:
            item = self.conn.next_event()
            if item is not NEED_DATA:
                return item
            self.conn.receive_data(await self.stream.receive_some(65536))

    async def send(self, event: Event) -> Action | Event | None:
        """Send ``event`` if the negotiation lets Postfix send it; its reply, if one is owed."""
        negotiated = self.conn.negotiated
        if negotiated is not None and not negotiated.sends(COMMAND_OF[type(event)]):
            return None
        await self.stream.send_all(self.conn.send(event))
        if self.conn.reply_owed is None:
            return None
        return await self.receive()

    async def envelope(self, qid: str) -> None:
        """CONNECT and HELO, as Postfix sends them for a client on 203.0.113.5."""
        for event in (
            Macros(Command.CONNECT, (("j", "mx.example.test"), ("{client_addr}", "203.0.113.5"))),
            Connect("mail.sender.test", Family.INET, 40000, "203.0.113.5"),
            Helo("mail.sender.test"),
        ):
            assert await self.send(event) in (None, Continue())

    async def message_start(self, qid: str, body_line: str) -> None:
        """Everything of one message up to (not including) end of message."""
        for event in (
            Macros(Command.MAIL, (("i", qid), ("{mail_addr}", "alice@sender.test"))),
            MailFrom("<alice@sender.test>"),
            RcptTo("<rcpt@example.test>"),
            Data(),
            Header("From", "Alice <alice@sender.test>"),
            Header("To", "rcpt@example.test"),
            Header("Subject", "message"),
            Header("Message-ID", f"<{qid}@sender.test>"),
            EndOfHeaders(),
            BodyChunk(f"Hello,\r\n\r\n{body_line}\r\n\r\nAlice\r\n".encode()),
        ):
            assert await self.send(event) in (None, Continue())

    async def message_end(self) -> list[Action]:
        """End of message; every reply up to and including the final decision."""
        await self.stream.send_all(self.conn.send(EndOfMessage()))
        replies: list[Action] = []
        while True:
            item = await self.receive()
            assert isinstance(item, Action), item
            if isinstance(item, Progress):
                continue
            replies.append(item)
            if isinstance(item, FINAL):
                return replies

    async def close(self) -> None:
        await self.stream.send_all(self.conn.send(Quit()))
        await self.stream.aclose()


def check_verdict(kind: str, replies: list[Action]) -> None:
    expect = KINDS[kind]
    assert replies[-1] == expect.final, (kind, replies)
    added = {a.name: a.value for a in replies if isinstance(a, AddHeader)}
    assert (added.get("X-Spam") == "Yes") is expect.spam_header, (kind, replies)
    changed = [a for a in replies if isinstance(a, ChangeHeader) and a.name == "Subject"]
    if expect.subject is None:
        assert changed == [], (kind, replies)
    else:
        assert changed == [ChangeHeader(1, "Subject", expect.subject)], (kind, replies)
    if isinstance(expect.final, Accept):
        assert "X-Spamd-Result" in added, (kind, replies)
        assert "X-Spam-Status" in added, (kind, replies)
    else:
        assert replies == [expect.final], (kind, replies)  # no edits on a refusal
    assert not any(isinstance(a, Quarantine) for a in replies), (kind, replies)


async def one_message(port: int, n: int, kind: str) -> list[Action]:
    client = await Client.connect(port)
    await client.envelope(f"Q{n:05d}")
    await client.message_start(f"Q{n:05d}", KINDS[kind].body_line)
    replies = await client.message_end()
    await client.close()
    return replies


async def hang_up_awaited(stream: trio.SocketStream) -> None:
    """Read until milterd closes the connection (EOF or reset), then close our end."""
    try:
        while await stream.receive_some(65536):
            pass  # whatever came first is no reply to anything we asked
    except trio.BrokenResourceError:
        pass  # a reset is a hang-up too
    await stream.aclose()


# -- the tests --------------------------------------------------------------------------------


async def test_one_connection_carries_several_messages(milter_port: int) -> None:
    """A verdict per message, nothing carried over; ABORT between them, as Postfix sends it."""
    with trio.fail_after(DEADLINE):
        client = await Client.connect(milter_port)
        await client.envelope("Q1")
        for n, kind in enumerate(["add_header", "plain", "reject", "rewrite", "plain"]):
            await client.message_start(f"Q{n}", KINDS[kind].body_line)
            check_verdict(kind, await client.message_end())
            from milterd.protocol import Abort

            assert await client.send(Abort()) is None
        # a message abandoned before end of message, then a fresh one
        await client.message_start("QX", KINDS["reject"].body_line)
        await client.send(Abort())
        await client.message_start("QY", KINDS["plain"].body_line)
        check_verdict("plain", await client.message_end())
        await client.close()


async def test_200_concurrent_connections_all_get_their_verdict(milter_port: int) -> None:
    count = 200
    kinds = list(KINDS)
    results: dict[int, list[Action]] = {}
    connected = 0
    all_connected = trio.Event()

    async def run(n: int) -> None:
        nonlocal connected
        kind = kinds[n % len(kinds)]
        client = await Client.connect(milter_port)
        await client.envelope(f"Q{n:05d}")
        await client.message_start(f"Q{n:05d}", KINDS[kind].body_line)
        connected += 1
        if connected == count:
            all_connected.set()
        await all_connected.wait()  # all 200 are open and mid-message at once
        results[n] = await client.message_end()
        await client.close()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            for n in range(count):
                nursery.start_soon(run, n)

    assert sorted(results) == list(range(count))
    for n, replies in results.items():
        check_verdict(kinds[n % len(kinds)], replies)


#: (sent as the first bytes of a connection, sent mid-session after CONNECT and HELO)
GARBAGE = {
    # a length field no frame may have: the bytes an HTTP *response* starts with
    "huge length": (b"HTTP/1.1 200 OK\r\n\r\n",) * 2,
    "unknown command": (b"\x00\x00\x00\x01\x7f",) * 2,
    "zero length": (b"\x00\x00\x00\x00",) * 2,
    "malformed payload": (b"\x00\x00\x00\x02D\x01",) * 2,  # MACRO for no known command
    # BODY before OPTNEG; a second OPTNEG (out-of-order commands in a live session are
    # tolerated, as libmilter does, but these two make no sense at all)
    "command out of place": (
        b"\x00\x00\x00\x06Bhello",
        b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff",
    ),
}


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
async def test_garbage_closes_only_that_connection(
    milter_port: int, garbage: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="milterd")
    busy = 20
    ready = 0
    all_ready = trio.Event()
    garbage_done = trio.Event()
    results: dict[int, list[Action]] = {}

    async def good(n: int) -> None:
        nonlocal ready
        kind = list(KINDS)[n % len(KINDS)]
        client = await Client.connect(milter_port)
        await client.envelope(f"G{n:03d}")
        await client.message_start(f"G{n:03d}", KINDS[kind].body_line)
        ready += 1
        if ready == busy:
            all_ready.set()
        await garbage_done.wait()
        results[n] = await client.message_end()
        await client.close()

    async def bad(payload: bytes) -> None:
        await all_ready.wait()
        stream = await trio.open_tcp_stream("127.0.0.1", milter_port)
        await stream.send_all(payload)
        await hang_up_awaited(stream)
        garbage_done.set()

    async def bad_mid_message() -> None:
        await all_ready.wait()
        client = await Client.connect(milter_port)
        await client.envelope("BAD")
        await client.stream.send_all(GARBAGE[garbage][1])
        await hang_up_awaited(client.stream)

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            for n in range(busy):
                nursery.start_soon(good, n)
            nursery.start_soon(bad_mid_message)
            nursery.start_soon(bad, GARBAGE[garbage][0])

    assert sorted(results) == list(range(busy))
    for n, replies in results.items():
        check_verdict(list(KINDS)[n % len(KINDS)], replies)
    # each bad connection left a warning naming the protocol error, and nothing worse
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "protocol error" in r.getMessage()
    ]
    assert len(warnings) == 2, [r.getMessage() for r in caplog.records]


async def test_connection_dropped_mid_message_does_not_disturb_others(milter_port: int) -> None:
    with trio.fail_after(DEADLINE):
        dropped = await Client.connect(milter_port)
        await dropped.envelope("DROP")
        await dropped.message_start("DROP", KINDS["reject"].body_line)
        await dropped.stream.aclose()  # the SMTP client vanished; Postfix hangs up
        async with trio.open_nursery() as nursery:
            results: dict[int, list[Action]] = {}

            async def run(n: int) -> None:
                results[n] = await one_message(milter_port, n, list(KINDS)[n % len(KINDS)])

            for n in range(8):
                nursery.start_soon(run, n)
    for n, replies in results.items():
        check_verdict(list(KINDS)[n % len(KINDS)], replies)
