"""Constructor validation of events and actions, and their small helpers."""

from __future__ import annotations

import pytest

from milterd.protocol import (
    MAX_BODY_CHUNK,
    ActionFlag,
    AddHeader,
    AddRcpt,
    AddRcptWithArgs,
    ChangeFrom,
    ChangeHeader,
    Command,
    Connect,
    DelRcpt,
    Family,
    Header,
    Helo,
    InsertHeader,
    LocalProtocolError,
    Macros,
    MacroStage,
    MailFrom,
    Negotiate,
    NegotiateReply,
    ProtocolFlag,
    Quarantine,
    RcptTo,
    ReplaceBody,
    ReplyCode,
    SetSymbolList,
    Unknown,
    decode_action,
    encode_action,
    replace_body_chunks,
)

# ------------------------------------------------------------------------- ReplyCode


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "5.7.1 Spam message rejected"),
        (451, "4.7.1 Try again later"),
        (421, "4.3.2 Service shutting down"),
        (550, "Rejected"),  # no enhanced code at all
        (550, "5.7.1"),
        (599, ""),
        (400, "4.0.0 x"),
        (550, "6.1.1 is not an enhanced status code, only text"),
    ],
)
def test_replycode_valid(code: int, text: str) -> None:
    assert ReplyCode(code, text).code == code


@pytest.mark.parametrize(
    ("code", "text", "match"),
    [
        (399, "x", "4xx or 5xx"),
        (600, "x", "4xx or 5xx"),
        (250, "2.0.0 ok", "4xx or 5xx"),
        (554, "4.7.1 mismatch", "class 4"),
        (451, "5.7.1 mismatch", "class 5"),
        (451, "2.0.0 mismatch", "class 2"),
        (554, "line\nbreak", "single line"),
        (554, "line\rbreak", "single line"),
        (554, "nul\0", "single line"),
    ],
)
def test_replycode_invalid(code: int, text: str, match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        ReplyCode(code, text)


@pytest.mark.parametrize("text", ["100%", "%s %d", "%%", "a % b %% c", "5.7.1 50%% off"])
def test_percent_escaping_round_trip(text: str) -> None:
    wire = encode_action(ReplyCode(550, text))
    # On the wire every % is doubled (Sendmail printf format, spec §10 item 20).
    assert wire[9:-1].count(b"%") == 2 * text.count("%")
    assert decode_action(wire[4], wire[5:]) == ReplyCode(550, text)


# --------------------------------------------------------------------- headers etc.


@pytest.mark.parametrize("name", ["", "Bad Name", "Bad:Name", "Tab\tName", "Ünïcode", "\x7f"])
def test_header_name_rejected(name: str) -> None:
    with pytest.raises(LocalProtocolError, match="header name"):
        AddHeader(name, "v")
    with pytest.raises(LocalProtocolError, match="header name"):
        InsertHeader(0, name, "v")
    with pytest.raises(LocalProtocolError, match="header name"):
        ChangeHeader(1, name, "v")


@pytest.mark.parametrize("value", ["a\r\n b", "a\0", "a\nb", "trailing\n", "\r", "x\n\n y"])
def test_header_value_rejected(value: str) -> None:
    with pytest.raises(LocalProtocolError, match="header value"):
        AddHeader("X-A", value)


@pytest.mark.parametrize("value", ["", "plain", "folded\n next", "tab\n\tnext", " lead"])
def test_header_value_accepted(value: str) -> None:
    assert AddHeader("X-A", value).value == value


@pytest.mark.parametrize("index", [-1, 1 << 32])
def test_header_index_range(index: int) -> None:
    with pytest.raises(LocalProtocolError, match="32-bit"):
        InsertHeader(index, "X-A", "v")
    with pytest.raises(LocalProtocolError, match="32-bit"):
        ChangeHeader(index, "X-A", "v")


@pytest.mark.parametrize("reason", ["", "two\nlines", "cr\r", "nul\0"])
def test_quarantine_reason(reason: str) -> None:
    with pytest.raises(LocalProtocolError, match="quarantine reason"):
        Quarantine(reason)


@pytest.mark.parametrize("cls", [AddRcpt, DelRcpt])
@pytest.mark.parametrize(("value", "match"), [("", "empty"), ("a\0b", "NUL")])
def test_recipient_actions(cls: type, value: str, match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        cls(value)


@pytest.mark.parametrize("args", [("",), ("A B",), ("A\tB",), ("A\0",), ("A\n",)])
def test_esmtp_args_must_be_single_tokens(args: tuple[str, ...]) -> None:
    # They travel joined by spaces in ONE string (libmilter smfi_chgfrom).
    with pytest.raises(LocalProtocolError, match="ESMTP argument"):
        ChangeFrom("<s@x>", args)
    with pytest.raises(LocalProtocolError, match="ESMTP argument"):
        AddRcptWithArgs("<r@x>", args)
    with pytest.raises(LocalProtocolError, match="sender"):
        ChangeFrom("", ())


def test_replace_body_limits_and_chunks() -> None:
    ReplaceBody(b"x" * MAX_BODY_CHUNK)
    with pytest.raises(LocalProtocolError, match="replace_body_chunks"):
        ReplaceBody(b"x" * (MAX_BODY_CHUNK + 1))
    body = b"0123456789" * 20000  # 200000 bytes
    chunks = replace_body_chunks(body)
    assert [len(c.data) for c in chunks] == [65535, 65535, 65535, 3395]
    assert b"".join(c.data for c in chunks) == body
    assert replace_body_chunks(b"") == (ReplaceBody(b""),)
    assert replace_body_chunks(b"abcde", chunk_size=2) == (
        ReplaceBody(b"ab"),
        ReplaceBody(b"cd"),
        ReplaceBody(b"e"),
    )
    for bad in (0, MAX_BODY_CHUNK + 1):
        with pytest.raises(LocalProtocolError, match="chunk size"):
            replace_body_chunks(b"x", chunk_size=bad)


def test_negotiate_reply_validation() -> None:
    NegotiateReply(2, ActionFlag.NONE, ProtocolFlag.NONE)
    for version in (1, 7):
        with pytest.raises(LocalProtocolError, match="version"):
            NegotiateReply(version, ActionFlag.NONE, ProtocolFlag.NONE)
    with pytest.raises(LocalProtocolError, match="internal"):
        NegotiateReply(6, ActionFlag.NONE, ProtocolFlag(0x10000000))
    with pytest.raises(LocalProtocolError, match="32-bit"):
        NegotiateReply(6, ActionFlag(1 << 32), ProtocolFlag.NONE)
    with pytest.raises(LocalProtocolError, match="32-bit"):
        NegotiateReply(6, ActionFlag.NONE, ProtocolFlag(1 << 32))
    with pytest.raises(LocalProtocolError, match="MacroStage"):
        NegotiateReply(6, ActionFlag.NONE, ProtocolFlag.NONE, ((0, "i"),))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="NUL"):
        NegotiateReply(6, ActionFlag.NONE, ProtocolFlag.NONE, ((MacroStage.EOM, "i\0"),))


def test_set_symbol_list_validation() -> None:
    with pytest.raises(LocalProtocolError, match="MacroStage"):
        SetSymbolList(2, "i")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="NUL"):
        SetSymbolList(MacroStage.MAIL, "\0")


