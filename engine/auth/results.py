"""What the authentication checks found, shared through the task's stash.

Each check publishes one typed fact; later checks (DMARC, the authentication whitelist,
the Authentication-Results header) read it instead of re-deriving it or parsing symbols:

- ``SPF_RESULT``: set by ``spf`` once it has judged the message (also ``none`` when it
  skipped an authenticated or local sender: ``SpfResult.skipped`` says so).
- ``DKIM_RESULTS``: set by ``dkim``, one ``DkimResult`` per DKIM-Signature header in
  header order; an empty list means the message carried no signature.
- ``ARC_RESULT``: set by ``arc``.
- ``DMARC_RESULT``: set by ``dmarc``.

A key that is absent means the check did not run for this message (disabled, or it
had no input such as a client address); readers treat that as "no result", never as a
failure. Result words are RFC 8601's (§2.7), lower case, so the Authentication-Results
header can print them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from engine.task.stash import StashKey

if TYPE_CHECKING:
    from engine.task.stash import Stash

__all__ = [
    "ARC_RESULT",
    "DKIM_RESULTS",
    "DMARC_RESULT",
    "SPF_RESULT",
    "ArcResult",
    "ArcVerdict",
    "DkimResult",
    "DkimVerdict",
    "DmarcPolicy",
    "DmarcResult",
    "DmarcVerdict",
    "SpfIdentity",
    "SpfResult",
    "SpfVerdict",
    "stashed",
]

T = TypeVar("T")

# RFC 7208 §2.6: the seven results of check_host().
SpfVerdict = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
# RFC 7208 §2.3/§2.4: which identity was checked ("mailfrom", or "helo" for the null sender).
SpfIdentity = Literal["mailfrom", "helo"]
# RFC 6376 §6.1 outcomes as RFC 8601 §2.7.1 names them (policy/neutral are not produced).
DkimVerdict = Literal["pass", "fail", "temperror", "permerror", "none"]
# RFC 8617 §4.4 chain validation status.
ArcVerdict = Literal["pass", "fail", "none"]
# RFC 7489 §11.2 (Authentication-Results "dmarc" method).
DmarcVerdict = Literal["pass", "fail", "none", "temperror", "permerror"]
# RFC 7489 §6.3 "p"/"sp" values.
DmarcPolicy = Literal["none", "quarantine", "reject"]


@dataclass(slots=True, frozen=True)
class SpfResult:
    """The SPF verdict for the identity that was checked.

    Attributes:
        result: check_host()'s result.
        identity: ``"mailfrom"``, or ``"helo"`` when MAIL FROM was empty (RFC 7208 §2.4).
        domain: the domain checked (the MAIL FROM domain, or the HELO name); DMARC
            aligns this one (RFC 7489 §3.1.2).
        sender: the full identity as checked (``user@domain``, ``postmaster@helo``).
        client_ip: the address that was checked.
        reason: pyspf's explanation or error text, for logs and headers.
        skipped: True when the check was not run (authenticated or local sender):
            ``result`` is then ``"none"``.
    """

    result: SpfVerdict
    identity: SpfIdentity
    domain: str
    sender: str
    client_ip: str
    reason: str = ""
    skipped: bool = False


@dataclass(slots=True, frozen=True)
class DkimResult:
    """One DKIM-Signature's verification outcome.

    Attributes:
        domain: the signature's ``d=`` (lower case); DMARC aligns this one.
        selector: its ``s=``.
        result: pass, fail (bad signature or body hash), temperror (key lookup failed
            temporarily), permerror (malformed signature or key), none.
        reason: why, in a few words (for logs and the header comment).
        identity: ``i=`` if present (RFC 8601 ``header.i``).
        algorithm: ``a=`` if known (``rsa-sha256``, ``ed25519-sha256``).
        header_b: the first characters of ``b=`` (RFC 6008 ``header.b``), to tell
            several signatures by the same domain apart.
    """

    domain: str
    selector: str
    result: DkimVerdict
    reason: str = ""
    identity: str = ""
    algorithm: str = ""
    header_b: str = ""


@dataclass(slots=True, frozen=True)
class ArcResult:
    """The ARC chain's validation outcome (RFC 8617 §5.2).

    Attributes:
        result: the chain status (``cv``).
        instances: the highest ARC instance ``i=`` seen (0 when there is no chain).
        reason: why, in a few words.
        sealers: the ``d=`` of each ARC-Seal in instance order.
    """

    result: ArcVerdict
    instances: int = 0
    reason: str = ""
    sealers: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class DmarcResult:
    """The DMARC evaluation of the RFC5322.From domain.

    Attributes:
        result: pass (an aligned SPF or DKIM pass), fail, none (no policy record),
            temperror (DNS trouble), permerror (a broken record or no usable From).
        from_domain: the RFC5322.From domain (``header.from``).
        policy_domain: where the record was found (the From domain or its
            organisational domain, RFC 7489 §6.6.3); ``""`` when none was.
        org_domain: the From domain's organisational domain (Public Suffix List).
        policy: the policy that applies to this message (``sp`` for a subdomain when
            set, otherwise ``p``); ``None`` without a record.
        disposition: what the policy asks after ``pct`` sampling: ``none`` (deliver),
            ``quarantine`` or ``reject``. A sampled-out message is ``quarantine`` for a
            reject policy and ``none`` for a quarantine one (RFC 7489 §6.6.4).
        spf_aligned: an SPF pass aligned with the From domain.
        dkim_aligned: an aligned DKIM pass (``dkim_domain`` names its ``d=``).
        dkim_domain: the aligned passing signature's domain, ``""`` if none.
        reason: a few words for logs and headers.
    """

    result: DmarcVerdict
    from_domain: str
    policy_domain: str = ""
    org_domain: str = ""
    policy: DmarcPolicy | None = None
    disposition: DmarcPolicy = "none"
    spf_aligned: bool = False
    dkim_aligned: bool = False
    dkim_domain: str = ""
    reason: str = ""


SPF_RESULT: StashKey[SpfResult] = StashKey("auth.spf")
DKIM_RESULTS: StashKey[list[DkimResult]] = StashKey("auth.dkim")
ARC_RESULT: StashKey[ArcResult] = StashKey("auth.arc")
DMARC_RESULT: StashKey[DmarcResult] = StashKey("auth.dmarc")


def stashed(stash: Stash, key: StashKey[T]) -> T | None:
    """``stash[key]``, or None when the check that sets it did not run for this message.

    (``Stash.get(key, None)`` cannot be typed ``T | None``.)
    """
    return stash[key] if key in stash else None  # noqa: SIM401 (see the docstring)
