"""``milterd bench``: messages per second, CPU per message, latency and memory.

Two modes, run by ``make bench``:

* **milter** (``--spawn`` starts a daemon on a free loopback port with the given config,
  ``--connect HOST:PORT [--pid PID]`` uses a running one): N concurrent connections, one
  SMTP transaction each, as Postfix sends them. CPU is the daemon's own (utime + stime of
  its process tree from /proc, so only known with ``--spawn`` or ``--pid``); peak RSS is
  its VmHWM, reset before each run. The client's own CPU per message is printed too: it
  shares the cores with the daemon, so it is kept small (a plain socket loop; each
  transaction encoded before the clock starts and written at once, which milterd's
  no-reply negotiation allows and Postfix does too).
* **in-process** (``--in-process``): the engine alone, no protocol, no sockets.
* **http** (``--http``, with ``--spawn`` or ``--connect`` to the scan API): the same
  messages and envelope as ``POST /checkv2``, one connection per message as ``rspamc``
  and Exim do, so the figures stand next to the milter path's.

Each mode runs ``--runs`` times (after one warm-up) and prints every run and the median.
Without ``--corpus`` a generated corpus is used (plain, HTML, multipart with attachments,
broken MIME, spammy), deterministic for a given ``--count``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h11
import trio

from engine import Config, Engine, ScanRequest
from milterd.mta import (
    OFFER_FRAME,
    QUIT_FRAME,
    MilterReply,
    SmtpEnvelope,
    encode_transaction,
    milter_transaction,
    split_for_milter,
)
from milterd.protocol import MilterProtocolError, NegotiateReply, Progress
from milterd.protocol.codec import decode_action

if TYPE_CHECKING:
    import argparse
    from collections.abc import Generator, Sequence

__all__ = ["add_arguments", "generate_corpus", "run_bench"]

_TICKS = os.sysconf("SC_CLK_TCK")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus", metavar="DIR", help="message files (recursively); default: generated"
    )
    parser.add_argument("--count", type=int, default=2000, help="generated messages (default 2000)")
    parser.add_argument(
        "--concurrency", "-n", type=int, default=32, help="concurrent milter connections"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="measured runs after one warm-up (default 3)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--spawn", action="store_true", help="start a daemon to measure (the default)"
    )
    mode.add_argument("--connect", metavar="HOST:PORT", help="measure a running daemon")
    mode.add_argument("--in-process", action="store_true", help="measure the engine alone")
    mode.add_argument(
        "--bayes",
        action="store_true",
        help="measure Bayes on --corpus with the configured store's backend, in a throw-away "
        "store: learn the first 60%% of each directory (spam: under a directory named spam*), "
        "classify the rest; learning rate, classification CPU, store size",
    )
    parser.add_argument("--pid", type=int, help="with --connect: the daemon's pid, for CPU and RSS")
    parser.add_argument(
        "--http",
        action="store_true",
        help="drive the HTTP scan API (POST /checkv2) instead of the milter protocol",
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="with --spawn: the daemon's scanning workers (milterd run --workers; "
        "default one per core; 0 for one process). Peak RSS is then the largest worker's",
    )


@dataclass(slots=True)
class RunFigures:
    mode: str
    messages: int
    errors: int
    wall_s: float
    msgs_per_s: float
    cpu_ms_per_msg: float | None
    client_cpu_ms_per_msg: float | None
    p50_ms: float
    p99_ms: float
    peak_rss_mib: float | None


def run_bench(engine: Engine, config: Config, args: argparse.Namespace) -> int:
    if getattr(args, "bayes", False):
        return run_bayes_bench(config, args)
    messages = _load_corpus(args.corpus) if args.corpus else generate_corpus(args.count)
    if not messages:
        print("milterd bench: no messages", file=sys.stderr)
        return 1
    if args.in_process:
        runs = [trio.run(_in_process, engine, messages) for _ in range(args.runs + 1)]
        return _report(runs[1:], args.json)
    drive = _http_run if args.http else _milter_run
    if args.connect:
        host, _, port = args.connect.rpartition(":")
        runs = [
            drive(host.strip("[]"), int(port), args.pid, messages, args.concurrency)
            for _ in range(args.runs + 1)
        ]
        return _report(runs[1:], args.json)
    with _spawned_daemon(config, getattr(args, "workers", None)) as daemon:
        port = daemon.http_port if args.http else daemon.port
        runs = [
            drive("127.0.0.1", port, daemon.pid, messages, args.concurrency)
            for _ in range(args.runs + 1)
        ]
    return _report(runs[1:], args.json)


def _report(runs: list[RunFigures], as_json: bool) -> int:
    for run in runs:
        print(json.dumps(asdict(run)) if as_json else _line("run   ", run))
    med = RunFigures(
        mode=runs[0].mode,
        messages=runs[0].messages,
        errors=max(r.errors for r in runs),
        wall_s=statistics.median(r.wall_s for r in runs),
        msgs_per_s=statistics.median(r.msgs_per_s for r in runs),
        cpu_ms_per_msg=_median_or_none([r.cpu_ms_per_msg for r in runs]),
        client_cpu_ms_per_msg=_median_or_none([r.client_cpu_ms_per_msg for r in runs]),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        peak_rss_mib=_median_or_none([r.peak_rss_mib for r in runs]),
    )
    print(json.dumps({"median": asdict(med)}) if as_json else _line("median", med))
    return 0 if med.errors == 0 else 1


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def _line(label: str, r: RunFigures) -> str:
    cpu = f"{r.cpu_ms_per_msg:.3f} ms" if r.cpu_ms_per_msg is not None else "n/a"
    rss = f"{r.peak_rss_mib:.1f} MiB" if r.peak_rss_mib is not None else "n/a"
    client = (
        f"  client {r.client_cpu_ms_per_msg:.3f} ms" if r.client_cpu_ms_per_msg is not None else ""
    )
    return (
        f"{label} {r.mode:<10} {r.messages} msgs  {r.msgs_per_s:8.1f} msg/s  CPU {cpu}/msg{client}  "
        f"p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms  peak RSS {rss}  errors {r.errors}"
    )


# -- the milter path -------------------------------------------------------------------


def _milter_run(
    host: str, port: int, pid: int | None, messages: list[bytes], concurrency: int
) -> RunFigures:
    plan = _milter_plan(host, port, messages)
    if pid is not None:
        _reset_peak_rss(pid)
    cpu_before = _tree_cpu(pid) if pid is not None else None
    client0, started = time.process_time(), time.perf_counter()
    latencies, errors = _drive(host, port, plan, concurrency)
    wall, client = time.perf_counter() - started, time.process_time() - client0
    cpu = (_tree_cpu(pid) - cpu_before) if pid is not None and cpu_before is not None else None
    return _figures(
        "milter",
        len(messages),
        errors,
        wall,
        latencies,
        cpu,
        _peak_rss_mib(pid) if pid is not None else None,
        client,
    )


@dataclass(slots=True)
class _MilterPlan:
    """Every message's conversation, encoded before the clock starts."""

    negotiated: bytes  # the filter's OPTNEG reply frame the transactions were encoded for
    transactions: list[bytes | None]  # CONNECT … end of message, per message
    prepared: list[tuple[list[tuple[str, str]], bytes]]  # for a connection off the plan
    envelopes: list[SmtpEnvelope]


