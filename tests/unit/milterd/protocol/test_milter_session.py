"""Whole sessions through a FILTER/MTA ``ConnectionPair``, and the reply discipline."""

from __future__ import annotations

import pytest
from milter_helpers import OUR_ACTIONS, OUR_PROTOCOL, POSTFIX_OFFER, ConnectionPair, drain

from milterd.protocol import (
    NEED_DATA,
    Abort,
    Accept,
    ActionFlag,
    AddHeader,
    AddRcpt,
    BodyChunk,
    ChangeHeader,
    Command,
    Connect,
    ConnectionClosed,
    ConnectionFail,
    Continue,
    Data,
    Discard,
    EndOfHeaders,
    EndOfMessage,
    Family,
    Header,
    Helo,
    InsertHeader,
    LocalProtocolError,
    Macros,
    MacroStage,
    MailFrom,
    MilterConnection,
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
    Role,
    Shutdown,
    Skip,
    State,
    TempFail,
    Unknown,
)

MACRO_LISTS = (
    (MacroStage.CONNECT, "j {daemon_name} {client_addr}"),
    (MacroStage.MAIL, "i {auth_authen}"),
    (MacroStage.EOM, "i"),
)


def _message(pair: ConnectionPair, queue_id: str, subject: str) -> None:
    """One Postfix-style message: macros before every command, replies at MAIL/RCPT/EOM."""
    pair.mta_sends(Macros(Command.MAIL, (("i", ""), ("{auth_authen}", "alice"))))
    pair.mta_sends(MailFrom("<alice@example.org>", ("SIZE=321", "BODY=8BITMIME")))
    pair.assert_in_sync(State.MAIL, Command.MAIL)
    pair.filter_sends(Continue())
    for rcpt in ("<bob@example.net>", "<carol@example.net>"):
        pair.mta_sends(Macros(Command.RCPT, (("{rcpt_addr}", rcpt.strip("<>")),)))
        pair.mta_sends(RcptTo(rcpt, ("NOTIFY=NEVER",)))
        pair.assert_in_sync(State.RCPT, Command.RCPT)
        pair.filter_sends(Continue())
    # From here NR flags mean the MTA streams without waiting.
    pair.mta_sends(Macros(Command.DATA, (("i", queue_id),)), Data())
    pair.assert_in_sync(State.DATA)
    for name, value in (
        ("From", "Alice <alice@example.org>"),
        ("To", "bob@example.net,\n\tcarol@example.net"),
        ("Subject", subject),
    ):
        pair.mta_sends(Macros(Command.HEADER, (("i", queue_id),)), Header(name, value))
        pair.assert_in_sync(State.HEADERS)
    pair.mta_sends(Macros(Command.EOH, (("i", queue_id),)), EndOfHeaders())
    pair.assert_in_sync(State.EOH)
    for chunk in (b"x" * 65535, b"line two\r\n", b"last\r\n"):
        pair.mta_sends(Macros(Command.BODY, (("i", queue_id),)), BodyChunk(chunk))
        pair.assert_in_sync(State.BODY)
    pair.mta_sends(Macros(Command.BODYEOB, (("i", queue_id),)), EndOfMessage())
    pair.assert_in_sync(State.END_OF_MESSAGE, Command.BODYEOB)


