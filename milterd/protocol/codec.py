"""Pure frame ⇄ value conversion, dispatched through tables keyed by the command byte.

Theory of operation: a frame is ``uint32 length | 1 command byte | payload`` (spec §2);
``ReceiveBuffer`` does the framing, this module only maps ``(command byte, payload)`` to an
``Event``/``Action`` and back.  Decoders are strict about structure (a missing family
byte, a truncated port, trailing bytes after a complete payload, or any payload on a
command that takes none are errors) but tolerant where real MTAs are sloppy (a missing
final NUL, MACRO frames with no pairs, OPTNEG longer than 12 bytes, a Sendmail ``IPv6:``
address prefix), as spec §4 and §10 ask.  Decoders raise ``RemoteProtocolError``;
encoders raise ``LocalProtocolError``.
"""

from __future__ import annotations

import struct
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeVar, cast

from .actions import (
    Accept,
    Action,
    AddHeader,
    AddRcpt,
    AddRcptWithArgs,
    ChangeFrom,
    ChangeHeader,
    ConnectionFail,
    Continue,
    DelRcpt,
    Discard,
    InsertHeader,
    NegotiateReply,
    Progress,
    Quarantine,
    Reject,
    ReplaceBody,
    ReplyCode,
    SetSymbolList,
    Shutdown,
    Skip,
    TempFail,
)
from .constants import ActionFlag, Command, Family, MacroStage, ProtocolFlag, Response
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    Abort,
    BodyChunk,
    Connect,
    Data,
    EndOfHeaders,
    EndOfMessage,
    Event,
    Header,
    Helo,
    Macros,
    MailFrom,
    Negotiate,
    Quit,
    QuitNewConnection,
    RcptTo,
    Unknown,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "COMMAND_OF",
    "RESPONSE_OF",
    "decode_action",
    "decode_event",
    "encode_action",
    "encode_event",
    "frame",
]

_LENGTH: Final = struct.Struct(">I")
_OPTNEG: Final = struct.Struct(">III")
_UINT32: Final = struct.Struct(">I")
_UINT16: Final = struct.Struct(">H")

_COMMAND_BY_BYTE: Final = {c.value[0]: c for c in Command}
_FAMILY_BY_BYTE: Final = {f.value[0]: f for f in Family}
_STAGE_BY_NUMBER: Final = {s.value: s for s in MacroStage}

_E = TypeVar("_E", Event, Action)
_Ev = TypeVar("_Ev", bound=Event)
_Ac = TypeVar("_Ac", bound=Action)


def frame(code: bytes, payload: bytes = b"") -> bytes:
    """One wire frame: big-endian length (command byte included), command, payload."""
    return _LENGTH.pack(len(payload) + 1) + code + payload


# --------------------------------------------------------------------------- primitives