def _milter_plan(host: str, port: int, messages: list[bytes]) -> _MilterPlan:
    """Ask the filter once how it negotiates, then encode each message for that answer.
    A filter that answers otherwise later, or wants replies before end of message, is
    still driven correctly, step by step (``milter_transaction``), only at more cost."""
    prepared = [split_for_milter(raw) for raw in messages]
    envelopes = [SmtpEnvelope(queue_id=f"B{index:08X}") for index in range(len(messages))]
    try:
        negotiated = _negotiation(host, port)
    except (OSError, ValueError):
        negotiated = b""  # every connection then takes the step-by-step way (or fails)
    transactions: list[bytes | None] = [None] * len(messages)
    if negotiated:
        transactions = [
            encode_transaction(headers, body, envelope, negotiated)
            for (headers, body), envelope in zip(prepared, envelopes, strict=True)
        ]
    return _MilterPlan(negotiated, transactions, prepared, envelopes)


def _negotiation(host: str, port: int) -> bytes:
    """The filter's OPTNEG reply frame to ``OFFER_FRAME``."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(OFFER_FRAME)
        data = b""
        while len(data) < 4 or len(data) < 4 + _LENGTH.unpack_from(data)[0]:
            chunk = sock.recv(65536)
            if not chunk:
                raise ValueError("the filter closed the connection while negotiating")
            data += chunk
        with contextlib.suppress(OSError):
            sock.sendall(QUIT_FRAME)
    if data[4:5] != b"O" or len(data) != 4 + _LENGTH.unpack_from(data)[0]:
        raise ValueError("not one OPTNEG reply frame")
    return data


_LENGTH = struct.Struct(">I")
# Filter replies at end of message: PROGRESS and modifications come before the one reply
# that ends it; of those, these are decisions (accept, continue, reject, tempfail,
# discard, reply code), the rest (shutdown, connection failure, skip) count as errors.
_NOT_FINAL = frozenset(b"phim+2-ebql")
_DECISIONS = frozenset(b"acrtdy")
# Where a connection stands; each driver reads in the stages of its own.
_CONNECTING, _WRITING, _NEGOTIATING, _ANSWERING, _STEPPING, _RESPONDING = range(6)
_TIMEOUT = 60.0


class _Conn:
    """One message's connection."""

    __slots__ = ("after", "buf", "deadline", "index", "out", "sock", "stage", "steps", "t0")

    def __init__(self, index: int, sock: socket.socket, t0: float) -> None:
        self.index = index
        self.sock = sock
        self.t0 = t0
        self.deadline = t0 + _TIMEOUT
        self.stage = _CONNECTING
        self.after = _CONNECTING  # the stage to go on to once ``out`` is written
        self.buf = b""
        self.out: memoryview | None = None  # still to write
        self.steps: Generator[bytes, bytes, tuple[MilterReply, bytes]] | None = None


