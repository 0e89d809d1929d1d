"""Asking recursive servers: dnspython's async queries on its trio backend.

Theory of operation, for one exchange (a name and a type):

- The servers are tried in order (or starting from a rotating offset with ``rotate``),
  for ``attempts`` rounds, each try waiting ``timeout`` seconds, the whole exchange
  bounded by ``lifetime``. Every wait is a trio cancel scope; dnspython is never given a
  timeout of its own, so cancellation from the caller works at every point.
- A query goes over UDP with EDNS0 announcing ``edns_buffer_size`` (RFC 6891). A reply with
  the TC bit is asked again over TCP, to the same server, with a fresh ``timeout``
  (RFC 7766 §5; RFC 1035 §4.2.1). A FORMERR to an EDNS query is asked again without EDNS,
  for servers that predate it (RFC 6891 §7).
- Replies that do not match the query (wrong id, wrong question, wrong source address)
  are ignored and the wait goes on, as a spoofed packet must not end a lookup.
- A permanent answer (records, NXDOMAIN, NODATA) from any server ends the exchange. A
  SERVFAIL, REFUSED or other failing reply moves on to the next server, and that server is
  not asked again in later rounds (it replied; it would reply the same). Timeouts and
  network errors are retried in the next round. When everything fails, the most telling failure is returned
  (a server's SERVFAIL says more than another's silence).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, final

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import trio

from engine.dns.answer import DnsAnswer, DnsStatus, answer_from_response, failure

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.dns.config import Nameserver

__all__ = ["NetworkUpstream", "Upstream", "UpstreamStats"]

log = logging.getLogger(__name__)


class Upstream(Protocol):
    """Where a ``Resolver`` sends what its cache cannot answer."""

    async def exchange(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> DnsAnswer[dns.rdata.Rdata]:
        """Ask for (``qname``, ``rdtype``); never raise for DNS or network failures."""
        ...


@dataclass(slots=True)
class UpstreamStats:
    udp_queries: int = 0
    tcp_queries: int = 0
    timeouts: int = 0
    errors: int = 0


def _name_text(qname: dns.name.Name) -> str:
    return qname.to_text(omit_final_dot=True).lower()


@final
class NetworkUpstream:
    """Recursive servers over UDP and TCP."""

    def __init__(
        self,
        nameservers: Sequence[Nameserver],
        *,
        timeout: float = 1.0,
        attempts: int = 2,
        lifetime: float = 4.0,
        rotate: bool = False,
        edns_buffer_size: int = 1232,
    ) -> None:
        if not nameservers:
            raise ValueError("at least one nameserver is needed")
        self.nameservers = tuple(nameservers)
        self.timeout = timeout
        self.attempts = attempts
        self.lifetime = lifetime
        self.rotate = rotate
        self.edns_buffer_size = edns_buffer_size
        self.stats = UpstreamStats()
        self._next = 0
        # Named explicitly: sniffing the async library on every query costs time.
        self._backend = dns.asyncbackend.get_backend("trio")

    def _order(self) -> tuple[Nameserver, ...]:
        if not self.rotate:
            return self.nameservers
        start = self._next % len(self.nameservers)
        self._next += 1
        return self.nameservers[start:] + self.nameservers[:start]

    async def exchange(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> DnsAnswer[dns.rdata.Rdata]:
        name, type_text = _name_text(qname), dns.rdatatype.to_text(rdtype)
        worst: DnsAnswer[dns.rdata.Rdata] | None = None
        answered: set[Nameserver] = set()
        order = self._order()
        with trio.move_on_after(self.lifetime):
            for _round in range(self.attempts):
                for server in order:
                    if server in answered:
                        continue
                    answer, responded = await self._ask(
                        server, qname, rdtype, self.edns_buffer_size
                    )
                    if answer.permanent:
                        return answer
                    log.debug("dns: %s", answer)
                    if responded:
                        answered.add(server)
                    if worst is None or worst.status is DnsStatus.TIMEOUT:
                        worst = answer
                if len(answered) == len(order):
                    break
        if worst is None or worst.status is DnsStatus.TIMEOUT:
            tried = ", ".join(str(s) for s in order)
            detail = f"no answer from {tried} within {self.lifetime:g} s"
            worst = failure(name, type_text, DnsStatus.TIMEOUT, detail)
        return worst

    async def _ask(
        self,
        server: Nameserver,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        edns: int,
    ) -> tuple[DnsAnswer[dns.rdata.Rdata], bool]:
        """One try at one server: UDP, then TCP if the reply was truncated. The flag says
        whether the server replied (then asking it again would get the same reply)."""
        name, type_text = _name_text(qname), dns.rdatatype.to_text(rdtype)
        query = dns.message.make_query(
            qname, rdtype, use_edns=0 if edns else False, payload=edns or None
        )
        try:
            response = await self._transfer(query, server)
        except (OSError, EOFError, trio.BrokenResourceError, dns.exception.DNSException) as exc:
            self.stats.errors += 1
            detail = f"{server}: {exc.__class__.__name__}: {exc}"
            return failure(name, type_text, DnsStatus.ERROR, detail), False
        if response is None:
            self.stats.timeouts += 1
            detail = f"{server}: no answer within {self.timeout:g} s"
            return failure(name, type_text, DnsStatus.TIMEOUT, detail), False
        if response.rcode() == dns.rcode.FORMERR and edns:
            return await self._ask(server, qname, rdtype, 0)
        return answer_from_response(response, name, type_text, str(server)), True

    async def _transfer(
        self, query: dns.message.Message, server: Nameserver
    ) -> dns.message.Message | None:
        """The reply to ``query`` from ``server``, or None after ``timeout``."""
        truncated = False
        self.stats.udp_queries += 1
        with trio.move_on_after(self.timeout):
            try:
                return await dns.asyncquery.udp(
                    query,
                    server.host,
                    port=server.port,
                    ignore_unexpected=True,
                    raise_on_truncation=True,
                    ignore_errors=True,
                    backend=self._backend,
                )
            except dns.message.Truncated:
                truncated = True
        if not truncated:
            return None
        self.stats.tcp_queries += 1
        with trio.move_on_after(self.timeout):
            return await dns.asyncquery.tcp(
                query, server.host, port=server.port, backend=self._backend
            )
        return None