def _str(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _cstrings(payload: bytes) -> list[bytes]:
    """Split back-to-back NUL-terminated strings; the final NUL may be missing (spec §10.21)."""
    if not payload:
        return []
    if payload[-1] == 0:
        payload = payload[:-1]
    return payload.split(b"\0")


def _exactly(payload: bytes, count: int, what: str) -> list[bytes]:
    parts = _cstrings(payload)
    if len(parts) != count:
        raise RemoteProtocolError(f"{what} needs {count} string(s), got {len(parts)}")
    return parts


def _no_payload(instance: _E, what: str) -> Callable[[bytes], _E]:
    def decode(payload: bytes) -> _E:
        if payload:
            raise RemoteProtocolError(f"{what} takes no payload, got {len(payload)} bytes")
        return instance

    return decode


# --------------------------------------------------------------------------- MTA → filter


def _decode_optneg(payload: bytes) -> Negotiate:
    # Postfix and Sendmail send exactly 12 bytes; libmilter only needs 12 (spec §10.16).
    if len(payload) < 12:
        raise RemoteProtocolError(f"OPTNEG needs 12 bytes, got {len(payload)}")
    version, actions, protocol = _OPTNEG.unpack_from(payload)
    return Negotiate(version, ActionFlag(actions), ProtocolFlag(protocol))


def _decode_macro(payload: bytes) -> Macros:
    if not payload:
        raise RemoteProtocolError("MACRO frame without a stage byte")
    stage = _COMMAND_BY_BYTE.get(payload[0])
    if stage is None:
        raise RemoteProtocolError(f"MACRO frame for unknown command {payload[:1]!r}")
    parts = _cstrings(payload[1:])
    if len(parts) % 2:
        # A name whose value went missing: keep it, empty, rather than kill the session.
        parts.append(b"")
    it = iter(parts)
    return Macros(
        stage, tuple((_str(name), _str(value)) for name, value in zip(it, it, strict=True))
    )


def _decode_connect(payload: bytes) -> Connect:
    nul = payload.find(b"\0")
    if nul < 0 or nul + 1 >= len(payload):
        raise RemoteProtocolError("CONNECT without hostname terminator or family")
    hostname = _str(payload[:nul])
    family = _FAMILY_BY_BYTE.get(payload[nul + 1])
    if family is None:
        raise RemoteProtocolError(f"CONNECT with unknown family {payload[nul + 1 : nul + 2]!r}")
    if family is Family.UNKNOWN:
        # Nothing follows family 'U' (spec §4); ignore anything that does.
        return Connect(hostname, family)
    rest = payload[nul + 2 :]
    if len(rest) < 2:
        raise RemoteProtocolError("CONNECT truncated before the port")
    (port,) = _UINT16.unpack_from(rest)
    parts = _exactly(rest[2:], 1, "CONNECT address")
    address = _str(parts[0])
    if address[:5].lower() == "ipv6:":
        # Sendmail writes IPv6 peers as "IPv6:2001:db8::1" (spec §4).
        address = address[5:]
    return Connect(hostname, family, port, address)


def _decode_helo(payload: bytes) -> Helo:
    return Helo(_str(_exactly(payload, 1, "HELO")[0]))


def _decode_mail(payload: bytes) -> MailFrom:
    parts = _cstrings(payload)
    if not parts:
        raise RemoteProtocolError("MAIL without a sender")
    return MailFrom(_str(parts[0]), tuple(_str(p) for p in parts[1:]))


def _decode_rcpt(payload: bytes) -> RcptTo:
    parts = _cstrings(payload)
    if not parts:
        raise RemoteProtocolError("RCPT without a recipient")
    return RcptTo(_str(parts[0]), tuple(_str(p) for p in parts[1:]))


def _decode_header(payload: bytes) -> Header:
    name, value = _exactly(payload, 2, "HEADER")
    return Header(_str(name), _str(value))


def _decode_unknown(payload: bytes) -> Unknown:
    return Unknown(_str(_exactly(payload, 1, "UNKNOWN")[0]))


_EVENT_DECODERS: Final[dict[int, Callable[[bytes], Event]]] = {
    ord("O"): _decode_optneg,
    ord("D"): _decode_macro,
    ord("C"): _decode_connect,
    ord("H"): _decode_helo,
    ord("M"): _decode_mail,
    ord("R"): _decode_rcpt,
    ord("T"): _no_payload(Data(), "DATA"),
    ord("L"): _decode_header,
    ord("N"): _no_payload(EndOfHeaders(), "EOH"),
    ord("B"): BodyChunk,
    ord("E"): EndOfMessage,
    ord("A"): _no_payload(Abort(), "ABORT"),
    ord("Q"): _no_payload(Quit(), "QUIT"),
    ord("K"): _no_payload(QuitNewConnection(), "QUIT_NC"),
    ord("U"): _decode_unknown,
}


def decode_event(command: int, payload: bytes) -> Event:
    """Decode one MTA→filter frame.

    Args:
        command: the command byte, as an int.
        payload: the bytes after it.

    Raises:
        RemoteProtocolError: unknown command byte or malformed payload.
    """
    decoder = _EVENT_DECODERS.get(command)
    if decoder is None:
        raise RemoteProtocolError(f"unknown MTA command {bytes([command])!r}")
    try:
        return decoder(payload)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"invalid {chr(command)!r} frame: {exc}") from exc


