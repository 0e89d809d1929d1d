"""Events: what the MTA tells the filter, one frozen value per MTA→filter command.

Strings are decoded from the wire as UTF-8 with ``surrogateescape`` and encoded back the
same way, so arbitrary bytes survive a round trip.  Constructors reject what could not be
framed (NUL inside a C string, out-of-range integers) with ``LocalProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _validation as check
from .constants import MILTER_VERSION_MIN, ActionFlag, Command, Family, ProtocolFlag
from .errors import LocalProtocolError

__all__ = [
    "Abort",
    "BodyChunk",
    "Connect",
    "ConnectionClosed",
    "Data",
    "EndOfHeaders",
    "EndOfMessage",
    "Event",
    "Header",
    "HealthCheck",
    "Helo",
    "Macros",
    "MailFrom",
    "Negotiate",
    "Quit",
    "QuitNewConnection",
    "RcptTo",
    "Unknown",
]


class Event:
    """Base class of everything a FILTER-role connection yields from ``next_event``."""

    __slots__ = ()


@dataclass(slots=True, frozen=True)
class Negotiate(Event):
    """SMFIC_OPTNEG: the MTA's offer.

    ``version`` may exceed 6 (a future MTA); the reply negotiates it down, as libmilter does.
    """

    version: int
    actions: ActionFlag
    protocol: ProtocolFlag

    def __post_init__(self) -> None:
        check.uint("version", self.version, 32)
        if self.version < MILTER_VERSION_MIN:
            raise LocalProtocolError(f"milter protocol version {self.version} is too old")
        check.uint("actions", self.actions, 32)
        check.uint("protocol", self.protocol, 32)


@dataclass(slots=True, frozen=True)
class Macros(Event):
    """SMFIC_MACRO: macro values for the command named by ``stage``, sent just before it.

    Names are kept exactly as sent: single letters bare (``i``), long names braced
    (``{auth_authen}``).  A frame may carry no pairs at all (spec §10 item 6).
    """

    stage: Command
    pairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.stage, Command):
            raise LocalProtocolError(f"macro stage must be a Command: {self.stage!r}")
        for name, value in self.pairs:
            check.no_nul("macro name", name)
            check.no_nul("macro value", value)

    def as_dict(self) -> dict[str, str]:
        """The pairs as a dict; a repeated name keeps its last value."""
        return dict(self.pairs)

    def get(self, name: str, default: str | None = None) -> str | None:
        """Look a macro up treating ``x`` and ``{x}`` as the same name (spec §10 item 8)."""
        bare = name[1:-1] if name.startswith("{") and name.endswith("}") else name
        braced = "{" + bare + "}"
        found = default
        for key, value in self.pairs:
            if key in (bare, braced):
                found = value
        return found


@dataclass(slots=True, frozen=True)
class Connect(Event):
    """SMFIC_CONNECT.  Family UNKNOWN carries neither port nor address (spec §4)."""

    hostname: str
    family: Family
    port: int | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        check.no_nul("hostname", self.hostname)
        if not isinstance(self.family, Family):
            raise LocalProtocolError(f"family must be a Family: {self.family!r}")
        if self.family is Family.UNKNOWN:
            if self.port is not None or self.address is not None:
                raise LocalProtocolError("family UNKNOWN has no port or address")
            return
        if self.port is None or self.address is None:
            raise LocalProtocolError(f"family {self.family.name} needs a port and an address")
        check.uint("port", self.port, 16)
        check.no_nul("address", self.address)


@dataclass(slots=True, frozen=True)
class Helo(Event):
    """SMFIC_HELO: the HELO/EHLO argument."""

    name: str

    def __post_init__(self) -> None:
        check.no_nul("HELO name", self.name)


@dataclass(slots=True, frozen=True)
class MailFrom(Event):
    """SMFIC_MAIL: the sender as the client wrote it (normally with ``<>``) and ESMTP args."""

    address: str
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check.no_nul("sender", self.address)
        check.no_nul_each("ESMTP argument", self.args)


@dataclass(slots=True, frozen=True)
class RcptTo(Event):
    """SMFIC_RCPT: one recipient as the client wrote it, and its ESMTP args."""

    address: str
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check.no_nul("recipient", self.address)
        check.no_nul_each("ESMTP argument", self.args)


@dataclass(slots=True, frozen=True)
class Data(Event):
    """SMFIC_DATA."""


@dataclass(slots=True, frozen=True)
class Header(Event):
    """SMFIC_HEADER.  ``value`` is as sent: folded lines joined by LF (spec §4)."""

    name: str
    value: str

    def __post_init__(self) -> None:
        check.no_nul("header name", self.name)
        check.no_nul("header value", self.value)


@dataclass(slots=True, frozen=True)
class EndOfHeaders(Event):
    """SMFIC_EOH."""


@dataclass(slots=True, frozen=True)
class BodyChunk(Event):
    """SMFIC_BODY: raw body bytes (CRLF line ends, arbitrary chunk boundaries)."""

    data: bytes


@dataclass(slots=True, frozen=True)
class EndOfMessage(Event):
    """SMFIC_BODYEOB.  ``data`` is a trailing body chunk, which libmilter tolerates here."""

    data: bytes = b""


@dataclass(slots=True, frozen=True)
class Abort(Event):
    """SMFIC_ABORT: the current message is over (sent after every transaction)."""


@dataclass(slots=True, frozen=True)
class Quit(Event):
    """SMFIC_QUIT: the MTA is closing the connection."""


@dataclass(slots=True, frozen=True)
class QuitNewConnection(Event):
    """SMFIC_QUIT_NC: a new SMTP session follows on this connection, without OPTNEG."""


@dataclass(slots=True, frozen=True)
class Unknown(Event):
    """SMFIC_UNKNOWN: an SMTP command line the MTA did not recognise."""

    line: str

    def __post_init__(self) -> None:
        check.no_nul("unknown command", self.line)


@dataclass(slots=True, frozen=True)
class ConnectionClosed(Event):
    """The peer closed the stream cleanly at a frame boundary."""


@dataclass(slots=True, frozen=True)
class HealthCheck(Event):
    """A plain HTTP request line (e.g. ``GET /ping HTTP/1.0``) opening the connection.

    Load-balancer probes hit the milter port this way (spec §10 item 19).  The line is
    given without its line terminator; the rest of the request is not read.
    """

    request_line: str
