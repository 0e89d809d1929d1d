"""Per scope, the data a regexp atom is matched against, as UTF-8 pieces.

Text (decoded headers, part text, URLs, selector values) is encoded as UTF-8 with
``surrogateescape``, so bytes that were not UTF-8 in the message reach the patterns as
they were sent. Named scopes (``{header}``, ``{raw_header}``, ``{selector}``) produce
one piece per value, each restricted to the patterns written for that name; a
``:first`` pattern is only allowed on a header's first (topmost) occurrence.

Gathering never raises on broken mail: the MIME layer does not raise, and the caller
(``RuleSet``) still guards each scope so that one bad scope cannot hide the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.mime.addresses import bare_address, domain_of, parse_address_list
from engine.mime.headers import decode_rfc2047
from engine.rules.atoms import Scope
from engine.task.stash import StashKey

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from engine.rules.patterns import Matcher, Piece
    from engine.task.task import Task

__all__ = ["SELECTORS", "ScopeIndex", "gather"]


@dataclass(slots=True, frozen=True)
class NameIds:
    """For one header or selector name: the pattern ids allowed on its first value, and
    on the later ones (the same less the ``:first`` patterns)."""

    first: frozenset[int]
    rest: frozenset[int]


@dataclass(slots=True)
class ScopeIndex:
    """One scope's compiled patterns and, for named scopes, which ids go with which name."""

    scope: Scope
    matcher: Matcher
    names: Mapping[str, NameIds]


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def gather(index: ScopeIndex, task: Task) -> list[Piece]:
    """The pieces of ``index.scope`` in this message."""
    scope = index.scope
    message = task.message
    if scope is Scope.HEADER or scope is Scope.RAW_HEADER:
        raw = scope is Scope.RAW_HEADER
        pieces: list[Piece] = []
        for name, ids in index.names.items():
            for n, value in enumerate(message.headers.get_all(name)):
                if raw:
                    text = value.replace("\r\n", "\n").replace("\n", "\r\n")
                else:
                    text = decode_rfc2047(value).strip()
                pieces.append((_encode(text), ids.first if n == 0 else ids.rest))
        return pieces
    if scope is Scope.SELECTOR:
        pieces = []
        for name, ids in index.names.items():
            pieces.extend((_encode(value), ids.first) for value in SELECTORS[name](task))
        return pieces
    if scope is Scope.MIME:
        return [(_encode(p.text), None) for p in message.text_parts]
    if scope is Scope.HTML:
        return [(_encode(p.source), None) for p in message.text_parts if p.is_html]
    if scope is Scope.BODY:
        return [(message.body, None)]
    if scope is Scope.RAW_MESSAGE:
        return [(message.raw, None)]
    if scope is Scope.URL:
        return [(_encode(str(u)), None) for u in message.urls]
    return [(_encode(str(e)), None) for e in message.emails]


# -- selectors ----------------------------------------------------------------------------


def _one(value: str | None) -> list[str]:
    return [] if value is None else [value]


def _hostname(task: Task) -> list[str]:
    env = task.envelope
    if env.client_name:
        return [env.client_name]
    # Postfix says "unknown" for a client without reverse DNS; a content-only scan (no
    # client at all) has no hostname to judge.
    return ["unknown"] if env.client_addr else []


# The usual one-mailbox forms, ``Name <a@b>``, ``"Name" <a@b>`` and ``a@b``, without
# email.utils (ten times slower); anything else goes to the full parser.
_NAME_ADDR = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^<>",:;@()\\]*?))\s*<([^<>\s,]*)>\s*$')
_BARE_ADDR = re.compile(r'\s*([^\s<>",:;()\\]+@[^\s<>",:;()\\]+)\s*$')


# The first mailbox per header name: three selectors read From.
_MAILBOXES: StashKey[dict[str, tuple[str, str] | None]] = StashKey("rules.scopes.mailboxes")


def _mailbox(task: Task, header: str) -> tuple[str, str] | None:
    if _MAILBOXES not in task.stash:
        task.stash[_MAILBOXES] = {}
    known = task.stash[_MAILBOXES]
    if header not in known:
        known[header] = _first_mailbox(task, header)
    return known[header]


def _first_mailbox(task: Task, header: str) -> tuple[str, str] | None:
    value = task.message.headers.get(header)
    if value is None:
        return None
    if "," not in value:
        match = _NAME_ADDR.match(value)
        if match:
            name = match.group(1) if match.group(1) is not None else match.group(2)
            return name.replace('\\"', '"').strip(), match.group(3)
        match = _BARE_ADDR.match(value)
        if match:
            return "", match.group(1)
    pairs = [(n, a) for n, a in parse_address_list(value) if a]
    return pairs[0] if pairs else None


def _from_addr(task: Task) -> list[str]:
    box = _mailbox(task, "from")
    return [] if box is None else [box[1]]


def _from_name(task: Task) -> list[str]:
    box = _mailbox(task, "from")
    return [] if box is None else [decode_rfc2047(box[0]).strip()]


def _from_domain(task: Task) -> list[str]:
    box = _mailbox(task, "from")
    return [] if box is None or "@" not in box[1] else [domain_of(box[1])]


def _reply_to_addr(task: Task) -> list[str]:
    box = _mailbox(task, "reply-to")
    return [] if box is None else [box[1]]


def _url_host(task: Task) -> list[str]:
    return [u.host for u in task.message.urls if u.host]


def _message_id(task: Task) -> list[str]:
    value = task.message.headers.get("message-id")
    return [] if value is None else [value.strip().strip("<>").strip()]


SELECTORS: Mapping[str, Callable[[Task], list[str]]] = {
    "env_from": lambda t: _one(t.envelope.mail_from),
    "env_rcpt": lambda t: [bare_address(r) for r in t.envelope.rcpts],
    "helo": lambda t: _one(t.envelope.helo),
    "hostname": _hostname,
    "ip": lambda t: _one(t.envelope.client_addr),
    "user": lambda t: _one(t.envelope.auth_user),
    "from_addr": _from_addr,
    "from_name": _from_name,
    "from_domain": _from_domain,
    "reply_to_addr": _reply_to_addr,
    "attachment_name": lambda t: [p.filename for p in t.message.attachments if p.filename],
    "content_type": lambda t: [p.content_type for p in t.message.parts],
    "charset": lambda t: [p.charset.strip() for p in t.message.parts if p.charset],
    "url_host": _url_host,
    "subject": lambda t: _one(t.message.subject),
    "message_id": _message_id,
}
