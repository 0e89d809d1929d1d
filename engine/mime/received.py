"""Received headers (RFC 5321 §4.4) parsed into hops, the newest first.

Theory of operation: real Received headers follow the RFC's ``from … by … with … id …
for …; date`` shape only loosely (Postfix, Sendmail, Exim, Exchange and spamware all
differ), so parsing is a handful of tolerant searches over the unfolded text, never a
grammar: a field that cannot be found is ``None``. Nothing here raises.

A ``Hop`` is cheap to make: the fields are parsed on first access, because most checks
only count hops or look at the raw text. Retrieval lines (fetchmail's ``with POP3`` /
``with IMAP``) describe a mailbox being collected, not a hop the message travelled;
``Hop.is_retrieval`` lets callers skip them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Hop", "HopFields"]

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_BRACKET_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_BARE_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")
_RDNS = re.compile(r"\(\s*(?:[^\s@()]+@)?([A-Za-z0-9][A-Za-z0-9.-]*)\s+\[")
_QMAIL_HELO = re.compile(r"\((?:HELO|EHLO) ([^\s()]+)\)", re.I)
_QMAIL_IP = re.compile(r"\s*\((?:[^\s@()]+@)?\[?[0-9A-Fa-f:.]+\]?\)")
_FOR_ADDR = re.compile(r"<?([^\s<>;]+@[^\s<>;]+?)>?(?:\s|$)")
_RETRIEVAL = re.compile(r"\swith\s+(?:POP3?|APOP|IMAP4?)\b|\(fetchmail", re.I)
# RFC 3848 protocol types: a trailing A = authenticated, S = TLS.
_AUTH_PROTOCOL = re.compile(r"\swith\s+(?:E?SMTPS?A|LMTPS?A|UTF8SMTPS?A|UTF8LMTPS?A)\b", re.I)


class HopFields(NamedTuple):
    helo: str | None  # the name after "from", as the receiving host recorded it
    rdns: str | None  # the reverse-DNS name in the TCP-info comment, lower-cased
    ip: str | None  # the connecting address ([a.b.c.d], [IPv6:…] or a bare IPv4)
    by: str | None  # the receiving host, lower-cased
    protocol: str | None  # upper-cased "with" value: SMTP, ESMTPSA, POP3 …
    recipient: str | None  # the "for <addr>" clause, lower-cased
    date: str | None  # the text after the last ";"


class Hop:
    """One Received header: who handed the message to whom, and how."""

    __slots__ = ("_fields", "raw")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self._fields: HopFields | None = None

    def __repr__(self) -> str:
        return f"Hop({self.raw!r})"

    @property
    def fields(self) -> HopFields:
        if self._fields is None:
            self._fields = _parse(self.raw)
        return self._fields

    @property
    def is_retrieval(self) -> bool:
        upper = self.raw.upper()
        # Substring tests first: the regex only runs on the rare line that could match.
        if "POP" not in upper and "IMAP" not in upper and "FETCHMAIL" not in upper:
            return False
        return _RETRIEVAL.search(self.raw) is not None

    @property
    def authenticated(self) -> bool:
        upper = self.raw.upper()
        if "MTPA" not in upper and "MTPSA" not in upper:
            return False
        return _AUTH_PROTOCOL.search(self.raw) is not None


def _parse(value: str) -> HopFields:
    # Keywords are found with str.find on the lower-cased text and only the short slice
    # after each is matched: whole-header regexes that start with \s cost several µs each.
    text = " ".join(value.split())
    main, semi, date = text.rpartition(";")
    if not semi:
        main, date = text, ""
    low = main.lower()
    by_at = 0 if low.startswith("by ") else _keyword(low, " by ")
    helo = ip = rdns = None
    if low.startswith("from "):
        rest = main[5:].lstrip()
        helo = rest.split(" ", 1)[0].rstrip(")")
        clause = rest[len(helo) :] if by_at < 0 else main[5:by_at]
        ip_match = _BRACKET_IP.search(clause) or _BARE_IPV4.search(clause)
        if ip_match is None and helo.startswith("["):
            ip_match = _BRACKET_IP.match(helo)
        ip = ip_match.group(1) if ip_match else None
        rdns_match = _RDNS.search(clause)
        if rdns_match and rdns_match.group(1).lower() != "unknown":
            rdns = rdns_match.group(1).lower()
        elif rdns_match is None and (qmail := _qmail(rest[len(helo) :])) is not None:
            # qmail turns the line round: "from RDNS (HELO name) (ip)", the HELO comment
            # left out when the name is the reverse DNS one, "unknown" for no name.
            helo, rdns = qmail or helo, None if helo.lower() == "unknown" else helo.lower()
    by = protocol = recipient = None
    if by_at >= 0:
        words = main[by_at:].split(None, 2)
        by = words[1].strip("()").lower() if len(words) > 1 else None
    with_at = _keyword(low, " with ", max(by_at, 0))
    if with_at >= 0:
        match = _TOKEN.match(main, with_at + 5)
        protocol = match.group(0).upper() if match else None
    for_at = _keyword(low, " for ", max(by_at, 0))
    if for_at >= 0:
        match = _FOR_ADDR.match(main, for_at + 4)
        recipient = match.group(1).lower() if match else None
    return HopFields(helo, rdns, ip, by or None, protocol, recipient, date.strip() or None)


def _qmail(clause: str) -> str | None:
    """The HELO name of a qmail line (``""`` when it gives none), or None: not qmail's."""
    helo = _QMAIL_HELO.search(clause)
    if helo is not None:
        return helo.group(1)
    return "" if _QMAIL_IP.match(clause) else None


def _keyword(low: str, word: str, start: int = 0) -> int:
    at = low.find(word, start)
    return at if at < 0 else at + 1
