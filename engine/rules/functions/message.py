"""Core function atoms: headers, parts, recipients, size, envelope.

Each reads what ``ParsedMessage`` has already parsed (or parses lazily once for every
check); none of them raises on broken mail.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from engine.mime.addresses import parse_address_list
from engine.rules.functions import function

if TYPE_CHECKING:
    from engine.task.task import Task

# Rspamd's is_recipients_sorted needs this many before a sorted list means anything:
# two or three addresses are sorted by chance half of the time.
_MIN_SORTED_RECIPIENTS = 7
_WORD = re.compile(r"[^\W\d_]{2,}")
_MAX_WORDS = 2000  # bounds compare_parts_distance's cost on a huge part


@function("header_exists", args=(str,), cost=1)
def header_exists(task: Task, name: str) -> bool:
    """The message has at least one header NAME (case-insensitive)."""
    return name in task.message.headers


@function("header_count", args=(str,), cost=1)
def header_count(task: Task, name: str) -> int:
    """How many NAME headers the message has."""
    return task.message.headers.count(name)


@function("has_html_part", cost=4)
def has_html_part(task: Task) -> bool:
    """A text/html part that is not an attachment."""
    return any(p.is_html for p in task.message.text_parts)


@function("has_only_html_part", cost=4)
def has_only_html_part(task: Task) -> bool:
    """Text parts exist and all of them are HTML (no text/plain alternative)."""
    parts = task.message.text_parts
    return bool(parts) and all(p.is_html for p in parts)


@function("has_text_part", cost=4)
def has_text_part(task: Task) -> bool:
    """A text/plain part that is not an attachment."""
    return any(not p.is_html for p in task.message.text_parts)


def _type_matches(content_type: str, wanted: str) -> bool:
    wanted = wanted.lower()
    if wanted.endswith("/*"):
        return content_type.startswith(wanted[:-1])
    return content_type == wanted


@function("has_content_part", args=(str,), cost=3)
def has_content_part(task: Task, content_type: str) -> bool:
    """A part of type TYPE/SUBTYPE (``TYPE/*`` for any subtype)."""
    return any(_type_matches(p.content_type, content_type) for p in task.message.parts)


@function("has_content_part_len", args=(str, int), cost=4)
def has_content_part_len(task: Task, content_type: str, min_bytes: int) -> bool:
    """A part of type TYPE/SUBTYPE whose decoded content has at least MIN_BYTES bytes."""
    return any(
        _type_matches(p.content_type, content_type) and len(p.decoded) >= min_bytes
        for p in task.message.leaves
    )


@function("has_attachment", cost=3)
def has_attachment(task: Task) -> bool:
    """At least one attachment (a named non-text part, or Content-Disposition: attachment)."""
    return bool(task.message.attachments)


@function("attachment_count", cost=3)
def attachment_count(task: Task) -> int:
    """Number of attachments."""
    return len(task.message.attachments)


@function("part_count", cost=3)
def part_count(task: Task) -> int:
    """Number of leaf MIME parts (1 for a simple message)."""
    return len(task.message.leaves)


@function("text_length", cost=4)
def text_length(task: Task) -> int:
    """Characters of visible text in all text parts (HTML as text)."""
    return sum(len(p.text) for p in task.message.text_parts)


@function("compare_parts_distance", args=(int,), cost=8)
def compare_parts_distance(task: Task, percent: int) -> bool:
    """The text and HTML alternatives differ by more than PERCENT per cent of their words."""
    parts = task.message.text_parts
    plain = [p for p in parts if not p.is_html]
    html = [p for p in parts if p.is_html]
    if len(plain) != 1 or len(html) != 1:
        return False
    a = set(_WORD.findall(plain[0].text.lower())[:_MAX_WORDS])
    b = set(_WORD.findall(html[0].text.lower())[:_MAX_WORDS])
    union = len(a | b)
    if not union:
        return False
    distance = 100.0 * (1.0 - len(a & b) / union)
    return distance > percent


def _mime_recipients(task: Task) -> list[str]:
    headers = task.message.headers
    out: list[str] = []
    for name in ("to", "cc", "bcc"):
        for value in headers.get_all(name):
            out.extend(addr.lower() for _, addr in parse_address_list(value) if "@" in addr)
    return out


@function("recipients_count", cost=2)
def recipients_count(task: Task) -> int:
    """Distinct addresses in the To, Cc and Bcc headers."""
    return len(set(_mime_recipients(task)))


@function("is_recipients_sorted", cost=2)
def is_recipients_sorted(task: Task) -> bool:
    """At least 7 header recipients (To, Cc, Bcc), in alphabetical order: a list harvester's mark."""
    rcpts = _mime_recipients(task)
    return len(rcpts) >= _MIN_SORTED_RECIPIENTS and rcpts == sorted(rcpts)


@function("is_empty_body", cost=1)
def is_empty_body(task: Task) -> bool:
    """The body is empty or only white space (as received, before any decoding)."""
    return not task.message.body.strip()


@function("message_size", cost=1)
def message_size(task: Task) -> int:
    """Size of the message in bytes (headers and body)."""
    return task.message.size


@function("is_authenticated", cost=1)
def is_authenticated(task: Task) -> bool:
    """The sender authenticated to the MTA (SMTP AUTH)."""
    return bool(task.envelope.auth_user)


@function("has_defect", args=(str,), cost=4)
def has_defect(task: Task, name: str) -> bool:
    """The parser noted defect NAME (``bad_base64``, ``missing_boundary``, ``bad_charset`` …)."""
    return name in task.message.defects


@function("envelope_from_is_null", cost=1)
def envelope_from_is_null(task: Task) -> bool:
    """The envelope sender is the null sender ``<>`` (a bounce or an auto-reply)."""
    return task.envelope.mail_from == ""
