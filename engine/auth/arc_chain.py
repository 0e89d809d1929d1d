"""ARC (RFC 8617) on dkimpy: validating a chain and adding our seal. Pure CPU, no I/O.

Validation follows RFC 8617 §5.2 with dkimpy's per-instance checks
(``ARC.verify_instance``), driven here so that the outcomes stay apart:

* ``none``: no ARC header at all;
* ``invalid``: the chain's structure is broken (a set missing a header or holding two,
  instance numbers out of range, a tag list that does not parse, cv= inconsistent with
  the instance: RFC 8617 §5.1.1 calls all of these a failed chain); Rspamd's ARC_INVALID;
* ``reject``: the structure is sound but a seal or the newest message signature does not
  verify, or an earlier sealer recorded ``cv=fail``;
* ``dnsfail``: like reject, but a key could not be fetched (DNS trouble): temporary;
* ``pass``.

Sealing (RFC 8617 §5.1) adds the next instance: the ARC-Authentication-Results carries
our own Authentication-Results (which must already be in the message copy handed in,
under our authserv-id, including its ``arc=`` result, from which dkimpy takes ``cv=``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import dkim  # type: ignore[import-untyped]

from engine.auth.dkim_dns import prefetched_dnsfunc
from engine.auth.dkim_verify import LIBRARY_ERRORS, dkimpy_logger
from engine.auth.results import ArcResult

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.auth.dkim_dns import KeyLookup
    from engine.auth.dkim_keys import SigningKey

__all__ = ["ARC_HEADERS", "ChainCheck", "SealError", "seal", "verify_chain"]

ARC_HEADERS = ("arc-seal", "arc-message-signature", "arc-authentication-results")
MAX_INSTANCE = 50  # RFC 8617 §4.2.1
ChainStatus = Literal["pass", "none", "invalid", "reject", "dnsfail"]


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """The chain's status and the shared result for the stash."""

    status: ChainStatus
    result: ArcResult


class SealError(Exception):
    """dkimpy refused to seal (key, message, or a chain past 50 instances)."""


def _name(value: object) -> str:
    return value.decode("ascii", "replace").lower() if isinstance(value, bytes) else ""


def verify_chain(
    message: bytes, lookups: Mapping[str, KeyLookup], *, minkey: int = 1024
) -> ChainCheck:
    """Validate the ARC chain of ``message`` with keys from ``lookups``."""
    try:
        arc = dkim.ARC(message, logger=dkimpy_logger(), minkey=minkey)
        newest, headers = arc.sorted_arc_headers()
    except LIBRARY_ERRORS as exc:
        return _invalid(0, f"unparsable message: {exc}")
    if newest == 0:
        return ChainCheck("none", ArcResult("none"))
    if newest > MAX_INSTANCE:
        return _invalid(newest, f"instance {newest} is past {MAX_INSTANCE}")
    dnsfunc = prefetched_dnsfunc(lookups)
    sets = []
    for instance in range(newest, 0, -1):
        try:
            sets.append(arc.verify_instance(headers, instance, dnsfunc=dnsfunc))
        except LIBRARY_ERRORS as exc:
            return _invalid(newest, f"ARC set {instance}: {exc}")
    sealers = tuple(_name(s.get("as-domain")) for s in reversed(sets))
    for found in sets:  # newest first
        cv, instance = found.get("cv"), found["instance"]
        if (instance == 1) != (cv == dkim.CV_None):
            return _invalid(newest, f"ARC-Seal {instance} has cv={_name(cv)}", sealers)
    problem = _signature_problem(sets)
    if problem is None:
        return ChainCheck("pass", ArcResult("pass", newest, "", sealers))
    temporary = any(lookup.temporary for lookup in lookups.values())
    status: ChainStatus = "dnsfail" if temporary else "reject"
    return ChainCheck(status, ArcResult("fail", newest, problem, sealers))


def _signature_problem(sets: list[dict[str, object]]) -> str | None:
    """RFC 8617 §5.2 steps 5-6: the newest AMS and every seal must verify, and no sealer
    may have recorded a failed chain."""
    if not sets[0].get("ams-valid"):
        return f"ARC-Message-Signature {sets[0]['instance']} did not verify"
    for found in sets:
        if found.get("cv") == dkim.CV_Fail:
            return f"ARC-Seal {found['instance']} records a failed chain"
        if not found.get("as-valid"):
            return f"ARC-Seal {found['instance']} did not verify"
    return None


def _invalid(newest: int, reason: str, sealers: tuple[str, ...] = ()) -> ChainCheck:
    return ChainCheck("invalid", ArcResult("fail", newest, reason[:200], sealers))


def seal(
    message: bytes,
    key: SigningKey,
    domain: str,
    selector: str,
    authserv_id: str,
    include_headers: list[str],
) -> list[tuple[str, str]]:
    """The next ARC set for ``message``, top to bottom (ARC-Seal first), as milter
    header values (LF folds). Empty when dkimpy finds no Authentication-Results of
    ``authserv_id`` to seal, or a chain that ended (an earlier ``cv=fail``).

    Raises:
        SealError: the key is not RSA (RFC 8617 §4.1.2), or dkimpy refused.
    """
    if key.key_type != "rsa":
        raise SealError("ARC seals with rsa-sha256 only")
    try:
        arc = dkim.ARC(message, logger=dkimpy_logger(), linesep=b"\n")
        lines = arc.sign(
            selector.encode("ascii"),
            domain.encode("idna"),
            key.private,
            authserv_id.encode("ascii"),
            include_headers=[h.encode("ascii") for h in include_headers],
        )
    except (*LIBRARY_ERRORS, UnicodeError) as exc:
        raise SealError(f"{type(exc).__name__}: {exc}") from exc
    out = []
    for line in lines:
        name, _, value = line.partition(b":")
        out.append((name.decode("ascii"), value.strip().decode("utf-8", "replace")))
    return out
