"""Property tests for the milter codec (h11's fuzz/afl-server.py invariant, via hypothesis).

1. Whatever bytes arrive, a FILTER-role connection either yields events or raises
   ``RemoteProtocolError``: never another exception, never a hang.  Delivery whole and
   byte-at-a-time give the same outcome.
2. Valid sessions encoded by an MTA-role connection decode to the identical events in a
   FILTER-role connection, and the filter's replies decode identically on the MTA side.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck as HypothesisHealthCheck
from hypothesis import given, settings
from hypothesis import strategies as st

from milterd.protocol import (
    NEED_DATA,
    Abort,
    Accept,
    Action,
    ActionFlag,
    AddHeader,
    BodyChunk,
    ChangeHeader,
    Command,
    Connect,
    ConnectionClosed,
    Continue,
    Data,
    Discard,
    EndOfHeaders,
    EndOfMessage,
    Event,
    Family,
    Header,
    Helo,
    InsertHeader,
    Macros,
    MacroStage,
    MailFrom,
    MilterConnection,
    Negotiate,
    Progress,
    ProtocolFlag,
    Quarantine,
    Quit,
    RcptTo,
    Reject,
    RemoteProtocolError,
    ReplyCode,
    Role,
    TempFail,
    Unknown,
    negotiate_reply,
)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HypothesisHealthCheck.too_slow, HypothesisHealthCheck.data_too_large],
)

# ------------------------------------------------------------------- 1. arbitrary bytes

_POSTFIX_OFFER_FRAME = b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"


def _frame(command: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload) + 1) + command + payload


_frames = st.builds(
    _frame,
    st.sampled_from([bytes([c]) for c in b"ODCHMRTLNBEAQKUZ\x00"]),
    st.binary(max_size=40),
)
_chunks = st.one_of(
    _frames,
    _frames,
    _frames,
    st.binary(max_size=12),
    st.just(b"GET /ping HTTP/1.0\r\n"),
)
_garbage = st.builds(
    lambda start, parts: start + b"".join(parts),
    st.sampled_from([b"", _POSTFIX_OFFER_FRAME]),
    st.lists(_chunks, max_size=25),
)


def _answer(conn: MilterConnection, item: Event) -> None:
    """Answer whatever is owed, validly, so the fuzzer can reach deep states."""
    owed = conn.reply_owed
    if owed is Command.OPTNEG:
        assert isinstance(item, Negotiate)
        conn.send(negotiate_reply(item, actions=ActionFlag(0x1FF), protocol=ProtocolFlag(0xFF080)))
    elif owed is Command.BODYEOB:
        conn.send(Accept())
    elif owed is not None:
        conn.send(Continue())


def _run(chunks: list[bytes]) -> tuple[list[Event | Action], str | None]:
    """Feed chunks then EOF; collect events until NEED_DATA/close/error."""
    conn = MilterConnection(Role.FILTER)
    events: list[Event | Action] = []
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while True:
                item = conn.next_event()
                if item is NEED_DATA:
                    break
                events.append(item)
                if isinstance(item, ConnectionClosed):
                    return events, None
                assert isinstance(item, Event)
                _answer(conn, item)
    except RemoteProtocolError as exc:
        assert conn.state.name == "ERROR"
        return events, type(exc).__name__
    raise AssertionError("EOF must end in ConnectionClosed or an error")


@FUZZ
@given(_garbage)
def test_arbitrary_bytes_parse_or_raise_remote(data: bytes) -> None:
    whole = _run([data])
    bytewise = _run([data[i : i + 1] for i in range(len(data))])
    assert whole == bytewise


@FUZZ
@given(st.binary(max_size=300))
def test_raw_random_bytes(data: bytes) -> None:
    assert _run([data]) == _run([data[i : i + 1] for i in range(len(data))])


# -------------------------------------------------------------- 2. valid round trips

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30)
_token = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=":"),
    min_size=1,
    max_size=12,
)
_esmtp = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
_pairs = st.lists(st.tuples(_text, _text), max_size=4).map(tuple)
_header_value = st.lists(
    _text.map(lambda s: s.replace("\n", " ").replace("\r", " ")), min_size=1, max_size=3
).map("\n\t".join)
_connect = st.one_of(
    st.builds(Connect, _text, st.just(Family.UNKNOWN)),
    st.builds(
        Connect,
        _text,
        st.sampled_from([Family.INET, Family.INET6, Family.UNIX]),
        st.integers(0, 65535),
        _text.filter(lambda s: not s.lower().startswith("ipv6:")),
    ),
)


@st.composite
def _message(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = [
        Macros(Command.MAIL, draw(_pairs)),
        MailFrom(draw(_text), tuple(draw(st.lists(_text, max_size=3)))),
    ]
    for _ in range(draw(st.integers(1, 3))):
        events += [
            Macros(Command.RCPT, draw(_pairs)),
            RcptTo(draw(_text), tuple(draw(st.lists(_text, max_size=2)))),
        ]
    events.append(Data())
    for _ in range(draw(st.integers(0, 4))):
        events += [Macros(Command.HEADER, draw(_pairs)), Header(draw(_text), draw(_text))]
    events.append(EndOfHeaders())
    for _ in range(draw(st.integers(0, 3))):
        events.append(BodyChunk(draw(st.binary(max_size=200))))
    events.append(EndOfMessage(draw(st.sampled_from([b"", b"tail"]))))
    if draw(st.booleans()):
        events.append(Abort())
    return events


@st.composite
def _session(draw: st.DrawFn) -> tuple[Negotiate, ProtocolFlag, list[Event]]:
    offer = Negotiate(
        draw(st.integers(2, 6)), ActionFlag(0x1FF), ProtocolFlag(draw(st.integers(0, 0x1FFFFF)))
    )
    # Only NR bits (and SKIP/LEADSPC) so every step is still sent.
    wanted = ProtocolFlag(draw(st.integers(0, 0x1FFFFF)) & 0x1FF480)
    events: list[Event] = [
        Macros(Command.CONNECT, draw(_pairs)),
        draw(_connect),
        Macros(Command.HELO, draw(_pairs)),
        Helo(draw(_text)),
    ]
    if draw(st.booleans()):
        events.append(Unknown(draw(_text)))
    for _ in range(draw(st.integers(1, 3))):
        events += draw(_message())
    events.append(Quit())
    return offer, wanted, events


_decisions = st.sampled_from(
    [Continue(), Accept(), Reject(), TempFail(), Discard(), ReplyCode(554, "5.7.1 no 100%")]
)
_modifications = st.lists(
    st.one_of(
        st.builds(AddHeader, _token, _header_value),
        st.builds(InsertHeader, st.integers(0, 2**32 - 1), _token, _header_value),
        st.builds(ChangeHeader, st.integers(0, 2**32 - 1), _token, _header_value),
        st.builds(Quarantine, _text.map(lambda s: "q" + s.replace("\n", "").replace("\r", ""))),
        st.just(Progress()),
    ),
    max_size=4,
)


@FUZZ
@given(_session(), st.data())
def test_valid_sessions_round_trip(
    session: tuple[Negotiate, ProtocolFlag, list[Event]], data: st.DataObject
) -> None:
    offer, wanted, events = session
    mta = MilterConnection(Role.MTA)
    flt = MilterConnection(Role.FILTER)

    def deliver(src: MilterConnection, dst: MilterConnection, items: list[Event | Action]) -> None:
        dst.receive_data(src.send_many(items))
        got = []
        while (item := dst.next_event()) is not NEED_DATA:
            got.append(item)
        assert got == items

    deliver(mta, flt, [offer])
    reply = negotiate_reply(
        offer, actions=ActionFlag(0x1FF), protocol=wanted, macros=[(MacroStage.EOM, "i")]
    )
    deliver(flt, mta, [reply])
    assert flt.negotiated == mta.negotiated
    for event in events:
        deliver(mta, flt, [event])
        assert flt.state is mta.state
        owed = flt.reply_owed
        if owed is None:
            continue
        # Verdicts at HELO/CONNECT would end the session; keep it going with Continue there.
        if owed is Command.BODYEOB:
            answer: list[Event | Action] = [*data.draw(_modifications), data.draw(_decisions)]
        elif owed in (Command.CONNECT, Command.HELO):
            answer = [Continue()]
        else:
            answer = [data.draw(_decisions)]
        deliver(flt, mta, answer)
        assert flt.reply_owed is None
        assert mta.reply_owed is None
    assert flt.state.name == "CLOSED"