def test_postfix_like_session_two_messages() -> None:
    pair = ConnectionPair()
    pair.negotiate(macros=MACRO_LISTS)
    assert pair.filter_to_mta == (
        b"\x00\x00\x00\x49O\x00\x00\x00\x06\x00\x00\x01\x31\x00\x0d\x31\x80"
        b"\x00\x00\x00\x00j {daemon_name} {client_addr}\x00"
        b"\x00\x00\x00\x02i {auth_authen}\x00"
        b"\x00\x00\x00\x05i\x00"
    )
    negotiated = pair.filter.negotiated
    assert negotiated is not None
    assert negotiated.macros == MACRO_LISTS
    assert negotiated.actions == OUR_ACTIONS | ActionFlag.SETSYMLIST
    assert negotiated.protocol == OUR_PROTOCOL
    pair.assert_in_sync(State.NEGOTIATED)

    pair.mta_sends(
        Macros(Command.CONNECT, (("j", "mx.example"), ("{client_addr}", "192.0.2.1"))),
        Connect("[192.0.2.1]", Family.INET, 40000, "192.0.2.1"),
    )
    pair.assert_in_sync(State.CONNECTED)  # NR_CONN: nothing owed
    pair.mta_sends(Macros(Command.HELO), Helo("client.example"))
    pair.assert_in_sync(State.CONNECTED)

    _message(pair, "4AbCdE", "first")
    start = len(pair.filter_to_mta)
    pair.filter_sends(
        AddHeader("X-Spam", "Yes"),
        ChangeHeader(1, "Subject", "[SPAM] first"),
        Quarantine("spam score 12"),
    )
    pair.assert_in_sync(State.END_OF_MESSAGE, Command.BODYEOB)  # still owed
    pair.filter_sends(Accept())
    assert pair.filter_to_mta[start:] == (
        b"\x00\x00\x00\x0chX-Spam\x00Yes\x00"
        b"\x00\x00\x00\x1am\x00\x00\x00\x01Subject\x00[SPAM] first\x00"
        b"\x00\x00\x00\x0fqspam score 12\x00"
        b"\x00\x00\x00\x01a"
    )
    pair.assert_in_sync(State.CONNECTED)
    pair.mta_sends(Abort())  # Postfix aborts after every transaction
    pair.assert_in_sync(State.CONNECTED)

    _message(pair, "5FgHiJ", "second")
    pair.filter_sends(Progress(), ReplyCode(554, "5.7.1 Spam message rejected"))
    pair.assert_in_sync(State.CONNECTED)
    pair.mta_sends(Abort(), Abort())  # double ABORT is harmless
    pair.assert_in_sync(State.CONNECTED)
    pair.mta_sends(Quit())
    pair.assert_in_sync(State.CLOSED)
    pair.filter.receive_data(b"")
    assert pair.filter.next_event() == ConnectionClosed()
    assert pair.filter.next_event() == ConnectionClosed()  # repeatable, like h11
    assert pair.filter.state is State.CLOSED


def test_abort_mid_message_then_new_message() -> None:
    pair = ConnectionPair()
    pair.negotiate()
    pair.mta_sends(Connect("h", Family.UNKNOWN), Helo("h"), MailFrom("<a@b>"))
    pair.filter_sends(Continue())
    pair.mta_sends(RcptTo("<c@d>"))
    pair.filter_sends(Reject())  # per-recipient reject; the session goes on
    pair.mta_sends(Abort())
    pair.assert_in_sync(State.CONNECTED)
    pair.mta_sends(MailFrom("<a@b>"))
    pair.filter_sends(Accept())  # accept this message at MAIL
    pair.mta_sends(Abort(), Quit())
    pair.assert_in_sync(State.CLOSED)


def test_quit_nc_returns_to_pre_connect_without_renegotiation() -> None:
    pair = ConnectionPair()
    pair.negotiate()
    negotiated = pair.filter.negotiated
    pair.mta_sends(Connect("h", Family.UNKNOWN), Helo("h"))
    _message(pair, "Q1", "s")
    pair.filter_sends(Continue())
    pair.mta_sends(Abort(), QuitNewConnection())
    pair.assert_in_sync(State.NEGOTIATED)
    assert pair.filter.negotiated is negotiated
    pair.mta_sends(Connect("other", Family.INET6, 25, "2001:db8::1"))
    pair.assert_in_sync(State.CONNECTED)
    with pytest.raises(LocalProtocolError, match="OPTNEG not allowed in state CONNECTED"):
        pair.mta.send(POSTFIX_OFFER)
    pair.filter.receive_data(b"\x00\x00\x00\x0dO\x00\x00\x00\x06" + b"\x00" * 8)
    with pytest.raises(RemoteProtocolError, match="OPTNEG not allowed in state CONNECTED"):
        pair.filter.next_event()