def _encode_macros(m: Macros) -> bytes:
    return m.stage.value + b"".join(_bytes(n) + b"\0" + _bytes(v) + b"\0" for n, v in m.pairs)


def _encode_connect(c: Connect) -> bytes:
    out = _bytes(c.hostname) + b"\0" + c.family.value
    if c.port is not None and c.address is not None:
        out += _UINT16.pack(c.port) + _bytes(c.address) + b"\0"
    return out


def _argv(*parts: str) -> bytes:
    return b"".join(_bytes(p) + b"\0" for p in parts)


_EVENT_ENCODERS: Final[dict[type[Event], tuple[Command, Callable[[Event], bytes]]]] = {}


def _event_encoder(cls: type[_Ev], command: Command, fn: Callable[[_Ev], bytes]) -> None:
    # Sound because lookups are by exact type(event): fn only ever sees a ``cls``.
    _EVENT_ENCODERS[cls] = (command, cast("Callable[[Event], bytes]", fn))


_event_encoder(Negotiate, Command.OPTNEG, lambda e: _OPTNEG.pack(e.version, e.actions, e.protocol))
_event_encoder(Macros, Command.MACRO, _encode_macros)
_event_encoder(Connect, Command.CONNECT, _encode_connect)
_event_encoder(Helo, Command.HELO, lambda e: _argv(e.name))
_event_encoder(MailFrom, Command.MAIL, lambda e: _argv(e.address, *e.args))
_event_encoder(RcptTo, Command.RCPT, lambda e: _argv(e.address, *e.args))
_event_encoder(Data, Command.DATA, lambda e: b"")
_event_encoder(Header, Command.HEADER, lambda e: _argv(e.name, e.value))
_event_encoder(EndOfHeaders, Command.EOH, lambda e: b"")
_event_encoder(BodyChunk, Command.BODY, lambda e: e.data)
_event_encoder(EndOfMessage, Command.BODYEOB, lambda e: e.data)
_event_encoder(Abort, Command.ABORT, lambda e: b"")
_event_encoder(Quit, Command.QUIT, lambda e: b"")
_event_encoder(QuitNewConnection, Command.QUIT_NC, lambda e: b"")
_event_encoder(Unknown, Command.UNKNOWN, lambda e: _argv(e.line))

#: The command each wire event type is sent as.
COMMAND_OF: Final = MappingProxyType({cls: cmd for cls, (cmd, _) in _EVENT_ENCODERS.items()})


def encode_event(event: Event) -> bytes:
    """Encode one MTA→filter frame.

    Raises:
        LocalProtocolError: the event has no wire form (``ConnectionClosed``,
            ``HealthCheck``) or a string cannot be encoded.
    """
    entry = _EVENT_ENCODERS.get(type(event))
    if entry is None:
        raise LocalProtocolError(f"{type(event).__name__} is not sent on the wire")
    command, fn = entry
    try:
        return frame(command.value, fn(event))
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"cannot encode {event!r}: {exc}") from exc


# --------------------------------------------------------------------------- filter → MTA


def _decode_optneg_reply(payload: bytes) -> NegotiateReply:
    if len(payload) < 12:
        raise RemoteProtocolError(f"OPTNEG reply needs 12 bytes, got {len(payload)}")
    version, actions, protocol = _OPTNEG.unpack_from(payload)
    macros: list[tuple[MacroStage, str]] = []
    pos = 12
    while pos < len(payload):
        # Repeated [uint32 stage][space-separated names NUL] (spec §5.2).
        if len(payload) - pos < 4:
            raise RemoteProtocolError("OPTNEG reply macro list truncated")
        (number,) = _UINT32.unpack_from(payload, pos)
        end = payload.find(b"\0", pos + 4)
        if end < 0:
            end = len(payload)  # missing final NUL tolerated
        stage = _STAGE_BY_NUMBER.get(number)
        if stage is not None:  # unknown stages are ignored, as Postfix does
            macros.append((stage, _str(payload[pos + 4 : end])))
        pos = end + 1
    return NegotiateReply(version, ActionFlag(actions), ProtocolFlag(protocol), tuple(macros))