class _Driver:
    """One connection per message, ``concurrency`` at a time, in a plain non-blocking
    socket loop, so the client takes as little as it can of the cores it shares with the
    daemon: everything a message sends is encoded before the run, and per message the
    loop does little more than the system calls. A driver says what to write once
    connected (``opened``) and what to do with what it reads (``received``)."""

    def __init__(self, host: str, port: int, count: int, concurrency: int) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        self._socket_args = (family, kind, proto)
        self._address = address
        self._concurrency = concurrency
        self._selector = selectors.DefaultSelector()
        self._pending = iter(range(count))
        self._active: dict[int, _Conn] = {}
        self.latencies: list[float] = []
        self.errors = 0

    def opened(self, conn: _Conn) -> None:
        raise NotImplementedError

    def received(self, conn: _Conn, data: bytes) -> None:
        raise NotImplementedError

    def run(self) -> tuple[list[float], int]:
        selector, active, clock = self._selector, self._active, time.perf_counter
        for _ in range(self._concurrency):
            self._start()
        next_sweep = clock() + 1.0
        while active:
            for key, _ in selector.select(1.0):
                conn = key.data
                try:
                    self._ready(conn)
                except (OSError, MilterProtocolError):
                    self.finish(conn, None, error=True)
                if conn.sock.fileno() < 0:  # finished: the next message takes its place
                    self._start()
            now = clock()
            if now >= next_sweep:
                next_sweep = now + 1.0
                for conn in [c for c in active.values() if c.deadline < now]:
                    self.finish(conn, None, error=True)
                    self._start()
        selector.close()
        return self.latencies, self.errors

    def _start(self) -> None:
        """Open the next message's connection, if any is left."""
        for index in self._pending:
            t0 = time.perf_counter()
            try:
                sock = socket.socket(*self._socket_args)
            except OSError:
                self.errors += 1
                self.latencies.append(time.perf_counter() - t0)
                continue
            conn = _Conn(index, sock, t0)
            sock.setblocking(False)
            try:
                err = sock.connect_ex(self._address)
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, os.strerror(err))
                self._selector.register(sock, selectors.EVENT_READ, conn)
                self._active[sock.fileno()] = conn
                try:  # on loopback the handshake is usually complete by now
                    self.opened(conn)
                except (BlockingIOError, InterruptedError):
                    self._selector.modify(sock, selectors.EVENT_WRITE, conn)
            except (OSError, MilterProtocolError):
                self.finish(conn, None, error=True)
                continue
            return

    def _ready(self, conn: _Conn) -> None:
        stage = conn.stage
        if stage == _WRITING:
            assert conn.out is not None
            self.write(conn, conn.out, conn.after)
        elif stage == _CONNECTING:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
            self.opened(conn)
        else:
            self.received(conn, conn.sock.recv(65536))

    def write(self, conn: _Conn, data: bytes | memoryview, then: int) -> None:
        """Write ``data``, then read in stage ``then``."""
        sent = conn.sock.send(data)
        if sent < len(data):
            if conn.out is None:
                self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
            conn.out = memoryview(data)[sent:]
            conn.stage, conn.after = _WRITING, then
            return
        if conn.out is not None:
            conn.out = None
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        conn.stage = then

    def finish(self, conn: _Conn, last: bytes | None, *, error: bool) -> None:
        """Write ``last`` (if it can), close, count."""
        sock = conn.sock
        if last:
            with contextlib.suppress(OSError):
                sock.send(last)
        self._active.pop(sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()
        self.latencies.append(time.perf_counter() - conn.t0)
        self.errors += error


class _MilterDriver(_Driver):
    """On the plan's way a message costs a connect, the offer, one read of the
    negotiation reply, one write of the whole transaction, the reads of the replies and
    QUIT. ``replies`` (for tests) collects what each message was answered."""

    def __init__(
        self,
        host: str,
        port: int,
        plan: _MilterPlan,
        concurrency: int,
        replies: dict[int, MilterReply] | None = None,
    ) -> None:
        super().__init__(host, port, len(plan.transactions), concurrency)
        self.plan = plan
        self.replies = replies

    def opened(self, conn: _Conn) -> None:
        self.write(conn, OFFER_FRAME, _NEGOTIATING)

    def received(self, conn: _Conn, data: bytes) -> None:
        stage = conn.stage
        if stage == _STEPPING:
            self._step_by_step(conn, data)
            return
        if not data:
            raise ConnectionError("the filter closed the connection without answering")
        if stage == _ANSWERING:
            conn.buf += data
            self._answered(conn)
            return
        # _NEGOTIATING: on the plan if the filter answers as it did before the run
        negotiated = self.plan.negotiated
        if conn.buf:
            data, conn.buf = conn.buf + data, b""
        if len(data) < len(negotiated) and negotiated.startswith(data):
            conn.buf = data  # the rest of the answer is still to come
            return
        transaction = self.plan.transactions[conn.index]
        if data == negotiated and transaction is not None:
            self.write(conn, transaction, _ANSWERING)
        else:
            self._step_by_step(conn, data)

    def _answered(self, conn: _Conn) -> None:
        """Look through the replies to the transaction for the one that ends it."""
        buf = conn.buf
        pos, size = 0, len(buf)
        while size - pos >= 5:
            end = pos + 4 + _LENGTH.unpack_from(buf, pos)[0]
            if end > size:
                return
            code = buf[pos + 4]
            if code not in _NOT_FINAL:
                if self.replies is not None:
                    self.replies[conn.index] = _decoded(self.plan.negotiated + buf[:end])
                self.finish(conn, QUIT_FRAME, error=code not in _DECISIONS)
                return
            pos = end

    def _step_by_step(self, conn: _Conn, data: bytes) -> None:
        """Off the plan: ``milter_transaction`` from here on."""
        steps = conn.steps
        if steps is None:
            headers, body = self.plan.prepared[conn.index]
            envelope = self.plan.envelopes[conn.index]
            conn.steps = steps = milter_transaction(headers, body, envelope)
            next(steps)  # OFFER_FRAME, already written
        try:
            out = steps.send(data)
        except StopIteration as done:
            reply, last = done.value
            if self.replies is not None:
                self.replies[conn.index] = reply
            self.finish(conn, last, error=reply.final is None)
            return
        if out:
            self.write(conn, out, _STEPPING)
        else:
            conn.stage = _STEPPING


def _drive(
    host: str,
    port: int,
    plan: _MilterPlan,
    concurrency: int,
    replies: dict[int, MilterReply] | None = None,
) -> tuple[list[float], int]:
    """Every message of ``plan`` over its own milter connection; latencies and errors."""
    return _MilterDriver(host, port, plan, concurrency, replies).run()


def _decoded(frames: bytes) -> MilterReply:
    """A negotiation reply and the replies to a transaction, as ``milter_exchange`` would
    return them."""
    reply = MilterReply()
    pos = 0
    while pos < len(frames):
        end = pos + 4 + _LENGTH.unpack_from(frames, pos)[0]
        code = frames[pos + 4]
        action = decode_action(code, frames[pos + 5 : end])
        pos = end
        if isinstance(action, NegotiateReply):
            reply.negotiated = action
        elif code in _DECISIONS:
            reply.final = action
        elif not isinstance(action, Progress):
            reply.edits.append(action)
    return reply


class _spawned_daemon:
    """A daemon on free loopback ports (milter and scan API; no controller) with this
    config; stopped with SIGTERM on exit."""

    def __init__(self, config: Config, workers: int | None = None) -> None:
        self.config_dir = str(config.config_dir) if config.config_dir else "/nonexistent/milterd"
        self.workers = workers

    def __enter__(self) -> _spawned_daemon:
        port, self.http_port = _free_port(), _free_port()
        self.port = port
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "milterd",
                "run",
                "--config-dir",
                self.config_dir,
                "--listen",
                f"127.0.0.1:{port}",
                "--http-listen",
                f"127.0.0.1:{self.http_port}",
                "--controller-listen",
                "off",
                "--log-level",
                "warning",
                *(["--workers", str(self.workers)] if self.workers is not None else []),
            ],
        )
        deadline = time.monotonic() + 30
        while True:  # an external process: wait, bounded, for its port to answer
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not start; see its log above") from None
                time.sleep(0.05)
        # Under the supervisor the port is bound before the workers serve: wait for them
        # all (supervisor + N scanning + controller), or the first run measures fewer.
        if self.workers != 0:
            want = (self.workers or len(os.sched_getaffinity(0))) + 2
            while len(_process_tree(self.proc.pid)) < want and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # the last worker builds its engine after the fork
        self.pid = self.proc.pid
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the HTTP path -----------------------------------------------------------------------


