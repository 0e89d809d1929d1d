"""Recent scans for ``/history``: one JSON row per scan in a bounded Store list.

Rows go through a bounded in-memory queue to one writer task, so a scan never waits on
the Store: when the Store is slow or down, rows beyond the queue are dropped (and
counted), never the scan's answer delayed. The list lives in the Store (SQLite or
Redis), so it survives restarts and, on Redis, is shared by every instance; it is
bounded with ``lpush_trim``. A row holds what Rspamd's history rows hold: time, ids,
envelope, subject, action, scores and the symbols with their options.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING, Final

import trio

from engine.mime import decode_rfc2047
from engine.storage import StoreUnavailable

if TYPE_CHECKING:
    from engine import ScanRequest, ScanResult
    from milterd.http.metrics import Metrics
    from milterd.session import EngineSlot

__all__ = ["HISTORY_KEY", "History"]

log = logging.getLogger(__name__)

HISTORY_KEY: Final = "history:scans"
_QUEUE: Final = 1024
_BATCH: Final = 256
_LINGER: Final = 0.2  # seconds
_MAX_OPTIONS: Final = 10
_MAX_SUBJECT: Final = 256


class History:
    """Records scans (``record``, non-blocking) and reads them back from the Store."""

    def __init__(self, engines: EngineSlot, metrics: Metrics, rows: int) -> None:
        self.engines = engines
        self.metrics = metrics
        self.rows = rows
        self._send, self._receive = trio.open_memory_channel[bytes](_QUEUE)
        self.dropped = 0
        self._pending = 0  # queued or being written
        self._idle = trio.Event()
        self._idle.set()

    def record(
        self,
        request: ScanRequest,
        result: ScanResult,
        *,
        size: int,
        source: str,
    ) -> None:
        row = _row(request, result, size, source)
        try:
            self._send.send_nowait(json.dumps(row, ensure_ascii=False).encode("utf-8"))
            self._pending += 1
            if self._idle.is_set():
                self._idle = trio.Event()
        except trio.WouldBlock:
            self.dropped += 1  # the Store is behind: lose a history row, not time
        except trio.ClosedResourceError:
            pass  # shutting down

    async def run(self) -> None:
        """Write queued rows until ``close`` (then drain what is queued, and return)."""
        async with self._receive:
            async for row in self._receive:
                # Whatever queued up while the last write ran goes in one write: under
                # load that is one Store round trip (and one SQLite transaction) for many
                # scans, not one each.
                rows = [row]
                while len(rows) < _BATCH:
                    try:
                        rows.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                try:
                    with self.engines.lease() as engine:
                        await engine.store.lpush_trim(HISTORY_KEY, *rows, maxlen=self.rows)
                except StoreUnavailable as exc:
                    self.metrics.error("history")
                    log.warning(
                        "history: %d row(s) lost: the store is unavailable: %s", len(rows), exc
                    )
                # The writer's isolation boundary: history is a convenience, and a row it
                # cannot write must never take the daemon (or its scans) down with it.
                except Exception:
                    self.metrics.error("history")
                    log.exception("history: %d row(s) lost", len(rows))
                self._pending -= len(rows)
                if not self._pending:
                    self._idle.set()
                if len(rows) < _BATCH:
                    # Let the next rows gather: under load one write then carries a few
                    # hundred scans (not the few that queued during the last write), and
                    # the history is never more than this far behind.
                    await trio.sleep(_LINGER)

    async def flush(self) -> None:
        """Return once every row recorded so far is written (or lost, and logged)."""
        await self._idle.wait()

    def close(self) -> None:
        self._send.close()

    async def read(self, start: int = 0, stop: int = -1) -> list[dict[str, object]]:
        """Rows ``start`` to ``stop`` (inclusive), newest first."""
        with self.engines.lease() as engine:
            raw = await engine.store.lrange(HISTORY_KEY, start, stop)
        rows = []
        for item in raw:
            try:
                value = json.loads(item)
            except ValueError:
                continue  # a row another version wrote: skip it rather than fail the page
            if isinstance(value, dict):
                rows.append(value)
        return rows

    async def reset(self) -> None:
        with self.engines.lease() as engine:
            await engine.store.delete(HISTORY_KEY)


def _row(request: ScanRequest, result: ScanResult, size: int, source: str) -> dict[str, object]:
    env = request.envelope
    symbols = {
        name: {
            "score": sym.score,
            "metric_score": sym.metric_score,
            **({"options": list(sym.options[:_MAX_OPTIONS])} if sym.options else {}),
        }
        for name, sym in result.symbols.items()
    }
    return {
        "unix_time": round(time.time(), 3),
        "message-id": result.message_id,
        "qid": env.queue_id or "",
        "ip": env.client_addr or "",
        "user": env.auth_user or "",
        "sender_smtp": env.mail_from or "",
        "rcpt_smtp": list(env.rcpts),
        "subject": _subject(request),
        "action": result.action.value,
        "score": result.score if math.isfinite(result.score) else 0.0,
        "required_score": result.required_score,
        "symbols": symbols,
        "size": size,
        "time_real": round(result.time_real, 6),
        "is_skipped": False,
        "source": source,
    }


def _subject(request: ScanRequest) -> str:
    """The Subject, decoded (milter requests carry headers; HTTP ones the raw message)."""
    value: str | None = None
    if request.headers is not None:
        value = next((v for k, v in request.headers if k.lower() == "subject"), None)
    elif request.raw is not None:
        value = _raw_header(request.raw, b"subject")
    if value is None:
        return ""
    return decode_rfc2047(value)[:_MAX_SUBJECT]


def _raw_header(raw: bytes, name: bytes) -> str | None:
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    found: list[bytes] | None = None
    for line in head.splitlines():
        if found is not None:
            if line[:1] in (b" ", b"\t"):
                found.append(line)
                continue
            break
        key, colon, value = line.partition(b":")
        if colon and key.strip().lower() == name:
            found = [value.strip()]
    if found is None:
        return None
    return " ".join(part.strip().decode("utf-8", "replace") for part in found)