def _decode_replycode(payload: bytes) -> ReplyCode:
    (reply,) = _exactly(payload, 1, "REPLYCODE")
    text = _str(reply)
    if len(text) < 3 or not text[:3].isdigit() or text[3:4] not in ("", " "):
        raise RemoteProtocolError(f"REPLYCODE is not '<code> <text>': {text!r}")
    return ReplyCode(int(text[:3]), text[4:].replace("%%", "%"))


def _decode_string_action(cls: Callable[[str], _Ac], what: str) -> Callable[[bytes], _Ac]:
    def decode(payload: bytes) -> _Ac:
        return cls(_str(_exactly(payload, 1, what)[0]))

    return decode


def _decode_addheader(payload: bytes) -> AddHeader:
    name, value = _exactly(payload, 2, "ADDHEADER")
    return AddHeader(_str(name), _str(value))


def _indexed_header(payload: bytes, what: str) -> tuple[int, str, str]:
    if len(payload) < 4:
        raise RemoteProtocolError(f"{what} truncated before the index")
    (index,) = _UINT32.unpack_from(payload)
    name, value = _exactly(payload[4:], 2, what)
    return index, _str(name), _str(value)


def _decode_insheader(payload: bytes) -> InsertHeader:
    return InsertHeader(*_indexed_header(payload, "INSHEADER"))


def _decode_chgheader(payload: bytes) -> ChangeHeader:
    return ChangeHeader(*_indexed_header(payload, "CHGHEADER"))


def _address_and_args(payload: bytes, what: str) -> tuple[str, tuple[str, ...]]:
    # The ESMTP args travel as ONE space-separated string after the address.
    parts = _cstrings(payload)
    if not 1 <= len(parts) <= 2:
        raise RemoteProtocolError(f"{what} needs an address and at most one argument string")
    args = tuple(_str(parts[1]).split()) if len(parts) == 2 else ()
    return _str(parts[0]), args


def _decode_addrcpt_par(payload: bytes) -> AddRcptWithArgs:
    return AddRcptWithArgs(*_address_and_args(payload, "ADDRCPT_PAR"))


def _decode_chgfrom(payload: bytes) -> ChangeFrom:
    return ChangeFrom(*_address_and_args(payload, "CHGFROM"))


def _decode_setsymlist(payload: bytes) -> SetSymbolList:
    if len(payload) < 4:
        raise RemoteProtocolError("SETSYMLIST truncated before the stage")
    (number,) = _UINT32.unpack_from(payload)
    stage = _STAGE_BY_NUMBER.get(number)
    if stage is None:
        raise RemoteProtocolError(f"SETSYMLIST for unknown stage {number}")
    return SetSymbolList(stage, _str(_exactly(payload[4:], 1, "SETSYMLIST")[0]))


_ACTION_DECODERS: Final[dict[int, Callable[[bytes], Action]]] = {
    ord("O"): _decode_optneg_reply,
    ord("c"): _no_payload(Continue(), "CONTINUE"),
    ord("a"): _no_payload(Accept(), "ACCEPT"),
    ord("r"): _no_payload(Reject(), "REJECT"),
    ord("t"): _no_payload(TempFail(), "TEMPFAIL"),
    ord("d"): _no_payload(Discard(), "DISCARD"),
    ord("y"): _decode_replycode,
    ord("p"): _no_payload(Progress(), "PROGRESS"),
    ord("s"): _no_payload(Skip(), "SKIP"),
    ord("q"): _decode_string_action(Quarantine, "QUARANTINE"),
    ord("h"): _decode_addheader,
    ord("i"): _decode_insheader,
    ord("m"): _decode_chgheader,
    ord("+"): _decode_string_action(AddRcpt, "ADDRCPT"),
    ord("2"): _decode_addrcpt_par,
    ord("-"): _decode_string_action(DelRcpt, "DELRCPT"),
    ord("e"): _decode_chgfrom,
    ord("b"): ReplaceBody,
    ord("l"): _decode_setsymlist,
    ord("4"): _no_payload(Shutdown(), "SHUTDOWN"),
    ord("f"): _no_payload(ConnectionFail(), "CONN_FAIL"),
}


