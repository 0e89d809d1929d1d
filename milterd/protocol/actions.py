"""Actions: what the filter tells the MTA, one frozen value per filter→MTA reply.

Decisions (``Continue`` … ``ReplyCode``) answer one command; modifications
(``AddHeader`` … ``Quarantine``) are only legal while answering end of message and must be
followed by one decision there (spec §6).  Constructors validate what Postfix would
otherwise reject mid-session, where the failure would cost the whole SMTP session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from . import _validation as check
from .constants import (
    MAX_BODY_CHUNK,
    MILTER_VERSION,
    MILTER_VERSION_MIN,
    SMFI_INTERNAL,
    ActionFlag,
    MacroStage,
    ProtocolFlag,
)
from .errors import LocalProtocolError

__all__ = [
    "Accept",
    "Action",
    "AddHeader",
    "AddRcpt",
    "AddRcptWithArgs",
    "ChangeFrom",
    "ChangeHeader",
    "ConnectionFail",
    "Continue",
    "DelRcpt",
    "Discard",
    "InsertHeader",
    "NegotiateReply",
    "Progress",
    "Quarantine",
    "Reject",
    "ReplaceBody",
    "ReplyCode",
    "SetSymbolList",
    "Shutdown",
    "Skip",
    "TempFail",
    "replace_body_chunks",
]

# An RFC 3463 enhanced status code at the start of the reply text.  Only used when a
# ReplyCode is built (once per message at most), never per frame.
_ENHANCED_CODE: Final = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?: |$)")


class Action:
    """Base class of everything a filter can send (and an MTA-role connection yields)."""

    __slots__ = ()


@dataclass(slots=True, frozen=True)
class NegotiateReply(Action):
    """SMFIC_OPTNEG answer.  ``macros`` are per-stage, space-separated macro name lists."""

    version: int
    actions: ActionFlag
    protocol: ProtocolFlag
    macros: tuple[tuple[MacroStage, str], ...] = ()

    def __post_init__(self) -> None:
        if not MILTER_VERSION_MIN <= self.version <= MILTER_VERSION:
            raise LocalProtocolError(
                f"negotiated version must be {MILTER_VERSION_MIN}..{MILTER_VERSION}: {self.version}"
            )
        check.uint("actions", self.actions, 32)
        check.uint("protocol", self.protocol, 32)
        if self.protocol & SMFI_INTERNAL:
            raise LocalProtocolError("a filter must not set the internal bits 0x70000000")
        for stage, names in self.macros:
            if not isinstance(stage, MacroStage):
                raise LocalProtocolError(f"macro stage must be a MacroStage: {stage!r}")
            check.no_nul("macro list", names)


@dataclass(slots=True, frozen=True)
class Continue(Action):
    """SMFIR_CONTINUE: go on with the next step."""


@dataclass(slots=True, frozen=True)
class Accept(Action):
    """SMFIR_ACCEPT: accept the message (at CONNECT/HELO: the whole session)."""


@dataclass(slots=True, frozen=True)
class Reject(Action):
    """SMFIR_REJECT: reject with the MTA's default 5xx text."""


@dataclass(slots=True, frozen=True)
class TempFail(Action):
    """SMFIR_TEMPFAIL: temporary failure with the MTA's default 4xx text."""


@dataclass(slots=True, frozen=True)
class Discard(Action):
    """SMFIR_DISCARD: accept and silently drop the message (not at CONNECT/HELO)."""


@dataclass(slots=True, frozen=True)
class ReplyCode(Action):
    """SMFIR_REPLYCODE: reject or tempfail with this exact SMTP reply.

    On the wire this is ``"<code> <text>"`` with every ``%`` doubled, because Sendmail uses
    the text as a printf format (spec §6, §10 item 20); decoding undoes the doubling.
    Only single-line replies are supported.
    """

    code: int
    text: str

    def __post_init__(self) -> None:
        if not 400 <= self.code <= 599:
            raise LocalProtocolError(f"reply code must be 4xx or 5xx: {self.code}")
        check.single_line("reply text", self.text)
        m = _ENHANCED_CODE.match(self.text)
        if m is not None and int(m.group(1)) != self.code // 100:
            raise LocalProtocolError(
                f"enhanced status code class {m.group(1)} does not match reply code {self.code}"
            )


@dataclass(slots=True, frozen=True)
class Progress(Action):
    """SMFIR_PROGRESS: keep-alive while a reply is owed; restarts the MTA's timer."""


@dataclass(slots=True, frozen=True)
class Skip(Action):
    """SMFIR_SKIP: skip further events of this kind (meant for BODY); needs SMFIP_SKIP."""


@dataclass(slots=True, frozen=True)
class Quarantine(Action):
    """SMFIR_QUARANTINE: put the message on hold.  Not a decision; one must follow."""

    reason: str

    def __post_init__(self) -> None:
        if not self.reason:
            raise LocalProtocolError("quarantine reason must not be empty")
        check.single_line("quarantine reason", self.reason)


