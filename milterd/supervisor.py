"""The main process of ``milterd run``: binds the sockets, forks the workers, keeps them
running, reloads by replacing them, drains them on the way out. It never scans.

Theory of operation:

* **Why a plain loop and ``os.fork``.** The supervisor is a ``select`` loop over a signal
  wakeup pipe and the workers' readiness pipes, with no trio and no threads: ``fork`` is
  only safe from a thread-free process (a lock held by another thread stays locked in the
  child forever), and trio, started *in* the child after the fork, then owns nothing
  inherited. ``multiprocessing`` would add its own helper threads (resource tracker,
  queue feeders) and pickling, for nothing we need: the listening sockets reach the
  workers by plain fd inheritance across ``fork``.
* **One listening socket, shared.** The milter and scan API sockets are bound once, here,
  and every scanning worker accepts on the same socket (the kernel gives each connection
  to one of them). Not ``SO_REUSEPORT`` per worker: connections queued on a killed
  worker's own socket would be reset, while on a shared socket they wait for the others.
* **Workers** (``milterd.worker``): N scanning workers and one controller worker. A
  worker that dies is restarted with backoff (0.5 s doubling to 30 s, reset once it ran
  a minute), and the log says why (exit status or signal).
* **SIGHUP**: a *validator* child loads the configuration and builds an engine from it,
  then exits 0, or 78 after logging every problem (file, line, key). Refused: nothing
  changes. Accepted: a new generation of workers starts on it; once every one of them
  serves, the old generation gets SIGTERM and drains (finishes the messages it holds,
  up to ``[workers] drain_timeout``). Old and new serve side by side meanwhile, so no
  connection ever finds nobody accepting.
* **SIGTERM/SIGINT**: every worker gets SIGTERM (stop accepting, drain); the supervisor
  exits 0 when they are gone, SIGKILLing any still there 5 s after the drain deadline.
* **SIGUSR1**: reopen the log file, here and in every worker.
* Privileges: when started as root with ``[workers] user``, the supervisor gives unix
  sockets to that user and drops to it right after binding, before any fork.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from engine import ConfigError
from engine.config import Key, Section, at_least
from milterd.http.cluster import send_report
from milterd.logging import reopen_logs
from milterd.server import _clear_socket_path, parse_listen
from milterd.worker import EX_CONFIG, WorkerSpec, run_worker

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from engine import Config

__all__ = ["WORKERS_SECTION", "Supervisor", "bind_sockets", "default_worker_count"]

log = logging.getLogger(__name__)

WORKERS_SECTION = Section(
    {
        "count": Key(
            (int,), 0, "Scanning worker processes; 0: one per CPU core.", check=at_least(0)
        ),
        "user": Key((str,), "", "User to run as after binding, when started as root."),
        "group": Key((str,), "", "Group to run as (default: the user's primary group)."),
        "drain_timeout": Key(
            (float,),
            30.0,
            "Seconds a stopping or replaced worker has to finish the messages it holds.",
            check=at_least(0.0),
        ),
        "start_timeout": Key(
            (float,),
            60.0,
            "Seconds a new generation of workers has to start serving at a reload.",
            check=at_least(1.0),
        ),
    },
    "Worker processes of `milterd run` (the supervisor).",
)

_KILL_GRACE: Final = 5.0
_BACKOFF_FIRST: Final = 0.5
_BACKOFF_MAX: Final = 30.0
_HEALTHY_AFTER: Final = 60.0  # a worker that ran this long resets its slot's backoff
_REPORT_EVERY: Final = 2.0
_MAX_ERRORS: Final = 20


def default_worker_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def bind_sockets(specs: Sequence[str], unix_mode: int) -> list[socket.socket]:
    """Bind and listen on every address (as ``milterd.server.open_listeners`` does, with
    plain sockets, before any event loop exists)."""
    bound: list[socket.socket] = []
    try:
        for spec in specs:
            host, where = parse_listen(spec)
            if host == "unix":
                path = str(where)
                _clear_socket_path(path)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                bound.append(sock)
                sock.bind(path)
                os.chmod(path, unix_mode)
                sock.listen(socket.SOMAXCONN)
                continue
            infos = socket.getaddrinfo(
                host or None, int(where), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            for family, kind, proto, _, address in infos:
                sock = socket.socket(family, kind, proto)
                bound.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(socket.SOMAXCONN)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return f"killed by signal {name}"
    code = os.waitstatus_to_exitcode(status)
    if code == EX_CONFIG:
        return "exited with status 78 (configuration refused)"
    return f"exited with status {code}"


@dataclass(slots=True)
class _Child:
    pid: int
    kind: str
    slot: int
    generation: int
    ready_fd: int | None
    started: float = field(default_factory=time.time)
    ready: bool = False
    retiring: bool = False
    kill_at: float | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}#{self.slot} (pid {self.pid}, generation {self.generation})"


@dataclass(slots=True)
class _Slot:
    restarts: int = 0
    failures: int = 0  # consecutive quick deaths: the backoff exponent
    restart_at: float | None = None


class Supervisor:
    """See the module docstring. ``load_config`` reads the configuration directory afresh
    (at start and at every reload; a generation's workers all run on what it read)."""

    def __init__(
        self,
        load_config: Callable[[], Config],
        *,
        workers: int,
        milter: Sequence[socket.socket],
        scan: Sequence[socket.socket],
        controller: Sequence[socket.socket],
        drain_seconds: float = 30.0,
        start_timeout: float = 60.0,
    ) -> None:
        self.load_config = load_config
        self.count = workers
        self.milter = tuple(milter)
        self.scan = tuple(scan)
        self.controller = tuple(controller)
        self.drain_seconds = drain_seconds
        self.start_timeout = start_timeout
        self.generation = 0
        self.reloads = 0
        self.started = time.time()
        self.children: dict[int, _Child] = {}
        self.slots: dict[tuple[str, int], _Slot] = {}
        self.errors: list[dict[str, object]] = []
        self._validator: int | None = None
        # A SIGHUP during a reload: the files may have changed since that reload read them
        # (two controller saves in a row), so read them again once it is over.
        self._reload_again = False
        self._candidate: Config | None = None  # read, not yet validated
        self._configs: dict[int, Config] = {}  # generation → the configuration it runs
        self._validating_startup = False
        self._pending: int | None = None  # the generation starting at a reload
        self._pending_deadline = 0.0
        self._stopping = False
        self._stop_deadline = 0.0
        self._signals: list[int] = []
        self._report_due = 0.0
        self._reports_out, self._reports_in = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for end in (self._reports_out, self._reports_in):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean drain, 1 when it cannot start."""
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGCHLD, self._on_signal)  # only to wake the loop
        log.info(
            "supervisor (pid %d): %d scanning worker%s and a controller",
            os.getpid(),
            self.count,
            "" if self.count == 1 else "s",
        )
        self._validating_startup = True
        try:
            if not self._read_candidate():
                return 1
            self._validator = self._fork_validator()
            return self._loop()
        finally:
            signal.set_wakeup_fd(-1)
            self._cleanup()

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            self._signals.append(signum)

    def _loop(self) -> int:
        while True:
            now = time.monotonic()
            readable = [self._wake_r, *(c.ready_fd for c in self.children.values() if c.ready_fd)]
            ready: list[int] = []
            with contextlib.suppress(InterruptedError, BlockingIOError):
                ready, _, _ = select.select(readable, [], [], self._timeout(now))
                if self._wake_r in ready:
                    with contextlib.suppress(InterruptedError, BlockingIOError):
                        while os.read(self._wake_r, 512):
                            pass
            self._handle_signals()
            self._reap()
            for child in list(self.children.values()):
                if child.ready_fd is not None and child.ready_fd in ready:
                    self._read_ready(child)
            now = time.monotonic()
            self._check_pending(now)
            if self._reload_again and self._validator is None and self._pending is None:
                self._reload_again = False
                self._reload()
            self._restart_due(now)
            self._kill_overdue(now)
            if self._stopping and not self.children and self._validator is None:
                log.info("supervisor: all workers stopped")
                return 0
            if self._startup_failed:
                return 1
            if now >= self._report_due:
                self._report()

    _startup_failed = False

    def _timeout(self, now: float) -> float:
        due = [self._report_due]
        due += [s.restart_at for s in self.slots.values() if s.restart_at is not None]
        due += [c.kill_at for c in self.children.values() if c.kill_at is not None]
        if self._pending is not None:
            due.append(self._pending_deadline)
        return max(0.0, min(min(due) - now, 1.0))

    # -- signals -------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._stop(signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                self._reload()
            elif signum == signal.SIGUSR1:
                reopen_logs()
                for child in self.children.values():
                    _kill(child.pid, signal.SIGUSR1)

    def _stop(self, why: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info(
            "%s: stopping; workers finish their messages for up to %.0fs",
            why,
            self.drain_seconds,
        )
        for sock in (*self.milter, *self.scan, *self.controller):
            sock.close()  # the workers hold their own copies until they drain
        for slot in self.slots.values():
            slot.restart_at = None
        for child in self.children.values():
            self._retire(child)
        if self._validator is not None:
            _kill(self._validator, signal.SIGKILL)

    def _reload(self) -> None:
        if self._stopping:
            return
        if self._validator is not None or self._pending is not None:
            if not self._reload_again:
                log.info("SIGHUP: a reload is under way; another follows it")
            self._reload_again = True
            return
        log.info("SIGHUP: checking the configuration")
        if not self._read_candidate():
            self._error(
                f"reload refused; still serving with configuration generation {self.generation}"
            )
            return
        self._validator = self._fork_validator()

    # -- children ------------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self._validator:
                self._validator = None
                self._validated(os.waitstatus_to_exitcode(status) == 0)
                continue
            child = self.children.pop(pid, None)
            if child is not None:
                self._child_exited(child, status)

    def _child_exited(self, child: _Child, status: int) -> None:
        if child.ready_fd is not None:
            os.close(child.ready_fd)
            child.ready_fd = None
        why = describe_status(status)
        self._report_due = 0.0
        if child.retiring:
            clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            (log.info if clean else log.warning)("worker %s %s (drained)", child.name, why)
            return
        if child.generation == self._pending:
            self._error(f"reload: new worker {child.name} {why} before it served")
            self._abort_pending()
            return
        if self.generation == 0:  # the first generation never came up: give up
            self._error(f"worker {child.name} {why} at start-up")
            self._startup_failed = True
            return
        slot = self.slots.setdefault((child.kind, child.slot), _Slot())
        lived = time.time() - child.started
        slot.failures = 0 if lived >= _HEALTHY_AFTER else slot.failures + 1
        delay = min(_BACKOFF_FIRST * 2 ** max(slot.failures - 1, 0), _BACKOFF_MAX)
        slot.restart_at = time.monotonic() + delay
        self._error(
            f"worker {child.name} {why} after {lived:.1f}s; restarting in {delay:.1f}s",
            level=logging.WARNING if "SIGKILL" in why or "SIGTERM" in why else logging.ERROR,
        )

    def _read_ready(self, child: _Child) -> None:
        assert child.ready_fd is not None
        try:
            data = os.read(child.ready_fd, 16)
        except OSError:
            data = b""
        os.close(child.ready_fd)
        child.ready_fd = None
        if data.startswith(b"R"):
            child.ready = True
            self._report_due = 0.0
            log.debug("worker %s serves", child.name)

    def _spawn(self, kind: str, slot: int, generation: int) -> None:
        ready_r, ready_w = os.pipe()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its life is tested end to end
            code = 70
            try:
                os.close(ready_r)
                code = self._child_main(kind, slot, generation, ready_w)
            except BaseException:
                log.exception("worker %s#%d failed", kind, slot)
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(ready_w)
        child = _Child(pid, kind, slot, generation, ready_r)
        self.children[pid] = child
        log.info("started worker %s", child.name)

    def _child_main(self, kind: str, slot: int, generation: int, ready_w: int) -> int:
        self._forget_in_child()
        scanning = kind == "scan"
        keep_reports = self._reports_out if scanning else self._reports_in
        (self._reports_in if scanning else self._reports_out).close()
        for sock in self.controller if scanning else (*self.milter, *self.scan):
            sock.close()
        spec = WorkerSpec(
            kind=kind,
            slot=slot,
            generation=generation,
            config=self._configs[generation],
            milter=self.milter if scanning else (),
            scan=self.scan if scanning else (),
            controller=() if scanning else self.controller,
            reports=keep_reports,
            drain_seconds=self.drain_seconds,
            load_config=self.load_config,
            start_timeout=self.start_timeout,
        )
        return run_worker(spec, ready_w)

    def _forget_in_child(self) -> None:
        """In a fresh child: the supervisor's signal plumbing and pipes are not its own."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for other in self.children.values():
            if other.ready_fd is not None:
                os.close(other.ready_fd)

    def _fork_validator(self) -> int:
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 70
            try:
                self._forget_in_child()
                code = self._validate()
            except BaseException:
                log.exception("configuration check failed")
            finally:
                logging.shutdown()
                os._exit(code)
        return pid

    def _read_candidate(self) -> bool:
        """Read the configuration directory here (parsing only: no engine, no thread), so
        that every worker of a generation, restarts included, runs on the very same
        snapshot, whatever is edited on disk later."""
        what = "configuration refused" if self._validating_startup else "reload"
        try:
            self._candidate = self.load_config()
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s: %s", what, problem)
            self._candidate = None
            return False
        return True

    def _validate(self) -> int:
        """In the validator child: build an engine (the checks only an engine makes: the
        symbol registry, composites, rule files) from the candidate, then throw it away."""
        from engine import Engine

        signal.signal(signal.SIGINT, signal.SIG_DFL)
        what = "configuration refused" if self._validating_startup else "reload"
        assert self._candidate is not None
        try:
            Engine.from_config(self._candidate)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s: %s", what, problem)
            return EX_CONFIG
        return 0

    def _validated(self, ok: bool) -> None:
        if self._stopping:
            return
        if self._validating_startup:
            self._validating_startup = False
            if not ok:
                self._error("the configuration is refused (see above); not starting")
                self._startup_failed = True
                return
            self._start_generation(1)
            return
        if not ok:
            self._error(
                f"reload refused; still serving with configuration generation {self.generation}"
            )
            return
        self._start_generation(self.generation + 1)

    def _start_generation(self, generation: int) -> None:
        assert self._candidate is not None
        self._configs[generation], self._candidate = self._candidate, None
        self._pending = generation
        self._pending_deadline = time.monotonic() + self.start_timeout
        for slot in range(self.count):
            self._spawn("scan", slot, generation)
        self._spawn("controller", 0, generation)

    def _check_pending(self, now: float) -> None:
        if self._pending is None or self._stopping:
            return
        new = [c for c in self.children.values() if c.generation == self._pending]
        if new and all(c.ready for c in new) and len(new) == self.count + 1:
            old = [c for c in self.children.values() if c.generation < self._pending]
            first = self.generation == 0
            self.generation, self._pending = self._pending, None
            for slot in self.slots.values():
                slot.restart_at = None  # a restart due now would start an old generation
            for child in old:
                self._retire(child)
            # Older generations are never started again (restarts use the current one).
            self._configs = {g: c for g, c in self._configs.items() if g >= self.generation}
            if first:
                log.info("serving: %d scanning workers and a controller", self.count)
            else:
                self.reloads += 1
                log.info(
                    "configuration reloaded: generation %d serves; %d old worker%s draining",
                    self.generation,
                    len(old),
                    "" if len(old) == 1 else "s",
                )
            self._report_due = 0.0
        elif now >= self._pending_deadline:
            self._error(f"reload: the new workers did not start within {self.start_timeout:.0f}s")
            self._abort_pending()

    def _abort_pending(self) -> None:
        if self._pending is None:
            return
        for child in self.children.values():
            if child.generation == self._pending:
                self._retire(child)
        self._configs.pop(self._pending, None)
        if self.generation == 0:
            self._startup_failed = True
        else:
            self._error(
                f"reload abandoned; still serving with configuration generation {self.generation}"
            )
        self._pending = None

    def _retire(self, child: _Child) -> None:
        if child.retiring:
            return
        child.retiring = True
        child.kill_at = time.monotonic() + self.drain_seconds + _KILL_GRACE
        _kill(child.pid, signal.SIGTERM)

    def _restart_due(self, now: float) -> None:
        if self._stopping:
            return
        for (kind, index), slot in self.slots.items():
            if slot.restart_at is not None and now >= slot.restart_at:
                slot.restart_at = None
                slot.restarts += 1
                self._spawn(kind, index, self.generation)

    def _kill_overdue(self, now: float) -> None:
        for child in self.children.values():
            if child.kill_at is not None and now >= child.kill_at:
                child.kill_at = None
                log.warning("worker %s did not finish its drain: SIGKILL", child.name)
                _kill(child.pid, signal.SIGKILL)

    # -- what the controller learns ------------------------------------------------------------

    def _error(self, message: str, level: int = logging.ERROR) -> None:
        log.log(level, "%s", message)
        self.errors.append(
            {
                "ts": round(time.time(), 3),
                "type": logging.getLevelName(level).lower(),
                "pid": os.getpid(),
                "module": __name__,
                "message": message,
            }
        )
        del self.errors[:-_MAX_ERRORS]
        self._report_due = 0.0

    def _report(self) -> None:
        self._report_due = time.monotonic() + _REPORT_EVERY
        workers = [
            {
                "pid": c.pid,
                "kind": c.kind,
                "slot": c.slot,
                "generation": c.generation,
                "started": round(c.started, 3),
                "state": "draining" if c.retiring else "serving" if c.ready else "starting",
                "restarts": self.slots.get((c.kind, c.slot), _Slot()).restarts,
            }
            for c in sorted(self.children.values(), key=lambda c: (c.kind, c.slot, c.pid))
        ]
        send_report(
            self._reports_out,
            {
                "type": "supervisor",
                "pid": os.getpid(),
                "started": self.started,
                "generation": self.generation,
                "reloads": self.reloads,
                "restarts": sum(s.restarts for s in self.slots.values()),
                "workers": workers,
                "last_errors": list(reversed(self.errors)),
            },
        )

    def _cleanup(self) -> None:
        for child in self.children.values():
            _kill(child.pid, signal.SIGKILL)
        for sock in (*self.milter, *self.scan, *self.controller):
            if sock.family == socket.AF_UNIX and sock.fileno() != -1:
                path = sock.getsockname()
                sock.close()
                if isinstance(path, str) and path:
                    # Gone already, or (after dropping privileges) in a directory we may
                    # no longer write: the next start removes a stale socket anyway.
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            else:
                sock.close()


def drop_privileges(user: str, group: str, unix_paths: Sequence[str]) -> None:
    """As root with a ``user``: hand the unix sockets to it, then become it for good."""
    if os.getuid() != 0 or not user:
        return
    entry = pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    for path in unix_paths:
        os.chown(path, entry.pw_uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(entry.pw_uid)
    log.info("running as %s (uid %d, gid %d)", user, entry.pw_uid, gid)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
