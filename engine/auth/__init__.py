"""Shared pieces of sender authentication (SPF, DKIM, ARC, DMARC).

``engine.auth.results`` holds the typed stash keys through which the checks share what
they found; ``engine.auth.psl`` finds organisational domains (RFC 7489 §3.2).
"""

from engine.auth.results import (
    ARC_RESULT,
    DKIM_RESULTS,
    DMARC_RESULT,
    SPF_RESULT,
    ArcResult,
    DkimResult,
    DmarcResult,
    SpfResult,
)

__all__ = [
    "ARC_RESULT",
    "DKIM_RESULTS",
    "DMARC_RESULT",
    "SPF_RESULT",
    "ArcResult",
    "DkimResult",
    "DmarcResult",
    "SpfResult",
]