# ----------------------------------------------------------------------- events


def test_negotiate_validation() -> None:
    assert Negotiate(7, ActionFlag.NONE, ProtocolFlag.NONE).version == 7  # negotiated down
    with pytest.raises(LocalProtocolError, match="too old"):
        Negotiate(1, ActionFlag.NONE, ProtocolFlag.NONE)
    with pytest.raises(LocalProtocolError, match="32-bit"):
        Negotiate(1 << 32, ActionFlag.NONE, ProtocolFlag.NONE)
    with pytest.raises(LocalProtocolError, match="32-bit"):
        Negotiate(6, ActionFlag(1 << 32), ProtocolFlag.NONE)
    with pytest.raises(LocalProtocolError, match="32-bit"):
        Negotiate(6, ActionFlag.NONE, ProtocolFlag(1 << 33))


def test_connect_validation() -> None:
    with pytest.raises(LocalProtocolError, match="no port or address"):
        Connect("h", Family.UNKNOWN, 25, None)
    with pytest.raises(LocalProtocolError, match="no port or address"):
        Connect("h", Family.UNKNOWN, None, "1.2.3.4")
    with pytest.raises(LocalProtocolError, match="needs a port"):
        Connect("h", Family.INET)
    with pytest.raises(LocalProtocolError, match="needs a port"):
        Connect("h", Family.INET6, 25)
    with pytest.raises(LocalProtocolError, match="16-bit"):
        Connect("h", Family.INET, 70000, "1.2.3.4")
    with pytest.raises(LocalProtocolError, match="Family"):
        Connect("h", "4", 25, "1.2.3.4")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="NUL"):
        Connect("h\0", Family.UNKNOWN)
    with pytest.raises(LocalProtocolError, match="NUL"):
        Connect("h", Family.INET, 1, "\0")


@pytest.mark.parametrize(
    "build",
    [
        lambda: Helo("a\0"),
        lambda: MailFrom("a\0"),
        lambda: MailFrom("a", ("b\0",)),
        lambda: RcptTo("\0"),
        lambda: RcptTo("a", ("\0",)),
        lambda: Header("a\0", "b"),
        lambda: Header("a", "b\0"),
        lambda: Unknown("\0"),
        lambda: Macros(Command.MAIL, (("i\0", "x"),)),
        lambda: Macros(Command.MAIL, (("i", "x\0"),)),
    ],
)
def test_event_strings_reject_nul(build: object) -> None:
    with pytest.raises(LocalProtocolError, match="NUL"):
        build()  # type: ignore[operator]


def test_macros_helpers() -> None:
    m = Macros(
        Command.MAIL,
        (("i", "4XYZ"), ("{auth_authen}", "alice"), ("{i}", "later"), ("j", "mx")),
    )
    assert m.as_dict() == {"i": "4XYZ", "{auth_authen}": "alice", "{i}": "later", "j": "mx"}
    # x and {x} are the same macro (spec §10 item 8); the last one sent wins.
    assert m.get("i") == "later"
    assert m.get("{j}") == "mx"
    assert m.get("auth_authen") == "alice"
    assert m.get("{missing}") is None
    assert m.get("missing", "dflt") == "dflt"
    with pytest.raises(LocalProtocolError, match="Command"):
        Macros(b"M", ())  # type: ignore[arg-type]
