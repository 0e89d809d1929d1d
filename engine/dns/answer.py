"""What a lookup returns: records, or a status that says whether asking again could help.

A DNS check must tell two kinds of "no" apart. A *permanent* answer is a statement about
the name (it has these records, it does not exist, it has no records of this type) and
is cached for as long as the zone says (RFC 2308 for the negative ones). A *temporary*
failure is a statement about the path to the answer (the server failed, refused, timed
out, or sent garbage); it says nothing about the name, is never cached, and must become a
``*_TEMPFAIL``/``*_DNSFAIL`` symbol rather than a verdict (RFC 7208 §2.6.6, RFC 7489 §6.6.3).

Lookups never raise for these outcomes: every one is a ``DnsAnswer``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

import dns.exception
import dns.message
import dns.rcode
import dns.rdata

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DnsAnswer", "DnsStatus", "MxRecord", "answer_from_response"]

T = TypeVar("T")
U = TypeVar("U")


class DnsStatus(enum.Enum):
    """How a lookup ended."""

    NOERROR = "noerror"  # the name has records of this type: ``records`` holds them
    NXDOMAIN = "nxdomain"  # the name does not exist (RFC 8020: nor anything under it)
    NODATA = "nodata"  # the name exists but has no records of this type
    BADNAME = "badname"  # not a valid domain name (too long, empty label); never sent
    SERVFAIL = "servfail"  # the server could not answer (often: the zone's servers failed)
    REFUSED = "refused"  # the server will not answer us (an ACL, a blocklist's policy)
    TIMEOUT = "timeout"  # no answer within the time allowed
    ERROR = "error"  # network error, malformed reply or an rcode that should not happen

    @property
    def permanent(self) -> bool:
        """An answer about the name itself: cacheable, and the same if asked again."""
        return self in _PERMANENT

    @property
    def temporary(self) -> bool:
        """A failure on the way to the answer: worth retrying later, never cached."""
        return self not in _PERMANENT


_PERMANENT = frozenset({DnsStatus.NOERROR, DnsStatus.NXDOMAIN, DnsStatus.NODATA, DnsStatus.BADNAME})


class MxRecord(NamedTuple):
    """One MX record. A null MX (RFC 7505) is preference 0 with exchange ``""``."""

    preference: int
    exchange: str


@dataclass(frozen=True, slots=True)
class DnsAnswer(Generic[T]):
    """The outcome of one lookup.

    Attributes:
        name: the name asked for, lower-case, without the final dot.
        rdtype: the record type asked for ("A", "TXT" …).
        status: how the lookup ended; ``records`` is non-empty only for ``NOERROR``.
        records: the answer's records: dnspython ``Rdata`` from ``Resolver.query``, plain
            values from the typed helpers (``a`` gives address strings …).
        ttl: seconds the answer stays valid (for a negative answer, the zone's negative
            TTL); 0 for temporary failures.
        detail: for logs: which server said what, or why the name is bad.
    """

    name: str
    rdtype: str
    status: DnsStatus
    records: tuple[T, ...] = ()
    ttl: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when there are records."""
        return self.status is DnsStatus.NOERROR

    @property
    def permanent(self) -> bool:
        return self.status.permanent

    @property
    def temporary(self) -> bool:
        return self.status.temporary

    def with_ttl(self, ttl: int) -> DnsAnswer[T]:
        """The same answer with another TTL (faster than ``dataclasses.replace``)."""
        return DnsAnswer(self.name, self.rdtype, self.status, self.records, ttl, self.detail)

    def map(self, convert: Callable[[T], U]) -> DnsAnswer[U]:
        """The same answer with every record converted (status, TTL and detail kept)."""
        records = tuple(convert(r) for r in self.records)
        return DnsAnswer(self.name, self.rdtype, self.status, records, self.ttl, self.detail)

    def __str__(self) -> str:
        what = f"{self.name} {self.rdtype}: {self.status.value}"
        return f"{what} ({self.detail})" if self.detail else what


def failure(name: str, rdtype: str, status: DnsStatus, detail: str) -> DnsAnswer[dns.rdata.Rdata]:
    """A temporary failure (or a bad name): no records, nothing to cache."""
    return DnsAnswer(name, rdtype, status, (), 0, detail)


_RCODE_FAILURES = {
    dns.rcode.SERVFAIL: DnsStatus.SERVFAIL,
    dns.rcode.REFUSED: DnsStatus.REFUSED,
}


def answer_from_response(
    response: dns.message.Message, name: str, rdtype: str, server: str
) -> DnsAnswer[dns.rdata.Rdata]:
    """Classify a response to a query for (``name``, ``rdtype``).

    CNAME chains in the answer section are followed (a recursive server sends the whole
    chain); the TTL is the chain's smallest, and for a negative answer the one RFC 2308 §5
    gives: min(SOA TTL, SOA MINIMUM) of the SOA in the authority section.
    """
    rcode = response.rcode()
    if rcode in _RCODE_FAILURES:
        return failure(
            name, rdtype, _RCODE_FAILURES[rcode], f"{server}: {dns.rcode.to_text(rcode)}"
        )
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return failure(name, rdtype, DnsStatus.ERROR, f"{server}: rcode {dns.rcode.to_text(rcode)}")
    if not isinstance(response, dns.message.QueryMessage):
        return failure(name, rdtype, DnsStatus.ERROR, f"{server}: not a query response")
    try:
        chain = response.resolve_chaining()
    except dns.exception.DNSException as exc:
        # A CNAME loop, an answer under NXDOMAIN, two questions: the server is broken,
        # which says nothing about the name.
        detail = f"{server}: unusable response: {exc.__class__.__name__}"
        return failure(name, rdtype, DnsStatus.ERROR, detail)
    if rcode == dns.rcode.NXDOMAIN:
        return DnsAnswer(name, rdtype, DnsStatus.NXDOMAIN, (), chain.minimum_ttl, server)
    if chain.answer is None or len(chain.answer) == 0:
        return DnsAnswer(name, rdtype, DnsStatus.NODATA, (), chain.minimum_ttl, server)
    return DnsAnswer(
        name, rdtype, DnsStatus.NOERROR, tuple(chain.answer), chain.minimum_ttl, server
    )
