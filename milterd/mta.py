"""The MTA side of the milter protocol, as Postfix drives it: for tests and benchmarks.

``milter_exchange`` plays one SMTP transaction against a filter over any trio stream:
negotiation (offering everything, as Postfix does), CONNECT/HELO/MAIL/RCPT with their
macros, headers, body in ≤ 64 KiB chunks, end of message, then QUIT. It honours what
the filter negotiated: steps the filter switched off are not sent, and replies are only
awaited where the filter did not waive them.

For a load generator, the same conversation without trio: ``encode_transaction`` writes
everything after the negotiation (CONNECT … end of message) ahead of time as one blob,
for a filter whose OPTNEG reply is known and waives every reply before end of message;
``milter_transaction`` is ``milter_exchange`` without I/O, for any other filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from engine.mime.headers import parse_header_block, split_message
from milterd.protocol import (
    MAX_BODY_CHUNK,
    NEED_DATA,
    Accept,
    ActionFlag,
    BodyChunk,
    Command,
    Connect,
    ConnectionClosed,
    Continue,
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
    Quit,
    RcptTo,
    Reject,
    ReplyCode,
    Role,
    TempFail,
)
from milterd.protocol import Action as MilterAction
from milterd.protocol.codec import COMMAND_OF, encode_event

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

__all__ = [
    "OFFER_FRAME",
    "QUIT_FRAME",
    "MilterReply",
    "SmtpEnvelope",
    "encode_transaction",
    "milter_exchange",
    "milter_transaction",
    "split_for_milter",
]

_FINAL = (Accept, Continue, Reject, TempFail, Discard, ReplyCode)
_OFFER = Negotiate(6, ActionFlag(0x1FF), ProtocolFlag(0x1FFFFF))
#: What ``milter_exchange`` sends first, and last.
OFFER_FRAME: Final = encode_event(_OFFER)
QUIT_FRAME: Final = encode_event(Quit())


@dataclass(slots=True, frozen=True)
class SmtpEnvelope:
    client_addr: str = "198.51.100.7"
    client_name: str = "mail.sender.test"
    client_port: int = 40000
    helo: str = "mail.sender.test"
    mail_from: str = "sender@sender.test"
    rcpts: tuple[str, ...] = ("rcpt@example.test",)
    queue_id: str = "4ABCDEF012"


@dataclass(slots=True)
class MilterReply:
    """What the filter answered at end of message: edits in order, then the decision."""

    negotiated: NegotiateReply | None = None
    edits: list[MilterAction] = field(default_factory=list)
    final: MilterAction | None = None


def split_for_milter(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Headers as a milter receives them and the body with CRLF line ends."""
    block, body, _ = split_message(raw)
    headers = list(parse_header_block(block, set()))
    return headers, body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def milter_exchange(
    stream: trio.abc.Stream,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    envelope: SmtpEnvelope = SmtpEnvelope(),
) -> MilterReply:
    """Play one transaction; return the end-of-message answer (or an earlier refusal).

    Raises:
        trio.BrokenResourceError: the filter closed the connection without answering.
        MilterProtocolError: the filter broke the protocol.
    """
    exchange = milter_transaction(headers, body, envelope)
    out = next(exchange)
    try:
        while True:
            if out:
                await stream.send_all(out)
            out = exchange.send(bytes(await stream.receive_some(65536)))
    except StopIteration as done:
        reply: MilterReply
        rest: bytes
        reply, rest = done.value
    except ConnectionError as exc:
        raise trio.BrokenResourceError(str(exc)) from None
    await stream.send_all(rest)
    return reply


