"""Framing: coalesced vs byte-at-a-time delivery, health checks, the receive buffer."""

from __future__ import annotations

import pytest
from milter_helpers import OUR_ACTIONS, OUR_PROTOCOL, POSTFIX_OFFER, drain, feed_bytewise

from milterd.protocol import (
    NEED_DATA,
    Abort,
    Accept,
    Action,
    ActionFlag,
    AddHeader,
    BodyChunk,
    Command,
    Connect,
    ConnectionClosed,
    Continue,
    Data,
    EndOfHeaders,
    EndOfMessage,
    Event,
    Family,
    Header,
    HealthCheck,
    Helo,
    LocalProtocolError,
    Macros,
    MacroStage,
    MailFrom,
    MilterConnection,
    Negotiate,
    ProtocolFlag,
    Quit,
    RcptTo,
    ReceiveBuffer,
    RemoteProtocolError,
    Role,
    State,
    encode_action,
    negotiate_reply,
)
from milterd.protocol.constants import SMFI_INTERNAL, V1_ACTIONS, V1_PROTOCOL

SESSION: list[Event] = [
    POSTFIX_OFFER,
    Macros(Command.CONNECT, (("j", "mx"), ("{daemon_name}", "mx"))),
    Connect("[192.0.2.7]", Family.INET, 51234, "192.0.2.7"),
    Macros(Command.HELO),
    Helo("client.example"),
    Macros(Command.MAIL, (("{auth_authen}", "bob"),)),
    MailFrom("<bob@example.org>", ("SIZE=99",)),
    Macros(Command.RCPT, (("{rcpt_addr}", "x@example.net"),)),
    RcptTo("<x@example.net>"),
    Macros(Command.DATA, (("i", "ABC"),)),
    Data(),
    Header("Subject", "hi"),
    Header("X-Folded", "a\n\tb"),
    EndOfHeaders(),
    BodyChunk(b"hello\r\n" * 3000),
    BodyChunk(b"bye\r\n"),
    EndOfMessage(),
    Abort(),
    Abort(),
    Quit(),
]


def _mta_bytes() -> bytes:
    """The MTA's side of SESSION, produced by a real MTA-role connection."""
    mta = MilterConnection(Role.MTA)
    out = bytearray()
    for event in SESSION:
        out += mta.send(event)
        if mta.reply_owed is not None:
            mta.receive_data(encode_action(_answer(mta.reply_owed, event)))
            drain(mta)
    return bytes(out)


def _answer(owed: Command, event: Event) -> Action:
    if owed is Command.OPTNEG:
        assert isinstance(event, Negotiate)
        return negotiate_reply(event, actions=OUR_ACTIONS, protocol=OUR_PROTOCOL)
    return Accept() if owed is Command.BODYEOB else Continue()


def _run_filter(chunks: list[bytes]) -> tuple[list[Event | Action], bytes]:
    """Feed ``chunks`` to a filter, answering whatever is owed; return events and replies."""
    flt = MilterConnection(Role.FILTER)
    events: list[Event | Action] = []
    replies = bytearray()
    for chunk in chunks:
        flt.receive_data(chunk)
        while True:
            item = flt.next_event()
            if item is NEED_DATA:
                break
            events.append(item)
            if flt.reply_owed is not None:
                assert isinstance(item, Event)
                replies += flt.send(_answer(flt.reply_owed, item))
    flt.receive_data(b"")
    events.append(flt.next_event())  # type: ignore[arg-type]
    return events, bytes(replies)


def test_coalesced_and_bytewise_delivery_agree() -> None:
    wire = _mta_bytes()
    # The filter gets the whole MTA stream in one call but answers each owed command as it
    # is parsed, before asking for the next event, so the reply discipline still holds.
    whole, replies_whole = _run_filter([wire])
    bytewise, replies_bytewise = _run_filter([wire[i : i + 1] for i in range(len(wire))])
    assert whole == [*SESSION, ConnectionClosed()]
    assert bytewise == whole
    assert replies_bytewise == replies_whole
    # Odd chunk sizes straddling frame boundaries, too.
    for size in (2, 3, 7, 4096, 65537):
        chunked, _ = _run_filter([wire[i : i + size] for i in range(0, len(wire), size)])
        assert chunked == whole