def _http_run(
    host: str, port: int, pid: int | None, messages: list[bytes], concurrency: int
) -> RunFigures:
    requests = _http_requests(host, messages)
    if pid is not None:
        _reset_peak_rss(pid)
    cpu_before = _tree_cpu(pid) if pid is not None else None
    client0, started = time.process_time(), time.perf_counter()
    latencies, errors = _drive_http(host, port, requests, concurrency)
    wall, client = time.perf_counter() - started, time.process_time() - client0
    cpu = (_tree_cpu(pid) - cpu_before) if pid is not None and cpu_before is not None else None
    rss = _peak_rss_mib(pid) if pid is not None else None
    return _figures("http", len(messages), errors, wall, latencies, cpu, rss, client)


def _http_requests(host: str, messages: list[bytes]) -> list[bytes]:
    """Each message as ``POST /checkv2`` with the milter path's envelope, as
    ``milterd.client.http_request`` writes it (``Connection: close``)."""
    env = SmtpEnvelope()
    envelope = [
        ("IP", env.client_addr),
        ("Hostname", env.client_name),
        ("Helo", env.helo),
        ("From", env.mail_from),
        *(("Rcpt", r) for r in env.rcpts),
    ]
    out = []
    for index, raw in enumerate(messages):
        conn = h11.Connection(h11.CLIENT)
        headers = [
            ("Host", host),
            ("User-Agent", "milterd"),
            ("Content-Length", str(len(raw))),
            ("Connection", "close"),
            *envelope,
            ("Queue-Id", f"B{index:08X}"),
        ]
        data = conn.send(h11.Request(method="POST", target="/checkv2", headers=headers))
        data += conn.send(h11.Data(data=raw)) if raw else b""
        data += conn.send(h11.EndOfMessage())
        out.append(data)
    return out


