"""The MTA side of the milter protocol, as Postfix drives it: for tests and benchmarks.

``milter_exchange`` plays one SMTP transaction against a filter over any trio stream:
negotiation (offering everything, as Postfix does), CONNECT/HELO/MAIL/RCPT with their
macros, headers, body in ≤ 64 KiB chunks, end of message, then QUIT. It honours what
the filter negotiated: steps the filter switched off are not sent, and replies are only
awaited where the filter did not waive them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
from milterd.protocol.codec import COMMAND_OF

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MilterReply", "SmtpEnvelope", "milter_exchange", "split_for_milter"]

_FINAL = (Accept, Continue, Reject, TempFail, Discard, ReplyCode)
_OFFER = Negotiate(6, ActionFlag(0x1FF), ProtocolFlag(0x1FFFFF))


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
    """Play one transaction; return the end-of-message answer (or an earlier refusal)."""
    conn = MilterConnection(Role.MTA)
    reply = MilterReply()
    await stream.send_all(conn.send(_OFFER))
    negotiated = await _next_action(stream, conn)
    assert isinstance(negotiated, NegotiateReply)
    reply.negotiated = negotiated
    steps = conn.negotiated
    assert steps is not None
    for event in _events(headers, body, envelope):
        if not steps.sends(COMMAND_OF[type(event)]):
            continue
        await stream.send_all(conn.send(event))
        while conn.reply_owed is not None:
            action = await _next_action(stream, conn)
            if isinstance(action, Progress):
                continue
            if isinstance(action, _FINAL):
                if not isinstance(action, Continue) or isinstance(event, EndOfMessage):
                    reply.final = action
                if not isinstance(action, Continue):
                    await _quit(stream, conn)
                    return reply
            else:
                reply.edits.append(action)
    await _quit(stream, conn)
    return reply


async def _quit(stream: trio.abc.Stream, conn: MilterConnection) -> None:
    await stream.send_all(conn.send(Quit()))


async def _next_action(stream: trio.abc.Stream, conn: MilterConnection) -> MilterAction:
    while True:
        item = conn.next_event()
        if item is NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        if isinstance(item, ConnectionClosed):
            raise trio.BrokenResourceError("the filter closed the connection without answering")
        assert isinstance(item, MilterAction), item
        return item


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
