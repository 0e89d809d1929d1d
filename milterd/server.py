"""trio listeners for the milter: TCP (IPv4/IPv6) and unix sockets, with graceful drain.

Structure (trio ``serve_listeners`` and hypercorn's run loop): connection handlers live in
their own nursery, apart from the accept loops, so stopping means cancelling the accept
loops first and then giving the handlers a deadline to finish the messages they hold.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as stdsocket
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from milterd.session import MilterSession, ScanObserver

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine import Engine
    from milterd.session import EngineSlot
    from milterd.settings import MilterSettings

__all__ = ["open_listeners", "serve_milter"]

log = logging.getLogger(__name__)


def parse_listen(spec: str) -> tuple[str, str | int]:
    """``unix:/p`` → ("unix", "/p"); ``host:port`` and ``[v6]:port`` → (host, port)."""
    if spec.startswith("unix:"):
        return "unix", spec[5:]
    host, _, port = spec.rpartition(":")
    return host.strip("[]"), int(port)


async def open_listeners(
    specs: Sequence[str], socket_mode: int = 0o660
) -> list[trio.SocketListener]:
    listeners: list[trio.SocketListener] = []
    for spec in specs:
        kind, where = parse_listen(spec)
        if kind == "unix":
            listeners.append(await _unix_listener(str(where), socket_mode))
        else:
            listeners.extend(await trio.open_tcp_listeners(int(where), host=kind))
    return listeners


def _clear_socket_path(path: str) -> None:
    """Remove a stale socket from a previous run (never a file that is not a socket)."""
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not stat.S_ISSOCK(target.lstat().st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)


async def _unix_listener(path: str, mode: int) -> trio.SocketListener:
    # Start-up only, before anything is served: a blocking filesystem call is harmless here.
    _clear_socket_path(path)
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, mode)
    sock.listen(stdsocket.SOMAXCONN)
    return trio.SocketListener(sock)


def _peer_of(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return ""
    try:
        peer = sock.getpeername()
    except OSError:
        return ""
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return str(peer) or "unix"


async def serve_milter(
    listeners: list[trio.SocketListener],
    engine: Engine | EngineSlot,
    settings: MilterSettings,
    *,
    handler_nursery: trio.Nursery,
    on_scanned: ScanObserver | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections until cancelled; sessions run in ``handler_nursery``.

    Give the daemon's ``EngineSlot`` so that sessions take each message's engine from it,
    and ``on_scanned`` to count every scan (the controller's statistics).
    """

    async def handle(stream: trio.abc.Stream) -> None:
        await MilterSession(stream, engine, settings, _peer_of(stream), on_scanned).run()

    for listener in listeners:
        log.info("milter listening on %s", _describe(listener))
    await trio.serve_listeners(
        handle, listeners, handler_nursery=handler_nursery, task_status=task_status
    )


def _describe(listener: trio.SocketListener) -> str:
    name = listener.socket.getsockname()
    if isinstance(name, tuple):
        host = name[0]
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"
    return f"unix:{name}"
