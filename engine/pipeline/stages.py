"""The stages of a scan, in the order they run."""

from __future__ import annotations

from enum import Enum

__all__ = ["Stage"]


class Stage(Enum):
    """Where a check runs. Every check of one stage finishes before the next stage starts.

    PRE         in priority order, one at a time; may set a pre-result that skips the rest
    FILTER      all concurrently in one nursery, dependencies awaited
    CLASSIFY    statistics (Bayes and friends)
    COMPOSITE   composite expressions over the symbols so far (the engine's own stage)
    POST        in priority order; score adjustments, forced actions
    IDEMPOTENT  never change the result: result headers, history, metrics
    """

    PRE = "prefilter"
    FILTER = "filter"
    CLASSIFY = "classify"
    COMPOSITE = "composite"
    POST = "postfilter"
    IDEMPOTENT = "idempotent"
