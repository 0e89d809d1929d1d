"""Function atoms over header fields, the Received chain and the mix of scripts in the text.

These back the shipped rules in ``rules/headers.toml``, ``rules/mua.toml``,
``rules/charset.toml`` and ``rules/received.toml`` wherever a regexp alone cannot say it:
comparing two fields' addresses (Reply-To against From, Message-ID against From),
counting display names, walking the Received chain for TLS, and finding words that mix
Latin letters with Cyrillic or Greek look-alikes.

Arguments name header fields (``Reply-To``, ``From``); where an address is compared, the
pseudo-field ``env_from`` stands for the SMTP envelope sender. Every function reads only
what the parser already holds, returns a plain bool or int, and answers "no" (``False``
or ``0``) for missing or unparseable input; none raises on broken mail.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from typing import TYPE_CHECKING

from engine.mime.addresses import domain_of, is_valid_address, parse_address_list
from engine.mime.headers import decode_rfc2047
from engine.modules.received import received_chain
from engine.rules.functions import function
from engine.task.stash import StashKey

if TYPE_CHECKING:
    from engine.mime.received import Hop
    from engine.task.task import Task

__all__ = [
    "address_count",
    "client_is_public",
    "different_domain",
    "display_name_count",
    "display_name_eq_addr_count",
    "envrcpt_match_count",
    "mid_contains_addr",
    "mid_rhs_is_domain",
    "mid_rhs_is_local_part",
    "mixed_script_words",
    "received_hops",
    "received_tls_all",
    "received_tls_last",
    "same_address",
    "same_domain",
    "same_header",
    "text_part_ascii_8bit",
]

ENV_FROM = "env_from"
# RFC 3848 "with" types that say the hop was encrypted (a trailing S, or SA with auth).
_TLS_PROTOCOLS = frozenset(
    {"ESMTPS", "ESMTPSA", "SMTPS", "UTF8SMTPS", "UTF8SMTPSA", "LMTPS", "LMTPSA", "UTF8LMTPS"}
)
# What MTAs write in the comment when they do not use RFC 3848 names: Postfix "(using
# TLSv1.3 with cipher …)", Sendmail "(version=TLSv1.2 cipher=…)", Exchange "(version=TLS1_2,
# cipher=…)", Exim "with esmtps (TLS1.3) tls TLS_AES_…".
_TLS_COMMENT = re.compile(r"\busing\s+TLS|\bversion=(?:TLS|SSL)|\bwith\s+esmtpsa?\s+\(TLS", re.I)
_MID_RHS = re.compile(r"@([^@>\s]+)>?\s*$")
# Past this many characters per text part the word scan stops: a homoglyph trick shows in
# the first screenful, and a megabyte of text must not cost more than a kilobyte.
_MAX_SCAN_CHARS = 65536
_WORD = re.compile(r"[^\W\d_]{3,}")
# What _script() calls Cyrillic or Greek, and Latin (letters only: words have no digits).
_CYRILLIC_GREEK = re.compile(r"[\u0370-\u03ff\u0400-\u052f\u1f00-\u1fff]")
_LATIN = re.compile(r"[\x00-\x7f\u00c0-\u024f\u1e00-\u1eff]")
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


# -- addresses in header fields ---------------------------------------------------------


# Parsed address lists per header name: a dozen rules ask about To, Cc and From, and the
# standard library's address parser was a fifth of all rule time when each asked anew.
_PARSED_ADDRESSES: StashKey[dict[str, list[tuple[str, str]]]] = StashKey("rules.addresses")


def _addresses(task: Task, name: str) -> list[tuple[str, str]]:
    """(display name decoded, address) for every mailbox in every ``name`` field."""
    if name.lower() == ENV_FROM:
        sender = task.envelope.mail_from
        return [("", sender)] if sender else []
    if _PARSED_ADDRESSES not in task.stash:
        task.stash[_PARSED_ADDRESSES] = {}
    cache = task.stash[_PARSED_ADDRESSES]
    key = name.lower()
    found = cache.get(key)
    if found is None:
        found = cache[key] = _parse_addresses(task, name)
    return found


def _parse_addresses(task: Task, name: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for value in task.message.headers.get_all(name):
        if len(value) <= _CACHED_VALUE_CHARS:
            out.extend(_mailboxes_cached(value))
        else:
            out.extend(_mailboxes(value))
    return out


def _mailboxes(value: str) -> tuple[tuple[str, str], ...]:
    """(display name decoded, address) for each mailbox with an @ in one field value."""
    out: list[tuple[str, str]] = []
    for display, address in parse_address_list(value):
        if not address or "@" not in address:
            continue
        if "=?" in display:
            display = decode_rfc2047(display)
        out.append((display.strip(), address.strip()))
    return tuple(out)


# Address fields repeat from message to message (the recipient's own To, a list's From:
# three in four values of the development corpus had been seen before), and the standard
# library's parser is slow: a value is parsed once per process. Long values are not kept.
_mailboxes_cached = functools.lru_cache(maxsize=2048)(_mailboxes)
_CACHED_VALUE_CHARS = 1024


def _first_address(task: Task, name: str) -> str | None:
    found = _addresses(task, name)
    if not found or not is_valid_address(found[0][1]):
        return None
    return found[0][1].lower()


@function("same_address", args=(str, str), cost=2)
def same_address(task: Task, first: str, second: str) -> bool:
    """The first address of field FIRST equals the first address of field SECOND
    (case-insensitive); ``env_from`` names the envelope sender. False when either is
    missing or no valid address."""
    one, two = _first_address(task, first), _first_address(task, second)
    return one is not None and one == two


@function("same_domain", args=(str, str), cost=2)
def same_domain(task: Task, first: str, second: str) -> bool:
    """The first addresses of fields FIRST and SECOND have the same domain (both valid)."""
    one, two = _first_address(task, first), _first_address(task, second)
    return one is not None and two is not None and domain_of(one) == domain_of(two)


@function("different_domain", args=(str, str), cost=2)
def different_domain(task: Task, first: str, second: str) -> bool:
    """The first addresses of fields FIRST and SECOND are both valid and their domains differ
    (so a missing or broken field is never "different")."""
    one, two = _first_address(task, first), _first_address(task, second)
    return one is not None and two is not None and domain_of(one) != domain_of(two)


@function("same_header", args=(str, str), cost=1)
def same_header(task: Task, first: str, second: str) -> bool:
    """Fields FIRST and SECOND are both present and their first values are identical
    (raw text, surrounding space ignored)."""
    headers = task.message.headers
    one, two = headers.get(first), headers.get(second)
    return one is not None and two is not None and one.strip() == two.strip()


@function("address_count", args=(str,), cost=2)
def address_count(task: Task, name: str) -> int:
    """How many mailboxes (with an @) all ``name`` fields hold together."""
    return len(_addresses(task, name))


def _name_is_address(display: str, address: str) -> bool:
    return display.strip("'\"<> ").lower() == address.lower()


@function("display_name_count", args=(str,), cost=2)
def display_name_count(task: Task, name: str) -> int:
    """How many mailboxes in the ``name`` fields have a display name that is not just
    their own address."""
    return sum(
        1
        for display, address in _addresses(task, name)
        if display and not _name_is_address(display, address)
    )


@function("display_name_eq_addr_count", args=(str,), cost=2)
def display_name_eq_addr_count(task: Task, name: str) -> int:
    """How many mailboxes in the ``name`` fields have their own address as display name."""
    return sum(
        1
        for display, address in _addresses(task, name)
        if display and _name_is_address(display, address)
    )


@function("envrcpt_match_count", args=(str,), cost=2)
def envrcpt_match_count(task: Task, name: str) -> int:
    """How many mailboxes in the ``name`` fields are also SMTP envelope recipients."""
    rcpts = {r.strip().strip("<>").lower() for r in task.envelope.rcpts}
    if not rcpts:
        return 0
    return sum(1 for _, address in _addresses(task, name) if address.lower() in rcpts)


# -- Message-ID against an address --------------------------------------------------------


def _message_id(task: Task) -> str | None:
    value = task.message.headers.get("message-id")
    return None if value is None else " ".join(value.split())


@function("mid_contains_addr", args=(str,), cost=2)
def mid_contains_addr(task: Task, name: str) -> bool:
    """The Message-ID contains the whole first address of field ``name`` (spamware that
    builds ids from the sender's address)."""
    mid, address = _message_id(task), _first_address(task, name)
    return mid is not None and address is not None and address in mid.lower()


@function("mid_rhs_is_domain", args=(str,), cost=2)
def mid_rhs_is_domain(task: Task, name: str) -> bool:
    """The Message-ID's right-hand side is the domain of the first address of ``name``
    (and the id does not contain that whole address)."""
    mid, address = _message_id(task), _first_address(task, name)
    if mid is None or address is None or address in mid.lower():
        return False
    match = _MID_RHS.search(mid)
    return match is not None and match.group(1).rstrip(".").lower() == domain_of(address)


@function("mid_rhs_is_local_part", args=(str,), cost=2)
def mid_rhs_is_local_part(task: Task, name: str) -> bool:
    """The Message-ID's right-hand side is a bare lower-case word equal to the local part
    of the first address of ``name`` (``<x@alice>`` for ``alice@example.com``)."""
    mid, address = _message_id(task), _first_address(task, name)
    if mid is None or address is None:
        return False
    match = _MID_RHS.search(mid)
    if match is None:
        return False
    right = match.group(1)
    return (
        right.isascii()
        and right.isalpha()
        and right.islower()
        and (right == address.rpartition("@")[0])
    )


# -- the Received chain ----------------------------------------------------------------------


def _hop_uses_tls(hop: Hop) -> bool:
    protocol = hop.fields.protocol
    if protocol is not None and protocol in _TLS_PROTOCOLS:
        return True
    # Every comment form names TLS or SSL: a substring test spares most lines the regex
    # (upper() maps what re.I matches, the long s included, onto S, T and L).
    upper = hop.raw.upper()
    if "TLS" not in upper and "SSL" not in upper:
        return False
    return _TLS_COMMENT.search(hop.raw) is not None


# The TLS verdict per hop, shared by the three functions below (each rule asks anew).
_TRANSPORT_TLS: StashKey[list[bool]] = StashKey("rules.transport_tls")


def _transport_tls(task: Task) -> list[bool]:
    """TLS or not for each transport hop, newest first; hops into localhost (content
    filters re-injecting the message) are left out. Our own MTA's hop, when the milter
    sees the message before the MTA has written it, comes from the ``tls_version`` macro."""
    if _TRANSPORT_TLS in task.stash:
        return task.stash[_TRANSPORT_TLS]
    chain = received_chain(task)
    out: list[bool] = []
    if chain.own_hop_missing:
        out.append(bool(task.envelope.macros.get("tls_version")))
    for hop in chain.hops:
        if (hop.fields.by or "") in _LOCAL_NAMES:
            continue
        out.append(_hop_uses_tls(hop))
    task.stash[_TRANSPORT_TLS] = out
    return out


@function("received_tls_last", args=(), cost=3)
def received_tls_last(task: Task) -> bool:
    """The newest transport hop (the one into our MTA when it is known) was encrypted."""
    hops = _transport_tls(task)
    return bool(hops) and hops[0]


@function("received_tls_all", args=(), cost=3)
def received_tls_all(task: Task) -> bool:
    """There is at least one transport hop, and every one of them was encrypted."""
    hops = _transport_tls(task)
    return bool(hops) and all(hops)


@function("received_hops", args=(), cost=3)
def received_hops(task: Task) -> int:
    """Transport hops the TLS functions look at (our own included; localhost hops not)."""
    return len(_transport_tls(task))


# -- the connecting client -----------------------------------------------------------------


@function("client_is_public", args=(), cost=1)
def client_is_public(task: Task) -> bool:
    """The SMTP client is a public address (not loopback, private or link-local) and did
    not authenticate: the case where its HELO and hostname say something about spam."""
    env = task.envelope
    if not env.client_addr or env.auth_user or env.macros.get("auth_authen"):
        return False
    try:
        client = ipaddress.ip_address(env.client_addr.removeprefix("IPv6:"))
    except ValueError:
        return False
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    return not (client.is_loopback or client.is_private or client.is_link_local)


# -- charsets and scripts ------------------------------------------------------------------


def _script(char: str) -> str:
    """``L`` (Latin), ``C`` (Cyrillic), ``G`` (Greek) or ``""`` for a letter."""
    code = ord(char)
    if code < 0x80 or 0xC0 <= code <= 0x24F or 0x1E00 <= code <= 0x1EFF:
        return "L"
    if 0x400 <= code <= 0x52F:
        return "C"
    if 0x370 <= code <= 0x3FF or 0x1F00 <= code <= 0x1FFF:
        return "G"
    return ""


# Letters of each script that pass for a letter of another at a glance (after removing
# accents): the only ones a homoglyph trick can use.
_CONFUSABLE = {
    "C": frozenset("аеорсухіјѕԁԛԝкАВЕЗКМНОРСТУХІЈЅ"),
    "G": frozenset("αεικνορτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ"),
    "L": frozenset("aceijkmopsxyhABCEHIJKMOPSTXY"),
}


def _is_mixed(word: str) -> bool:
    """A word of Latin letters with Cyrillic or Greek look-alikes mixed in, or the reverse.

    The minority script's letters must all be look-alikes ("Paypal" spelt with a Cyrillic
    a, U+0430; a Russian word with a Latin p in it). One exception keeps Ukrainian
    readable: Cyrillic words whose only Latin letters are ``i``/``I`` are a common
    keyboard habit, not a trick.
    """
    counts: dict[str, list[str]] = {}
    for char in word:
        script = _script(char)
        if not script:
            return False  # another script (CJK, Arabic …): not our business
        counts.setdefault(script, []).append(char)
    if len(counts) < 2 or "L" not in counts:
        return False
    minority = min(counts, key=lambda s: len(counts[s]))
    letters = counts[minority]
    if minority == "L" and all(c in "iI" for c in letters):
        return False
    base = [unicodedata.normalize("NFD", c)[0] for c in letters]
    return all(c in _CONFUSABLE[minority] for c in base)


@function("mixed_script_words", args=(), cost=20)
def mixed_script_words(task: Task) -> int:
    """How many words in the Subject, the From display name and the text parts mix Latin
    letters with Cyrillic or Greek look-alikes (homoglyph obfuscation: "Paypal" or
    "Viagra" with Cyrillic a's). Words of three letters or more; the first 64 KiB of
    each part."""
    texts: list[str] = []
    message = task.message
    if message.subject:
        texts.append(message.subject)
    for display, _ in _addresses(task, "From")[:1]:
        texts.append(display)
    texts.extend(part.text[:_MAX_SCAN_CHARS] for part in message.text_parts)
    count = 0
    for text in texts:
        # A mixed word holds a Cyrillic or Greek letter and a Latin one: text without the
        # first (most non-ASCII mail) is skipped whole, words without the second at once.
        if text.isascii() or _CYRILLIC_GREEK.search(text) is None:
            continue
        count += sum(
            1
            for word in _WORD.findall(text)
            if not word.isascii() and _LATIN.search(word) is not None and _is_mixed(word)
        )
    return count


@function("text_part_ascii_8bit", args=(), cost=5)
def text_part_ascii_8bit(task: Task) -> bool:
    """A text part declares ``charset=us-ascii`` yet its decoded content has 8-bit bytes."""
    for part in task.message.leaves:
        if not part.is_text or part.is_attachment:
            continue
        charset = (part.charset or "").strip().strip('"').lower()
        if charset not in ("us-ascii", "ascii", "ansi_x3.4-1968"):
            continue
        if not part.decoded.isascii():
            return True
    return False
