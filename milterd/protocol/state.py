"""The milter conversation as transition tables, shared by both roles.

Theory of operation
===================

A milter connection is one conversation with a single position (``State``) that both peers
track identically: the MTA sends commands, the filter answers some of them.  Two rules
govern it, each kept as a table below so the code, the tests and
``docs/milter-protocol.md`` all read the same data.

Rule 1 (MTA commands, ``MTA_TRANSITIONS``): a command may be sent only when no reply is
owed.  Which commands owe a reply is fixed at negotiation: OPTNEG and BODYEOB always do,
MACRO/ABORT/QUIT/QUIT_NC never do, every other command does unless its SMFIP_NR_* bit was
negotiated (spec §5.3).  The table lists the order a well-behaved MTA follows, including
the steps a filter may switch off with SMFIP_NO*.  Like libmilter (spec §3, end), an
out-of-order command in a live state is *tolerated*: the message in progress is considered
abandoned, the state jumps to where that command leads from ``OUT_OF_ORDER``, and
``out_of_order`` is set so the driver can log it.  Only commands that make no sense at all
(anything before OPTNEG, a second OPTNEG, anything after QUIT or after a session-ending
verdict other than ABORT/QUIT/QUIT_NC/MACRO) are errors.

Rule 2 (filter replies, ``REPLY_TRANSITIONS``): a reply may be sent only while one is owed,
and only a kind the owed command allows.  Modifications (``h i m + 2 - e b q l``) belong
to BODYEOB alone and each needs its SMFIF_* bit negotiated; PROGRESS and modifications leave
the reply owed, every other reply settles it.  SKIP needs the MTA to have *offered*
SMFIP_SKIP.  A verdict at CONNECT/HELO ends the session (Postfix closes the socket); any
decision at BODYEOB ends the message (another MAIL may follow on the same connection).

Violations raise ``LocalProtocolError``; ``MilterConnection`` re-types them as remote when
the peer committed them, then moves to ``ERROR``, from which nothing leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Final, final

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
from .constants import (
    NO_REPLY_FLAG,
    NO_STEP_FLAG,
    V1_ACTIONS,
    V1_PROTOCOL,
    ActionFlag,
    Command,
    MacroStage,
    ProtocolFlag,
)
from .errors import LocalProtocolError
from .events import Negotiate

__all__ = [
    "MTA_TRANSITIONS",
    "OUT_OF_ORDER",
    "REPLY_KIND",
    "REPLY_TRANSITIONS",
    "REQUIRED_ACTION",
    "ConnectionState",
    "Negotiated",
    "ReplyKind",
    "State",
    "offered_actions",
    "offered_protocol",
]


class State(Enum):
    """Position of the conversation, named after the last command that moved it."""

    # Members are singletons compared by identity; identity hashing skips Enum's Python-level
    # __hash__ on the per-frame transition lookup.
    __hash__ = object.__hash__

    START = "START"  # nothing yet, or OPTNEG received and being answered
    NEGOTIATED = "NEGOTIATED"  # options agreed; CONNECT expected (also after QUIT_NC)
    CONNECTED = "CONNECTED"  # CONNECT/HELO seen, no message open (also after ABORT / EOM decision)
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    HEADERS = "HEADERS"
    EOH = "EOH"
    BODY = "BODY"
    END_OF_MESSAGE = "END_OF_MESSAGE"  # BODYEOB seen; modifications + one decision owed
    DONE = "DONE"  # a verdict at CONNECT/HELO or SHUTDOWN ended the session; MTA will close
    CLOSED = "CLOSED"  # QUIT or EOF (or a health check) — nothing more may arrive
    ERROR = "ERROR"


class ReplyKind(Enum):
    """How Rule 2 treats a filter reply."""

    NEGOTIATION = "negotiation"  # O
    CONTINUE = "continue"  # c
    VERDICT = "verdict"  # a r t y
    DISCARD = "discard"  # d
    SHUTDOWN = "shutdown"  # 4 f
    PROGRESS = "progress"  # p — not final
    SKIP = "skip"  # s
    MODIFICATION = "modification"  # h i m + 2 - e b q l — not final


_S = State
_C = Command


def _live(state: State, moves: dict[Command, State]) -> MappingProxyType[Command, State]:
    """Commands every live state accepts, plus its own moves."""
    table = {_C.MACRO: state, _C.ABORT: _S.CONNECTED, _C.QUIT: _S.CLOSED}
    table[_C.QUIT_NC] = _S.NEGOTIATED
    table.update(moves)
    return MappingProxyType(table)


_CONTENT: Final = {
    _C.DATA: _S.DATA,
    _C.HEADER: _S.HEADERS,
    _C.EOH: _S.EOH,
    _C.BODY: _S.BODY,
    _C.BODYEOB: _S.END_OF_MESSAGE,
}

#: Rule 1: state → command → next state, for commands in the expected order.
MTA_TRANSITIONS: Final[MappingProxyType[State, MappingProxyType[Command, State]]] = (
    MappingProxyType(
        {
            # The move to NEGOTIATED happens when the OPTNEG reply is sent (Rule 2).
            _S.START: MappingProxyType({_C.OPTNEG: _S.START}),
            _S.NEGOTIATED: _live(
                _S.NEGOTIATED,
                {
                    _C.ABORT: _S.NEGOTIATED,
                    _C.CONNECT: _S.CONNECTED,
                    _C.HELO: _S.CONNECTED,  # NOCONNECT negotiated
                    _C.MAIL: _S.MAIL,  # NOCONNECT|NOHELO negotiated
                    _C.UNKNOWN: _S.NEGOTIATED,
                },
            ),
            _S.CONNECTED: _live(
                _S.CONNECTED, {_C.HELO: _S.CONNECTED, _C.MAIL: _S.MAIL, _C.UNKNOWN: _S.CONNECTED}
            ),
            _S.MAIL: _live(_S.MAIL, {_C.RCPT: _S.RCPT, _C.UNKNOWN: _S.MAIL, **_CONTENT}),
            _S.RCPT: _live(_S.RCPT, {_C.RCPT: _S.RCPT, _C.UNKNOWN: _S.RCPT, **_CONTENT}),
            _S.DATA: _live(_S.DATA, {c: s for c, s in _CONTENT.items() if c is not _C.DATA}),
            _S.HEADERS: _live(_S.HEADERS, {c: s for c, s in _CONTENT.items() if c is not _C.DATA}),
            _S.EOH: _live(_S.EOH, {_C.BODY: _S.BODY, _C.BODYEOB: _S.END_OF_MESSAGE}),
            _S.BODY: _live(_S.BODY, {_C.BODY: _S.BODY, _C.BODYEOB: _S.END_OF_MESSAGE}),
            _S.END_OF_MESSAGE: MappingProxyType({}),  # a reply is always owed here
            _S.DONE: MappingProxyType(
                {
                    _C.MACRO: _S.DONE,
                    _C.ABORT: _S.DONE,
                    _C.QUIT: _S.CLOSED,
                    _C.QUIT_NC: _S.NEGOTIATED,
                }
            ),
            _S.CLOSED: MappingProxyType({}),
            _S.ERROR: MappingProxyType({}),
        }
    )
)

#: Rule 1, tolerance: where an out-of-order command leads (from any live state).
OUT_OF_ORDER: Final = MappingProxyType(
    {
        _C.CONNECT: _S.CONNECTED,
        _C.HELO: _S.CONNECTED,
        _C.UNKNOWN: _S.CONNECTED,
        _C.MAIL: _S.MAIL,
        _C.RCPT: _S.RCPT,
        **_CONTENT,
    }
)
_LIVE: Final = frozenset(
    {_S.NEGOTIATED, _S.CONNECTED, _S.MAIL, _S.RCPT, _S.DATA, _S.HEADERS, _S.EOH, _S.BODY}
)

_K = ReplyKind
_PER_COMMAND: Final = MappingProxyType(
    {
        _K.CONTINUE: None,
        _K.VERDICT: None,
        _K.DISCARD: None,
        _K.SHUTDOWN: _S.DONE,
        _K.PROGRESS: None,
        _K.SKIP: None,
    }
)
_SESSION_LEVEL: Final = MappingProxyType(
    {
        _K.CONTINUE: None,
        _K.VERDICT: _S.DONE,  # Postfix closes the milter socket (spec §8)
        _K.SHUTDOWN: _S.DONE,
        _K.PROGRESS: None,
        _K.SKIP: None,
        # no DISCARD: Postfix ignores it at CONNECT/HELO (spec §6)
    }
)

#: Rule 2: owed command → reply kind → next state (None: state unchanged).
REPLY_TRANSITIONS: Final[MappingProxyType[Command, MappingProxyType[ReplyKind, State | None]]] = (
    MappingProxyType(
        {
            _C.OPTNEG: MappingProxyType({_K.NEGOTIATION: _S.NEGOTIATED}),
            _C.CONNECT: _SESSION_LEVEL,
            _C.HELO: _SESSION_LEVEL,
            _C.MAIL: _PER_COMMAND,
            _C.RCPT: _PER_COMMAND,
            _C.DATA: _PER_COMMAND,
            _C.HEADER: _PER_COMMAND,
            _C.EOH: _PER_COMMAND,
            _C.BODY: _PER_COMMAND,
            _C.UNKNOWN: _PER_COMMAND,
            _C.BODYEOB: MappingProxyType(
                {
                    _K.CONTINUE: _S.CONNECTED,
                    _K.VERDICT: _S.CONNECTED,
                    _K.DISCARD: _S.CONNECTED,
                    _K.SHUTDOWN: _S.DONE,
                    _K.PROGRESS: None,
                    _K.MODIFICATION: None,
                }
            ),
        }
    )
)
_NOT_FINAL: Final = frozenset({_K.PROGRESS, _K.MODIFICATION})

#: Rule 2: the kind of every action type.
REPLY_KIND: Final[MappingProxyType[type[Action], ReplyKind]] = MappingProxyType(
    {
        NegotiateReply: _K.NEGOTIATION,
        Continue: _K.CONTINUE,
        Accept: _K.VERDICT,
        Reject: _K.VERDICT,
        TempFail: _K.VERDICT,
        ReplyCode: _K.VERDICT,
        Discard: _K.DISCARD,
        Shutdown: _K.SHUTDOWN,
        ConnectionFail: _K.SHUTDOWN,
        Progress: _K.PROGRESS,
        Skip: _K.SKIP,
        AddHeader: _K.MODIFICATION,
        InsertHeader: _K.MODIFICATION,
        ChangeHeader: _K.MODIFICATION,
        AddRcpt: _K.MODIFICATION,
        AddRcptWithArgs: _K.MODIFICATION,
        DelRcpt: _K.MODIFICATION,
        ChangeFrom: _K.MODIFICATION,
        ReplaceBody: _K.MODIFICATION,
        Quarantine: _K.MODIFICATION,
        SetSymbolList: _K.MODIFICATION,
    }
)

#: Rule 2: the SMFIF_* bit each modification needs (spec §6).
REQUIRED_ACTION: Final[MappingProxyType[type[Action], ActionFlag]] = MappingProxyType(
    {
        AddHeader: ActionFlag.ADDHDRS,
        InsertHeader: ActionFlag.ADDHDRS,
        ChangeHeader: ActionFlag.CHGHDRS,
        AddRcpt: ActionFlag.ADDRCPT,
        AddRcptWithArgs: ActionFlag.ADDRCPT_PAR,
        DelRcpt: ActionFlag.DELRCPT,
        ChangeFrom: ActionFlag.CHGFROM,
        ReplaceBody: ActionFlag.CHGBODY,
        Quarantine: ActionFlag.QUARANTINE,
        SetSymbolList: ActionFlag.SETSYMLIST,
    }
)

_ALWAYS_REPLY: Final = frozenset({_C.OPTNEG, _C.BODYEOB})


def offered_actions(offer: Negotiate) -> ActionFlag:
    """The MTA's action offer; libmilter reads 0 as the version-1 set."""
    return offer.actions or V1_ACTIONS