@pytest.mark.parametrize("verdict", [Accept(), Reject(), TempFail(), ReplyCode(421, "4.7.0 go")])
@pytest.mark.parametrize("stage", [Command.CONNECT, Command.HELO])
def test_verdict_at_connect_or_helo_ends_session(verdict: object, stage: Command) -> None:
    pair = ConnectionPair()
    pair.negotiate(protocol=ProtocolFlag.NONE)
    pair.mta_sends(Connect("h", Family.UNKNOWN))
    if stage is Command.HELO:
        pair.filter_sends(Continue())
        pair.mta_sends(Helo("h"))
    pair.filter_sends(verdict)  # type: ignore[arg-type]
    pair.assert_in_sync(State.DONE)
    # Sendmail may still abort/quit; Postfix just closes.
    pair.mta_sends(Macros(Command.ABORT), Abort(), QuitNewConnection())
    pair.assert_in_sync(State.NEGOTIATED)


def test_done_state_rejects_further_commands() -> None:
    pair = ConnectionPair()
    pair.negotiate(protocol=ProtocolFlag.NONE)
    pair.mta_sends(Connect("h", Family.UNKNOWN))
    pair.filter_sends(Reject())
    with pytest.raises(LocalProtocolError, match="HELO not allowed in state DONE"):
        pair.mta.send(Helo("h"))
    raw = MilterConnection(Role.MTA)
    pair.filter.receive_data(b"\x00\x00\x00\x03Hh\x00")
    with pytest.raises(RemoteProtocolError, match="HELO not allowed in state DONE"):
        pair.filter.next_event()
    assert pair.filter.state is State.ERROR
    assert raw.state is State.START


@pytest.mark.parametrize("action", [Shutdown(), ConnectionFail()])
def test_shutdown_ends_session_anywhere(action: object) -> None:
    pair = ConnectionPair()
    pair.negotiate()
    pair.mta_sends(Connect("h", Family.UNKNOWN), MailFrom("<a@b>"))
    pair.filter_sends(action)  # type: ignore[arg-type]
    pair.assert_in_sync(State.DONE)
    pair.mta_sends(Quit())
    pair.assert_in_sync(State.CLOSED)


def test_discard_allowed_for_message_not_for_session() -> None:
    pair = ConnectionPair()
    pair.negotiate(protocol=ProtocolFlag.NONE)
    pair.mta_sends(Connect("h", Family.UNKNOWN))
    with pytest.raises(LocalProtocolError, match="Discard is not a valid answer to CONNECT"):
        pair.filter.send(Discard())
    pair = ConnectionPair()
    pair.negotiate()
    pair.mta_sends(Connect("h", Family.UNKNOWN), Helo("h"), MailFrom("<a@b>"))
    pair.filter_sends(Discard())
    pair.assert_in_sync(State.MAIL)


# -------------------------------------------------------------------- reply discipline


@pytest.mark.parametrize(
    ("event", "flag"),
    [
        (Connect("h", Family.UNKNOWN), ProtocolFlag.NR_CONN),
        (Helo("h"), ProtocolFlag.NR_HELO),
        (MailFrom("<a@b>"), ProtocolFlag.NR_MAIL),
        (RcptTo("<a@b>"), ProtocolFlag.NR_RCPT),
        (Data(), ProtocolFlag.NR_DATA),
        (Header("a", "b"), ProtocolFlag.NR_HDR),
        (EndOfHeaders(), ProtocolFlag.NR_EOH),
        (BodyChunk(b"x"), ProtocolFlag.NR_BODY),
        (Unknown("FOO"), ProtocolFlag.NR_UNKN),
    ],
)
def test_no_reply_flags(event: object, flag: ProtocolFlag) -> None:
    for negotiated_flags, owed in ((ProtocolFlag.NONE, True), (flag, False)):
        pair = ConnectionPair()
        pair.negotiate(protocol=negotiated_flags)
        pair.mta_sends(event)  # type: ignore[arg-type]
        assert (pair.filter.reply_owed is not None) is owed
        assert pair.mta.reply_owed == pair.filter.reply_owed
        if owed:
            pair.filter_sends(Continue())
        else:
            with pytest.raises(LocalProtocolError, match="no reply is owed"):
                pair.filter.send(Continue())
            assert pair.filter.state is State.ERROR


@pytest.mark.parametrize("event", [Macros(Command.CONNECT), Abort(), Quit(), QuitNewConnection()])
def test_never_reply_to_macro_abort_quit(event: object) -> None:
    pair = ConnectionPair()
    pair.negotiate(protocol=ProtocolFlag.NONE)
    pair.mta_sends(event)  # type: ignore[arg-type]
    assert pair.filter.reply_owed is None
    with pytest.raises(LocalProtocolError, match="no reply is owed"):
        pair.filter.send(Continue())