def _events(headers: Sequence[tuple[str, str]], body: bytes, env: SmtpEnvelope) -> list[Event]:
    events: list[Event] = [
        Macros(
            Command.CONNECT,
            (
                ("j", "mx.example.test"),
                ("{daemon_name}", "mx.example.test"),
                ("{client_addr}", env.client_addr),
            ),
        ),
        Connect(
            env.client_name,
            Family.INET6 if ":" in env.client_addr else Family.INET,
            env.client_port,
            env.client_addr,
        ),
        Helo(env.helo),
        Macros(Command.MAIL, (("{mail_addr}", env.mail_from),)),
        MailFrom(f"<{env.mail_from}>", ("BODY=8BITMIME",)),
    ]
    for rcpt in env.rcpts:
        events += [
            Macros(Command.RCPT, (("i", env.queue_id), ("{rcpt_addr}", rcpt))),
            RcptTo(f"<{rcpt}>"),
        ]
    events += [Header(name, value) for name, value in headers]
    events.append(EndOfHeaders())
    events += [BodyChunk(body[i : i + MAX_BODY_CHUNK]) for i in range(0, len(body), MAX_BODY_CHUNK)]
    events += [Macros(Command.BODYEOB, (("i", env.queue_id),)), EndOfMessage()]
    return events


def encode_transaction(
    headers: Sequence[tuple[str, str]],
    body: bytes,
    envelope: SmtpEnvelope,
    negotiated: bytes,
) -> bytes | None:
    """What ``milter_exchange`` sends between the negotiation and the end-of-message
    replies, as one blob, for a filter whose OPTNEG reply frame is ``negotiated``
    exactly (steps it switched off are left out). ``None`` when that filter wants a reply
    before end of message: the transaction then cannot be written at once.

    Raises:
        ValueError: ``negotiated`` is not exactly one OPTNEG reply frame.
        MilterProtocolError: ``negotiated`` is not a valid answer to ``OFFER_FRAME``.
    """
    conn = MilterConnection(Role.MTA)
    conn.send(_OFFER)
    conn.receive_data(negotiated)
    if not isinstance(conn.next_event(), NegotiateReply) or conn.trailing_data[0]:
        raise ValueError("not exactly one OPTNEG reply frame")
    steps = conn.negotiated
    assert steps is not None
    out = []
    for event in _events(headers, body, envelope):
        if not steps.sends(COMMAND_OF[type(event)]):
            continue
        if conn.reply_owed is not None:
            return None
        out.append(conn.send(event))
    return b"".join(out)


def milter_transaction(
    headers: Sequence[tuple[str, str]],
    body: bytes,
    envelope: SmtpEnvelope = SmtpEnvelope(),
) -> Generator[bytes, bytes, tuple[MilterReply, bytes]]:
    """``milter_exchange`` without I/O. Each value yielded is to be written, then what is
    read next (``b""`` at EOF) sent in; the first is ``OFFER_FRAME``. Returns the reply
    and the bytes still to write (QUIT).

    Raises:
        ConnectionError: the filter closed the connection without answering.
        MilterProtocolError: the filter broke the protocol.
    """
    conn = MilterConnection(Role.MTA)
    reply = MilterReply()
    out = conn.send(_OFFER)

    def action(out: bytes) -> Generator[bytes, bytes, tuple[MilterAction, bytes]]:
        while (item := conn.next_event()) is NEED_DATA:
            conn.receive_data((yield out))
            out = b""
        if isinstance(item, ConnectionClosed):
            raise ConnectionError("the filter closed the connection without answering")
        assert isinstance(item, MilterAction), item
        return item, out

    negotiated, out = yield from action(out)
    assert isinstance(negotiated, NegotiateReply)
    reply.negotiated = negotiated
    steps = conn.negotiated
    assert steps is not None
    for event in _events(headers, body, envelope):
        if not steps.sends(COMMAND_OF[type(event)]):
            continue
        out += conn.send(event)
        while conn.reply_owed is not None:
            answer, out = yield from action(out)
            if isinstance(answer, Progress):
                continue
            if isinstance(answer, _FINAL):
                if not isinstance(answer, Continue) or isinstance(event, EndOfMessage):
                    reply.final = answer
                if not isinstance(answer, Continue):
                    return reply, out + conn.send(Quit())
            else:
                reply.edits.append(answer)
    return reply, out + conn.send(Quit())
