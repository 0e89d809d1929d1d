"""DMARC policy discovery and record parsing (RFC 7489 §6.3, §6.6.1, §6.6.3).

Pure parts (``parse_record``, ``header_from_domain``) and one async function that finds
the policy for a From domain through our resolver (``discover``). The check itself, which
aligns SPF and DKIM results and applies the policy, is ``engine/modules/dmarc.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import trio

from engine.auth.psl import normalize_domain, organizational_domain
from engine.mime import parse_address_list

if TYPE_CHECKING:
    from engine.auth.results import DmarcPolicy
    from engine.dns import DnsAnswer, Resolver
    from engine.mime import HeaderList

__all__ = [
    "Discovery",
    "DmarcRecord",
    "RecordError",
    "discover",
    "header_from_domain",
    "parse_record",
]

_POLICIES: dict[str, DmarcPolicy] = {"none": "none", "quarantine": "quarantine", "reject": "reject"}


class RecordError(ValueError):
    """A DMARC record that cannot be used (DMARC_BAD_POLICY)."""


@dataclass(slots=True, frozen=True)
class DmarcRecord:
    """The tags of one ``v=DMARC1`` record that evaluation needs (RFC 7489 §6.3)."""

    p: DmarcPolicy
    sp: DmarcPolicy | None = None
    adkim_strict: bool = False
    aspf_strict: bool = False
    pct: int = 100
    rua: str = ""


@dataclass(slots=True, frozen=True)
class Discovery:
    """What policy discovery found for one From domain.

    ``status``: ``record`` (``record`` and ``policy_domain`` set), ``none`` (no record at
    the domain or its organisational domain), ``temperror`` (DNS trouble: no conclusion),
    ``permerror`` (a broken record, or several).
    """

    status: Literal["record", "none", "temperror", "permerror"]
    from_domain: str
    org_domain: str
    policy_domain: str = ""
    record: DmarcRecord | None = None
    reason: str = ""


def parse_record(text: str) -> DmarcRecord:
    """Parse a DMARC record whose first tag is ``v=DMARC1``.

    Unknown tags are ignored (RFC 7489 §6.3). A missing or invalid ``p`` is taken as
    ``none`` when ``rua`` names a mailto: address, as §6.6.3 step 6 asks; otherwise, like
    an invalid ``sp``, ``adkim`` or ``aspf`` (as Rspamd judges them), it makes the record
    unusable. An invalid ``pct`` is ignored (100).

    Raises:
        RecordError: the record cannot be used; the message says why.
    """
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    rua = tags.get("rua", "")
    p = _POLICIES.get(tags.get("p", "").lower())
    if p is None:
        if "mailto:" not in rua.lower():
            what = f"p tag has invalid value: {tags['p']}" if "p" in tags else "no p tag"
            raise RecordError(what)
        p = "none"
    sp = None
    if "sp" in tags:
        sp = _POLICIES.get(tags["sp"].lower())
        if sp is None:
            raise RecordError(f"sp tag has invalid value: {tags['sp']}")
    strict = {}
    for tag in ("adkim", "aspf"):
        value = tags.get(tag, "r").lower()
        if value not in ("r", "s"):
            raise RecordError(f"{tag} tag has invalid value: {tags[tag]}")
        strict[tag] = value == "s"
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    if not 0 <= pct <= 100:
        pct = 100
    return DmarcRecord(p, sp, strict["adkim"], strict["aspf"], pct, rua)


def _is_dmarc(text: str) -> bool:
    """RFC 7489 §6.6.3 step 2: keep records whose first tag is ``v=DMARC1`` (the version
    is case-sensitive in the ABNF of §6.4)."""
    name, sep, value = text.split(";", 1)[0].partition("=")
    return bool(sep) and name.strip() == "v" and value.strip() == "DMARC1"


def header_from_domain(headers: HeaderList) -> tuple[str, str]:
    """The RFC5322.From domain (RFC 7489 §6.6.1), normalised, and ``""``; or ``""`` and
    why there is none: no From, several From fields, several From domains, no domain."""
    values = headers.get_all("from")
    if not values:
        return "", "No From header"
    if len(values) > 1:
        return "", "Duplicate From header"
    domains = set()
    for _name, address in parse_address_list(values[0]):
        if "@" in address:
            domain = normalize_domain(address.rpartition("@")[2])
            if domain:
                domains.add(domain)
    if not domains:
        return "", "No domain in From header"
    if len(domains) > 1:
        return "", "Several From domains"
    return domains.pop(), ""


async def discover(resolver: Resolver, from_domain: str) -> Discovery:
    """Find the DMARC policy for ``from_domain`` (RFC 7489 §6.6.3).

    The From domain's record wins; without one, the organisational domain's. Both are
    asked at once (as Rspamd does), so a From domain without its own record costs one
    round trip, not two; the resolver's cache makes the spare query cheap.
    """
    org = organizational_domain(from_domain)
    answers: dict[str, DnsAnswer[str]] = {}

    async def lookup(domain: str) -> None:
        answers[domain] = await resolver.txt(f"_dmarc.{domain}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lookup, from_domain)
        if org != from_domain:
            nursery.start_soon(lookup, org)
    found = _judge(answers[from_domain], from_domain, org, from_domain)
    if found.status != "none" or org == from_domain:
        return found
    return _judge(answers[org], from_domain, org, org)


def _judge(answer: DnsAnswer[str], from_domain: str, org: str, domain: str) -> Discovery:
    if answer.temporary:
        return Discovery("temperror", from_domain, org, domain, reason=f"{domain} : {answer}")
    records = [text for text in answer.records if _is_dmarc(text)]
    if not records:
        return Discovery("none", from_domain, org, reason=f"{domain} : no DMARC record")
    if len(records) > 1:
        reason = f"{domain} : Multiple policies defined in DNS"
        return Discovery("permerror", from_domain, org, domain, reason=reason)
    try:
        record = parse_record(records[0])
    except RecordError as exc:
        return Discovery("permerror", from_domain, org, domain, reason=f"{domain} : {exc}")
    return Discovery("record", from_domain, org, domain, record)