def test_bodyeob_always_needs_a_reply() -> None:
    pair = ConnectionPair()
    pair.negotiate(protocol=ProtocolFlag(0x1FFFFF & ~ProtocolFlag.HDR_LEADSPC))
    pair.mta_sends(EndOfMessage())  # out of order, still owed
    assert pair.filter.out_of_order
    assert pair.filter.reply_owed is Command.BODYEOB


@pytest.mark.parametrize(
    "mod", [AddHeader("X-A", "1"), ChangeHeader(1, "X", ""), Quarantine("q"), AddRcpt("<x@y>")]
)
def test_modification_outside_eom(mod: object) -> None:
    pair = ConnectionPair()
    pair.negotiate(actions=ActionFlag(0x1FF))
    pair.mta_sends(Connect("h", Family.UNKNOWN), Helo("h"), MailFrom("<a@b>"))
    with pytest.raises(LocalProtocolError, match="not a valid answer to MAIL"):
        pair.filter.send(mod)  # type: ignore[arg-type]
    assert pair.filter.state is State.ERROR
    # Every later call raises.
    with pytest.raises(LocalProtocolError, match="ERROR"):
        pair.filter.send(Continue())
    with pytest.raises(LocalProtocolError, match="ERROR"):
        pair.filter.next_event()
    with pytest.raises(LocalProtocolError, match="ERROR"):
        pair.filter.receive_data(b"x")


def _at_eom(
    actions: ActionFlag = OUR_ACTIONS, protocol: ProtocolFlag = OUR_PROTOCOL
) -> ConnectionPair:
    pair = ConnectionPair()
    pair.negotiate(actions=actions, protocol=protocol)
    pair.mta_sends(Connect("h", Family.UNKNOWN), Helo("h"), MailFrom("<a@b>"))
    pair.filter_sends(Continue())
    pair.mta_sends(RcptTo("<c@d>"))
    pair.filter_sends(Continue())
    pair.mta_sends(Data(), EndOfHeaders(), EndOfMessage())
    return pair


def test_unnegotiated_action_at_eom() -> None:
    pair = _at_eom()
    pair.filter_sends(AddHeader("X-A", "1"), InsertHeader(0, "X-B", "2"))
    with pytest.raises(LocalProtocolError, match="ADDRCPT, not negotiated"):
        pair.filter.send(AddRcpt("<x@y>"))


def test_replace_body_must_be_contiguous() -> None:
    pair = _at_eom(actions=ActionFlag.CHGBODY | ActionFlag.ADDHDRS)
    pair.filter_sends(AddHeader("X-Before", "ok"), ReplaceBody(b"a"), ReplaceBody(b"b"))
    pair.filter_sends(AddHeader("X-After", "ok"))
    with pytest.raises(LocalProtocolError, match="back to back"):
        pair.filter.send(ReplaceBody(b"c"))


def test_replace_body_state_resets_per_message() -> None:
    pair = _at_eom(actions=ActionFlag.CHGBODY | ActionFlag.ADDHDRS)
    pair.filter_sends(ReplaceBody(b"a"), AddHeader("X", "1"), Accept())
    pair.mta_sends(Abort(), MailFrom("<a@b>"))
    pair.filter_sends(Continue())
    pair.mta_sends(EndOfMessage())
    pair.filter_sends(ReplaceBody(b"new"), Continue())


def test_progress_only_while_owed() -> None:
    pair = _at_eom()
    pair.filter_sends(Progress(), Progress(), AddHeader("X", "1"), Progress(), Continue())
    with pytest.raises(LocalProtocolError, match="no reply is owed"):
        pair.filter.send(Progress())


def test_progress_not_an_optneg_answer() -> None:
    pair = ConnectionPair()
    pair.mta_sends(POSTFIX_OFFER)
    with pytest.raises(LocalProtocolError, match="Progress is not a valid answer to OPTNEG"):
        pair.filter.send(Progress())