# ------------------------------------------------------------------------- health check


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"GET /ping HTTP/1.0\r\n\r\n", "GET /ping HTTP/1.0"),
        (b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", "GET /ping HTTP/1.1"),
        (b"HEAD / HTTP/1.1\n\n", "HEAD / HTTP/1.1"),
        (b"POST /checkv2 HTTP/1.0\r\n", "POST /checkv2 HTTP/1.0"),
        (b"OPTIONS * HTTP/1.1\r\n", "OPTIONS * HTTP/1.1"),
    ],
)
def test_health_check_at_connection_start(data: bytes, line: str) -> None:
    for feed in ("whole", "bytewise"):
        flt = MilterConnection(Role.FILTER)
        if feed == "whole":
            flt.receive_data(data)
            got = [flt.next_event()]
        else:
            got = feed_bytewise(flt, data)[:1]
        assert got == [HealthCheck(line)]
        assert flt.state is State.CLOSED
        # The rest of the request is ignored; the conversation is over.
        flt.receive_data(b"more headers\r\n")
        assert flt.next_event() == ConnectionClosed()


@pytest.mark.parametrize(
    ("data", "eof", "match"),
    [
        (b"GET /ping\r\n", False, "nor an HTTP request"),
        (b"PUT " + b"x" * 9000, False, "longer than 8192"),
        (b"GET /ping HTTP/1.0", True, "EOF inside an HTTP request line"),
        (b"HELO there\r\n", False, "frame length"),
        (b"GE", True, "EOF in the middle of a frame"),
    ],
)
def test_health_check_garbage(data: bytes, eof: bool, match: str) -> None:
    flt = MilterConnection(Role.FILTER)
    flt.receive_data(data)
    if eof:
        flt.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match=match):
        flt.next_event()
    assert flt.state is State.ERROR