class _HttpDriver(_Driver):
    """A message costs a connect, one write of the request, the reads of the response
    up to the server's close, and a look at its status line."""

    def __init__(self, host: str, port: int, requests: list[bytes], concurrency: int) -> None:
        super().__init__(host, port, len(requests), concurrency)
        self.requests = requests

    def opened(self, conn: _Conn) -> None:
        self.write(conn, self.requests[conn.index], _RESPONDING)

    def received(self, conn: _Conn, data: bytes) -> None:
        if data:
            conn.buf += data
            return
        status = conn.buf[:13]  # b"HTTP/1.1 200 "
        self.finish(conn, None, error=not (status[:7] == b"HTTP/1." and status[8:13] == b" 200 "))


def _drive_http(
    host: str, port: int, requests: list[bytes], concurrency: int
) -> tuple[list[float], int]:
    """Every request over its own connection; latencies and errors (not 200 OK)."""
    return _HttpDriver(host, port, requests, concurrency).run()


def _tree_cpu(pid: int) -> float:
    total = 0
    for proc in _process_tree(pid):
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def _process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        proc = todo.pop()
        out.append(proc)
        try:
            for task in os.listdir(f"/proc/{proc}/task"):
                todo += [
                    int(c) for c in Path(f"/proc/{proc}/task/{task}/children").read_text().split()
                ]
        except OSError:
            pass
    return out