def offered_protocol(offer: Negotiate) -> ProtocolFlag:
    """The MTA's protocol offer; libmilter reads 0 as the version-1 set."""
    return offer.protocol or V1_PROTOCOL


@dataclass(slots=True, frozen=True)
class Negotiated:
    """The outcome of option negotiation, as both peers apply it."""

    version: int
    actions: ActionFlag
    protocol: ProtocolFlag
    offered_actions: ActionFlag
    offered_protocol: ProtocolFlag
    macros: tuple[tuple[MacroStage, str], ...] = ()
    _owed: frozenset[Command] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owed = {c for c, flag in NO_REPLY_FLAG.items() if not self.protocol & flag}
        object.__setattr__(self, "_owed", frozenset(owed | _ALWAYS_REPLY))

    def needs_reply(self, command: Command) -> bool:
        """Whether the filter must answer ``command``."""
        return command in self._owed

    def sends(self, command: Command) -> bool:
        """Whether the MTA sends ``command`` at all (no SMFIP_NO* bit for it)."""
        flag = NO_STEP_FLAG.get(command)
        return flag is None or not self.protocol & flag

    @property
    def may_skip(self) -> bool:
        """Whether SMFIR_SKIP may be sent (the MTA offered SMFIP_SKIP)."""
        return bool(self.offered_protocol & ProtocolFlag.SKIP)