def test_skip_needs_offer() -> None:
    pair = ConnectionPair()
    pair.negotiate(protocol=ProtocolFlag.NONE)
    pair.mta_sends(Connect("h", Family.UNKNOWN))
    pair.filter_sends(Continue())
    pair.mta_sends(Helo("h"))
    pair.filter_sends(Skip())  # Postfix offers SKIP
    no_skip = Negotiate(6, ActionFlag(0x1FF), ProtocolFlag(0x1FFFFF & ~ProtocolFlag.SKIP))
    pair = ConnectionPair()
    pair.negotiate(offer=no_skip, protocol=ProtocolFlag.NONE)
    pair.mta_sends(Connect("h", Family.UNKNOWN))
    with pytest.raises(LocalProtocolError, match="did not offer SMFIP_SKIP"):
        pair.filter.send(Skip())


def test_skip_is_not_an_eom_answer() -> None:
    pair = _at_eom()
    with pytest.raises(LocalProtocolError, match="Skip is not a valid answer to BODYEOB"):
        pair.filter.send(Skip())


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (NegotiateReply(6, ActionFlag(0x200), ProtocolFlag.NONE), "actions 0x200"),
        (NegotiateReply(6, ActionFlag.NONE, ProtocolFlag(0x200000)), "protocol bits 0x200000"),
    ],
)
def test_filter_negotiation_must_fit_offer(reply: NegotiateReply, match: str) -> None:
    pair = ConnectionPair()
    pair.mta_sends(POSTFIX_OFFER)
    with pytest.raises(LocalProtocolError, match=match):
        pair.filter.send(reply)


def test_filter_version_above_offer() -> None:
    pair = ConnectionPair()
    pair.mta_sends(Negotiate(4, ActionFlag(0x3F), ProtocolFlag(0x3FF)))
    with pytest.raises(LocalProtocolError, match="above the offered 4"):
        pair.filter.send(NegotiateReply(6, ActionFlag.NONE, ProtocolFlag.NONE))


