"""DKIM and ARC public keys through our resolver, fetched before the crypto runs.

dkimpy verifies synchronously and asks for each key through a ``dnsfunc`` callback. We
do not let it block a worker thread on DNS: the checks read the selector and domain of
every signature first, look all the keys up concurrently through ``ctx.dns`` (cache,
in-flight sharing, temporary/permanent failures told apart), and only then hand dkimpy
a ``dnsfunc`` that answers from those results without I/O. A thread from the crypto
pool is then never held by a slow name server, and the lookups of a message with
several signatures overlap instead of queueing.

A temporary failure (SERVFAIL, timeout …) makes ``dnsfunc`` raise ``DnsTimeoutError``,
which dkimpy turns into a failed signature; the callers look at the ``KeyLookup`` again
to report ``temperror`` instead (RFC 6376 §6.1.2: "TEMPFAIL (key unavailable)").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dkim  # type: ignore[import-untyped]
import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from engine.dns import Resolver

__all__ = ["KeyLookup", "fetch_keys", "key_name", "prefetched_dnsfunc"]

# A DNS name carries at most 255 octets; a d= or s= that makes a longer one (or holds
# bytes no name can) is the signature's fault, answered like a missing key.
_NAME_OK = re.compile(rb"[A-Za-z0-9._-]{1,253}")


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """What DNS said about one ``<selector>._domainkey.<domain>`` name.

    Attributes:
        records: the TXT records, each one's strings joined (empty: no key).
        temporary: the lookup failed on the way (never the name's fault).
        detail: the resolver's account, for logs and header comments.
    """

    records: tuple[str, ...] = ()
    temporary: bool = False
    detail: str = ""


def key_name(selector: bytes, domain: bytes) -> str | None:
    """``<s>._domainkey.<d>`` (RFC 6376 §3.6.2.1), or None when no DNS name can carry it."""
    name = selector.strip() + b"._domainkey." + domain.strip().rstrip(b".")
    if _NAME_OK.fullmatch(name) is None:
        return None
    return name.decode("ascii").lower()


async def fetch_keys(resolver: Resolver, names: Iterable[str]) -> dict[str, KeyLookup]:
    """Look every name up at once; never raises for DNS trouble."""
    found: dict[str, KeyLookup] = {}

    async def one(name: str) -> None:
        answer = await resolver.txt(name)
        if answer.temporary:
            found[name] = KeyLookup(temporary=True, detail=str(answer))
        else:
            found[name] = KeyLookup(answer.records, detail=str(answer))

    async with trio.open_nursery() as nursery:
        for name in dict.fromkeys(names):
            nursery.start_soon(one, name)
    return found


def prefetched_dnsfunc(lookups: Mapping[str, KeyLookup]) -> Callable[..., bytes | None]:
    """A dkimpy ``dnsfunc`` answering from ``lookups`` (no I/O, safe in any thread).

    Of several TXT records at the name (RFC 6376 §3.6.2.2 lets the verifier choose), the
    first that looks like a DKIM key record is given; a name not looked up (a signature
    header that did not parse for us but did for dkimpy) is answered as having no key.
    """

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        lookup = lookups.get(text.rstrip(".").lower())
        if lookup is None:
            return None
        if lookup.temporary:
            raise dkim.DnsTimeoutError(lookup.detail)
        for record in lookup.records:
            if "p=" in record:
                return record.encode("utf-8", "replace")
        return lookup.records[0].encode("utf-8", "replace") if lookup.records else None

    return dnsfunc
