"""``MilterConnection``: the sans-IO milter endpoint, in either role.

Theory of operation: the caller owns the socket.  Bytes read go into ``receive_data``
(``b""`` for EOF); ``next_event`` turns buffered bytes into one value at a time, or
returns ``NEED_DATA``; ``send`` turns a value into bytes for the caller to write and
advances the shared state (``state.ConnectionState``).  A FILTER-role connection yields
``events`` and sends ``actions``; an MTA-role connection (used by tests to play Postfix)
does the reverse.  Whenever a method raises, the connection enters ``State.ERROR`` and every
later call raises ``LocalProtocolError``: the stream is out of sync and must be closed.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Final, final

from .actions import Action, NegotiateReply
from .buffer import ReceiveBuffer
from .codec import COMMAND_OF, decode_action, decode_event, encode_action, encode_event
from .constants import (
    DEFAULT_MAX_FRAME,
    MILTER_VERSION,
    SMFI_INTERNAL,
    ActionFlag,
    Command,
    MacroStage,
    ProtocolFlag,
)
from .errors import LocalProtocolError, MilterProtocolError, RemoteProtocolError
from .events import ConnectionClosed, Event, HealthCheck, Negotiate
from .state import ConnectionState, Negotiated, State, offered_actions, offered_protocol

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["NEED_DATA", "MilterConnection", "NeedData", "Role", "negotiate_reply"]


class Role(Enum):
    """Which end of the milter connection we are."""

    FILTER = "FILTER"
    MTA = "MTA"


class NeedData(Enum):
    """Type of the ``NEED_DATA`` sentinel (an enum so type checkers can narrow on ``is``)."""

    NEED_DATA = "NEED_DATA"


#: ``next_event`` result meaning "call ``receive_data`` first".
NEED_DATA: Final = NeedData.NEED_DATA

_COMMAND_BY_BYTE: Final = {c.value[0]: c for c in Command}
# First four bytes of an HTTP request: read as a length they exceed any sane frame size,
# which is how such a probe shows up on a milter port (spec §10 item 19).
_HTTP_STARTS: Final = (b"GET ", b"HEAD", b"POST", b"PUT ", b"OPTI", b"DELE")
_MAX_REQUEST_LINE: Final = 8192


def negotiate_reply(
    offer: Negotiate,
    *,
    actions: ActionFlag,
    protocol: ProtocolFlag,
    macros: Iterable[tuple[MacroStage, str]] = (),
) -> NegotiateReply:
    """Build the OPTNEG answer to ``offer`` from what the filter would like.

    The version is ``min(6, offered)``; actions and protocol bits the MTA did not offer are
    dropped (not an error: we ask for what we can use, the MTA decides what exists), the
    internal bits 0x70000000 are never set, and when macro lists are requested
    SMFIF_SETSYMLIST is added if offered, because Sendmail only reads the lists then.

    Args:
        offer: the MTA's ``Negotiate`` event.
        actions: SMFIF_* modifications the filter wants to be able to make.
        protocol: SMFIP_* steps to skip / replies to waive.
        macros: per-stage space-separated macro name lists to request.

    Returns:
        The ``NegotiateReply`` to ``send``.
    """
    macros = tuple(macros)
    offered = offered_actions(offer)
    wanted = int(actions) | (ActionFlag.SETSYMLIST if macros else 0)
    return NegotiateReply(
        version=min(MILTER_VERSION, offer.version),
        actions=ActionFlag(wanted & int(offered)),
        protocol=ProtocolFlag(int(protocol) & int(offered_protocol(offer)) & ~SMFI_INTERNAL),
        macros=macros,
    )


@final
class MilterConnection:
    """One milter connection, sans I/O.

    Args:
        role: ``Role.FILTER`` to parse MTA commands and send replies, ``Role.MTA`` for the
            reverse.
        max_frame_size: largest accepted value of a frame's length field.
    """

    __slots__ = ("_buf", "_cs", "_eof", "_fresh", "_max", "_probe", "_role")

    def __init__(self, role: Role, *, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be at least 1")
        self._role = role
        self._max = max_frame_size
        self._buf = ReceiveBuffer()
        self._cs = ConnectionState()
        self._eof = False
        self._fresh = True  # nothing consumed yet: an HTTP probe is still recognisable
        self._probe = False  # a HealthCheck was returned; the rest of the stream is ignored

    @property
    def role(self) -> Role:
        """Our role."""
        return self._role

    @property
    def state(self) -> State:
        """Where the conversation stands."""
        return self._cs.state

    @property
    def offer(self) -> Negotiate | None:
        """The MTA's OPTNEG offer, once sent/received."""
        return self._cs.offer

    @property
    def negotiated(self) -> Negotiated | None:
        """The agreed version, actions and protocol, once the OPTNEG reply went through."""
        return self._cs.negotiated

    @property
    def reply_owed(self) -> Command | None:
        """The command awaiting the filter's reply (FILTER: we owe it; MTA: we wait for it)."""
        return self._cs.reply_owed

    @property
    def out_of_order(self) -> bool:
        """Whether the last MTA command broke the usual order (the message was reset)."""
        return self._cs.out_of_order

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """Bytes received but not consumed, and whether EOF has been seen."""
        return bytes(self._buf), self._eof

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the socket; ``b""`` means the peer closed it.

        Any bytes-like object is accepted (trio's ``receive_some`` returns ``bytearray``);
        it is copied, so the caller may reuse it.

        Raises:
            LocalProtocolError: data after EOF, or the connection is in ERROR.
        """
        self._check_alive()
        if self._probe:
            return  # the rest of an HTTP probe: not ours to parse
        if data:
            if self._eof:
                self._cs.process_error()
                raise LocalProtocolError("received data after EOF")
            self._buf.append(data)
        else:
            self._eof = True

    def next_event(self) -> Event | Action | NeedData:
        """Parse the next value from the buffered bytes.

        Returns:
            FILTER role: an ``Event`` (``ConnectionClosed`` after a clean EOF, repeatedly).
            MTA role: an ``Action``, or ``ConnectionClosed``.  Either: ``NEED_DATA``.

        Raises:
            RemoteProtocolError: the peer broke the protocol.
            LocalProtocolError: the connection is already in ERROR.
        """
        self._check_alive()
        try:
            return self._next()
        except RemoteProtocolError:
            self._cs.process_error()
            raise
        except LocalProtocolError as exc:
            # State violations are raised as local; here the peer committed them.
            self._cs.process_error()
            raise RemoteProtocolError(str(exc)) from exc

    def send(self, item: Event | Action) -> bytes:
        """Encode ``item`` and advance the state.

        Args:
            item: FILTER role: an ``Action``; MTA role: an ``Event``.

        Returns:
            The bytes to write to the peer.

        Raises:
            LocalProtocolError: ``item`` is not valid now (see ``state``), or the connection
                is already in ERROR.
        """
        self._check_alive()
        try:
            if self._role is Role.FILTER:
                if not isinstance(item, Action):
                    raise LocalProtocolError(f"a filter sends actions, not {item!r}")
                data = encode_action(item)
                self._cs.process_reply(item)
            else:
                command = COMMAND_OF.get(type(item)) if isinstance(item, Event) else None
                if command is None or not isinstance(item, Event):
                    raise LocalProtocolError(f"an MTA sends wire events, not {item!r}")
                data = encode_event(item)
                self._cs.process_command(command, item)
        except MilterProtocolError:
            self._cs.process_error()
            raise
        return data

    def send_many(self, items: Iterable[Event | Action]) -> bytes:
        """``send`` each item in turn and return the concatenated bytes."""
        return b"".join([self.send(item) for item in items])

    def _check_alive(self) -> None:
        if self._cs.state is State.ERROR:
            raise LocalProtocolError("connection is in ERROR state; close it")

    def _next(self) -> Event | Action | NeedData:
        buf = self._buf
        cs = self._cs
        if self._probe:
            return ConnectionClosed()
        if self._fresh and self._role is Role.FILTER:
            probe = self._health_check()
            if probe is not None:
                return probe
        frame = buf.next_frame(self._max)
        if frame is None:
            if not self._eof:
                return NEED_DATA
            if buf:
                raise RemoteProtocolError(f"EOF in the middle of a frame ({len(buf)} bytes)")
            self._fresh = False
            cs.process_eof()
            return ConnectionClosed()
        self._fresh = False
        code, payload = frame
        if self._role is Role.FILTER:
            event = decode_event(code, payload)
            cs.process_command(_COMMAND_BY_BYTE[code], event)
            return event
        action = decode_action(code, payload)
        cs.process_reply(action, lenient_negotiation=True)
        return action

    def _health_check(self) -> Event | NeedData | None:
        """Recognise an HTTP request line as the very first bytes (spec §10 item 19)."""
        buf = self._buf
        length = buf.peek_length()
        if length is None:
            return None if self._eof else NEED_DATA
        if length <= self._max or not buf.startswith(_HTTP_STARTS):
            return None
        line = buf.next_line(_MAX_REQUEST_LINE)
        if line is None:
            if self._eof:
                raise RemoteProtocolError("EOF inside an HTTP request line")
            return NEED_DATA
        text = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
        if " HTTP/" not in text:
            raise RemoteProtocolError(f"not a milter frame nor an HTTP request: {text[:80]!r}")
        self._fresh = False
        self._probe = True
        self._cs.process_eof()  # the milter conversation never started
        return HealthCheck(text)
