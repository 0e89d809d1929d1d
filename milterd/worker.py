"""One worker process, as the supervisor forks it: build an engine, serve, drain, exit.

Runs in a freshly forked child of the (thread-free) supervisor. trio starts here, after
the fork, so no trio state, thread or lock is ever inherited. Kinds:

* ``scan``: the milter and scan API listeners (shared with the other scanning workers:
  the kernel hands each connection to one of them), no controller;
* ``controller``: the controller listeners only, and the reading end of the counters
  channel (``milterd.http.cluster``), so ``/stat`` and ``/metrics`` sum every worker.

The worker tells the supervisor it serves by writing one byte on ``ready_fd``; exit
status ``EX_CONFIG`` (78) says the configuration was refused, which the supervisor
must not answer with a quick restart loop of the same failure.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from engine import ConfigError, Engine
from engine.storage import StoreUnavailable
from milterd.daemon import Daemon, Prebound, log_refused_reload
from milterd.http import HttpSettings
from milterd.http.cluster import REPORT_SECONDS, Cluster, report_loop
from milterd.settings import MilterSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine import Config
    from engine.storage import Store

__all__ = ["EX_CONFIG", "WorkerSpec", "run_worker"]

log = logging.getLogger(__name__)

EX_CONFIG: Final = 78  # sysexits.h: configuration error
EX_SOFTWARE: Final = 70


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    kind: str  # "scan" or "controller"
    slot: int
    generation: int
    config: Config  # the generation's configuration, read once by the supervisor
    milter: tuple[socket.socket, ...]
    scan: tuple[socket.socket, ...]
    controller: tuple[socket.socket, ...]
    reports: socket.socket  # the counters channel: sending end, or (controller) reading end
    drain_seconds: float
    # What a reload reads (the supervisor's own): the controller's saves change files that
    # every worker must read, so they reload the whole daemon, through the supervisor.
    load_config: Callable[[], Config]
    start_timeout: float = 60.0


def run_worker(spec: WorkerSpec, ready_fd: int) -> int:
    """The child's whole life; returns its exit status."""
    supervisor = os.getppid()  # forked by it: still our parent now, whatever happens later
    # The supervisor answers ^C and SIGHUP for the group; a worker drains on its SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        config = spec.config
        engine = Engine.from_config(config)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("worker: configuration refused: %s", problem)
        return EX_CONFIG
    try:
        trio.run(_serve, spec, engine, config, ready_fd, supervisor)
    except KeyboardInterrupt:
        return 0
    return 0


async def _serve(
    spec: WorkerSpec, engine: Engine, config: Config, ready_fd: int, supervisor: int
) -> None:
    settings = MilterSettings.from_section(config.section("milter"))
    http = HttpSettings.from_config(config)
    prebound = Prebound(
        milter=[_listener(s) for s in spec.milter],
        scan=[_listener(s) for s in spec.scan],
        controller=[_listener(s) for s in spec.controller],
    )
    # Listen addresses are the supervisor's (bound once); the rest of [http] is ours.
    http = replace(http, listen=(), controller=replace(http.controller, listen=()))
    daemon = Daemon(
        engine,
        settings,
        drain_seconds=spec.drain_seconds,
        http=http,
        prebound=prebound,
        worker=True,
    )
    assert daemon.http is not None
    context = daemon.http.context
    context.generation = spec.generation
    identity: dict[str, object] = {
        "kind": spec.kind,
        "slot": spec.slot,
        "generation": spec.generation,
    }
    async with trio.open_nursery() as nursery:
        if spec.kind == "controller":
            cluster = Cluster(context.metrics)
            context.cluster = cluster
            nursery.start_soon(cluster.run, spec.reports)
            context.reload = partial(_reload_through_supervisor, spec, cluster, supervisor)
            with daemon.engines.lease() as current:
                store = current.store
            await _carry_in(cluster, store)
            nursery.start_soon(_carry_out, spec, cluster, store)
        else:
            nursery.start_soon(
                report_loop,
                spec.reports,
                identity,
                context.metrics.snapshot,
                context.errors.rows,
            )

        async def serve_then_stop(
            task_status: trio.TaskStatus[list[trio.SocketListener]],
        ) -> None:
            await daemon.serve(task_status=task_status)
            # Drained: stop reporting (report_loop sends a last report as it ends).
            nursery.cancel_scope.cancel()

        await nursery.start(serve_then_stop)
        os.write(ready_fd, b"R")
        os.close(ready_fd)


def _carry_key() -> str:
    # Per host: instances on several machines may share one Redis, and each has its own.
    return f"stat:cluster:{socket.gethostname()}"


async def _carry_in(cluster: Cluster, store: Store) -> None:
    """Start from the sums the previous controller left in the Store."""
    try:
        cluster.carry_over(await store.get(_carry_key()))
    except StoreUnavailable as exc:
        log.warning("statistics: the previous totals are unavailable (%s); counting from 0", exc)


async def _carry_out(spec: WorkerSpec, cluster: Cluster, store: Store) -> None:
    """Keep the sums in the Store for the next controller, every report period (a few
    hundred bytes), while this controller's generation serves: a draining one must not
    overwrite what its successor keeps."""
    while True:
        await trio.sleep(REPORT_SECONDS)
        if cluster.supervisor.get("generation") != spec.generation:
            continue
        try:
            await store.set(_carry_key(), cluster.carried_over())
        except StoreUnavailable as exc:
            log.warning("statistics: cannot keep the totals for the next controller: %s", exc)


async def _reload_through_supervisor(spec: WorkerSpec, cluster: Cluster, supervisor: int) -> bool:
    """A controller save (``/savemap``, ``/saveactions``, ``/savesymbols``) under the
    supervisor: build an engine from the changed directory here, so a refused change is
    answered (409) and undone at once; then SIGHUP the supervisor, whose reload replaces
    every worker, and answer once the new generation serves (or ``start_timeout`` passed:
    the change is valid and the supervisor logs why its workers are late)."""

    def build() -> Engine:
        return Engine.from_config(spec.load_config())

    try:
        engine = await trio.to_thread.run_sync(build)
    except ConfigError as exc:
        log_refused_reload(exc, "the controller's change is undone")
        return False
    # The same boundary as Daemon.reload: a module whose setup raises refuses the change.
    except Exception:
        log.exception("reload failed; the controller's change is undone")
        return False
    await engine.aclose()
    if os.getppid() != supervisor:
        log.error("reload: the supervisor (pid %d) is gone; nothing to reload", supervisor)
        return False
    os.kill(supervisor, signal.SIGHUP)
    with trio.move_on_after(spec.start_timeout):
        await cluster.wait_for_generation(spec.generation + 1)
    return True


def _listener(sock: socket.socket) -> trio.SocketListener:
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))
