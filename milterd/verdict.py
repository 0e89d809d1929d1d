"""From a scan result to milter replies (pure: no I/O, no state).

The mapping, all texts configurable in ``[milter]``:

=================  ==================================================================
no action          result headers, Accept
greylist           ReplyCode 451 4.7.1 <greylist_message>
add header         result headers, ``X-Spam: Yes``, Accept
rewrite subject    result headers, ``X-Spam: Yes``, Subject changed, Accept
soft reject        ReplyCode 450 4.7.1 <soft_reject_message>
reject             ReplyCode 554 5.7.1 <reject_message>, or Discard, or
                   (result headers, ``X-Spam: Yes``, Quarantine, Accept)
=================  ==================================================================

Header edits are only sent with a reply that lets the message through (an edit on a
rejected message is wasted work for the MTA). A module's ``smtp_message`` (GTUBE's
"Gtube pattern", a rate limit's reason) replaces the configured text of a refusal.
Deletions go from the highest index down: Postfix renumbers after each one.
Authentication headers (``PREPENDED``) are inserted at the top of the message rather than
appended: RFC 8601 §5 wants Authentication-Results above the trace fields, RFC 6376 §5.6
a DKIM-Signature above older ones, and an ARC set goes on top as a unit (RFC 8617 §4.2).
They are inserted in reverse, so they arrive in the order the result lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import Action, ScanResult
from milterd.protocol import (
    Accept,
    ActionFlag,
    AddHeader,
    ChangeHeader,
    Discard,
    InsertHeader,
    Quarantine,
    ReplyCode,
)
from milterd.protocol import Action as MilterAction

if TYPE_CHECKING:
    from collections.abc import Mapping

    from milterd.settings import MilterSettings

__all__ = ["fallback_actions", "verdict_actions"]

_MAX_TEXT = 400
PREPENDED = frozenset(
    {
        "authentication-results",
        "dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
    }
)
_ALL_ACTIONS = ActionFlag(0x1FF)
# The grant each edit needs at negotiation (SMFIF_*); decisions need none.
_NEEDS = {
    AddHeader: ActionFlag.ADDHDRS,
    InsertHeader: ActionFlag.ADDHDRS,
    ChangeHeader: ActionFlag.CHGHDRS,
    Quarantine: ActionFlag.QUARANTINE,
}


def verdict_actions(
    result: ScanResult,
    settings: MilterSettings,
    header_counts: Mapping[str, int],
    granted: ActionFlag = _ALL_ACTIONS,
) -> list[MilterAction]:
    """The replies for one message's end-of-message, in the order they must be sent.

    ``header_counts`` maps lower-cased header names to how many the MTA sent us;
    ``granted`` is what the MTA allowed at negotiation. Edits it did not allow are left
    out (the verdict must still go through); a quarantine it did not allow becomes the
    reject reply, so spam is never let through for want of a hold queue. A partial
    result that is let through says so in the incomplete-scan header.
    """
    actions = _rung_actions(result, settings, header_counts)
    if result.partial and settings.incomplete_header and isinstance(actions[-1], Accept):
        actions.insert(-1, AddHeader(settings.incomplete_header, "incomplete (partial)"))
    if any(isinstance(a, Quarantine) for a in actions) and ActionFlag.QUARANTINE not in granted:
        return [_reply(554, "5.7.1", settings.reject_message)]
    return _within(actions, granted)


def _rung_actions(
    result: ScanResult, settings: MilterSettings, header_counts: Mapping[str, int]
) -> list[MilterAction]:
    action = result.action
    smtp_message = result.messages.get("smtp_message")
    if action is Action.GREYLIST:
        return [_reply(451, "4.7.1", smtp_message or settings.greylist_message)]
    if action is Action.SOFT_REJECT:
        return [_reply(450, "4.7.1", smtp_message or settings.soft_reject_message)]
    if action is Action.REJECT and settings.reject_action == "reject":
        return [_reply(554, "5.7.1", smtp_message or settings.reject_message)]
    if action is Action.REJECT and settings.reject_action == "discard":
        return [Discard()]

    edits = _result_header_edits(result, header_counts)
    spam = action in (Action.ADD_HEADER, Action.REWRITE_SUBJECT, Action.REJECT)
    spam_header = settings.spam_header
    if spam_header and (spam or settings.remove_upstream_spam_header):
        edits.extend(_delete_all(spam_header, header_counts.get(spam_header.lower(), 0)))
    if spam_header and spam:
        edits.append(AddHeader(spam_header, settings.spam_header_value))
    if action is Action.REWRITE_SUBJECT and result.subject is not None:
        edits.append(ChangeHeader(1, "Subject", _one_line(result.subject, 900)))
    if action is Action.REJECT:  # reject_action == "quarantine"
        edits.append(Quarantine(settings.quarantine_reason))
    edits.append(Accept())
    return edits


def fallback_actions(
    settings: MilterSettings, reason: str, granted: ActionFlag = _ALL_ACTIONS
) -> list[MilterAction]:
    """What to answer when no verdict could be had: the configured safe action."""
    if settings.on_error == "tempfail":
        return [_reply(451, "4.7.1", settings.tempfail_message)]
    out: list[MilterAction] = []
    if settings.incomplete_header:
        out.append(AddHeader(settings.incomplete_header, f"incomplete ({reason})"))
    out.append(Accept())
    return _within(out, granted)


def _within(actions: list[MilterAction], granted: ActionFlag) -> list[MilterAction]:
    return [a for a in actions if _NEEDS.get(type(a), ActionFlag.NONE) in granted]


def _result_header_edits(
    result: ScanResult, header_counts: Mapping[str, int]
) -> list[MilterAction]:
    edits: list[MilterAction] = []
    for name, index in result.remove_headers.items():
        present = header_counts.get(name.lower(), 0)
        if index == 0:
            edits.extend(_delete_all(name, present))
        elif 0 < index <= present:
            edits.append(ChangeHeader(index, name, ""))
        elif index < 0 and present + index >= 0:
            edits.append(ChangeHeader(present + index + 1, name, ""))
    top = [(n, v) for n, v in result.add_headers if n.lower() in PREPENDED]
    # Index 0 is above everything, Postfix's own Received: included (Postfix counts it).
    edits.extend(InsertHeader(0, name, value) for name, value in reversed(top))
    edits.extend(
        AddHeader(name, value)
        for name, value in result.add_headers
        if name.lower() not in PREPENDED
    )
    return edits


def _delete_all(name: str, count: int) -> list[MilterAction]:
    return [ChangeHeader(i, name, "") for i in range(count, 0, -1)]


def _reply(code: int, status: str, text: str) -> ReplyCode:
    return ReplyCode(code, f"{status} {_one_line(text, _MAX_TEXT)}")


def _one_line(text: str, limit: int) -> str:
    """SMTP reply and header text from module data: printable, one line, bounded."""
    cleaned = "".join(c if c.isprintable() else " " for c in text).strip()
    return cleaned[:limit] or "-"
