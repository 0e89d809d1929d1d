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
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

import trio

from engine import ConfigError
from milterd.server import open_listeners, serve_milter
from milterd.session import EngineSlot

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from engine import Engine
    from milterd.settings import MilterSettings

__all__ = ["DRAIN_SECONDS", "Daemon", "run_daemon"]

log = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0
_CLOSE_SECONDS = 5.0


class Daemon:
    """One serving process: listeners, sessions, and the engine they scan with.

    ``load_engine`` reads and validates the configuration and builds an engine from it
    (raising ``ConfigError`` when it is refused); a reload calls it in a worker thread.
    """

    def __init__(
        self,
        engine: Engine,
        settings: MilterSettings,
        *,
        load_engine: Callable[[], Engine] | None = None,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.engines = EngineSlot(engine)
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
            for problem in exc.problems:
                log.error("reload: %s", problem)
            log.error(
                "reload refused (%d problem%s); still serving with the previous configuration",
                len(exc.problems),
                "" if len(exc.problems) == 1 else "s",
            )
            return False
        # The reload boundary: whatever a module's setup raises, a running daemon keeps
        # serving with the engine it has (at start-up the same error ends the process).
        except Exception:
            log.exception("reload failed; still serving with the previous configuration")
            return False
        old = self.engines.replace(engine)
        _warn_about_restart_only_settings(old, engine)
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
        listeners = await open_listeners(listen or self.settings.listen, self.settings.socket_mode)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as handlers:
                self._handlers = handlers
                async with trio.open_nursery() as acceptors:
                    await acceptors.start(
                        lambda task_status: serve_milter(
                            listeners,
                            self.engines,
                            self.settings,
                            handler_nursery=handlers,
                            task_status=task_status,
                        )
                    )
                    task_status.started(listeners)
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            await self.reload()
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


async def run_daemon(
    engine: Engine,
    settings: MilterSettings,
    *,
    listen: Sequence[str] | None = None,
    drain_seconds: float = DRAIN_SECONDS,
    load_engine: Callable[[], Engine] | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``Daemon(...).serve(listen)``: serve until SIGTERM or SIGINT; SIGHUP reloads with
    ``load_engine`` (without one, SIGHUP only logs that it cannot)."""
    daemon = Daemon(engine, settings, load_engine=load_engine, drain_seconds=drain_seconds)
    await daemon.serve(listen, task_status=task_status)


async def _close(engine: Engine) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_SECONDS):
        await engine.aclose()


def _warn_about_restart_only_settings(old: Engine, new: Engine) -> None:
    if old.config.data.get("milter") != new.config.data.get("milter"):
        log.warning("reload: [milter] settings changed; they take effect at the next restart")