@dataclass(slots=True, frozen=True)
class AddHeader(Action):
    """SMFIR_ADDHEADER: append a header.  Fold with LF + whitespace, never CRLF."""

    name: str
    value: str

    def __post_init__(self) -> None:
        check.header_name(self.name)
        check.header_value(self.value)


@dataclass(slots=True, frozen=True)
class InsertHeader(Action):
    """SMFIR_INSHEADER: insert at a global position (Postfix counts its own Received:)."""

    index: int
    name: str
    value: str

    def __post_init__(self) -> None:
        check.uint("header index", self.index, 32)
        check.header_name(self.name)
        check.header_value(self.value)


@dataclass(slots=True, frozen=True)
class ChangeHeader(Action):
    """SMFIR_CHGHEADER: change the ``index``-th (1-based, per name) header; "" deletes it."""

    index: int
    name: str
    value: str

    def __post_init__(self) -> None:
        check.uint("header index", self.index, 32)
        check.header_name(self.name)
        check.header_value(self.value)


def _check_address(field: str, value: str) -> None:
    if not value:
        raise LocalProtocolError(f"{field} must not be empty")
    check.no_nul(field, value)


def _check_esmtp_args(args: tuple[str, ...]) -> None:
    # CHGFROM and ADDRCPT_PAR carry all ESMTP args in ONE space-separated string, so an
    # argument can contain no whitespace (libmilter smfi_chgfrom/smfi_addrcpt_par).
    for arg in args:
        if not arg or any(ch in arg for ch in " \t\r\n\0"):
            raise LocalProtocolError(f"invalid ESMTP argument {arg!r}")


@dataclass(slots=True, frozen=True)
class AddRcpt(Action):
    """SMFIR_ADDRCPT: add an envelope recipient."""

    rcpt: str

    def __post_init__(self) -> None:
        _check_address("recipient", self.rcpt)


@dataclass(slots=True, frozen=True)
class AddRcptWithArgs(Action):
    """SMFIR_ADDRCPT_PAR: add a recipient with ESMTP args (Postfix honours NOTIFY, ORCPT)."""

    rcpt: str
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_address("recipient", self.rcpt)
        _check_esmtp_args(self.args)


@dataclass(slots=True, frozen=True)
class DelRcpt(Action):
    """SMFIR_DELRCPT: remove an envelope recipient (as the MTA saw it)."""

    rcpt: str

    def __post_init__(self) -> None:
        _check_address("recipient", self.rcpt)


@dataclass(slots=True, frozen=True)
class ChangeFrom(Action):
    """SMFIR_CHGFROM: replace the envelope sender (Postfix honours RET and ENVID args)."""

    sender: str
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_address("sender", self.sender)
        _check_esmtp_args(self.args)


@dataclass(slots=True, frozen=True)
class ReplaceBody(Action):
    """SMFIR_REPLBODY: one chunk (≤ 65535 bytes) of the new body; send chunks back to back."""

    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) > MAX_BODY_CHUNK:
            raise LocalProtocolError(
                f"a body chunk holds at most {MAX_BODY_CHUNK} bytes; use replace_body_chunks()"
            )


def replace_body_chunks(body: bytes, chunk_size: int = MAX_BODY_CHUNK) -> tuple[ReplaceBody, ...]:
    """Split a whole new body into ``ReplaceBody`` frames of at most ``chunk_size`` bytes.

    An empty body still needs one (empty) frame to replace the old one.

    Raises:
        LocalProtocolError: ``chunk_size`` is not in 1..65535.
    """
    if not 1 <= chunk_size <= MAX_BODY_CHUNK:
        raise LocalProtocolError(f"chunk size must be 1..{MAX_BODY_CHUNK}: {chunk_size}")
    if not body:
        return (ReplaceBody(b""),)
    return tuple(ReplaceBody(body[i : i + chunk_size]) for i in range(0, len(body), chunk_size))


@dataclass(slots=True, frozen=True)
class SetSymbolList(Action):
    """SMFIR_SETSYMLIST: a standalone macro list.  Defined but unused in practice (spec §5.2)."""

    stage: MacroStage
    macros: str

    def __post_init__(self) -> None:
        if not isinstance(self.stage, MacroStage):
            raise LocalProtocolError(f"macro stage must be a MacroStage: {self.stage!r}")
        check.no_nul("macro list", self.macros)


@dataclass(slots=True, frozen=True)
class Shutdown(Action):
    """SMFIR_SHUTDOWN: Postfix answers 421 and disconnects.  Internal to libmilter; avoid."""


@dataclass(slots=True, frozen=True)
class ConnectionFail(Action):
    """SMFIR_CONN_FAIL: defined by libmilter, not handled by Postfix; avoid."""
