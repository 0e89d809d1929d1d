"""DKIM signature verification on dkimpy: one ``DkimResult`` per signature, in a thread.

Theory of operation: the ``dkim`` module reads each DKIM-Signature's ``d=``/``s=``
(``signature_keys``), fetches the keys through our resolver (``dkim_dns.fetch_keys``),
then runs ``verify_signatures`` in a worker thread. That function does no I/O: it drives
dkimpy's two halves separately, ``verify_headerprep`` (parse and check the tags) and
``verify_sig_process`` (body hash, header hash, signature), with the key put in place
from the prefetched TXT record. Doing the key step ourselves is what keeps the outcomes
apart, which dkimpy's ``verify()`` folds into one ``False``:

=========================================  =========================================
what happened                              result (RFC 8601 §2.7.1)
=========================================  =========================================
signature and body hash check out          pass
body hash or signature does not match      fail
key lookup failed on the way (SERVFAIL,    temperror (RFC 6376 §6.1.2, "key
timeout)                                   unavailable")
no key, revoked key (empty p=), a key      permerror
record or signature that does not parse,
an unknown algorithm, a key too short,
a key type that is not the signature's,
an expired signature
=========================================  =========================================

Nothing here raises for broken mail: dkimpy's exceptions (and the few plain ones a
malformed signature provokes in it) become ``permerror`` with the reason.
"""

from __future__ import annotations

import binascii
import logging
from typing import TYPE_CHECKING

import dkim  # type: ignore[import-untyped]
from dkim.util import InvalidTagValueList, parse_tag_value  # type: ignore[import-untyped]

from engine.auth.dkim_dns import key_name
from engine.auth.results import DkimResult

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, MutableMapping

    from engine.auth.dkim_dns import KeyLookup
    from engine.auth.results import DkimVerdict

__all__ = ["SignatureKey", "dkimpy_logger", "signature_keys", "verify_signatures"]

log = logging.getLogger(__name__)

# What a malformed signature can make dkimpy raise besides its own exceptions: bad base64
# (binascii.Error is a ValueError), int() of garbage, a missing tag, an empty header.
LIBRARY_ERRORS = (dkim.DKIMException, ValueError, KeyError, IndexError, TypeError)
_B_PREFIX = 8  # RFC 6008 §4: enough of b= to tell signatures apart


class _QuietAdapter(logging.LoggerAdapter[logging.Logger]):
    """dkimpy logs every bad signature at ERROR; for a filter that is an everyday
    result, not an error of ours, so its records are kept at DEBUG."""

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)  # type: ignore[arg-type]

    def error(self, msg: object, *args: object, **kwargs: object) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: object) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)


def dkimpy_logger() -> logging.LoggerAdapter[logging.Logger]:
    """The logger to hand dkimpy: ours, every record at DEBUG."""
    return _QuietAdapter(logging.getLogger("engine.auth.dkimpy"), {})


class SignatureKey:
    """The key a signature names, read before verification to prefetch it."""

    __slots__ = ("domain", "name", "selector")

    def __init__(self, domain: str, selector: str, name: str | None) -> None:
        self.domain = domain
        self.selector = selector
        self.name = name  # None: no DNS name can carry it (the signature will permerror)


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace").strip()


def signature_keys(values: Iterable[str]) -> list[SignatureKey]:
    """Domain, selector and key name of each DKIM-Signature (or ARC signature) value."""
    out = []
    for value in values:
        try:
            tags = parse_tag_value(value.encode("utf-8", "surrogateescape"))
        except InvalidTagValueList:
            tags = {}
        domain, selector = tags.get(b"d", b""), tags.get(b"s", b"")
        name = key_name(selector, domain) if domain and selector else None
        out.append(SignatureKey(_text(domain).lower(), _text(selector), name))
    return out


def verify_signatures(
    message: bytes,
    keys: list[SignatureKey],
    lookups: Mapping[str, KeyLookup],
    *,
    minkey: int = 1024,
    key_cache: MutableMapping[bytes, tuple[object, int, bytes, bool]] | None = None,
) -> list[DkimResult]:
    """Verify every signature of ``message``; ``keys`` are ``signature_keys`` of its
    DKIM-Signature headers, in order. Pure CPU: run it in a worker thread.

    ``key_cache`` (TXT record → dkimpy's parsed key) saves re-parsing a key the resolver
    answered from its cache; the caller bounds it.
    """
    try:
        verifier = dkim.DKIM(message, logger=dkimpy_logger(), minkey=minkey)
    except LIBRARY_ERRORS as exc:
        return [_result(k, "permerror", f"unparsable message: {exc}") for k in keys]
    return [_verify_one(verifier, index, key, lookups, key_cache) for index, key in enumerate(keys)]


def _result(key: SignatureKey, verdict: DkimVerdict, reason: str, **more: str) -> DkimResult:
    return DkimResult(key.domain, key.selector, verdict, reason[:200], **more)


def _verify_one(
    verifier: dkim.DKIM,
    index: int,
    key: SignatureKey,
    lookups: Mapping[str, KeyLookup],
    key_cache: MutableMapping[bytes, tuple[object, int, bytes, bool]] | None,
) -> DkimResult:
    try:
        prep = verifier.verify_headerprep(index)
    except LIBRARY_ERRORS as exc:
        return _result(key, "permerror", f"bad signature: {exc}")
    if not prep:
        return _result(key, "permerror", "signature header vanished")
    sig, include_headers, sig_headers = prep
    about = {
        "identity": _text(sig.get(b"i")),
        "algorithm": _text(sig.get(b"a")).lower(),
        "header_b": "".join(_text(sig.get(b"b")).split())[:_B_PREFIX],
    }
    lookup = lookups.get(key.name) if key.name else None
    if lookup is None:
        return _result(key, "permerror", "no key name in the signature", **about)
    if lookup.temporary:
        return _result(key, "temperror", f"key unavailable: {lookup.detail}", **about)
    record = _key_record(lookup)
    if record is None:
        return _result(key, "permerror", "no key published", **about)
    try:
        parsed = key_cache.get(record) if key_cache is not None else None
        if parsed is None:
            parsed = dkim.evaluate_pk(key.name, record)
            if key_cache is not None:
                key_cache[record] = parsed
        verifier.pk, verifier.keysize, verifier.ktag, verifier.seqtlsrpt = parsed
        if verifier.pk is None:
            return _result(key, "permerror", "key not for e-mail (s=)", **about)
        if not about["algorithm"].startswith(verifier.ktag.decode() + "-"):
            return _result(key, "permerror", "key type does not match a=", **about)
        good = verifier.verify_sig_process(sig, include_headers, sig_headers[index], None)
    except dkim.ValidationError as exc:
        if "body hash" in str(exc):  # the body changed after signing: a failed signature
            return _result(key, "fail", "body hash mismatch", **about)
        return _result(key, "permerror", str(exc), **about)
    except (*LIBRARY_ERRORS, binascii.Error) as exc:
        return _result(key, "permerror", f"{type(exc).__name__}: {exc}", **about)
    if not good:
        return _result(key, "fail", "signature did not verify", **about)
    return _result(key, "pass", "", **about)


def _key_record(lookup: KeyLookup) -> bytes | None:
    """The key record (RFC 6376 §3.6.2.2: with several TXT records we may pick one; the
    first that carries a p= tag)."""
    for record in lookup.records:
        if "p=" in record:
            return record.encode("utf-8", "replace")
    return None
