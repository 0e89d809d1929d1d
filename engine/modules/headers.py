"""Header hygiene: the fields RFC 5322 §3.6 requires, and the shapes real mailers give them.

Each check reads only the top-level header list (no MIME decoding), so the whole module
costs a few microseconds on ordinary mail. Names, scores and semantics follow Rspamd's
(``rules/headers_checks.lua``, ``rules/misc.lua``, ``rules/mid.lua``,
``rules/subject_checks.lua``) where the check is the same; where it differs the symbol's
description says what we do.

The clock is an attribute (``clock``) so tests can pin "now"; the date thresholds are
settings.
"""

from __future__ import annotations

import re
import time
from email.utils import getaddresses
from typing import TYPE_CHECKING

from engine.config.schema import Key, Section, at_least
from engine.mime.addresses import is_valid_address
from engine.mime.dates import parse_date
from engine.mime.headers import decode_rfc2047
from engine.modules.base import Module, check
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.task.task import Task

__all__ = ["Headers", "first_mailbox", "is_mailing_list"]

_G = "headers"
_SUBJECT_G = "subject"

# RFC 5322 §3.6: at most one of each. The weight says how telling a repeat is (a second
# Date or Cc is usually a sloppy script; a second From or Content-Type is a smuggling trick).
_UNIQUE_HEADERS = {
    "content-type": 1.0,
    "content-transfer-encoding": 1.0,
    "date": 0.1,
    "from": 1.0,
    "sender": 1.0,
    "reply-to": 1.0,
    "to": 0.2,
    "cc": 0.1,
    "bcc": 0.1,
    "message-id": 0.7,
    "in-reply-to": 0.7,
    "references": 0.3,
    "subject": 0.7,
}
_LIST_HEADERS = ("list-id", "list-post", "list-unsubscribe", "mailing-list", "x-mailing-list")
_BULK_PRECEDENCE = frozenset({"list", "bulk", "junk"})
_RCPT_COUNTS = (
    (50, "GT_50"),
    (12, "TWELVE"),
    (7, "SEVEN"),
    (5, "FIVE"),
    (3, "THREE"),
    (2, "TWO"),
    (1, "ONE"),
    (0, "ZERO"),
)

# Fast path for the usual one-mailbox forms: ``Name <a@b>``, ``"Name" <a@b>``, ``a@b``.
_NAME_ADDR = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^<>",:;@()\\]*?))\s*<([^<>\s,]*)>\s*$')
_BARE_ADDR = re.compile(r"\s*([^\s<>\",:;()\\]+@[^\s<>\",:;()\\]+)\s*$")
_REPLY_PREFIX = re.compile(
    r"^(?:\s*(?:re|fwd?|aw|sv|antw|antwort|wg|tr)\s*(?:\[\d+\])?\s*:\s*"
    r"|\s*\[[^\]]{1,40}\]\s*)+",
    re.I,
)
_MIN_CAPS_LETTERS = 6
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"?')
_COMMENT = re.compile(r"\([^()]*\)")
_MSGID_BAD = re.compile(r"[\s<>]")


def first_mailbox(value: str) -> tuple[str, str, int]:
    """``From:`` text → (display name, address, number of mailboxes); never raises."""
    if "," not in value:
        match = _NAME_ADDR.match(value)
        if match:
            name = match.group(1) if match.group(1) is not None else match.group(2)
            return name.replace('\\"', '"').strip(), match.group(3), 1
        match = _BARE_ADDR.match(value)
        if match:
            return "", match.group(1), 1
    pairs = [(n, a) for n, a in getaddresses([value.replace("\n", " ")]) if a]
    if not pairs:
        return "", "", 0
    return pairs[0][0], pairs[0][1], len(pairs)


def is_mailing_list(task: Task) -> bool:
    """Whether the message carries a mailing list's or bulk sender's marks (RFC 2369/2919)."""
    headers = task.message.headers
    if any(name in headers for name in _LIST_HEADERS):
        return True
    precedence = headers.get("precedence")
    return precedence is not None and precedence.strip().lower() in _BULK_PRECEDENCE


def _count_addresses(value: str) -> int:
    """Mailboxes in an address list: quoted names and comments (which may hold commas and
    @s) are blanked first, then every comma-separated item with an @ is one."""
    if '"' in value or "(" in value:
        value = _COMMENT.sub(" ", _QUOTED.sub(" ", value))
    return sum(1 for item in value.split(",") if "@" in item)


