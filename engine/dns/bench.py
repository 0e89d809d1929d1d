"""What DNS costs a scan: CPU and wall time per message, from the servers and from the cache.

A "message" is a set of lookups run concurrently, as a scan's filter stage runs its DNS
checks (SPF, DKIM key, DMARC, blocklists, reverse DNS). ``measure`` repeats it and
reports the cost per message, either with the cache emptied before each message (every
lookup goes to the servers) or with it warm. CPU time is this thread's only
(``time.thread_time``), so a test server running in another thread is not counted.

Against the configured servers (``/etc/resolv.conf`` or ``--nameserver``)::

    python -m engine.dns.bench --nameserver 127.0.0.1:53 example.com:MX example.com:TXT
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from engine.dns.config import DnsSettings, parse_nameserver, system_nameservers
from engine.dns.resolver import Resolver

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LookupCost", "measure"]


@dataclass(frozen=True, slots=True)
class LookupCost:
    messages: int
    lookups_per_message: int
    cpu_ms: float  # per message, this thread
    wall_ms: float  # per message
    upstream: int  # queries that left the process, in all

    def __str__(self) -> str:
        return (
            f"{self.messages} messages x {self.lookups_per_message} lookups: "
            f"{self.cpu_ms:.3f} ms CPU, {self.wall_ms:.3f} ms wall per message; "
            f"{self.upstream} upstream queries"
        )


async def measure(
    resolver: Resolver,
    lookups: Sequence[tuple[str, str]],
    *,
    messages: int = 200,
    cached: bool,
    concurrency: int = 1,
) -> LookupCost:
    """Run ``messages`` messages' ``lookups`` (name, type), ``concurrency`` at a time.

    With ``cached=False`` the cache is emptied before each batch of concurrent messages,
    so each batch asks the servers (once per name, however many messages ask).
    """
    if cached:
        await _message(resolver, lookups)  # warm the cache first
    upstream_before = resolver.stats.upstream
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(0, messages, concurrency):
        if not cached:
            resolver.cache.clear()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(_message, resolver, lookups)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    done = -(-messages // concurrency) * concurrency
    return LookupCost(
        messages=done,
        lookups_per_message=len(lookups),
        cpu_ms=cpu * 1000 / done,
        wall_ms=wall * 1000 / done,
        upstream=resolver.stats.upstream - upstream_before,
    )


async def _message(resolver: Resolver, lookups: Sequence[tuple[str, str]]) -> None:
    async with trio.open_nursery() as nursery:
        for name, rdtype in lookups:
            nursery.start_soon(resolver.query, name, rdtype)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("lookups", nargs="+", metavar="NAME:TYPE")
    parser.add_argument("--nameserver", action="append", default=[])
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args(argv)
    lookups: list[tuple[str, str]] = []
    for item in args.lookups:
        name, colon, rdtype = item.rpartition(":")
        lookups.append((name, rdtype) if colon else (item, "A"))
    servers = tuple(parse_nameserver(s) for s in args.nameserver) or system_nameservers()
    resolver = Resolver.from_settings(DnsSettings(nameservers=servers))

    async def run() -> None:
        for cached in (False, True):
            cost = await measure(resolver, lookups, messages=args.messages, cached=cached)
            print(f"{'cache' if cached else 'servers'}: {cost}")

    trio.run(run)


if __name__ == "__main__":
    main()
