"""Counters of every worker, summed by the controller for ``/stat``, ``/metrics`` and ``/status``.

The channel: one unix **datagram** socketpair made by the supervisor before it forks.
Every worker (and the supervisor) holds the sending end, the controller worker the
receiving end. Chosen over the Store and over per-worker pipes because:

* a datagram is one whole report or nothing: no framing, and many senders cannot
  interleave their bytes on one socket;
* sending never blocks (``MSG_DONTWAIT``): a dead or slow controller costs a worker a
  dropped report, never a stalled scan; the Store would put a write on the scan path
  of every worker and tie ``/stat`` to the Store being up;
* the supervisor keeps both ends open, so a restarted controller finds the reports
  queued while it was away.

Each worker sends its whole counters (cumulative since it started) every
``REPORT_SECONDS`` and once more when it exits; the supervisor sends the list of live
workers whenever it changes. A worker that leaves that list (drained, or killed) has its
last report folded into ``retired``, so totals never go down when a worker is replaced;
what a worker killed with SIGKILL counted after its last report (at most
``REPORT_SECONDS``) is lost.

A reload replaces the controller as well. The serving controller keeps its sums (the
retired ones, each live worker's last report and the ``/statreset`` baseline) in the
Store every ``REPORT_SECONDS`` (``carried_over``); its successor starts from them
(``carry_over``), so ``/stat`` and ``/metrics`` counters do not go back at a reload, a
controller save or a controller restart.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Final

import trio

from milterd.http.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["REPORT_SECONDS", "Cluster", "send_report"]

log = logging.getLogger(__name__)

REPORT_SECONDS: Final = 1.0
MAX_DATAGRAM: Final = 1 << 20


def send_report(sock: socket.socket, report: dict[str, object]) -> bool:
    """Send one report without blocking; False when it was dropped."""
    try:
        sock.send(json.dumps(report, separators=(",", ":")).encode(), socket.MSG_DONTWAIT)
    except OSError:  # full (controller away or slow) or too large: the next one will do
        return False
    return True


class Cluster:
    """What the controller knows of the supervisor and its workers (see the module doc)."""

    def __init__(self, local: Metrics) -> None:
        self.local = local  # the controller worker's own counters
        self.workers: dict[int, dict[str, object]] = {}
        self.supervisor: dict[str, object] = {}
        self.retired = Metrics()
        self.retired_messages = 0
        self.baseline = Metrics()  # what /statreset took away
        self._supervisor_report = trio.Event()

    def receive(self, data: bytes) -> None:
        try:
            report = json.loads(data)
        except ValueError:
            return
        if not isinstance(report, dict):
            return
        if report.get("type") == "supervisor":
            self.supervisor = report
            self._fold_departed()
            self._supervisor_report.set()
            self._supervisor_report = trio.Event()
        elif report.get("type") == "worker" and isinstance(report.get("pid"), int):
            report["received"] = time.time()
            self.workers[int(report["pid"])] = report

    def _fold_departed(self) -> None:
        listed = self.supervisor.get("workers")
        if not isinstance(listed, list):
            return
        alive = {w.get("pid") for w in listed if isinstance(w, dict)}
        for pid in [p for p in self.workers if p not in alive]:
            gone = self.workers.pop(pid)
            counters = gone.get("metrics")
            if isinstance(counters, dict):
                self.retired.add(counters)
                self.retired_messages += _messages(gone)

    def _raw(self) -> Metrics:
        """The sum of every report, retired workers included, without the local counters."""
        total = Metrics()
        total.add(self.retired.snapshot())
        for report in self.workers.values():
            counters = report.get("metrics")
            if isinstance(counters, dict):
                total.add(counters)
        return total

    def totals(self) -> Metrics:
        """Every worker's counters and the controller's own, since start or the last reset."""
        total = self._raw()
        total.add(self.local.snapshot())
        total.add(self.baseline.snapshot(), sign=-1)
        started = self.supervisor.get("started")
        if isinstance(started, int | float):
            total.started = float(started)
        return total

    def reset(self) -> None:
        """``/statreset``: remember what the workers have counted so far, and start at 0."""
        self.baseline = self._raw()
        self.local.reset()

    # What a controller hands to the next: at a reload (or after a crash) a new controller
    # starts with no reports, and the workers it will hear from counted only since they
    # started. Without what the last controller had folded in, /stat would fall back to
    # the current workers' counts at every reload, controller save or restart.

    def carried_over(self) -> bytes:
        """The sums no live worker reports any more, each worker's last report (folded in
        by the next controller when the worker leaves, replaced when it reports again), and
        the /statreset baseline."""
        retired = Metrics()
        retired.add(self.retired.snapshot())
        retired.add(self.local.snapshot())  # the controller's own scans end with it
        return json.dumps(
            {
                "retired": retired.snapshot(),
                "retired_messages": self.retired_messages,
                "baseline": self.baseline.snapshot(),
                "workers": {str(pid): report for pid, report in self.workers.items()},
            },
            separators=(",", ":"),
        ).encode()

    def carry_over(self, data: bytes | None) -> None:
        """Start from what the previous controller left (``carried_over``); anything
        unreadable starts from zero, as a first start does."""
        try:
            state = json.loads(data) if data else None
        except ValueError:
            state = None
        if not isinstance(state, dict):
            return
        for name, into in (("retired", self.retired), ("baseline", self.baseline)):
            counters = state.get(name)
            if isinstance(counters, dict):
                into.add(counters)
        messages = state.get("retired_messages")
        if isinstance(messages, int):
            self.retired_messages += messages
        workers = state.get("workers")
        for pid, report in workers.items() if isinstance(workers, dict) else ():
            if pid.isdigit() and isinstance(report, dict):
                self.workers.setdefault(int(pid), report)

    def status(self) -> dict[str, object]:
        """``/status``: the supervisor's view of its workers with each one's counters."""
        now = time.time()
        workers: list[dict[str, object]] = []
        listed = self.supervisor.get("workers")
        for entry in listed if isinstance(listed, list) else []:
            if not isinstance(entry, dict):
                continue
            row = dict(entry)
            report = self.workers.get(int(entry.get("pid", 0)))
            started = entry.get("started")
            if isinstance(started, int | float):
                row["uptime"] = round(now - started, 1)
            row["messages"] = _messages(report) if report else 0
            row["reported"] = round(now - float(report["received"]), 1) if report else None  # type: ignore[arg-type]
            workers.append(row)
        errors: list[object] = list(_as_list(self.supervisor.get("last_errors")))
        for report in self.workers.values():
            errors += _as_list(report.get("last_errors"))
        errors.sort(key=lambda e: e.get("ts", 0) if isinstance(e, dict) else 0, reverse=True)
        started = self.supervisor.get("started")
        return {
            "mode": "supervisor",
            "pid": self.supervisor.get("pid"),
            "uptime": round(now - started, 1) if isinstance(started, int | float) else None,
            "generation": self.supervisor.get("generation"),
            "config_generation": self.supervisor.get("generation"),
            "reloads": self.supervisor.get("reloads"),
            "restarts": self.supervisor.get("restarts"),
            "workers": workers,
            "retired_messages": self.retired_messages,
            "last_errors": errors[:20],
        }

    async def wait_for_generation(self, generation: int) -> None:
        """Return once the supervisor reports configuration ``generation`` (or a later
        one) serving."""
        while True:
            current = self.supervisor.get("generation")
            if isinstance(current, int) and current >= generation:
                return
            await self._supervisor_report.wait()

    async def run(self, sock: socket.socket) -> None:
        """Read reports until cancelled."""
        tsock = trio.socket.from_stdlib_socket(sock)
        while True:
            data = await tsock.recv(MAX_DATAGRAM)
            self.receive(data)


def _messages(report: dict[str, object] | None) -> int:
    counters = report.get("metrics") if report else None
    actions = counters.get("actions") if isinstance(counters, dict) else None
    if not isinstance(actions, dict):
        return 0
    return sum(int(n) for n in actions.values() if isinstance(n, int))


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


async def report_loop(
    sock: socket.socket,
    identity: dict[str, object],
    counters: Callable[[], dict[str, object]],
    errors: Callable[[], list[dict[str, object]]],
) -> None:
    """A worker's side: send its counters every ``REPORT_SECONDS`` until cancelled, and
    once more on the way out (the drained worker's last messages count too)."""

    def report() -> dict[str, object]:
        return {
            "type": "worker",
            "pid": os.getpid(),
            **identity,
            "metrics": counters(),
            "last_errors": errors()[:5],
        }

    try:
        while True:
            send_report(sock, report())
            await trio.sleep(REPORT_SECONDS)
    finally:
        send_report(sock, report())