def _msgid_problem(value: str) -> str | None:
    """What is wrong with a Message-ID (RFC 5322 §3.6.4), or None; ``"brackets"`` = only those."""
    text = value.strip()
    bracketed = text.startswith("<")
    if bracketed:
        end = text.find(">")
        if end < 0:
            return "unterminated"
        rest = text[end + 1 :].strip()
        if rest and not (rest.startswith("(") and rest.endswith(")")):
            return "trailing garbage"
        text = text[1:end]
    local, at, right = text.rpartition("@")
    if not at or not local or not right:
        return "no @"
    if not text.isascii() or _MSGID_BAD.search(text):
        return "bad characters"
    if "@" in local and not local.startswith('"'):
        return "two @"
    return None if bracketed else "brackets"


class Headers(Module):
    name = "headers"
    description = "Required and unique header fields, dates, Message-ID, From, Subject, recipients."
    settings_schema = Section(
        {
            "date_future": Key(
                (float,),
                2.0,
                "Hours a Date may lie ahead of now before DATE_IN_FUTURE.",
                check=at_least(0),
            ),
            "date_past": Key(
                (float,),
                24.0,
                "Hours a Date may lie behind now before DATE_IN_PAST.",
                check=at_least(0),
            ),
        }
    )
    symbols = (
        SymbolSpec("MISSING_DATE", 1.0, _G, "Date header is missing"),
        SymbolSpec("INVALID_DATE", 1.5, _G, "Malformed Date header"),
        SymbolSpec(
            "DATE_IN_FUTURE", 4.0, _G, "Message date is in the future (more than date_future hours)"
        ),
        SymbolSpec(
            "DATE_IN_PAST", 1.0, _G, "Message date is in the past (more than date_past hours)"
        ),
        SymbolSpec("MISSING_MID", 2.5, _G, "Message-ID header is missing or empty"),
        SymbolSpec(
            "INVALID_MSGID", 1.7, _G, "Message-ID header is incorrect (no id-left@id-right)"
        ),
        SymbolSpec("MID_MISSING_BRACKETS", 0.5, _G, "Message-ID is missing <>'s"),
        SymbolSpec(
            "MID_RHS_NOT_FQDN", 0.5, _G, "Message-ID RHS is not a fully-qualified domain name"
        ),
        SymbolSpec("MISSING_FROM", 2.0, _G, "Missing From header"),
        SymbolSpec("MULTIPLE_FROM", 8.0, _G, "Multiple addresses in From header without a Sender"),
        SymbolSpec("FROM_INVALID", 2.0, _G, "From header does not have a valid format"),
        SymbolSpec(
            "FROM_DN_EQ_ADDR", 1.0, _G, "From header display name is the same as the address"
        ),
        SymbolSpec("FROM_NEQ_ENVFROM", 0.0, _G, "From address is different to the envelope"),
        SymbolSpec(
            "FORGED_SENDER",
            0.3,
            _G,
            "Sender is forged (different From: header and SMTP MAIL FROM: addresses), "
            "not from a mailing list",
        ),
        SymbolSpec("MISSING_TO", 2.0, _G, "To header is missing (and no Cc either)"),
        SymbolSpec("MISSING_SUBJECT", 2.0, _G, "Subject header is missing"),
        SymbolSpec("EMPTY_SUBJECT", 1.0, _G, "Subject header is empty"),
        SymbolSpec(
            "SUBJ_ALL_CAPS",
            3.0,
            _SUBJECT_G,
            "Subject is all capital letters (weight grows with length up to 40 characters)",
        ),
        SymbolSpec("MULTIPLE_UNIQUE_HEADERS", 7.0, _G, "Repeated unique headers"),
        SymbolSpec(
            "BROKEN_HEADERS",
            10.0,
            _G,
            "Headers structure is likely broken (lines that are no header fields)",
        ),
        *(
            SymbolSpec(
                f"RCPT_COUNT_{label}",
                0.0,
                _G,
                f"{low}{'+' if label == 'GT_50' else ''} recipients in To/Cc/Bcc",
            )
            for low, label in _RCPT_COUNTS
        ),
    )

    def setup(self) -> None:
        self.clock: Callable[[], float] = time.time
        self._future = float(self.settings["date_future"]) * 3600  # type: ignore[arg-type]
        self._past = float(self.settings["date_past"]) * 3600  # type: ignore[arg-type]

    @check(produces=("MISSING_DATE", "INVALID_DATE", "DATE_IN_FUTURE", "DATE_IN_PAST"))
    def date(self, task: Task) -> None:
        value = task.message.headers.get("date")
        if value is None or not value.strip():
            task.insert_result("MISSING_DATE")
            return
        when = parse_date(value)
        if when is None:
            task.insert_result("INVALID_DATE")
            return
        now = task.request.received_at
        ahead = when - (self.clock() if now is None else now)
        if ahead > self._future:
            task.insert_result("DATE_IN_FUTURE", options=[f"{int(ahead // 3600)}h"])
        elif -ahead > self._past:
            task.insert_result("DATE_IN_PAST", options=[f"{int(-ahead // 3600)}h"])

    @check(produces=("MISSING_MID", "INVALID_MSGID", "MID_MISSING_BRACKETS", "MID_RHS_NOT_FQDN"))
    def message_id(self, task: Task) -> None:
        value = task.message.headers.get("message-id")
        if value is None or not value.strip():
            task.insert_result("MISSING_MID")
            return
        problem = _msgid_problem(value)
        if problem == "brackets":
            task.insert_result("MID_MISSING_BRACKETS")
        elif problem is not None:
            task.insert_result("INVALID_MSGID", options=[problem])
            return
        right = value.strip().lstrip("<").split(">", 1)[0].rpartition("@")[2]
        if "." not in right and not right.startswith("["):
            task.insert_result("MID_RHS_NOT_FQDN", options=[right[:64]])

    @check(
        produces=(
            "MISSING_FROM",
            "MULTIPLE_FROM",
            "FROM_INVALID",
            "FROM_DN_EQ_ADDR",
            "FROM_NEQ_ENVFROM",
            "FORGED_SENDER",
        )
    )
    def sender(self, task: Task) -> None:
        value = task.message.headers.get("from")
        if value is None or not value.strip():
            task.insert_result("MISSING_FROM")
            return
        name, address, count = first_mailbox(value)
        if count > 1 and "sender" not in task.message.headers:
            task.insert_result("MULTIPLE_FROM", options=[str(count)])
        if not address or not is_valid_address(address):
            task.insert_result("FROM_INVALID")
            return
        if name:
            if "=?" in name:
                name = decode_rfc2047(name)
            if name.strip().strip("'\"<>").lower() == address.lower():
                task.insert_result("FROM_DN_EQ_ADDR")
        envelope_from = task.envelope.mail_from
        if envelope_from and envelope_from.lower() != address.lower():
            task.insert_result("FROM_NEQ_ENVFROM", options=[address, envelope_from])
            if not is_mailing_list(task):
                task.insert_result("FORGED_SENDER", options=[address, envelope_from])

    @check(produces=("MISSING_TO", *(f"RCPT_COUNT_{label}" for _, label in _RCPT_COUNTS)))
    def recipients(self, task: Task) -> None:
        headers = task.message.headers
        # RFC 5322 §3.6.3 makes every destination field optional; a list post addressed
        # only in Cc is ordinary, so only a message with neither To nor Cc counts.
        if "to" not in headers and "cc" not in headers:
            task.insert_result("MISSING_TO")
        values = headers.get_all("to") + headers.get_all("cc") + headers.get_all("bcc")
        if not values:
            return
        count = sum(_count_addresses(v) for v in values)
        label = next(label for low, label in _RCPT_COUNTS if count >= low)
        task.insert_result(f"RCPT_COUNT_{label}", options=[str(count)])

    @check(produces=("MISSING_SUBJECT", "EMPTY_SUBJECT", "SUBJ_ALL_CAPS"))
    def subject(self, task: Task) -> None:
        subject = task.message.subject
        if subject is None:
            task.insert_result("MISSING_SUBJECT")
            return
        if not subject:
            task.insert_result("EMPTY_SUBJECT")
            return
        stripped = _REPLY_PREFIX.sub("", subject)
        # str.isupper: some cased letters and none in lower case (uncased scripts don't count).
        if stripped.isupper() and sum(c.isupper() for c in stripped) >= _MIN_CAPS_LETTERS:
            task.insert_result("SUBJ_ALL_CAPS", weight=min(len(stripped) / 40.0, 1.0))

    @check(produces=("MULTIPLE_UNIQUE_HEADERS", "BROKEN_HEADERS"))
    def structure(self, task: Task) -> None:
        headers = task.message.headers
        weight = 0.0
        repeated = []
        for name, mult in _UNIQUE_HEADERS.items():
            if headers.count(name) > 1:
                repeated.append(name)
                weight = max(weight, mult)
        if repeated:
            task.insert_result("MULTIPLE_UNIQUE_HEADERS", weight=weight, options=repeated)
        # The defect set is shared by the whole tree; building the tree (which the MIME
        # checks do anyway) adds the part headers' defects without decoding any text.
        if "bad_header_line" in task.message.root.defects and not is_mailing_list(task):
            task.insert_result("BROKEN_HEADERS")
