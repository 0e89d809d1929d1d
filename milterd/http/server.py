"""The HTTP side of the daemon: the scan API and the controller on their own listeners.

Structure (as ``milterd/server.py`` for the milter): accept loops apart from the
connection handlers' nursery, so a stop cancels the accept loops and gives the handlers
a deadline. Each connection is one task looping over keep-alive requests; a request's
failure (malformed, too large, too slow, a bug in a handler) is answered on that
connection alone, which is then closed.
"""

from __future__ import annotations

import logging
import socket as stdsocket
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from milterd.http.context import HttpContext
from milterd.http.controller import Controller
from milterd.http.errors import ErrorRing
from milterd.http.history import History
from milterd.http.metrics import Metrics
from milterd.http.protocol import HttpError, RequestReader, error_response
from milterd.http.scan_api import SCAN_PATHS, ScanService, ping_response
from milterd.http.settings import HttpSettings
from milterd.server import open_listeners

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from engine import Config
    from milterd.http.protocol import HttpRequest, HttpResponse
    from milterd.session import EngineSlot

    App = Callable[[HttpRequest], Awaitable[HttpResponse]]

__all__ = ["HttpFrontend"]

log = logging.getLogger(__name__)

_METHODS: Final = frozenset({"GET", "POST", "HEAD"})


class HttpFrontend:
    """The scan API and the controller of one daemon, sharing its ``EngineSlot``.

    ``reload`` is the daemon's (the controller's saves apply through it).
    """

    def __init__(
        self,
        engines: EngineSlot,
        settings: HttpSettings,
        *,
        reload: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        metrics = Metrics()
        self.context = HttpContext(
            engines=engines,
            settings=settings,
            metrics=metrics,
            history=History(engines, metrics, settings.controller.history_rows),
            errors=ErrorRing(metrics),
            reload=reload,
        )
        self.scans = ScanService(self.context)
        self.controller = Controller(self.context, self.scans)
        self.scan_listeners: list[trio.SocketListener] = []
        self.controller_listeners: list[trio.SocketListener] = []

    @property
    def settings(self) -> HttpSettings:
        return self.context.settings

    def apply_config(self, config: Config) -> None:
        """After a reload: new passwords, networks and limits; listeners stay as bound."""
        old = self.context.settings
        new = HttpSettings.from_config(config)
        new = replace(
            new, listen=old.listen, controller=replace(new.controller, listen=old.controller.listen)
        )
        self.context.settings = new
        self.controller.auth.settings = new.controller
        self.context.history.rows = new.controller.history_rows

    async def open(self) -> None:
        """Bind both listeners (before the milter's, so a client that sees the milter
        port open finds these open too)."""
        settings = self.context.settings
        self.scan_listeners = await open_listeners(settings.listen, settings.socket_mode)
        controller = settings.controller
        try:
            self.controller_listeners = await open_listeners(
                controller.listen, controller.socket_mode
            )
        except BaseException:
            await self.close_listeners()
            raise
        unguarded = not (controller.password or controller.enable_password)
        if unguarded and not controller.trusted_networks and self.controller_listeners:
            log.warning(
                "controller: no password and no trusted network is configured: only "
                "clients on a unix socket get in (see `milterd pw`)"
            )

    async def close_listeners(self) -> None:
        """Close what ``open`` bound (when the daemon cannot start after all)."""
        for listener in (*self.scan_listeners, *self.controller_listeners):
            await listener.aclose()

    async def serve(
        self,
        *,
        handler_nursery: trio.Nursery,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on both listeners (``open`` first) until cancelled."""
        metrics = self.context.metrics

        async def scan_connection(stream: trio.abc.Stream) -> None:
            metrics.connections += 1
            await self._connection(stream, self._scan_api, self.settings.max_message_size)

        async def controller_connection(stream: trio.abc.Stream) -> None:
            metrics.control_connections += 1
            limit = self.settings.controller.max_message_size
            await self._connection(stream, self.controller.handle, limit)

        async with trio.open_nursery() as acceptors:
            for name, listeners, handler in (
                ("scan API", self.scan_listeners, scan_connection),
                ("controller", self.controller_listeners, controller_connection),
            ):
                if not listeners:
                    continue
                for listener in listeners:
                    log.info("%s listening on %s", name, _describe(listener))
                await acceptors.start(
                    partial(
                        trio.serve_listeners, handler, listeners, handler_nursery=handler_nursery
                    )
                )
            task_status.started()

    async def _scan_api(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/ping":
            return ping_response()
        if path in SCAN_PATHS:
            return await self.scans.handle(request)
        raise HttpError(404, f"no endpoint {path}; this is the scan API (/checkv2, /ping)")

    async def _connection(self, stream: trio.abc.Stream, app: App, max_body: int) -> None:
        client = _client_of(stream)
        reader = RequestReader(stream, max_body)
        timeout = self.settings.request_timeout
        try:
            async with stream:
                while True:
                    try:
                        with trio.fail_after(timeout):
                            request = await reader.read(client)
                        if request is None:
                            return
                        response = await self._answer(app, request)
                    except HttpError as exc:
                        self.context.metrics.error("request")
                        log.info("http: %s from %s: %s", exc.status, client or "unix", exc)
                        response = exc.response()
                    except trio.TooSlowError:
                        if reader.between_requests:
                            return  # an idle keep-alive connection: just close it
                        response = error_response(408, "the request was not received in time")
                    if not reader.can_respond:
                        return
                    with trio.move_on_after(timeout):
                        await reader.respond(response)
                    if not reader.next_cycle():
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("http: %s went away", client or "unix")

    async def _answer(self, app: App, request: HttpRequest) -> HttpResponse:
        if request.method not in _METHODS:
            raise HttpError(405, f"method {request.method} not allowed (GET or POST)")
        try:
            return await app(request)
        except HttpError:
            raise
        # The request's top-level guard: a bug in a handler costs this request a 500,
        # never the connection's task, the daemon or another client.
        except Exception:
            log.exception("http: %s %s failed", request.method, request.path)
            self.context.metrics.error("request")
            return error_response(500, "internal error (see the server log)")


def _client_of(stream: trio.abc.Stream) -> str | None:
    """The peer's IP address; None only on a unix socket (which auth trusts), and
    "unknown" when the address cannot be had (which it does not)."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return "unknown"
    if sock.family == stdsocket.AF_UNIX:
        return None
    try:
        peer = sock.getpeername()
    except OSError:  # the peer is already gone: never a reason to trust it
        return "unknown"
    return str(peer[0]) if isinstance(peer, tuple) else "unknown"


def _describe(listener: trio.SocketListener) -> str:
    name = listener.socket.getsockname()
    if isinstance(name, tuple):
        host = name[0]
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"
    return f"unix:{name}"