def test_health_check_only_at_connection_start() -> None:
    flt = MilterConnection(Role.FILTER)
    flt.receive_data(MilterConnection(Role.MTA).send(POSTFIX_OFFER))
    assert flt.next_event() == POSTFIX_OFFER
    flt.send(negotiate_reply(POSTFIX_OFFER, actions=OUR_ACTIONS, protocol=OUR_PROTOCOL))
    flt.receive_data(b"GET /ping HTTP/1.0\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="frame length"):
        flt.next_event()


def test_health_check_needs_an_absurd_length() -> None:
    # With a frame cap above 0x47455420 ("GET ") the bytes are a frame length like any other.
    flt = MilterConnection(Role.FILTER, max_frame_size=1 << 31)
    flt.receive_data(b"GET /ping HTTP/1.0\r\n\r\n")
    assert flt.next_event() is NEED_DATA


def test_health_check_not_in_mta_role() -> None:
    mta = MilterConnection(Role.MTA)
    mta.receive_data(b"GET /ping HTTP/1.0\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="frame length"):
        mta.next_event()


def test_partial_first_bytes_wait() -> None:
    flt = MilterConnection(Role.FILTER)
    flt.receive_data(b"GE")
    assert flt.next_event() is NEED_DATA
    flt.receive_data(b"T / HTTP/1.0")
    assert flt.next_event() is NEED_DATA
    flt.receive_data(b"\r\n")
    assert flt.next_event() == HealthCheck("GET / HTTP/1.0")


# -------------------------------------------------------------------------- negotiation


def test_negotiate_reply_picks_within_offer() -> None:
    offer = Negotiate(6, ActionFlag.ADDHDRS | ActionFlag.QUARANTINE, ProtocolFlag(0x0FFFFF))
    reply = negotiate_reply(
        offer,
        actions=ActionFlag.ADDHDRS | ActionFlag.CHGBODY,  # CHGBODY not offered: dropped
        protocol=ProtocolFlag.NR_HDR | ProtocolFlag.HDR_LEADSPC | ProtocolFlag(SMFI_INTERNAL),
    )
    assert reply.version == 6
    assert reply.actions == ActionFlag.ADDHDRS
    assert reply.protocol == ProtocolFlag.NR_HDR  # LEADSPC not offered, internal bits never
    assert reply.macros == ()


def test_negotiate_reply_versions_and_macros() -> None:
    future = Negotiate(9, ActionFlag(0x1FF), ProtocolFlag(0x1FFFFF | SMFI_INTERNAL))
    reply = negotiate_reply(
        future,
        actions=ActionFlag.ADDHDRS,
        protocol=ProtocolFlag(0x7FFFFFFF),
        macros=[(MacroStage.EOM, "i")],
    )
    assert reply.version == 6
    assert reply.actions == ActionFlag.ADDHDRS | ActionFlag.SETSYMLIST
    assert int(reply.protocol) == 0x1FFFFF
    assert reply.macros == ((MacroStage.EOM, "i"),)
    old = Negotiate(2, ActionFlag.NONE, ProtocolFlag.NONE)  # 0 = the version-1 sets
    reply = negotiate_reply(old, actions=ActionFlag(0x1FF), protocol=ProtocolFlag(0x1FFFFF))
    assert reply.version == 2
    assert reply.actions == V1_ACTIONS
    assert reply.protocol == V1_PROTOCOL


def test_version_one_offer_is_honoured_by_state() -> None:
    flt = MilterConnection(Role.FILTER)
    mta = MilterConnection(Role.MTA)
    offer = Negotiate(2, ActionFlag.NONE, ProtocolFlag.NONE)
    flt.receive_data(mta.send(offer))
    assert flt.next_event() == offer
    reply = negotiate_reply(offer, actions=ActionFlag.ADDHDRS, protocol=ProtocolFlag.NOHELO)
    mta.receive_data(flt.send(reply))
    assert mta.next_event() == reply
    assert flt.negotiated == mta.negotiated
    assert flt.negotiated is not None
    assert flt.negotiated.offered_actions == V1_ACTIONS
    assert not flt.negotiated.may_skip


# ------------------------------------------------------------------------------ buffer


def test_receive_buffer_frames_and_compacts() -> None:
    buf = ReceiveBuffer()
    frame = b"\x00\x00\x00\x05Babcd"
    big = b"\x00\x01\x00\x00B" + b"x" * 65535
    buf.append(frame * 3 + big + frame[:3])
    assert len(buf) == 3 * 9 + 65540 + 3
    assert buf.next_frame(1 << 20) == (ord("B"), b"abcd")
    assert buf.peek_length() == 5
    assert buf.next_frame(1 << 20) == (ord("B"), b"abcd")
    assert buf.next_frame(1 << 20) == (ord("B"), b"abcd")
    assert buf.next_frame(1 << 20) == (ord("B"), b"x" * 65535)  # compacts the dead prefix
    assert bytes(buf) == frame[:3]
    assert buf.next_frame(1 << 20) is None
    assert buf.peek_length() is None
    buf.append(frame[3:])
    assert buf.next_frame(1 << 20) == (ord("B"), b"abcd")
    assert len(buf) == 0


def test_receive_buffer_lines() -> None:
    buf = ReceiveBuffer()
    buf.append(b"one\ntwo\r\nthr")
    assert buf.startswith((b"xx", b"on"))
    assert buf.next_line(100) == b"one\n"
    assert not buf.startswith((b"on",))
    assert buf.next_line(100) == b"two\r\n"
    assert buf.next_line(100) is None
    with pytest.raises(RemoteProtocolError, match="longer than 3"):
        buf.next_line(3)


def test_send_many_stops_at_first_error() -> None:
    mta = MilterConnection(Role.MTA)
    with pytest.raises(LocalProtocolError):
        mta.send_many([POSTFIX_OFFER, Helo("x")])
    assert mta.state is State.ERROR


def test_filter_answers_after_addheader_in_one_write() -> None:
    flt = MilterConnection(Role.FILTER)
    mta = MilterConnection(Role.MTA)
    flt.receive_data(mta.send(POSTFIX_OFFER))
    flt.next_event()
    mta.receive_data(
        flt.send(negotiate_reply(POSTFIX_OFFER, actions=OUR_ACTIONS, protocol=OUR_PROTOCOL))
    )
    mta.next_event()
    flt.receive_data(mta.send_many([Connect("h", Family.UNKNOWN), EndOfMessage()]))
    assert drain(flt)[-1] == EndOfMessage()
    mta.receive_data(flt.send_many([AddHeader("X", "y"), Accept()]))
    assert drain(mta) == [AddHeader("X", "y"), Accept()]
    mta.send(Quit())


def test_receive_data_accepts_any_bytes_like_and_copies_it() -> None:
    # trio's receive_some returns bytearray; the caller may reuse its buffer afterwards.
    wire = MilterConnection(Role.MTA).send(POSTFIX_OFFER)
    scratch = bytearray(wire)
    flt = MilterConnection(Role.FILTER)
    flt.receive_data(scratch[:6])
    flt.receive_data(memoryview(scratch)[6:])
    scratch[:] = b"\xff" * len(scratch)
    assert flt.next_event() == POSTFIX_OFFER
