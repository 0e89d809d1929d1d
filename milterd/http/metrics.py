"""Counters of what this process did, for ``/stat`` and ``/metrics`` (OpenMetrics text).

The counters live in process memory: updating one costs nanoseconds and no Store round
trip on the scan path. ``/statreset`` zeroes them (Prometheus treats that as a counter
reset, as it does a restart). ``render`` writes OpenMetrics 1.0: counter families
without the ``_total`` suffix, samples with it, cumulative histogram buckets, ``# EOF``.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from contextlib import suppress
from typing import TYPE_CHECKING, Final

from engine import Action

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from engine import ScanResult

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics"]

CONTENT_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SCAN_TIME_SLOTS: Final = 31  # Rspamd's /stat scan_times window
# Rspamd counts the rungs from reject down to add header as spam, the rest as ham.
_SPAM: Final = frozenset(
    {Action.REJECT, Action.SOFT_REJECT, Action.REWRITE_SUBJECT, Action.ADD_HEADER}
)


class Metrics:
    """What this process scanned, learned and got wrong since start (or the last reset)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.reset()

    def reset(self) -> None:
        self.actions: Counter[Action] = Counter()
        self.symbols: Counter[str] = Counter()
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.scan_times: deque[float] = deque(maxlen=_SCAN_TIME_SLOTS)
        self.learns: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[str] = Counter()
        self.connections = 0
        self.control_connections = 0

    @property
    def scanned(self) -> int:
        return sum(self.actions.values())

    @property
    def learned(self) -> int:
        return sum(n for (_, outcome), n in self.learns.items() if outcome == "learned")

    def observe_scan(self, result: ScanResult, elapsed: float) -> None:
        self.actions[result.action] += 1
        self.symbols.update(result.symbols.keys())
        self.latency_sum += elapsed
        for i, bound in enumerate(LATENCY_BUCKETS):
            if elapsed <= bound:
                self.buckets[i] += 1
                break
        else:
            self.buckets[-1] += 1
        self.scan_times.append(round(elapsed, 6))

    def observe_learn(self, *, is_spam: bool, learned: bool) -> None:
        self.learns["spam" if is_spam else "ham", "learned" if learned else "refused"] += 1

    def error(self, source: str) -> None:
        """Count an error: ``scan`` (a scan failed), ``log`` (an error was logged),
        ``auth`` (a refused controller request), ``request`` (a malformed request)."""
        self.errors[source] += 1

    def snapshot(self) -> dict[str, object]:
        """The counters as JSON-able data: what a worker sends to the controller."""
        return {
            "actions": {a.value: n for a, n in self.actions.items()},
            "symbols": dict(self.symbols),
            "buckets": list(self.buckets),
            "latency_sum": self.latency_sum,
            "scan_times": list(self.scan_times),
            "learns": {f"{c}/{r}": n for (c, r), n in self.learns.items()},
            "errors": dict(self.errors),
            "connections": self.connections,
            "control_connections": self.control_connections,
        }

    def add(self, snapshot: Mapping[str, object], sign: int = 1) -> None:
        """Add (``sign`` -1: take away) a ``snapshot``; unknown or malformed parts are
        skipped, so a worker of another version cannot break the controller's sums."""
        actions = snapshot.get("actions")
        if isinstance(actions, dict):
            for name, n in actions.items():
                with _ignored():
                    self.actions[Action(name)] += sign * int(n)
        for counter, key in ((self.symbols, "symbols"), (self.errors, "errors")):
            part = snapshot.get(key)
            if isinstance(part, dict):
                for name, n in part.items():
                    with _ignored():
                        counter[str(name)] += sign * int(n)
        learns = snapshot.get("learns")
        if isinstance(learns, dict):
            for name, n in learns.items():
                kind, _, outcome = str(name).partition("/")
                with _ignored():
                    self.learns[kind, outcome] += sign * int(n)
        buckets = snapshot.get("buckets")
        if isinstance(buckets, list) and len(buckets) == len(self.buckets):
            with _ignored():
                self.buckets = [
                    a + sign * int(b) for a, b in zip(self.buckets, buckets, strict=True)
                ]
        with _ignored():
            self.latency_sum += sign * float(snapshot.get("latency_sum", 0.0))  # type: ignore[arg-type]
            self.connections += sign * int(snapshot.get("connections", 0))  # type: ignore[call-overload]
            self.control_connections += sign * int(
                snapshot.get("control_connections", 0)  # type: ignore[call-overload]
            )
        times = snapshot.get("scan_times")
        if sign > 0 and isinstance(times, list):
            self.scan_times.extend(float(t) for t in times if isinstance(t, int | float))

    def stat_json(self) -> dict[str, object]:
        """The counters part of Rspamd's ``/stat`` answer."""
        actions = {a.value: self.actions[a] for a in reversed(Action)}
        return {
            "uptime": int(time.time() - self.started),
            "scanned": self.scanned,
            "learned": self.learned,
            "actions": actions,
            "scan_times": list(self.scan_times),
            "spam_count": sum(self.actions[a] for a in _SPAM),
            "ham_count": sum(n for a, n in self.actions.items() if a not in _SPAM),
            "connections": self.connections,
            "control_connections": self.control_connections,
        }

    def render(self, gauges: Mapping[str, tuple[str, float]] | None = None) -> str:
        """OpenMetrics text. ``gauges``: extra name → (help, value), e.g. Bayes learns."""
        lines: list[str] = []
        lines += _family(
            "milterd_scans",
            "counter",
            "Messages scanned, by action.",
            ((f'action="{a.value}"', self.actions[a]) for a in Action),
        )
        lines += _family(
            "milterd_symbol_hits",
            "counter",
            "Scans in which each symbol fired.",
            ((f'symbol="{_escape(s)}"', n) for s, n in sorted(self.symbols.items())),
        )
        lines += self._histogram()
        lines += _family(
            "milterd_learns",
            "counter",
            "Messages given to the classifier, by class and outcome.",
            (
                (f'class="{c}",result="{r}"', self.learns[c, r])
                for c in ("spam", "ham")
                for r in ("learned", "refused")
            ),
        )
        lines += _family(
            "milterd_errors",
            "counter",
            "Errors, by source (scan, log, auth, request).",
            (
                (f'source="{s}"', self.errors[s])
                for s in sorted({"scan", "log", "auth", "request", *self.errors})
            ),
        )
        every = {"milterd_uptime_seconds": ("Seconds since start.", self._uptime())}
        every.update(gauges or {})
        for name, (text, value) in every.items():
            lines += _family(name, "gauge", text, [("", value)])
        lines.append("# EOF")
        return "\n".join(lines) + "\n"

    def _uptime(self) -> float:
        return round(time.time() - self.started, 3)

    def _histogram(self) -> Iterator[str]:
        name = "milterd_scan_duration_seconds"
        yield f"# TYPE {name} histogram"
        yield f"# UNIT {name} seconds"
        yield f"# HELP {name} Time a scan took."
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), self.buckets, strict=True):
            running += count
            le = "+Inf" if bound == math.inf else repr(bound)
            yield f'{name}_bucket{{le="{le}"}} {running}'
        yield f"{name}_count {running}"
        yield f"{name}_sum {self.latency_sum!r}"


def _ignored() -> suppress:
    return suppress(TypeError, ValueError)


def _family(name: str, kind: str, text: str, samples: Iterable[tuple[str, float]]) -> Iterator[str]:
    yield f"# TYPE {name} {kind}"
    yield f"# HELP {name} {text}"
    suffix = "_total" if kind == "counter" else ""
    for labels, value in samples:
        yield f"{name}{suffix}{{{labels}}} {value}" if labels else f"{name}{suffix} {value}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
