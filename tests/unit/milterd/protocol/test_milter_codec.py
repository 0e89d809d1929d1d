"""Exact bytes, both directions, for every event and every action; malformed payloads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from milterd.protocol import (
    Abort,
    Accept,
    ActionFlag,
    AddHeader,
    AddRcpt,
    AddRcptWithArgs,
    BodyChunk,
    ChangeFrom,
    ChangeHeader,
    Command,
    Connect,
    ConnectionClosed,
    ConnectionFail,
    Continue,
    Data,
    DelRcpt,
    Discard,
    EndOfHeaders,
    EndOfMessage,
    Family,
    Header,
    HealthCheck,
    Helo,
    InsertHeader,
    LocalProtocolError,
    Macros,
    MacroStage,
    MailFrom,
    Negotiate,
    NegotiateReply,
    Progress,
    ProtocolFlag,
    Quarantine,
    Quit,
    QuitNewConnection,
    RcptTo,
    Reject,
    RemoteProtocolError,
    ReplaceBody,
    ReplyCode,
    SetSymbolList,
    Shutdown,
    Skip,
    TempFail,
    Unknown,
    decode_action,
    decode_event,
    encode_action,
    encode_event,
)

if TYPE_CHECKING:
    from milterd.protocol.events import Event

EVENT_VECTORS = [
    (
        Negotiate(6, ActionFlag(0x1FF), ProtocolFlag(0x1FFFFF)),
        b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff",
    ),
    (
        Macros(Command.CONNECT, (("j", "mx.example"), ("{daemon_name}", "mx"))),
        b"\x00\x00\x00\x20DCj\x00mx.example\x00{daemon_name}\x00mx\x00",
    ),
    (Macros(Command.MAIL), b"\x00\x00\x00\x02DM"),
    (Macros(Command.HEADER, (("i", ""),)), b"\x00\x00\x00\x05DLi\x00\x00"),
    (
        Connect("[192.0.2.1]", Family.INET, 4567, "192.0.2.1"),
        b"\x00\x00\x00\x1aC[192.0.2.1]\x004\x11\xd7192.0.2.1\x00",
    ),
    (
        Connect("mail.example", Family.INET6, 25, "2001:db8::1"),
        b"\x00\x00\x00\x1dCmail.example\x006\x00\x192001:db8::1\x00",
    ),
    (
        Connect("localhost", Family.UNIX, 0, "/run/smtpd.sock"),
        b"\x00\x00\x00\x1eClocalhost\x00L\x00\x00/run/smtpd.sock\x00",
    ),
    (Connect("unknown", Family.UNKNOWN), b"\x00\x00\x00\x0aCunknown\x00U"),
    (Helo("client.example"), b"\x00\x00\x00\x10Hclient.example\x00"),
    (
        MailFrom("<a@example.org>", ("SIZE=100", "BODY=8BITMIME")),
        b"\x00\x00\x00\x28M<a@example.org>\x00SIZE=100\x00BODY=8BITMIME\x00",
    ),
    (MailFrom("<>"), b"\x00\x00\x00\x04M<>\x00"),
    (
        RcptTo("<b@example.net>", ("NOTIFY=NEVER",)),
        b"\x00\x00\x00\x1eR<b@example.net>\x00NOTIFY=NEVER\x00",
    ),
    (Data(), b"\x00\x00\x00\x01T"),
    (Header("Subject", "hello\n world"), b"\x00\x00\x00\x16LSubject\x00hello\n world\x00"),
    (EndOfHeaders(), b"\x00\x00\x00\x01N"),
    (BodyChunk(b"line\r\n"), b"\x00\x00\x00\x07Bline\r\n"),
    (EndOfMessage(), b"\x00\x00\x00\x01E"),
    (EndOfMessage(b"tail"), b"\x00\x00\x00\x05Etail"),
    (Abort(), b"\x00\x00\x00\x01A"),
    (Quit(), b"\x00\x00\x00\x01Q"),
    (QuitNewConnection(), b"\x00\x00\x00\x01K"),
    (Unknown("XYZZY foo"), b"\x00\x00\x00\x0bUXYZZY foo\x00"),
    # Non-UTF-8 bytes survive through surrogateescape.
    (Helo("h\udcffx"), b"\x00\x00\x00\x05Hh\xffx\x00"),
]

ACTION_VECTORS = [
    (
        NegotiateReply(6, ActionFlag(0x31), ProtocolFlag(0x0D3180)),
        b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x00\x31\x00\x0d\x31\x80",
    ),
    (
        NegotiateReply(
            6,
            ActionFlag.ADDHDRS | ActionFlag.SETSYMLIST,
            ProtocolFlag.NONE,
            ((MacroStage.CONNECT, "j {daemon_name}"), (MacroStage.EOM, "i")),
        ),
        b"\x00\x00\x00\x27O\x00\x00\x00\x06\x00\x00\x01\x01\x00\x00\x00\x00"
        b"\x00\x00\x00\x00j {daemon_name}\x00\x00\x00\x00\x05i\x00",
    ),
    (Continue(), b"\x00\x00\x00\x01c"),
    (Accept(), b"\x00\x00\x00\x01a"),
    (Reject(), b"\x00\x00\x00\x01r"),
    (TempFail(), b"\x00\x00\x00\x01t"),
    (Discard(), b"\x00\x00\x00\x01d"),
    (Progress(), b"\x00\x00\x00\x01p"),
    (Skip(), b"\x00\x00\x00\x01s"),
    (Shutdown(), b"\x00\x00\x00\x014"),
    (ConnectionFail(), b"\x00\x00\x00\x01f"),
    (ReplyCode(554, "5.7.1 Rejected 100%"), b"\x00\x00\x00\x1ay554 5.7.1 Rejected 100%%\x00"),
    (ReplyCode(451, ""), b"\x00\x00\x00\x06y451 \x00"),
    (Quarantine("spam"), b"\x00\x00\x00\x06qspam\x00"),
    (AddHeader("X-Spam", "Yes"), b"\x00\x00\x00\x0chX-Spam\x00Yes\x00"),
    (InsertHeader(1, "X-A", "b"), b"\x00\x00\x00\x0bi\x00\x00\x00\x01X-A\x00b\x00"),
    (ChangeHeader(2, "Subject", ""), b"\x00\x00\x00\x0em\x00\x00\x00\x02Subject\x00\x00"),
    (AddRcpt("<c@x>"), b"\x00\x00\x00\x07+<c@x>\x00"),
    (
        AddRcptWithArgs("<c@x>", ("NOTIFY=NEVER", "ORCPT=rfc822;c@x")),
        b"\x00\x00\x00\x252<c@x>\x00NOTIFY=NEVER ORCPT=rfc822;c@x\x00",
    ),
    (AddRcptWithArgs("<c@x>"), b"\x00\x00\x00\x072<c@x>\x00"),
    (DelRcpt("<c@x>"), b"\x00\x00\x00\x07-<c@x>\x00"),
    (ChangeFrom("<s@x>", ("RET=HDRS",)), b"\x00\x00\x00\x10e<s@x>\x00RET=HDRS\x00"),
    (ChangeFrom("<>"), b"\x00\x00\x00\x04e<>\x00"),
    (ReplaceBody(b"new\r\n"), b"\x00\x00\x00\x06bnew\r\n"),
    (
        SetSymbolList(MacroStage.MAIL, "i {auth_authen}"),
        b"\x00\x00\x00\x15l\x00\x00\x00\x02i {auth_authen}\x00",
    ),
]


def _split(frame: bytes) -> tuple[int, bytes]:
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return frame[4], frame[5:]


@pytest.mark.parametrize(("event", "wire"), EVENT_VECTORS)
def test_event_bytes_both_ways(event: Event, wire: bytes) -> None:
    assert encode_event(event) == wire
    assert decode_event(*_split(wire)) == event


@pytest.mark.parametrize(("action", "wire"), ACTION_VECTORS)
def test_action_bytes_both_ways(action: object, wire: bytes) -> None:
    assert encode_action(action) == wire  # type: ignore[arg-type]
    assert decode_action(*_split(wire)) == action


# ----------------------------------------------------------------- lenient decoding


@pytest.mark.parametrize(
    ("command", "payload", "expected"),
    [
        # A missing final NUL is tolerated everywhere strings end a payload (spec §10.21).
        (b"H", b"client", Helo("client")),
        (b"M", b"<a@b>\x00SIZE=1", MailFrom("<a@b>", ("SIZE=1",))),
        (b"R", b"<a@b>", RcptTo("<a@b>")),
        (b"L", b"Subject\x00hi", Header("Subject", "hi")),
        (b"U", b"FOO", Unknown("FOO")),
        (b"D", b"Ci\x00Q1", Macros(Command.CONNECT, (("i", "Q1"),))),
        # A macro name whose value is missing keeps an empty value.
        (b"D", b"Ci\x00Q1\x00j", Macros(Command.CONNECT, (("i", "Q1"), ("j", "")))),
        # MACRO frames for stages libmilter drops (L/B/U) are kept.
        (b"D", b"B", Macros(Command.BODY)),
        (b"D", b"U", Macros(Command.UNKNOWN)),
        # Sendmail's IPv6: prefix is stripped; the address field may lack its NUL.
        (
            b"C",
            b"h\x006\x00\x19IPv6:2001:db8::2\x00",
            Connect("h", Family.INET6, 25, "2001:db8::2"),
        ),
        (b"C", b"h\x004\x00\x19192.0.2.9", Connect("h", Family.INET, 25, "192.0.2.9")),
        # Family U: anything after the family byte is ignored.
        (b"C", b"unknown\x00Ujunk", Connect("unknown", Family.UNKNOWN)),
        # OPTNEG longer than 12 bytes and older versions are accepted (spec §10.16).
        (b"O", b"\x00\x00\x00\x02\x00\x00\x00\x0f\x00\x00\x00\x3fextra", None),
        (b"O", b"\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x00", None),
        # An empty string is a string.
        (b"H", b"\x00", Helo("")),
    ],
)
def test_lenient_event_decoding(command: bytes, payload: bytes, expected: Event | None) -> None:
    event = decode_event(command[0], payload)
    if expected is not None:
        assert event == expected
    else:
        assert isinstance(event, Negotiate)


@pytest.mark.parametrize(
    ("command", "payload", "match"),
    [
        (b"O", b"\x00" * 11, "12 bytes"),
        (b"O", b"\x00\x00\x00\x01" + b"\x00" * 8, "too old"),
        (b"D", b"", "stage byte"),
        (b"D", b"Z", "unknown command"),
        (b"D", b"Ca\x00\x00", None),  # fine: empty value
        (b"C", b"no-terminator", "terminator"),
        (b"C", b"host\x00", "family"),
        (b"C", b"host\x00X", "unknown family"),
        (b"C", b"host\x004\x00", "port"),
        (b"C", b"host\x004\x00\x19", "address"),
        (b"C", b"host\x004\x00\x19a\x00b\x00", "address"),
        (b"H", b"", "HELO"),
        (b"H", b"a\x00b\x00", "HELO"),
        (b"M", b"", "sender"),
        (b"R", b"", "recipient"),
        (b"L", b"only-name\x00", "HEADER"),
        (b"L", b"a\x00b\x00c\x00", "HEADER"),
        (b"U", b"", "UNKNOWN"),
        (b"T", b"x", "no payload"),
        (b"N", b"x", "no payload"),
        (b"A", b"x", "no payload"),
        (b"Q", b"x", "no payload"),
        (b"K", b"x", "no payload"),
        (b"Z", b"", "unknown MTA command"),
        (b"c", b"", "unknown MTA command"),
    ],
)
def test_malformed_event_payloads(command: bytes, payload: bytes, match: str | None) -> None:
    if match is None:
        decode_event(command[0], payload)
        return
    with pytest.raises(RemoteProtocolError, match=match):
        decode_event(command[0], payload)


@pytest.mark.parametrize(
    ("code", "payload", "expected"),
    [
        # Unknown macro stages in the OPTNEG reply are ignored, as Postfix does.
        (
            b"O",
            b"\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x09x\x00"
            b"\x00\x00\x00\x01{tls_version}",
            NegotiateReply(
                6, ActionFlag.NONE, ProtocolFlag.NONE, ((MacroStage.HELO, "{tls_version}"),)
            ),
        ),
        (b"y", b"421 4.7.0 bye", ReplyCode(421, "4.7.0 bye")),
        (b"y", b"550", ReplyCode(550, "")),
        # A single % that Postfix would drop stays as it is.
        (b"y", b"550 50% off\x00", ReplyCode(550, "50% off")),
        (
            b"2",
            b"<r@x>\x00NOTIFY=NEVER  ORCPT=x\x00",
            AddRcptWithArgs("<r@x>", ("NOTIFY=NEVER", "ORCPT=x")),
        ),
        (b"2", b"<r@x>\x00\x00", AddRcptWithArgs("<r@x>")),
        (b"e", b"<s@x>\x00RET=FULL ENVID=1", ChangeFrom("<s@x>", ("RET=FULL", "ENVID=1"))),
    ],
)
def test_lenient_action_decoding(code: bytes, payload: bytes, expected: object) -> None:
    assert decode_action(code[0], payload) == expected


@pytest.mark.parametrize(
    ("code", "payload", "match"),
    [
        (b"O", b"\x00" * 11, "12 bytes"),
        (b"O", b"\x00\x00\x00\x06" + b"\x00" * 8 + b"\x00\x00", "truncated"),
        (b"O", b"\x00\x00\x00\x09" + b"\x00" * 8, "version"),
        (b"O", b"\x00\x00\x00\x06\x00\x00\x00\x00\x70\x00\x00\x00", "internal"),
        (b"c", b"x", "no payload"),
        (b"a", b"x", "no payload"),
        (b"y", b"55 x\x00", "code"),
        (b"y", b"5x0 x\x00", "code"),
        (b"y", b"550-5.7.1 x\x00", "code"),
        (b"y", b"250 ok\x00", "4xx or 5xx"),
        (b"y", b"550 4.7.1 x\x00", "class"),
        (b"y", b"", "REPLYCODE"),
        (b"q", b"\x00", "empty"),
        (b"q", b"a\x00b\x00", "QUARANTINE"),
        (b"h", b"X-A\x00", "ADDHEADER"),
        (b"h", b"Bad:Name\x00v\x00", "header name"),
        (b"h", b"X-A\x00a\r\nb\x00", "CR"),
        (b"i", b"\x00\x00\x00", "index"),
        (b"m", b"\x00\x00\x00\x01X\x00", "CHGHEADER"),
        (b"+", b"", "ADDRCPT"),
        (b"-", b"\x00", "empty"),
        (b"2", b"", "address"),
        (b"e", b"a\x00b\x00c\x00", "address"),
        (b"b", b"x" * 65536, "65535"),
        (b"l", b"\x00\x00\x00", "stage"),
        (b"l", b"\x00\x00\x00\x09i\x00", "unknown stage"),
        (b"C", b"", "unknown filter reply"),
    ],
)
def test_malformed_action_payloads(code: bytes, payload: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_action(code[0], payload)


def test_events_without_wire_form_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError, match="not sent on the wire"):
        encode_event(ConnectionClosed())
    with pytest.raises(LocalProtocolError, match="not sent on the wire"):
        encode_event(HealthCheck("GET / HTTP/1.0"))
    with pytest.raises(LocalProtocolError, match="not a milter action"):
        encode_action(object())  # type: ignore[arg-type]


def test_unencodable_strings_are_local_errors() -> None:
    # A lone surrogate outside surrogateescape's range has no byte form.
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        encode_event(Helo("\ud800"))
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        encode_action(Quarantine("\ud800"))


def test_body_frame_at_postfix_maximum() -> None:
    # Postfix body frames read 65536 in the length field (spec §10 item 1).
    data = bytes(range(256)) * 255 + b"x" * 255
    assert len(data) == 65535
    wire = encode_event(BodyChunk(data))
    assert wire[:5] == b"\x00\x01\x00\x00B"
    assert decode_event(*_split(wire)) == BodyChunk(data)
