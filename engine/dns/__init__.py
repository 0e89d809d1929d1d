"""DNS for every module: one resolver per worker on dnspython's trio support.

``Resolver.query(name, rdtype)`` and its typed helpers (``a``, ``aaaa``, ``txt``, ``mx``,
``ptr``) return a ``DnsAnswer`` whose ``status`` separates answers about the name
(records, NXDOMAIN, NODATA: permanent, cached) from failures on the way (SERVFAIL,
REFUSED, timeout, network errors: temporary, never cached). See docs/dns.md.
"""

from engine.dns.answer import DnsAnswer, DnsStatus, MxRecord
from engine.dns.cache import DnsCache
from engine.dns.config import DNS_SECTION, DnsSettings, Nameserver, parse_nameserver
from engine.dns.inflight import InFlight
from engine.dns.resolver import Resolver, ResolverStats, reverse_name
from engine.dns.upstream import NetworkUpstream, Upstream
from engine.dns.zonedata import ZoneData, ZoneUpstream

__all__ = [
    "DNS_SECTION",
    "DnsAnswer",
    "DnsCache",
    "DnsSettings",
    "DnsStatus",
    "InFlight",
    "MxRecord",
    "Nameserver",
    "NetworkUpstream",
    "Resolver",
    "ResolverStats",
    "Upstream",
    "ZoneData",
    "ZoneUpstream",
    "parse_nameserver",
    "reverse_name",
]
