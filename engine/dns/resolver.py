"""The resolver every DNS-using module goes through: cache, in-flight sharing, typed helpers.

Theory of operation, for ``await resolver.query(name, rdtype)``:

1. The name is parsed (IDNA for non-ASCII); a name DNS cannot carry (a label over 63
   octets, a name over 255, an empty label) is answered ``BADNAME`` without a query.
2. A live cache entry answers at once (``DnsCache``: TTLs honoured, negative answers
   cached by the zone's negative TTL).
3. Otherwise the lookup joins the one already in flight for the same (name, type), or
   starts it (``InFlight``): however many scans ask at once, one query goes out.
4. The ``Upstream`` (recursive servers over UDP/TCP in production, zone data in unit
   tests) answers; permanent answers are cached, temporary failures are not.

Nothing here raises for a DNS or network failure: the ``DnsAnswer`` says what happened
and whether it is ``temporary``. Only cancellation and bugs propagate.

One ``Resolver`` per worker process, built by ``Engine.from_config`` and handed to modules
through ``ModuleContext.dns``. It is not shared between threads: code running in a worker
thread (pyspf, dkimpy) reaches it with ``trio.from_thread.run(resolver.query, …)``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, final

import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rdtypes.ANY.PTR
import dns.rdtypes.mxbase
import dns.rdtypes.txtbase
import trio

from engine.dns.answer import DnsAnswer, DnsStatus, MxRecord
from engine.dns.cache import CacheKey, DnsCache
from engine.dns.config import RESOLV_CONF, DnsSettings
from engine.dns.inflight import InFlight
from engine.dns.upstream import NetworkUpstream
from engine.dns.zonedata import ZoneUpstream

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from engine.config.loader import Config
    from engine.dns.upstream import Upstream
    from engine.dns.zonedata import ZoneData

__all__ = ["Resolver", "ResolverStats", "reverse_name"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResolverStats:
    """Counters since the resolver was built (for metrics and benchmarks)."""

    lookups: int  # calls to query(), helpers included
    cache_hits: int  # answered from the cache
    coalesced: int  # answered by a query another task had in flight
    upstream: int  # exchanges with the upstream (one per query that left the process)
    temporary_failures: int


def reverse_name(ip: str, zone: str | None = None) -> str:
    """The reverse-lookup name of an address, under ``zone`` if given.

    ``reverse_name("192.0.2.1")`` is ``"1.2.0.192.in-addr.arpa"``; with
    ``zone="zen.spamhaus.org"`` it is ``"1.2.0.192.zen.spamhaus.org"``, the name a DNS
    blocklist is asked (RFC 5782 §2.1, nibbles for IPv6 §2.4). An IPv4-mapped IPv6
    address (``::ffff:192.0.2.1``, as dual-stack sockets report IPv4 clients) is treated
    as the IPv4 address it carries.

    Raises:
        ValueError: ``ip`` is not an IP address.
    """
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    pointer = address.reverse_pointer
    if zone is None:
        return pointer
    labels = pointer.rsplit(".", 2)[0]  # drop in-addr.arpa / ip6.arpa
    return f"{labels}.{zone.strip('.')}"


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _address(rdata: dns.rdata.Rdata) -> str:
    return rdata.to_text()


def _txt(rdata: dns.rdata.Rdata) -> str:
    # One record's strings are one value, joined with nothing between them
    # (RFC 7208 §3.3 for SPF, RFC 6376 §3.6.2.2 for DKIM keys).
    assert isinstance(rdata, dns.rdtypes.txtbase.TXTBase)
    return b"".join(rdata.strings).decode("utf-8", errors="replace")


def _mx(rdata: dns.rdata.Rdata) -> MxRecord:
    assert isinstance(rdata, dns.rdtypes.mxbase.MXBase)
    exchange = "" if rdata.exchange == dns.name.root else _text(rdata.exchange)
    return MxRecord(rdata.preference, exchange)


def _target(rdata: dns.rdata.Rdata) -> str:
    assert isinstance(rdata, dns.rdtypes.ANY.PTR.PTR)
    return _text(rdata.target)


@final
class Resolver:
    """Cached, coalescing DNS lookups over an ``Upstream``."""

    def __init__(self, upstream: Upstream, cache: DnsCache | None = None) -> None:
        """Args:
        upstream: who answers what the cache cannot (``NetworkUpstream``, ``ZoneUpstream``).
        cache: the answer cache; default a ``DnsCache()`` with its defaults.
        """
        self.upstream = upstream
        self.cache = DnsCache() if cache is None else cache
        self._inflight: InFlight[CacheKey, DnsAnswer[dns.rdata.Rdata]] = InFlight()
        self._lookups = 0
        self._exchanges = 0
        self._temporary = 0
        self._types: dict[str, dns.rdatatype.RdataType] = {}

    @classmethod
    def from_settings(
        cls, settings: DnsSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> Resolver:
        """A resolver asking ``settings.nameservers`` over the network."""
        upstream = NetworkUpstream(
            settings.nameservers,
            timeout=settings.timeout,
            attempts=settings.attempts,
            lifetime=settings.lifetime,
            rotate=settings.rotate,
            edns_buffer_size=settings.edns_buffer_size,
        )
        cache = DnsCache(
            settings.cache_size,
            min_ttl=settings.min_ttl,
            max_ttl=settings.max_ttl,
            max_negative_ttl=settings.max_negative_ttl,
            clock=clock,
        )
        return cls(upstream, cache)

    @classmethod
    def from_config(cls, config: Config, *, resolv_conf: Path = RESOLV_CONF) -> Resolver:
        """A resolver from the ``[dns]`` section (``resolv.conf`` when it names no servers).

        Raises:
            ConfigError: the section is inconsistent (file, line and key named).
        """
        settings = DnsSettings.from_config(config, resolv_conf)
        servers = ", ".join(str(s) for s in settings.nameservers)
        log.debug("dns: asking %s", servers)
        return cls.from_settings(settings)

    @classmethod
    def from_zones(cls, zones: ZoneData, cache: DnsCache | None = None) -> Resolver:
        """A resolver answering from zone data in process: for unit tests, no sockets."""
        return cls(ZoneUpstream(zones), cache)

    @property
    def stats(self) -> ResolverStats:
        return ResolverStats(
            lookups=self._lookups,
            cache_hits=self.cache.stats.hits,
            coalesced=self._inflight.coalesced,
            upstream=self._exchanges,
            temporary_failures=self._temporary,
        )

    async def query(
        self, name: str | dns.name.Name, rdtype: str | dns.rdatatype.RdataType
    ) -> DnsAnswer[dns.rdata.Rdata]:
        """Look up records of type ``rdtype`` at ``name``.

        Args:
            name: a domain name, absolute whether or not it ends with a dot; non-ASCII
                names are IDNA-encoded.
            rdtype: a record type, as text ("TXT") or a ``dns.rdatatype.RdataType``.

        Returns:
            The answer, with dnspython ``Rdata`` records. Check ``.ok``, ``.status`` and
            ``.temporary``: DNS and network failures are results, not exceptions.

        Raises:
            ValueError: ``rdtype`` is not a record type (a bug in the caller).
        """
        self._lookups += 1
        qtype = rdtype if isinstance(rdtype, dns.rdatatype.RdataType) else self._rdtype(rdtype)
        # The cache is keyed by the name's text: parsing it into a dnspython Name costs
        # more than the whole cache hit. Text that differs only in case or a final dot is
        # the same name, hence the same key.
        if isinstance(name, dns.name.Name):
            text = _text(name)
        else:
            text = name.lower()
            text = text[:-1] if text.endswith(".") else text
        key = (text, qtype)
        cached = self.cache.get(key) if text else None
        if cached is not None:
            # No I/O, so no scheduling; but an await must still honour cancellation.
            await trio.lowlevel.checkpoint_if_cancelled()
            return cached
        try:
            if isinstance(name, dns.name.Name):
                qname = name
            elif text:
                qname = dns.name.from_text(name)
            else:
                raise dns.name.EmptyLabel  # "" is no name ("." is the root)
        except (dns.exception.DNSException, UnicodeError) as exc:
            await trio.lowlevel.checkpoint_if_cancelled()
            detail = str(exc) or exc.__class__.__name__
            return DnsAnswer(text, dns.rdatatype.to_text(qtype), DnsStatus.BADNAME, (), 0, detail)
        return await self._inflight.run(key, partial(self._fetch, qname, qtype, key))

    def _rdtype(self, text: str) -> dns.rdatatype.RdataType:
        qtype = self._types.get(text)
        if qtype is None:
            try:
                qtype = self._types[text] = dns.rdatatype.RdataType.make(text)
            except dns.exception.DNSException:
                raise ValueError(f"unknown DNS record type {text!r}") from None
        return qtype

    async def _fetch(
        self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, key: CacheKey
    ) -> DnsAnswer[dns.rdata.Rdata]:
        self._exchanges += 1
        answer = await self.upstream.exchange(qname, qtype)
        if answer.temporary:
            self._temporary += 1
            log.info("dns: %s", answer)
            return answer
        # Callers see the TTL the cache will honour, whether or not this answer is cached.
        ttl = self.cache.lifetime(answer)
        if ttl != answer.ttl:
            answer = answer.with_ttl(ttl)
        self.cache.put(key, answer)
        return answer

    async def a(self, name: str) -> DnsAnswer[str]:
        """IPv4 addresses of ``name``, as text."""
        return (await self.query(name, dns.rdatatype.A)).map(_address)

    async def aaaa(self, name: str) -> DnsAnswer[str]:
        """IPv6 addresses of ``name``, as text (compressed form)."""
        return (await self.query(name, dns.rdatatype.AAAA)).map(_address)

    async def txt(self, name: str) -> DnsAnswer[str]:
        """TXT records of ``name``, each one's strings joined (undecodable bytes → U+FFFD)."""
        return (await self.query(name, dns.rdatatype.TXT)).map(_txt)

    async def mx(self, name: str) -> DnsAnswer[MxRecord]:
        """MX records of ``name``, lowest preference first; a null MX has exchange ``""``."""
        answer = (await self.query(name, dns.rdatatype.MX)).map(_mx)
        records = tuple(sorted(answer.records))
        return DnsAnswer(
            answer.name, answer.rdtype, answer.status, records, answer.ttl, answer.detail
        )

    async def ptr(self, ip: str) -> DnsAnswer[str]:
        """Host names of address ``ip`` (PTR at its reverse name); ``BADNAME`` if ``ip`` is
        not an address."""
        try:
            name = reverse_name(ip)
        except ValueError as exc:
            await trio.lowlevel.checkpoint_if_cancelled()
            return DnsAnswer(ip, "PTR", DnsStatus.BADNAME, (), 0, str(exc))
        return (await self.query(name, dns.rdatatype.PTR)).map(_target)

    reverse = staticmethod(reverse_name)
