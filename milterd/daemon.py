"""``milterd run``: build the engine, bind the listeners, serve; reload on SIGHUP, drain on
SIGTERM/SIGINT.

Theory of operation:

* Sessions take the engine per message from one ``EngineSlot``. A reload reads and
  validates the configuration and builds a whole new engine off the event loop (a worker
  thread, as at start-up: nothing in a build needs trio), so the messages in flight are
  not held up while it runs.
* Rule 1: a refused configuration changes nothing. Every problem is logged at error level
  with its file, line and key, and the daemon goes on with the engine it has.
* Rule 2: an engine is closed only when no scan runs on it. After a reload the old engine
  waits, in the connection handlers' nursery, for its last scan; a drain that runs out
  of time cancels those scans, and the engine is closed all the same.
* ``[milter]`` settings (listen addresses, replies, timeouts) belong to the sockets and
  sessions, not the engine: they change at restart, and a reload says so when they differ.
* The HTTP scan API and the controller (``milterd.http``) serve from the same process and
  the same ``EngineSlot``; a reload gives them new passwords, trusted networks and limits
  at once, their listen addresses at the next restart. Their listeners are bound before
  the milter's, so whoever sees the milter port open finds them open too.
* Under the supervisor (``milterd.supervisor``) a worker is a ``Daemon`` given the
  listeners the supervisor bound (``Prebound``) and ``worker=True``: it answers SIGTERM
  (drain) and SIGUSR1 only; reloading is the supervisor's, by replacing workers.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from engine import ConfigError
from milterd.http import HttpFrontend
from milterd.logging import reopen_logs
from milterd.server import open_listeners, serve_milter
from milterd.session import EngineSlot

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from engine import Engine
    from milterd.http import HttpSettings
    from milterd.settings import MilterSettings

__all__ = ["DRAIN_SECONDS", "Daemon", "Prebound", "run_daemon"]

log = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0
_CLOSE_SECONDS = 5.0


@dataclass(slots=True)
class Prebound:
    """Listeners bound by someone else (the supervisor, before it forked this worker)."""

    milter: list[trio.SocketListener] = field(default_factory=list)
    scan: list[trio.SocketListener] = field(default_factory=list)
    controller: list[trio.SocketListener] = field(default_factory=list)


class Daemon:
    """One serving process: listeners, sessions, and the engine they scan with.

    ``load_engine`` reads and validates the configuration and builds an engine from it
    (raising ``ConfigError`` when it is refused); a reload calls it in a worker thread.
    ``http`` (None: no HTTP side) serves the scan API and the controller as well; their
    bound listeners are ``self.http.scan_listeners`` and ``controller_listeners``.
    """

    def __init__(
        self,
        engine: Engine,
        settings: MilterSettings,
        *,
        load_engine: Callable[[], Engine] | None = None,
        drain_seconds: float = DRAIN_SECONDS,
        http: HttpSettings | None = None,
        prebound: Prebound | None = None,
        worker: bool = False,
    ) -> None:
        self.engines = EngineSlot(engine)
        self.prebound = prebound
        self.worker = worker
        self.http = (
            HttpFrontend(self.engines, http, reload=self.reload) if http is not None else None
        )
        self.settings = settings
        self.drain_seconds = drain_seconds
        self._load_engine = load_engine
        self._handlers: trio.Nursery | None = None
        self._reloaded = trio.Event()

    async def serve(
        self,
        listen: Sequence[str] | None = None,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until SIGTERM or SIGINT (or cancellation), then let in-flight messages
        finish; SIGHUP reloads. Listeners are bound before readiness is reported
        (``task_status.started`` gets them, so tests can bind port 0)."""
        try:
            await self._serve_until_signal(listen, task_status)
        finally:
            await _close(self.engines.current)
        log.info("stopped")

    async def reload(self) -> bool:
        """Load the configuration again; new messages use it if it is accepted.

        Returns:
            True when the new engine is in use; False when the configuration was refused
            (each problem logged at error level) and the old engine keeps serving.
        """
        try:
            return await self._reload()
        finally:
            self._reloaded.set()
            self._reloaded = trio.Event()

    async def next_reload(self) -> None:
        """Return when the next reload (SIGHUP or ``reload``) has finished, either way."""
        await self._reloaded.wait()

    async def _reload(self) -> bool:
        if self._load_engine is None:
            log.warning("reload: this daemon was started without a configuration to reload")
            return False
        log.info("reloading the configuration")
        try:
            engine = await trio.to_thread.run_sync(self._load_engine)
        except ConfigError as exc:
            log_refused_reload(exc, "still serving with the previous configuration")
            return False
        # The reload boundary: whatever a module's setup raises, a running daemon keeps
        # serving with the engine it has (at start-up the same error ends the process).
        except Exception:
            log.exception("reload failed; still serving with the previous configuration")
            return False
        old = self.engines.replace(engine)
        _warn_about_restart_only_settings(old, engine)
        if self.http is not None:
            self.http.apply_config(engine.config)
            self.http.context.generation += 1
        busy = self.engines.busy(old)
        if busy:
            log.info(
                "configuration reloaded; the previous engine closes after its %d scan%s in flight",
                busy,
                "" if busy == 1 else "s",
            )
        else:
            log.info("configuration reloaded")
        if self._handlers is not None:
            self._handlers.start_soon(self._retire, old)
        else:
            await self._retire(old)
        return True

    async def _retire(self, engine: Engine) -> None:
        try:
            await self.engines.wait_idle(engine)
        finally:
            await _close(engine)
        log.debug("previous engine closed")

    async def _serve_until_signal(
        self,
        listen: Sequence[str] | None,
        task_status: trio.TaskStatus[list[trio.SocketListener]],
    ) -> None:
        if self.prebound is not None:  # a worker: the supervisor bound them all
            if self.http is not None:
                self.http.scan_listeners = self.prebound.scan
                self.http.controller_listeners = self.prebound.controller
            listeners = self.prebound.milter
        else:
            if self.http is not None:
                await self.http.open()
            try:
                listeners = await open_listeners(
                    listen or self.settings.listen, self.settings.socket_mode
                )
            except BaseException:
                if self.http is not None:
                    await self.http.close_listeners()  # bound above, never to be served
                raise
        async with trio.open_nursery() as services:
            if self.http is not None:
                services.start_soon(self.http.context.history.run)
            try:
                await self._serve_signals(listeners, task_status)
            finally:
                if self.http is not None:
                    # The history writer drains what is queued, briefly, then stops.
                    self.http.context.history.close()
                    services.cancel_scope.deadline = trio.current_time() + _CLOSE_SECONDS

    async def _serve_signals(
        self,
        listeners: list[trio.SocketListener],
        task_status: trio.TaskStatus[list[trio.SocketListener]],
    ) -> None:
        # A worker leaves SIGINT and SIGHUP to its supervisor (they are ignored in it):
        # a terminal's ^C reaches the whole process group, and the supervisor drains.
        wanted = (
            (signal.SIGTERM, signal.SIGUSR1)
            if self.worker
            else (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
        )
        with (
            trio.open_signal_receiver(*wanted) as signals,
            self.http.context.errors.attached() if self.http else contextlib.nullcontext(),
        ):
            async with trio.open_nursery() as handlers:
                self._handlers = handlers
                async with trio.open_nursery() as acceptors:
                    if self.http is not None:
                        await acceptors.start(
                            functools.partial(self.http.serve, handler_nursery=handlers)
                        )
                    if listeners:
                        await acceptors.start(
                            lambda task_status: serve_milter(
                                listeners,
                                self.engines,
                                self.settings,
                                handler_nursery=handlers,
                                on_scanned=None if self.http is None else self.http.context.scanned,
                                task_status=task_status,
                            )
                        )
                    task_status.started(listeners)
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            await self.reload()
                            continue
                        if signum == signal.SIGUSR1:
                            reopen_logs()
                            continue
                        log.info(
                            "%s: no new connections; draining for up to %.0fs",
                            signal.Signals(signum).name,
                            self.drain_seconds,
                        )
                        break
                    acceptors.cancel_scope.cancel()
                handlers.cancel_scope.deadline = trio.current_time() + self.drain_seconds
            self._handlers = None


def log_refused_reload(exc: ConfigError, consequence: str) -> None:
    """Each problem of a refused reload at error level, then what happens instead."""
    for problem in exc.problems:
        log.error("reload: %s", problem)
    count = len(exc.problems)
    log.error("reload refused (%d problem%s); %s", count, "" if count == 1 else "s", consequence)


async def run_daemon(
    engine: Engine,
    settings: MilterSettings,
    *,
    listen: Sequence[str] | None = None,
    drain_seconds: float = DRAIN_SECONDS,
    load_engine: Callable[[], Engine] | None = None,
    http: HttpSettings | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``Daemon(...).serve(listen)``: serve until SIGTERM or SIGINT; SIGHUP reloads with
    ``load_engine`` (without one, SIGHUP only logs that it cannot). ``http`` adds the scan
    API and the controller."""
    daemon = Daemon(
        engine, settings, load_engine=load_engine, drain_seconds=drain_seconds, http=http
    )
    await daemon.serve(listen, task_status=task_status)


async def _close(engine: Engine) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_SECONDS):
        await engine.aclose()


def _warn_about_restart_only_settings(old: Engine, new: Engine) -> None:
    if old.config.data.get("milter") != new.config.data.get("milter"):
        log.warning("reload: [milter] settings changed; they take effect at the next restart")
    for section in ("http", "controller"):
        before, after = old.config.data.get(section), new.config.data.get(section)
        if not (isinstance(before, dict) and isinstance(after, dict)):
            continue
        if before.get("listen") != after.get("listen"):
            log.warning("reload: [%s] listen changed; it takes effect at the next restart", section)
