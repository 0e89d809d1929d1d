"""The per-worker answer cache: bounded, least recently used out first, honouring TTLs.

Theory of operation:

- Only permanent answers are stored (records, NXDOMAIN, NODATA). A temporary failure says
  nothing about the name, and caching it would turn a one-second blip into minutes of
  tempfails; the local recursive resolver (Unbound) already damps a failing zone.
- An answer's lifetime is its TTL clamped to [min_ttl, max_ttl], and a negative answer's
  also to max_negative_ttl (RFC 2308 §5 suggests one to three hours at most). A TTL of 0
  after clamping means "do not cache" (RFC 1035 §3.2.1).
- An entry is valid while ``clock() < expiry``. Expired entries are dropped when met; the
  size bound is kept by evicting the least recently used entry, so a burst of one-off
  names (RBL lookups of random clients) cannot grow memory without bound.
- ``get`` hands back the answer with its TTL reduced to what remains, as a resolver would.

The clock is injectable so tests can move time without sleeping.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from engine.dns.answer import DnsAnswer, DnsStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    import dns.rdata

__all__ = ["CacheKey", "CacheStats", "DnsCache"]

# (name as lower-case text without the final dot, record type)
CacheKey = tuple[str, int]
_NEGATIVE: Final = frozenset({DnsStatus.NXDOMAIN, DnsStatus.NODATA})


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    expirations: int = 0


@final
class DnsCache:
    """A TTL-honouring LRU cache of permanent DNS answers."""

    def __init__(
        self,
        max_size: int = 10_000,
        *,
        min_ttl: int = 0,
        max_ttl: int = 86_400,
        max_negative_ttl: int = 3_600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        max_size: entries kept at most; 0 switches the cache off.
        min_ttl, max_ttl: bounds applied to every TTL before it is used.
        max_negative_ttl: a further upper bound for NXDOMAIN and NODATA answers.
        clock: seconds, monotonic.
        """
        if max_size < 0 or min_ttl < 0 or max_ttl < min_ttl or max_negative_ttl < 0:
            raise ValueError("cache bounds must be non-negative and min_ttl ≤ max_ttl")
        self.max_size = max_size
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self.stats = CacheStats()
        self._clock = clock
        # key -> (expiry, answer as it was received)
        self._entries: OrderedDict[CacheKey, tuple[float, DnsAnswer[dns.rdata.Rdata]]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._entries)

    def lifetime(self, answer: DnsAnswer[dns.rdata.Rdata]) -> int:
        """Seconds ``answer`` may be cached (0: not at all)."""
        if answer.status.temporary:
            return 0
        ttl = min(max(answer.ttl, self.min_ttl), self.max_ttl)
        if answer.status in _NEGATIVE:
            ttl = min(ttl, self.max_negative_ttl)
        return ttl

    def get(self, key: CacheKey) -> DnsAnswer[dns.rdata.Rdata] | None:
        """The cached answer with its remaining TTL, or None (missing or expired)."""
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        expiry, answer = entry
        remaining = expiry - self._clock()
        if remaining <= 0:
            del self._entries[key]
            self.stats.expirations += 1
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        ttl = math.ceil(remaining)
        return answer if ttl == answer.ttl else answer.with_ttl(ttl)

    def put(self, key: CacheKey, answer: DnsAnswer[dns.rdata.Rdata]) -> None:
        """Remember ``answer`` for its (clamped) TTL; temporary failures are ignored."""
        ttl = self.lifetime(answer)
        if ttl <= 0 or self.max_size == 0:
            return
        if ttl != answer.ttl:
            answer = answer.with_ttl(ttl)
        self._entries[key] = (self._clock() + ttl, answer)
        self._entries.move_to_end(key)
        self.stats.stores += 1
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
            self.stats.evictions += 1

    def clear(self) -> None:
        self._entries.clear()
