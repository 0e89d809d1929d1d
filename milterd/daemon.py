"""``milterd run``: build the engine, bind the listeners, serve, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

import trio

from milterd.server import open_listeners, serve_milter

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine import Engine
    from milterd.settings import MilterSettings

__all__ = ["DRAIN_SECONDS", "run_daemon"]

log = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0


async def run_daemon(
    engine: Engine,
    settings: MilterSettings,
    *,
    listen: Sequence[str] | None = None,
    drain_seconds: float = DRAIN_SECONDS,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGTERM or SIGINT (or cancellation), then let in-flight messages finish.

    Listeners are bound before readiness is reported (``task_status.started`` gets them,
    so tests can bind port 0 and learn the real port).
    """
    try:
        await _serve_until_signal(engine, settings, listen, drain_seconds, task_status)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await engine.aclose()
    log.info("stopped")


async def _serve_until_signal(
    engine: Engine,
    settings: MilterSettings,
    listen: Sequence[str] | None,
    drain_seconds: float,
    task_status: trio.TaskStatus[list[trio.SocketListener]],
) -> None:
    listeners = await open_listeners(listen or settings.listen, settings.socket_mode)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as handlers:
            async with trio.open_nursery() as acceptors:
                await acceptors.start(
                    lambda task_status: serve_milter(
                        listeners,
                        engine,
                        settings,
                        handler_nursery=handlers,
                        task_status=task_status,
                    )
                )
                task_status.started(listeners)
                async for signum in signals:
                    log.info(
                        "%s: no new connections; draining for up to %.0fs",
                        signal.Signals(signum).name,
                        drain_seconds,
                    )
                    break
                acceptors.cancel_scope.cancel()
            handlers.cancel_scope.deadline = trio.current_time() + drain_seconds