def _reset_peak_rss(pid: int) -> None:
    for proc in _process_tree(pid):
        with contextlib.suppress(OSError):
            Path(f"/proc/{proc}/clear_refs").write_text("5")


def _peak_rss_mib(pid: int) -> float | None:
    peaks = []
    for proc in _process_tree(pid):
        try:
            lines = Path(f"/proc/{proc}/status").read_text().splitlines()
            peaks += [int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:")]
        except OSError:
            pass
    return max(peaks) if peaks else None


# -- in-process ----------------------------------------------------------------------------


async def _in_process(engine: Engine, messages: list[bytes]) -> RunFigures:
    latencies = []
    cpu0, started = time.process_time(), time.perf_counter()
    for raw in messages:
        t0 = time.perf_counter()
        await engine.scan(ScanRequest(raw=raw))
        latencies.append(time.perf_counter() - t0)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return _figures(
        "in-process", len(messages), 0, wall, latencies, cpu, _peak_rss_mib(os.getpid())
    )


def _figures(
    mode: str,
    n: int,
    errors: int,
    wall: float,
    latencies: Sequence[float],
    cpu_s: float | None,
    rss: float | None,
    client_cpu_s: float | None = None,
) -> RunFigures:
    ordered = sorted(latencies)

    def percentile_ms(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    ok = n - errors
    return RunFigures(
        mode,
        n,
        errors,
        round(wall, 3),
        round(ok / wall, 1),
        round(1000 * cpu_s / max(ok, 1), 3) if cpu_s is not None else None,
        round(1000 * client_cpu_s / n, 3) if client_cpu_s is not None else None,
        percentile_ms(0.50),
        percentile_ms(0.99),
        round(rss, 1) if rss is not None else None,
    )


# -- corpora ---------------------------------------------------------------------------


def _load_corpus(directory: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()]


_WORDS = [
    "meeting",
    "report",
    "invoice",
    "project",
    "update",
    "schedule",
    "offer",
    "price",
    "free",
    "money",
    "click",
    "account",
    "verify",
    "urgent",
    "winner",
    "team",
    "lunch",
    "release",
    "notes",
    "patch",
    "review",
    "build",
    "server",
    "customer",
    "order",
    "shipping",
    "delivery",
    "password",
    "security",
    "newsletter",
    "unsubscribe",
]


def generate_corpus(count: int, seed: int = 42) -> list[bytes]:
    """Deterministic messages of the shapes real mail has, a few KB each."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        kind = i % 5
        text = "\r\n".join(
            " ".join(rnd.choices(_WORDS, k=rnd.randint(8, 16))) for _ in range(rnd.randint(5, 60))
        )
        subject = " ".join(rnd.choices(_WORDS, k=rnd.randint(2, 7)))
        if kind == 4:
            subject = subject.upper()
        head = (
            f"Received: from mail{i % 50}.sender.test (mail{i % 50}.sender.test [198.51.100.{i % 250 + 1}])\r\n"
            f"\tby mx.example.test with ESMTPS id {i:08X}; Fri, 20 Nov 2026 10:00:00 +0000\r\n"
            f"From: Sender {i % 50} <user{i % 50}@sender{i % 7}.test>\r\n"
            f"To: rcpt@example.test\r\nSubject: {subject}\r\n"
            f"Date: Fri, 20 Nov 2026 10:{i % 60:02d}:00 +0000\r\n"
            f"Message-ID: <{i}.{rnd.getrandbits(32):08x}@sender{i % 7}.test>\r\nMIME-Version: 1.0\r\n"
        )
        if kind in (0, 4):
            msg = head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n"
        elif kind == 1:
            html = "<html><body><p>" + text.replace("\r\n", "</p><p>") + "</p></body></html>"
            msg = (
                head + 'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n--b1\r\n'
                "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n--b1\r\n"
                "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n--b1--\r\n"
            )
        elif kind == 2:
            blob = "\r\n".join("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 2 for _ in range(40))
            msg = (
                head + 'Content-Type: multipart/mixed; boundary="m1"\r\n\r\n--m1\r\n'
                "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n--m1\r\n"
                'Content-Type: application/pdf; name="report.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
                'Content-Disposition: attachment; filename="report.pdf"\r\n\r\n'
                + blob
                + "\r\n--m1--\r\n"
            )
        else:
            msg = (
                head + 'Content-Type: multipart/mixed; boundary="broken"\r\n\r\n--broken\r\n'
                "Content-Type: text/html\r\n\r\n<b>" + text + "</b>\r\n"
            )
        out.append(msg.encode("utf-8"))
    return out


# -- Bayes -------------------------------------------------------------------------------


@dataclass(slots=True)
class BayesFigures:
    backend: str
    learned: int
    learn_msgs_per_s: float
    learn_cpu_ms_per_msg: float
    classified: int
    classify_cpu_ms_median: float
    classify_cpu_ms_p90: float
    classify_wall_ms_median: float
    store_mb_per_1000_learned: float
    keys_per_1000_learned: int | None


def run_bayes_bench(config: Config, args: argparse.Namespace) -> int:
    """``--bayes``: learning rate, classification CPU (tokenize + one read of the token
    counts + the math, per message; the MIME parsing every check shares is done before the
    clock starts) and store size, on a throw-away store of the configured backend: an
    SQLite file in a scratch directory, or the configured Redis under a prefix of its own
    whose keys are removed afterwards."""
    if not args.corpus:
        print("milterd bench --bayes: needs --corpus DIR", file=sys.stderr)
        return 1
    train, test = _bayes_split(Path(args.corpus))
    if not train or not test:
        print("milterd bench --bayes: the corpus needs spam and ham to learn", file=sys.stderr)
        return 1
    import tempfile

    with tempfile.TemporaryDirectory(prefix="milterd-bench-") as scratch:
        config.section("options")["data_dir"] = scratch
        redis_prefix = None
        if config.section("store")["backend"] == "redis":
            redis = config.section("redis")
            redis_prefix = f"{redis['prefix']}bench-{os.getpid()}-{int(time.time())}:"
            redis["prefix"] = redis_prefix
        else:
            config.section("store")["path"] = "bench.sqlite"
        try:
            figures = trio.run(_bayes_bench, config, train, test, args.runs, Path(scratch))
        finally:
            if redis_prefix is not None:
                _unlink_prefix(str(config.section("redis")["url"]), redis_prefix)
    if args.json:
        print(json.dumps(asdict(figures)))
    else:
        f = figures
        keys = f" ({f.keys_per_1000_learned} keys)" if f.keys_per_1000_learned else ""
        print(
            f"bayes {f.backend}: learned {f.learned} at {f.learn_msgs_per_s:.1f} msg/s "
            f"({f.learn_cpu_ms_per_msg:.2f} ms CPU each); classified {f.classified}: "
            f"CPU median {f.classify_cpu_ms_median:.3f} ms, p90 {f.classify_cpu_ms_p90:.3f} ms, "
            f"wall median {f.classify_wall_ms_median:.3f} ms; store "
            f"{f.store_mb_per_1000_learned:.1f} MB per 1000 learned{keys}"
        )
    return 0


def _bayes_split(root: Path) -> tuple[list[tuple[Path, bool]], list[Path]]:
    """The first 60% of each directory's files (by name) to learn, the rest to classify."""
    by_dir: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            by_dir.setdefault(path.parent, []).append(path)
    train: list[tuple[Path, bool]] = []
    test: list[Path] = []
    for directory, files in by_dir.items():
        parts = directory.relative_to(root).parts if directory != root else ()
        is_spam = any(part.lower().startswith("spam") for part in parts)
        cut = len(files) * 6 // 10
        train.extend((path, is_spam) for path in files[:cut])
        test.extend(files[cut:])
    if {is_spam for _, is_spam in train} != {True, False}:
        return [], []
    return train, test


async def _bayes_bench(
    config: Config, train: list[tuple[Path, bool]], test: list[Path], runs: int, scratch: Path
) -> BayesFigures:
    from engine.mime.message import ParsedMessage
    from engine.modules.bayes import Bayes
    from milterd.corpustest import envelope_from_received

    backend = str(config.section("store")["backend"])
    engine = Engine.from_config(config)
    bayes = next((m for m in engine.modules if isinstance(m, Bayes)), None)
    if bayes is None:
        await engine.aclose()
        raise SystemExit("milterd bench --bayes: [bayes] is disabled")
    memory_before = _redis_memory(config) if backend == "redis" else 0
    learned = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for path, is_spam in train:
        raw = path.read_bytes()
        request = ScanRequest(envelope=envelope_from_received(raw), raw=raw)
        learned += bool(await engine.learn(request, is_spam=is_spam))
    learn_wall, learn_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    keys: int | None = None
    if backend == "redis":
        size = _redis_memory(config) - memory_before
        keys = len({key async for key in engine.store.scan("")})
    messages = []
    for path in test:
        raw = path.read_bytes()
        message = ParsedMessage.from_bytes(raw)
        for name in ("text_parts", "subject", "urls", "emails", "attachments", "defects"):
            getattr(message, name, None)  # what the other checks parse anyway
        messages.append((message, envelope_from_received(raw)))
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(max(runs, 1) + 1):  # the first pass warms the caches
        cpu, wall = [], []
        for message, envelope in messages:
            c0, w0 = time.process_time(), time.perf_counter()
            owner = bayes.owner(envelope)
            tokens = list(bayes.tokenizer.tokenize(message, envelope))
            learns = await bayes.learn_counts(owner)
            await bayes._classify(tokens, owner, learns)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    await engine.aclose()
    if backend != "redis":
        size = await trio.to_thread.run_sync(_sqlite_size, scratch)
    cpu.sort()
    per_thousand = 1000 / max(learned, 1)
    return BayesFigures(
        backend=backend,
        learned=learned,
        learn_msgs_per_s=round(len(train) / learn_wall, 1),
        learn_cpu_ms_per_msg=round(1000 * learn_cpu / len(train), 2),
        classified=len(messages),
        classify_cpu_ms_median=round(1000 * statistics.median(cpu), 3),
        classify_cpu_ms_p90=round(1000 * cpu[int(0.9 * (len(cpu) - 1))], 3),
        classify_wall_ms_median=round(1000 * statistics.median(wall), 3),
        store_mb_per_1000_learned=round(size * per_thousand / 1e6, 1),
        keys_per_1000_learned=None if keys is None else round(keys * per_thousand),
    )


def _sqlite_size(scratch: Path) -> int:
    return sum(p.stat().st_size for p in scratch.glob("bench.sqlite*"))


def _redis_memory(config: Config) -> int:
    import redis

    client = redis.Redis.from_url(str(config.section("redis")["url"]))
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def _unlink_prefix(url: str, prefix: str) -> None:
    """Remove the bench's keys, a thousand to a command (UNLINK frees in the background)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix.replace("*", "\\*") + "*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    finally:
        client.close()
