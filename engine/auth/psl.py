"""Organisational domains (RFC 7489 §3.2) and identifier alignment (RFC 7489 §3.1).

The Public Suffix List comes from the ``publicsuffixlist`` package, which bundles a copy
of the list: nothing is fetched at run time, and upgrading the package upgrades the list.
Both sections of the list count (ICANN and private), as in Rspamd and OpenDMARC: a name
under ``github.io`` or ``blogspot.com`` belongs to whoever registered it there, not to
the suffix's operator.

Domains are compared in a normal form: lower case, no final dot, A-labels for IDNs, so
that a U-label From domain (SMTPUTF8) aligns with the A-label ``d=`` of its signature.
"""

from __future__ import annotations

import functools

from publicsuffixlist import PublicSuffixList

__all__ = ["aligned", "normalize_domain", "organizational_domain", "warm_up"]


@functools.cache
def _suffixes() -> PublicSuffixList:
    # Parsing the bundled list takes ~50 ms: once per process, and the table is never
    # changed afterwards, so sharing it between engines (and reloads) is safe.
    return PublicSuffixList()


def warm_up() -> None:
    """Load the list now (at start or reload) rather than during the first scan."""
    _suffixes()


def normalize_domain(domain: str) -> str:
    """``domain`` lower case, without surrounding space or final dot, IDNs as A-labels.

    A name that IDNA cannot encode is returned lower-cased as it is: it will simply not
    match anything, which is the right outcome for garbage.
    """
    text = domain.strip().rstrip(".").lower()
    if text.isascii():
        return text
    try:
        return text.encode("idna").decode("ascii")
    except UnicodeError:
        return text


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """The organisational domain of ``domain`` (RFC 7489 §3.2): its public suffix plus one
    label. A name that is itself a public suffix (``co.uk``) is its own organisational
    domain, as there is no further label to add. Unknown TLDs count as one-label public
    suffixes (the list's default rule ``*``), so ``a.b.example.test`` → ``example.test``.
    """
    name = normalize_domain(domain)
    if not name:
        return name
    org = _suffixes().privatesuffix(name)
    return org if isinstance(org, str) and org else name


def aligned(identifier: str, from_domain: str, *, strict: bool) -> bool:
    """Whether an authenticated ``identifier`` (SPF MAIL FROM domain or DKIM ``d=``) is
    aligned with the RFC5322.From domain: equal in strict mode, with the same
    organisational domain in relaxed mode (RFC 7489 §3.1.1, §3.1.2)."""
    a, b = normalize_domain(identifier), normalize_domain(from_domain)
    if not a or not b:
        return False
    if strict:
        return a == b
    return organizational_domain(a) == organizational_domain(b)