def test_mta_masks_unoffered_protocol_bits_like_postfix() -> None:
    mta = MilterConnection(Role.MTA)
    mta.send(Negotiate(6, ActionFlag(0x1FF), ProtocolFlag(0xFF)))
    mta.receive_data(b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x00\x01\x00\x0f\x00\x01")
    reply = mta.next_event()
    assert isinstance(reply, NegotiateReply)
    assert mta.negotiated is not None
    assert mta.negotiated.protocol == ProtocolFlag.NOCONNECT  # 0x0F0000 dropped


def test_mta_refuses_unoffered_actions() -> None:
    mta = MilterConnection(Role.MTA)
    mta.send(Negotiate(6, ActionFlag(0x01), ProtocolFlag(0xFF)))
    mta.receive_data(b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x00\x03\x00\x00\x00\x00")
    with pytest.raises(RemoteProtocolError, match="not offered"):
        mta.next_event()
    assert mta.state is State.ERROR


def test_wrong_item_kinds() -> None:
    flt = MilterConnection(Role.FILTER)
    with pytest.raises(LocalProtocolError, match="a filter sends actions"):
        flt.send(Helo("x"))
    mta = MilterConnection(Role.MTA)
    with pytest.raises(LocalProtocolError, match="an MTA sends wire events"):
        mta.send(Continue())
    mta = MilterConnection(Role.MTA)
    with pytest.raises(LocalProtocolError, match="an MTA sends wire events"):
        mta.send(ConnectionClosed())


def test_mta_side_sequencing() -> None:
    mta = MilterConnection(Role.MTA)
    with pytest.raises(LocalProtocolError, match="MACRO not allowed in state START"):
        mta.send(Macros(Command.CONNECT))
    mta = MilterConnection(Role.MTA)
    mta.send(POSTFIX_OFFER)
    with pytest.raises(LocalProtocolError, match="reply to OPTNEG is outstanding"):
        mta.send(Connect("h", Family.UNKNOWN))
    with pytest.raises(LocalProtocolError, match="ERROR"):
        mta.send(Connect("h", Family.UNKNOWN))


def test_mta_rejects_unexpected_replies() -> None:
    pair = ConnectionPair()
    pair.negotiate()
    pair.mta_sends(Connect("h", Family.UNKNOWN))  # NR_CONN
    pair.mta.receive_data(b"\x00\x00\x00\x01c")
    with pytest.raises(RemoteProtocolError, match="no reply is owed"):
        pair.mta.next_event()
    pair = _at_eom()
    pair.mta.receive_data(b"\x00\x00\x00\x09+<x@y.z>\x00")  # ADDRCPT not negotiated
    with pytest.raises(RemoteProtocolError, match="ADDRCPT, not negotiated"):
        pair.mta.next_event()


def test_mta_receives_many_modifications_then_one_decision() -> None:
    pair = _at_eom(actions=ActionFlag(0x1FF))
    data = pair.filter.send_many(
        [AddHeader("X-A", str(i)) for i in range(50)] + [Progress(), Discard()]
    )
    pair.mta.receive_data(data)
    got = drain(pair.mta)
    assert len(got) == 52
    assert got[-1] == Discard()
    pair.assert_in_sync(State.CONNECTED)
    pair.mta.receive_data(b"\x00\x00\x00\x01a")
    with pytest.raises(RemoteProtocolError, match="no reply is owed"):
        pair.mta.next_event()


# ------------------------------------------------------------------------ tolerance


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([Header("a", "b")], State.HEADERS),  # HEADER without MAIL
        ([MailFrom("<a@b>"), Data(), BodyChunk(b"x"), MailFrom("<c@d>")], State.MAIL),
        ([MailFrom("<a@b>"), BodyChunk(b"x"), Header("a", "b")], State.HEADERS),
        ([MailFrom("<a@b>"), Helo("again")], State.CONNECTED),
        ([Connect("again", Family.UNKNOWN)], State.CONNECTED),
        ([MailFrom("<a@b>"), EndOfHeaders(), Data()], State.DATA),
        ([MailFrom("<a@b>"), Data(), Unknown("X")], State.CONNECTED),
    ],
)
def test_out_of_order_commands_reset_instead_of_failing(
    events: list[object], expected: State
) -> None:
    pair = ConnectionPair()
    pair.negotiate(protocol=ProtocolFlag(0xFF080) | ProtocolFlag.NR_MAIL | ProtocolFlag.NR_RCPT)
    pair.mta_sends(Connect("h", Family.UNKNOWN))
    assert not pair.filter.out_of_order
    pair.mta_sends(*events)  # type: ignore[arg-type]
    assert pair.filter.out_of_order
    pair.assert_in_sync(expected)
    pair.mta_sends(Abort())
    assert not pair.filter.out_of_order


def test_skipped_steps_are_in_order() -> None:
    # With NOCONNECT|NOHELO|NODATA|NOHDRS|NOEOH the MTA jumps straight ahead (spec §3).
    pair = ConnectionPair()
    pair.negotiate(protocol=ProtocolFlag(0x2F3) | ProtocolFlag(0xFF000) | ProtocolFlag.NR_HDR)
    negotiated = pair.filter.negotiated
    assert negotiated is not None
    assert not negotiated.sends(Command.CONNECT)
    assert negotiated.sends(Command.MAIL)
    assert negotiated.sends(Command.BODYEOB)
    pair.mta_sends(MailFrom("<a@b>"), RcptTo("<c@d>"), BodyChunk(b"x"), EndOfMessage())
    assert not pair.filter.out_of_order
    pair.filter_sends(Accept())
    pair.mta_sends(Unknown("X"))
    assert not pair.filter.out_of_order


# ------------------------------------------------------------- malformed input / framing


