"""Authoritative answers from zone data, with no network: for tests and offline runs.

``ZoneData`` holds zones given as zone-file text or as a small table, and answers a query
message the way an authoritative server would (RFC 1034 §4.3.2): records, CNAME chains
within its zones, wildcards (RFC 4592), NXDOMAIN versus NODATA (empty non-terminals
exist, RFC 8020), and the zone's SOA in the authority section of negative answers with
the negative TTL of RFC 2308 §3. A name outside every zone is REFUSED.

The loopback test server (``tests/support/dnsserver.py``) puts this on UDP and TCP;
``ZoneUpstream`` puts it behind a ``Resolver`` directly, for module unit tests that need
answers but not sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.zone
import trio

from engine.dns.answer import DnsAnswer, answer_from_response

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = ["ZoneData", "ZoneUpstream"]

_IN = dns.rdataclass.IN
_MAX_CHAIN = 8
_TXT_CHUNK = 255  # RFC 1035 §3.3: a character-string is at most 255 octets


@final
class _Zone:
    __slots__ = ("nodes", "nonterminals", "origin", "soa")

    def __init__(
        self, origin: dns.name.Name, nodes: dict[dns.name.Name, dict[int, dns.rdataset.Rdataset]]
    ) -> None:
        self.origin = origin
        self.nodes = nodes
        soa = nodes.get(origin, {}).get(dns.rdatatype.SOA)
        if soa is None:
            raise ValueError(f"zone {origin} has no SOA record at its origin")
        self.soa = soa
        self.nonterminals: set[dns.name.Name] = set()
        for owner in nodes:
            name = owner
            while name != origin and len(name) > len(origin):
                name = name.parent()
                if name not in nodes:
                    self.nonterminals.add(name)

    def lookup(self, qname: dns.name.Name) -> dict[int, dns.rdataset.Rdataset] | None:
        """The rdatasets at ``qname`` ({} for an empty non-terminal), None if it does not
        exist. A wildcard's rdatasets stand in for a name that does not exist below the
        closest encloser (RFC 4592 §3.3.1)."""
        node = self.nodes.get(qname)
        if node is not None:
            return node
        if qname in self.nonterminals:
            return {}
        encloser = qname.parent()
        while encloser != self.origin and encloser not in self.nodes:
            if encloser in self.nonterminals:
                break
            encloser = encloser.parent()
        return self.nodes.get(dns.name.Name(("*", *encloser.labels)))

    def add_negative_soa(self, response: dns.message.Message) -> None:
        """The SOA in the authority section, with TTL min(SOA TTL, MINIMUM) (RFC 2308 §3)."""
        soa = self.soa[0]
        assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
        ttl = min(self.soa.ttl, soa.minimum)
        _put(response, response.authority, self.origin, dns.rdatatype.SOA, ttl, [soa])


def _put(
    response: dns.message.Message,
    section: list[dns.rrset.RRset],
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    ttl: int,
    rdatas: Iterable[dns.rdata.Rdata],
) -> None:
    """Add records through ``find_rrset``, which keeps the message's index (that
    ``resolve_chaining`` reads) in step with its sections."""
    rrset = response.find_rrset(section, name, _IN, rdtype, create=True)
    rrset.update_ttl(ttl)
    for rdata in rdatas:
        rrset.add(rdata)


def _txt(text: str) -> dns.rdata.Rdata:
    """A TXT record holding ``text``, split into 255-octet strings as DKIM keys must be."""
    data = text.encode()
    chunks = [data[i : i + _TXT_CHUNK] for i in range(0, len(data), _TXT_CHUNK)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(_IN, dns.rdatatype.TXT, chunks)


@final
class ZoneData:
    """A set of zones that answers queries as their authoritative server would."""

    def __init__(self) -> None:
        self._zones: dict[dns.name.Name, _Zone] = {}

    def add_text(self, origin: str, text: str) -> ZoneData:
        """Add a zone in zone-file syntax (relative names are under ``origin``).

        Raises:
            dns.exception.SyntaxError: the text is not a zone file.
            ValueError: there is no SOA at the origin.
        """
        zone = dns.zone.from_text(text, origin, relativize=False, check_origin=False)
        nodes: dict[dns.name.Name, dict[int, dns.rdataset.Rdataset]] = {}
        for owner, rdataset in zone.iterate_rdatasets():
            nodes.setdefault(owner, {})[rdataset.rdtype] = rdataset
        return self._add(_Zone(zone.origin or dns.name.from_text(origin), nodes))

    def add_records(
        self,
        origin: str,
        records: Mapping[str, Mapping[str, str | Sequence[str]]],
        *,
        ttl: int = 300,
        negative_ttl: int = 300,
    ) -> ZoneData:
        """Add a zone from a table: owner (relative to ``origin``; "@" is the origin) →
        record type → value or values in zone-file syntax. TXT values are plain text,
        split into 255-octet strings when longer. An SOA is made up when none is given.

        ``add_records(".", …)`` makes one zone that holds any name.
        """
        root = dns.name.from_text(origin)
        nodes: dict[dns.name.Name, dict[int, dns.rdataset.Rdataset]] = {}
        for owner_text, types in records.items():
            owner = root if owner_text == "@" else dns.name.from_text(owner_text, root)
            for type_text, values in types.items():
                rdtype = dns.rdatatype.from_text(type_text)
                rdataset = dns.rdataset.Rdataset(_IN, rdtype, ttl=ttl)
                for value in [values] if isinstance(values, str) else values:
                    rdataset.add(self._rdata(rdtype, value, root))
                nodes.setdefault(owner, {})[rdtype] = rdataset
        apex = nodes.setdefault(root, {})
        if dns.rdatatype.SOA not in apex:
            host = "ns.invalid." if root == dns.name.root else f"ns.{root}"
            soa = f"{host} hostmaster.invalid. 1 3600 600 86400 {negative_ttl}"
            apex[dns.rdatatype.SOA] = dns.rdataset.from_text(_IN, "SOA", negative_ttl, soa)
        return self._add(_Zone(root, nodes))

    @staticmethod
    def _rdata(
        rdtype: dns.rdatatype.RdataType, value: str, origin: dns.name.Name
    ) -> dns.rdata.Rdata:
        if rdtype == dns.rdatatype.TXT and not value.startswith('"'):
            return _txt(value)
        return dns.rdata.from_text(_IN, rdtype, value, origin=origin, relativize=False)

    def _add(self, zone: _Zone) -> ZoneData:
        self._zones[zone.origin] = zone
        return self

    @property
    def origins(self) -> Iterable[str]:
        return [origin.to_text() for origin in self._zones]

    def _zone_for(self, qname: dns.name.Name) -> _Zone | None:
        best: _Zone | None = None
        for origin, zone in self._zones.items():
            if qname.is_subdomain(origin) and (best is None or len(origin) > len(best.origin)):
                best = zone
        return best

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The authoritative response to ``query``."""
        response = dns.message.make_response(query)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1 or query.question[0].rdclass != _IN:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        qname, rdtype = query.question[0].name, query.question[0].rdtype
        zone = self._zone_for(qname)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        response.flags |= dns.flags.AA
        for _ in range(_MAX_CHAIN):
            found = zone.lookup(qname)
            if found is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                zone.add_negative_soa(response)
                return response
            wanted = [r for t, r in found.items() if t == rdtype or rdtype == dns.rdatatype.ANY]
            if not wanted and dns.rdatatype.CNAME not in found:
                zone.add_negative_soa(response)  # NODATA
                return response
            for rdataset in wanted or [found[dns.rdatatype.CNAME]]:
                _put(response, response.answer, qname, rdataset.rdtype, rdataset.ttl, rdataset)
            if wanted or rdtype == dns.rdatatype.CNAME:
                return response
            target = found[dns.rdatatype.CNAME][0]
            assert isinstance(target, dns.rdtypes.ANY.CNAME.CNAME)
            qname = target.target
            next_zone = self._zone_for(qname)
            if next_zone is None:
                return response  # the chain leaves our zones: the client follows it
            zone = next_zone
        response.set_rcode(dns.rcode.SERVFAIL)  # a CNAME loop
        return response


@final
class ZoneUpstream:
    """An ``Upstream`` answering from ``ZoneData`` in process."""

    def __init__(self, zones: ZoneData) -> None:
        self.zones = zones
        self.queries = 0

    async def exchange(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> DnsAnswer[dns.rdata.Rdata]:
        await trio.lowlevel.checkpoint()
        self.queries += 1
        response = self.zones.answer(dns.message.make_query(qname, rdtype))
        name = qname.to_text(omit_final_dot=True).lower()
        return answer_from_response(response, name, dns.rdatatype.to_text(rdtype), "zone data")