_BODY_IDLE, _BODY_REPLACING, _BODY_LOCKED = range(3)


@final
class ConnectionState:
    """Applies Rule 1 and Rule 2; both roles drive one of these identically."""

    __slots__ = ("_body", "negotiated", "offer", "out_of_order", "reply_owed", "state")

    def __init__(self) -> None:
        self.state = State.START
        self.reply_owed: Command | None = None
        self.offer: Negotiate | None = None
        self.negotiated: Negotiated | None = None
        self.out_of_order = False
        self._body = _BODY_IDLE

    def process_command(self, command: Command, event: object = None) -> None:
        """Apply Rule 1 to an MTA command (``event`` is the decoded OPTNEG offer)."""
        if self.reply_owed is not None:
            raise LocalProtocolError(
                f"{command.name} sent while the reply to {self.reply_owed.name} is outstanding"
            )
        state = self.state
        target = MTA_TRANSITIONS[state].get(command)
        self.out_of_order = False
        if target is None:
            target = OUT_OF_ORDER.get(command) if state in _LIVE else None
            if target is None:
                raise LocalProtocolError(f"{command.name} not allowed in state {state.name}")
            self.out_of_order = True
        self.state = target
        negotiated = self.negotiated
        if negotiated is None:
            # Only OPTNEG is possible before negotiation (MTA_TRANSITIONS[START]).
            assert isinstance(event, Negotiate)
            self.offer = event
            self.reply_owed = command
        elif negotiated.needs_reply(command):
            self.reply_owed = command
        if command is _C.BODYEOB:
            self._body = _BODY_IDLE

    def process_reply(self, action: Action, *, lenient_negotiation: bool = False) -> None:
        """Apply Rule 2 to a filter reply.

        Args:
            action: the reply.
            lenient_negotiation: mask protocol bits the MTA did not offer instead of
                refusing them (what Postfix does with a filter's reply).
        """
        owed = self.reply_owed
        kind = REPLY_KIND[type(action)]
        if owed is None:
            raise LocalProtocolError(
                f"{type(action).__name__} sent but no reply is owed in state {self.state.name}"
                " (no-reply flag negotiated, or already answered)"
            )
        allowed = REPLY_TRANSITIONS[owed]
        if kind not in allowed:
            raise LocalProtocolError(
                f"{type(action).__name__} is not a valid answer to {owed.name}"
            )
        if kind is _K.MODIFICATION:
            self._check_modification(action)
        elif kind is _K.SKIP:
            assert self.negotiated is not None  # OPTNEG does not allow SKIP
            if not self.negotiated.may_skip:
                raise LocalProtocolError("SKIP sent but the MTA did not offer SMFIP_SKIP")
        elif kind is _K.NEGOTIATION:
            assert isinstance(action, NegotiateReply)
            self._negotiate(action, lenient=lenient_negotiation)
        target = allowed[kind]
        if target is not None:
            self.state = target
        if kind not in _NOT_FINAL:
            self.reply_owed = None

    def _check_modification(self, action: Action) -> None:
        assert self.negotiated is not None  # modifications only answer BODYEOB
        needed = REQUIRED_ACTION[type(action)]
        if not self.negotiated.actions & needed:
            raise LocalProtocolError(
                f"{type(action).__name__} needs action flag {needed.name}, not negotiated"
            )
        if type(action) is ReplaceBody:
            if self._body == _BODY_LOCKED:
                # Postfix cannot mix body replacement with other edits (spec §6, §10 item 13).
                raise LocalProtocolError("ReplaceBody chunks must be sent back to back")
            self._body = _BODY_REPLACING
        elif self._body == _BODY_REPLACING:
            self._body = _BODY_LOCKED

    def _negotiate(self, reply: NegotiateReply, *, lenient: bool) -> None:
        offer = self.offer
        assert offer is not None  # OPTNEG was received before the reply was owed
        actions = offered_actions(offer)
        protocol = offered_protocol(offer)
        if reply.version > offer.version:
            raise LocalProtocolError(
                f"negotiated version {reply.version} above the offered {offer.version}"
            )
        # Plain ints: IntFlag's ~ only inverts the *defined* bits and would hide unknown ones.
        extra_actions = int(reply.actions) & ~int(actions)
        if extra_actions:
            raise LocalProtocolError(f"actions {extra_actions:#x} were not offered by the MTA")
        reply_protocol = reply.protocol
        extra_protocol = int(reply_protocol) & ~int(protocol)
        if extra_protocol:
            if not lenient:
                raise LocalProtocolError(
                    f"protocol bits {extra_protocol:#x} were not offered by the MTA"
                )
            reply_protocol = ProtocolFlag(int(reply_protocol) & int(protocol))
        self.negotiated = Negotiated(
            reply.version, reply.actions, reply_protocol, actions, protocol, reply.macros
        )

    def process_eof(self) -> None:
        """The stream ended cleanly at a frame boundary."""
        self.state = State.CLOSED
        self.reply_owed = None

    def process_error(self) -> None:
        """Enter ERROR; nothing leaves it."""
        self.state = State.ERROR
        self.reply_owed = None