def _negotiated_filter() -> MilterConnection:
    pair = ConnectionPair()
    pair.negotiate()
    return pair.filter


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x00\x00\x00\x00", "frame length 0"),
        (b"\x00\x10\x00\x01", "frame length 1048577"),
        (b"\x00\x00\x00\x03Ch\x00", "family"),
        (b"\x00\x00\x00\x04Ch\x004", "port"),
        (b"\x00\x00\x00\x01Z", "unknown MTA command"),
        (b"\x00\x00\x00\x01O", "OPTNEG needs 12 bytes"),
        (b"\x00\x00\x00\x0dO\x00\x00\x00\x06" + b"\x00" * 8, "OPTNEG not allowed"),
        (b"\x00\x00\x00\x01Q\x00\x00\x00\x01A", "ABORT not allowed in state CLOSED"),
        (b"\x00\x00\x00\x01E\x00\x00\x00\x01A", "outstanding"),
    ],
)
def test_malformed_frames_after_negotiation(data: bytes, match: str) -> None:
    flt = _negotiated_filter()
    flt.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=match):
        drain(flt)
    assert flt.state is State.ERROR
    with pytest.raises(LocalProtocolError, match="ERROR"):
        flt.next_event()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x00\x00\x00\x01A", "ABORT not allowed in state START"),
        (b"\x00\x00\x00\x02DC", "MACRO not allowed in state START"),
        (b"\x00\x00\x00\x0bO\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00", "OPTNEG needs 12 bytes"),
        (b"\x00\x00\x00\x0dO\x00\x00\x00\x01" + b"\x00" * 8, "too old"),
        (b"\x00\x00\x00\x0dO\x00\x00\x00\x06" + b"\x00" * 8 + b"\x00\x00\x00\x01A", "outstanding"),
    ],
)
def test_malformed_at_start(data: bytes, match: str) -> None:
    flt = MilterConnection(Role.FILTER)
    flt.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=match):
        drain(flt)
    assert flt.state is State.ERROR


def test_oversize_length_rejected_before_payload_arrives() -> None:
    flt = MilterConnection(Role.FILTER, max_frame_size=100)
    flt.receive_data(b"\x00\x00\x00\x65")  # 101, no payload sent yet
    with pytest.raises(RemoteProtocolError, match=r"outside 1\.\.100"):
        flt.next_event()


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 12, 16])
def test_eof_mid_frame(cut: int) -> None:
    frame = b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"
    flt = MilterConnection(Role.FILTER)
    flt.receive_data(frame[:cut])
    assert flt.next_event() is NEED_DATA
    flt.receive_data(b"")
    assert flt.trailing_data == (frame[:cut], True)
    with pytest.raises(RemoteProtocolError, match="EOF in the middle of a frame"):
        flt.next_event()
    assert flt.state is State.ERROR


def test_eof_at_frame_boundary_while_reply_owed() -> None:
    # Postfix gave up waiting (timeout) and closed: not a protocol error.
    flt = MilterConnection(Role.FILTER)
    flt.receive_data(b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff")
    assert isinstance(flt.next_event(), Negotiate)
    assert flt.reply_owed is Command.OPTNEG
    flt.receive_data(b"")
    assert flt.next_event() == ConnectionClosed()
    assert flt.reply_owed is None
    assert flt.state is State.CLOSED


def test_eof_before_anything() -> None:
    flt = MilterConnection(Role.FILTER)
    flt.receive_data(b"")
    flt.receive_data(b"")  # a second EOF is harmless
    assert flt.next_event() == ConnectionClosed()


def test_data_after_eof_is_local_error() -> None:
    flt = MilterConnection(Role.FILTER)
    flt.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after EOF"):
        flt.receive_data(b"x")
    assert flt.state is State.ERROR


def test_max_frame_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        MilterConnection(Role.FILTER, max_frame_size=0)


def test_postfix_size_body_frame_through_connection() -> None:
    pair = ConnectionPair()
    pair.negotiate(protocol=ProtocolFlag(0xFF080))
    pair.mta_sends(Connect("h", Family.UNKNOWN), MailFrom("<a@b>"), RcptTo("<c@d>"), Data())
    body = bytes(range(256)) * 256
    data = pair.mta.send(BodyChunk(body[:65535]))
    assert data[:4] == b"\x00\x01\x00\x00"  # length field 65536
    pair.filter.receive_data(data)
    assert pair.filter.next_event() == BodyChunk(body[:65535])
    small = MilterConnection(Role.FILTER, max_frame_size=65535)
    small.receive_data(data)
    with pytest.raises(RemoteProtocolError, match="65536"):
        small.next_event()


def test_role_and_offer_properties() -> None:
    pair = ConnectionPair()
    assert pair.filter.role is Role.FILTER
    assert pair.mta.role is Role.MTA
    assert pair.filter.offer is None
    assert pair.filter.negotiated is None
    pair.negotiate()
    assert pair.filter.offer == POSTFIX_OFFER
    assert pair.mta.offer == POSTFIX_OFFER
