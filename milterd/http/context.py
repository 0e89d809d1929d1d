"""What the scan API and the controller share: the engine slot, settings, counters, history.

``scanned`` is the one place a finished scan is recorded, whichever door it came in by
(HTTP now; the milter session once it calls it), so ``/stat``, ``/history`` and
``/metrics`` agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from engine import ScanRequest, ScanResult
    from milterd.http.cluster import Cluster
    from milterd.http.errors import ErrorRing
    from milterd.http.history import History
    from milterd.http.metrics import Metrics
    from milterd.http.settings import HttpSettings
    from milterd.session import EngineSlot

__all__ = ["HttpContext"]


@dataclass(slots=True, eq=False)
class HttpContext:
    """Shared state of the HTTP side. ``settings`` is replaced at a reload; ``reload``
    (the daemon's) re-reads the configuration and answers whether it was accepted."""

    engines: EngineSlot
    settings: HttpSettings
    metrics: Metrics
    history: History
    errors: ErrorRing
    reload: Callable[[], Awaitable[bool]] | None = None
    # In a controller worker: every worker's counters (``milterd.http.cluster``).
    cluster: Cluster | None = None
    generation: int = 1  # configuration generation: 1 at start, +1 per accepted reload

    def totals(self) -> Metrics:
        """The counters ``/stat`` and ``/metrics`` show: this process's, or, in a
        controller worker, every worker's summed."""
        return self.cluster.totals() if self.cluster is not None else self.metrics

    def scanned(
        self,
        request: ScanRequest,
        result: ScanResult,
        elapsed: float,
        *,
        size: int,
        source: str,
        keep: bool = True,
    ) -> None:
        """Count a finished scan; ``keep=False`` (the ``no_log`` flag) leaves it out of
        the history. Never blocks and never raises for a slow Store."""
        self.metrics.observe_scan(result, elapsed)
        if keep:
            self.history.record(request, result, size=size, source=source)