def decode_action(code: int, payload: bytes) -> Action:
    """Decode one filter→MTA frame.

    Args:
        code: the reply code byte, as an int.
        payload: the bytes after it.

    Raises:
        RemoteProtocolError: unknown reply code or malformed payload.
    """
    decoder = _ACTION_DECODERS.get(code)
    if decoder is None:
        raise RemoteProtocolError(f"unknown filter reply {bytes([code])!r}")
    try:
        return decoder(payload)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"invalid {chr(code)!r} frame: {exc}") from exc


def _encode_optneg_reply(r: NegotiateReply) -> bytes:
    out = _OPTNEG.pack(r.version, r.actions, r.protocol)
    return out + b"".join(_UINT32.pack(stage) + _bytes(names) + b"\0" for stage, names in r.macros)


def _with_args(address: str, args: tuple[str, ...]) -> bytes:
    return _argv(address, " ".join(args)) if args else _argv(address)


_ACTION_ENCODERS: Final[dict[type[Action], tuple[Response, Callable[[Action], bytes]]]] = {}


def _action_encoder(cls: type[_Ac], code: Response, fn: Callable[[_Ac], bytes]) -> None:
    # Sound because lookups are by exact type(action): fn only ever sees a ``cls``.
    _ACTION_ENCODERS[cls] = (code, cast("Callable[[Action], bytes]", fn))


def _empty(_: Action) -> bytes:
    return b""


_action_encoder(NegotiateReply, Response.OPTNEG, _encode_optneg_reply)
_action_encoder(Continue, Response.CONTINUE, _empty)
_action_encoder(Accept, Response.ACCEPT, _empty)
_action_encoder(Reject, Response.REJECT, _empty)
_action_encoder(TempFail, Response.TEMPFAIL, _empty)
_action_encoder(Discard, Response.DISCARD, _empty)
_action_encoder(
    ReplyCode, Response.REPLYCODE, lambda a: _argv(f"{a.code} {a.text.replace('%', '%%')}")
)
_action_encoder(Progress, Response.PROGRESS, _empty)
_action_encoder(Skip, Response.SKIP, _empty)
_action_encoder(Quarantine, Response.QUARANTINE, lambda a: _argv(a.reason))
_action_encoder(AddHeader, Response.ADDHEADER, lambda a: _argv(a.name, a.value))
_action_encoder(
    InsertHeader, Response.INSHEADER, lambda a: _UINT32.pack(a.index) + _argv(a.name, a.value)
)
_action_encoder(
    ChangeHeader, Response.CHGHEADER, lambda a: _UINT32.pack(a.index) + _argv(a.name, a.value)
)
_action_encoder(AddRcpt, Response.ADDRCPT, lambda a: _argv(a.rcpt))
_action_encoder(AddRcptWithArgs, Response.ADDRCPT_PAR, lambda a: _with_args(a.rcpt, a.args))
_action_encoder(DelRcpt, Response.DELRCPT, lambda a: _argv(a.rcpt))
_action_encoder(ChangeFrom, Response.CHGFROM, lambda a: _with_args(a.sender, a.args))
_action_encoder(ReplaceBody, Response.REPLBODY, lambda a: a.data)
_action_encoder(
    SetSymbolList, Response.SETSYMLIST, lambda a: _UINT32.pack(a.stage) + _argv(a.macros)
)
_action_encoder(Shutdown, Response.SHUTDOWN, _empty)
_action_encoder(ConnectionFail, Response.CONN_FAIL, _empty)

#: The reply code each action type is sent as.
RESPONSE_OF: Final = MappingProxyType({cls: code for cls, (code, _) in _ACTION_ENCODERS.items()})


def encode_action(action: Action) -> bytes:
    """Encode one filter→MTA frame.

    Raises:
        LocalProtocolError: not an action type, or a string cannot be encoded.
    """
    entry = _ACTION_ENCODERS.get(type(action))
    if entry is None:
        raise LocalProtocolError(f"{type(action).__name__} is not a milter action")
    code, fn = entry
    try:
        return frame(code.value, fn(action))
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"cannot encode {action!r}: {exc}") from exc
