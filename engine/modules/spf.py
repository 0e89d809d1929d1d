"""SPF (RFC 7208) with pyspf, every lookup through our resolver.

Theory of operation:

1. The identity is MAIL FROM's domain, or the HELO name when MAIL FROM is the null
   sender (RFC 7208 §2.4). Authenticated and local senders are not checked (Rspamd's
   ``check_authed``/``check_local``), nor is a message without a client address.
2. A per-worker cache keyed by (client IP, domain) answers repeated senders without
   running pyspf at all. It lives in process, not in the Store: the result is derived
   from DNS answers this worker's resolver already caches, so a Store round trip (SQLite
   or Redis) would cost as much as it saves; in process a hit costs microseconds. An
   entry lives as long as the shortest TTL among the answers the evaluation used (capped
   by ``cache_max_ttl``); temperror is never cached. A record that expands the sender's
   local part, address or HELO name (``%{l}``, ``%{s}``, ``%{h}``) makes the result
   depend on more than (IP, domain): such an entry only answers for the same sender.
3. On a miss, pyspf (synchronous) runs in a worker thread under the ``spf`` capacity
   limiter. pyspf resolves through ``query.dns``; ``_Query`` overrides that method, its
   one documented extension point besides the process-global ``spf.DNSLookup``, which is
   never touched: each lookup goes back into trio with ``trio.from_thread.run`` to the
   engine's ``Resolver`` (cache, in-flight sharing, temporary vs permanent failures).
   Concurrent scans for the same identity share one evaluation.
4. The whole evaluation runs under ``timeout`` seconds (kept below the check timeout):
   past it the result is temperror (RFC 7208 §4.6.4), so slow DNS ends as
   ``R_SPF_DNSFAIL``, never as a lost message or a module timeout.

The result goes to ``task.stash[SPF_RESULT]`` for DMARC, the authentication whitelist and
the Authentication-Results header.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import spf  # type: ignore[import-untyped]
import trio
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.mxbase import MXBase
from dns.rdtypes.txtbase import TXTBase

from engine.auth.results import SPF_RESULT, SpfIdentity, SpfResult, SpfVerdict
from engine.auth.sender import SKIP_KEYS, parse_networks, skip_reason
from engine.config.schema import Key, Section, at_least, between
from engine.dns import InFlight
from engine.mime import bare_address
from engine.modules.base import Module, check
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from dns.rdata import Rdata

    from engine.dns import DnsAnswer
    from engine.task.task import Task

__all__ = ["Spf"]

log = logging.getLogger(__name__)

_SYMBOL: Final[dict[str, str]] = {
    "pass": "R_SPF_ALLOW",
    "fail": "R_SPF_FAIL",
    "softfail": "R_SPF_SOFTFAIL",
    "neutral": "R_SPF_NEUTRAL",
    "none": "R_SPF_NA",
    "temperror": "R_SPF_DNSFAIL",
    "permerror": "R_SPF_PERMFAIL",
}
_VERDICTS: Final = frozenset(_SYMBOL)
# Macros whose expansion depends on the sender rather than on (IP, domain): RFC 7208 §7.2.
_SENDER_MACRO = re.compile(rb"%\{[lsh]", re.IGNORECASE)
# Seconds kept between our own deadline and the check's, so we answer before being cut.
_MARGIN = 0.25


@dataclass(slots=True, frozen=True)
class _Outcome:
    verdict: SpfVerdict
    mechanism: str  # the directive that matched at the top level ("" if none)
    reason: str  # pyspf's explanation or error text
    ttl: int  # seconds the outcome stays true (shortest TTL seen; 0: do not cache)
    per_sender: bool  # the records used %{l}, %{s} or %{h}


class _Query(spf.query):  # type: ignore[misc]
    """pyspf's query with its DNS method answered by our resolver (from a worker thread)."""

    def __init__(self, lookup: Callable[[str, str], DnsAnswer[Rdata]], **kw: Any):
        super().__init__(**kw)
        self._lookup = lookup
        self.min_ttl: int | None = None
        self.per_sender = False

    # Same contract as spf.query.dns: a list of records (TXT as tuples of bytes, MX as
    # (preference, exchange), A/AAAA/PTR as text); [] for no records; TempError for a
    # failure on the way; void lookups counted (RFC 7208 §4.6.4). CNAME chains are
    # followed by the resolver, so pyspf never sees one.
    def dns(
        self,
        name: str,
        qtype: str,
        cnames: dict[str, str] | None = None,
        ignore_void: bool = False,
    ) -> list[Any]:
        name = str(name)
        if name.endswith("."):
            name = name[:-1]
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a name DNS can carry: pyspf's own rule, not a void lookup
        name = name.lower()
        result: list[Any] = self.cache.get((name, qtype), [])
        if result:
            return result
        answer = self._lookup(name, qtype)
        if answer.temporary:
            raise spf.TempError(f"DNS {answer.status.value} for {name} {qtype}")
        self.min_ttl = answer.ttl if self.min_ttl is None else min(self.min_ttl, answer.ttl)
        result = [r for r in map(self._convert, answer.records) if r is not None]
        self.cache[(name, qtype)] = result
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result

    def validated_ptrs(self) -> list[str]:
        """The client's PTR names whose addresses include it (RFC 7208 §5.5, §7.3).

        pyspf lets a DNS error here become temperror; the RFC says otherwise: an error on
        the PTR lookup means no names (the mechanism does not match, ``%{p}`` is
        "unknown"), and an error on one name's address lookup skips that name.
        """
        try:
            names = self.dns_ptr(self.i)[: spf.MAX_PTR]
        except spf.TempError:
            return []
        validated = []
        for name in names:
            try:
                addresses = self.dns_a(name, self.A)
            except spf.TempError:
                continue
            if self.cidrmatch(addresses, self.cidrmax):
                validated.append(name)
        return validated

    def _convert(self, rdata: Rdata) -> object:
        if isinstance(rdata, A | AAAA):
            return rdata.address
        if isinstance(rdata, TXTBase):
            if any(_SENDER_MACRO.search(s) for s in rdata.strings):
                self.per_sender = True
            return tuple(rdata.strings)
        if isinstance(rdata, MXBase):
            return (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
        if isinstance(rdata, PTR):
            return rdata.target.to_text(omit_final_dot=True)
        return None  # a type pyspf did not ask for


@dataclass(slots=True)
class _Entry:
    outcome: _Outcome
    expires: float
    sender: str | None  # set when the outcome holds for this sender only


class _ResultCache:
    """(IP, domain) → outcome, least recently used out first, each entry for its TTL."""

    def __init__(self, size: int, max_ttl: float, clock: Callable[[], float]) -> None:
        self._size = size
        self._max_ttl = max_ttl
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def get(self, key: tuple[str, str], sender: str) -> _Outcome | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._entries[key]
            return None
        if entry.sender is not None and entry.sender != sender:
            return None
        self._entries.move_to_end(key)
        return entry.outcome

    def put(self, key: tuple[str, str], sender: str, outcome: _Outcome) -> None:
        ttl = min(outcome.ttl, self._max_ttl)
        if self._size <= 0 or ttl <= 0 or outcome.verdict == "temperror":
            return
        scope = sender if outcome.per_sender else None
        self._entries[key] = _Entry(outcome, self._clock() + ttl, scope)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


@dataclass(slots=True, frozen=True)
class _Identity:
    kind: SpfIdentity
    domain: str
    sender: str  # what pyspf is given as MAIL FROM ("" for the HELO identity)
    helo: str


class Spf(Module):
    name = "spf"
    description = "SPF (RFC 7208): is the client allowed to send for the envelope domain?"
    symbols = (
        SymbolSpec("R_SPF_ALLOW", -0.2, "spf", "SPF verification allows sending"),
        SymbolSpec("R_SPF_FAIL", 1.0, "spf", "SPF verification failed"),
        SymbolSpec("R_SPF_SOFTFAIL", 0.0, "spf", "SPF verification soft-failed"),
        SymbolSpec("R_SPF_NEUTRAL", 0.0, "spf", "SPF policy is neutral"),
        SymbolSpec("R_SPF_NA", 0.0, "spf", "Missing SPF record"),
        SymbolSpec("R_SPF_DNSFAIL", 0.0, "spf", "SPF DNS failure"),
        SymbolSpec("R_SPF_PERMFAIL", 0.0, "spf", "SPF record is malformed or persistent DNS error"),
    )
    settings_schema = Section(
        {
            **SKIP_KEYS,
            "timeout": Key(
                (float,),
                4.5,
                "Seconds one SPF evaluation may take in all; past it the result is "
                "temperror (R_SPF_DNSFAIL). Capped just below [options] check_timeout.",
                check=at_least(0.1),
            ),
            "cache_size": Key(
                (int,),
                10_000,
                "SPF results each worker keeps per (client IP, domain); 0 turns it off.",
                check=at_least(0),
            ),
            "cache_max_ttl": Key(
                (float,),
                3600.0,
                "Longest a result is kept (it is also never kept past its DNS TTLs).",
                check=at_least(0),
            ),
            "max_threads": Key(
                (int,),
                32,
                "SPF evaluations running at once in worker threads (each mostly waits on "
                "DNS); more wait their turn.",
                check=between(1, 1024),
            ),
        }
    )

    def setup(self) -> None:
        self._local = parse_networks(self.ctx.config, ("spf", "local_networks"), self.settings)
        check_timeout = float(self.ctx.config.section("options").get("check_timeout", 5.0))  # type: ignore[arg-type]
        budget = float(self.settings["timeout"])  # type: ignore[arg-type]
        self._budget = max(0.05, min(budget, check_timeout - _MARGIN))
        self._cache = _ResultCache(
            int(self.settings["cache_size"]),  # type: ignore[call-overload]
            float(self.settings["cache_max_ttl"]),  # type: ignore[arg-type]
            time.monotonic,
        )
        self._threads = trio.CapacityLimiter(int(self.settings["max_threads"]))  # type: ignore[call-overload]
        self._inflight: InFlight[tuple[str, str, str, str], _Outcome] = InFlight()

    @check(produces=tuple(_SYMBOL.values()))
    async def check_host(self, task: Task) -> None:
        env = task.envelope
        client = _client_ip(env.client_addr)
        if client is None:
            return  # no client address (a file scanned by hand): nothing to judge
        skipped = skip_reason(env, self._local, self.settings)
        if skipped:
            identity = _identity(env.mail_from, env.helo)
            domain = identity.domain if identity else ""
            kind: SpfIdentity = identity.kind if identity else "mailfrom"
            task.stash[SPF_RESULT] = SpfResult(
                "none", kind, domain, "", client, skipped, skipped=True
            )
            return
        identity = _identity(env.mail_from, env.helo)
        if identity is None:
            task.insert_result("R_SPF_NA", options=["no sender identity"])
            task.stash[SPF_RESULT] = SpfResult(
                "none", "mailfrom", "", env.mail_from or "", client, "no sender identity"
            )
            return
        outcome = await self.evaluate(client, identity)
        _report(task, client, identity, outcome)

    async def evaluate(self, client: str, identity: _Identity) -> _Outcome:
        """The SPF outcome for ``identity`` at ``client``, from the cache or pyspf."""
        key = (client, identity.domain)
        who = f"{identity.sender}|{identity.helo}"
        cached = self._cache.get(key, who)
        if cached is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            return cached
        outcome = await self._inflight.run(
            (client, identity.domain, identity.sender, identity.helo),
            partial(self._evaluate, client, identity),
        )
        self._cache.put(key, who, outcome)
        return outcome

    async def _evaluate(self, client: str, identity: _Identity) -> _Outcome:
        resolver = self.ctx.dns

        def lookup(name: str, qtype: str) -> DnsAnswer[Rdata]:
            return trio.from_thread.run(resolver.query, name, qtype)

        with trio.move_on_after(self._budget):
            return await trio.to_thread.run_sync(
                _run_pyspf, lookup, client, identity, limiter=self._threads
            )
        reason = f"SPF evaluation took longer than {self._budget:.3g}s"
        log.info("spf: %s for %s at %s", reason, identity.domain, client)
        return _Outcome("temperror", "", reason, 0, False)


def _run_pyspf(
    lookup: Callable[[str, str], DnsAnswer[Rdata]], client: str, identity: _Identity
) -> _Outcome:
    """check_host() in a worker thread; pyspf's lookups call back into trio."""
    try:
        query = _Query(lookup, i=client, s=identity.sender, h=identity.helo, strict=True)
        verdict, _code, reason = query.check()
    # pyspf raises assorted exceptions on hostile records (AssertionError past its
    # recursion limit, ValueError from ipaddress, UnicodeError): each is a statement about
    # the record, so it is a permerror, not a failed scan. Cancellation is a
    # BaseException and passes through.
    except Exception as exc:
        log.warning("spf: pyspf failed on %s: %r", identity.domain, exc, exc_info=True)
        return _Outcome("permerror", "", f"SPF evaluation failed: {exc!r}", 0, False)
    verdict = {"error": "temperror", "unknown": "permerror"}.get(verdict, verdict)
    if verdict not in _VERDICTS:
        verdict, reason = "permerror", f"unexpected SPF result {verdict!r}"
    mechanism = query.mechanism if isinstance(query.mechanism, str) else ""
    ttl = query.min_ttl or 0
    return _Outcome(verdict, mechanism, str(reason or ""), ttl, query.per_sender)


def _report(task: Task, client: str, identity: _Identity, outcome: _Outcome) -> None:
    symbol = _SYMBOL[outcome.verdict]
    if outcome.verdict in ("temperror", "permerror", "none"):
        options = [identity.domain, outcome.reason] if outcome.reason else [identity.domain]
    else:
        options = [outcome.mechanism or identity.domain]
    task.insert_result(symbol, options=options)
    sender = identity.sender or f"postmaster@{identity.domain}"
    task.stash[SPF_RESULT] = SpfResult(
        outcome.verdict, identity.kind, identity.domain, sender, client, outcome.reason
    )


def _client_ip(addr: str | None) -> str | None:
    """The client address in canonical text (IPv4-mapped IPv6 as IPv4), None if unusable."""
    if not addr:
        return None
    text = addr.strip().strip("[]")
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _identity(mail_from: str | None, helo: str | None) -> _Identity | None:
    """MAIL FROM's domain, or the HELO name for the null sender (RFC 7208 §2.3, §2.4)."""
    helo_name = (helo or "").strip().rstrip(".")
    sender = bare_address(mail_from) if mail_from else ""
    if sender:
        # RFC 7208 §4.3: no "@" means the whole of it is the domain; an empty local part
        # is "postmaster".
        domain = sender.rpartition("@")[2] if "@" in sender else sender
        domain = domain.strip().rstrip(".").lower()
        if domain and not domain.startswith("["):
            return _Identity("mailfrom", domain, sender, helo_name)
        return None
    if not helo_name or helo_name.startswith("[") or _is_address(helo_name):
        return None  # an address literal is no domain to look up (RFC 7208 §2.3)
    return _Identity("helo", helo_name.lower(), "", helo_name)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
