"""The recent-errors ring for ``/errors``: the last error log records, in memory."""

from __future__ import annotations

import logging
import os
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

    from milterd.http.metrics import Metrics

__all__ = ["ErrorRing"]

_ROWS: Final = 100
_MAX_MESSAGE: Final = 1000


class ErrorRing(logging.Handler):
    """Keeps the last ``size`` records at ERROR or above (Rspamd's ``/errors`` rows)."""

    def __init__(self, metrics: Metrics, size: int = _ROWS) -> None:
        super().__init__(logging.ERROR)
        self.metrics = metrics
        self._rows: deque[dict[str, object]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        # deque.append is atomic, so records from worker threads need no lock.
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string in someone's log call
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message += f" ({type(exc).__name__}: {exc})"
        self._rows.append(
            {
                "ts": round(record.created, 3),
                "type": record.levelname.lower(),
                "pid": os.getpid(),
                "module": record.name,
                "message": message[:_MAX_MESSAGE],
            }
        )
        self.metrics.error("log")

    def rows(self) -> list[dict[str, object]]:
        """Newest first."""
        return list(reversed(self._rows))

    @contextmanager
    def attached(self) -> Iterator[ErrorRing]:
        """Listen to the root logger for the duration of the block."""
        root = logging.getLogger()
        root.addHandler(self)
        try:
            yield self
        finally:
            root.removeHandler(self)
