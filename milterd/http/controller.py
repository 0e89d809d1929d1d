"""The controller: statistics, history, learning, policy, maps, errors and metrics.

Every endpoint declares the access it needs (``auth.Level``): reading needs the read
password, changing anything the enable password, ``/ping`` nothing. Rspamd routes by path
only and so does this (GET and POST alike). Answers are Rspamd's shapes where Rspamd has
the endpoint, so its web UI, ``rspamc`` and monitoring scripts read them unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from importlib import metadata
from typing import TYPE_CHECKING, Final

from engine.stats import StoreStatBackend
from engine.storage import StoreUnavailable
from milterd.http.auth import Authenticator, Level
from milterd.http.compression import decode_body
from milterd.http.metrics import CONTENT_TYPE
from milterd.http.policy import PolicyEditor
from milterd.http.protocol import HttpError, HttpResponse, error_response, json_response
from milterd.http.scan_api import parse_scan_request, ping_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from engine import Engine
    from milterd.http.auth import Access
    from milterd.http.context import HttpContext
    from milterd.http.protocol import HttpRequest
    from milterd.http.scan_api import ScanService

    Handler = Callable[[HttpRequest, Access], Awaitable[HttpResponse]]

__all__ = ["Controller"]

log = logging.getLogger(__name__)

try:
    VERSION: Final = metadata.version("milterd")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    VERSION = "0.0.0"  # type: ignore[misc]


class Controller:
    """Routes and answers controller requests (see the module docstring)."""

    def __init__(self, context: HttpContext, scans: ScanService) -> None:
        self.context = context
        self.scans = scans
        self.auth = Authenticator(context.settings.controller)
        self.policy = PolicyEditor(context)
        self._config_ids: dict[int, str] = {}
        r, e = Level.READ, Level.ENABLE
        self.routes: dict[str, tuple[Level, Handler]] = {
            "/ping": (Level.NONE, self._ping),
            "/auth": (r, self._auth),
            "/stat": (r, self._stat),
            "/statreset": (e, self._stat_reset),
            "/counters": (r, self._counters),
            "/history": (r, self._history),
            "/historyreset": (e, self._history_reset),
            "/learnspam": (e, self._learn_spam),
            "/learnham": (e, self._learn_ham),
            "/actions": (r, self._actions),
            "/saveactions": (e, self._save_actions),
            "/symbols": (r, self._symbols),
            "/savesymbols": (e, self._save_symbols),
            "/maps": (r, self._maps),
            "/getmap": (r, self._get_map),
            "/savemap": (e, self._save_map),
            "/errors": (r, self._errors),
            "/status": (r, self._status),
            "/metrics": (r, self._metrics),
            "/checkv2": (r, self._scan),
            "/check": (r, self._scan),
            "/scan": (r, self._scan),
        }

    async def handle(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        route = self.routes.get(path)
        if route is None:
            raise HttpError(404, f"no endpoint {path}")
        level, handler = route
        access = await self.auth.check(request, level)
        if not access.allowed:
            self.context.metrics.error("auth")
            return error_response(403, access.reason)
        return await handler(request, access)

    # -- status -------------------------------------------------------------------------------

    async def _ping(self, request: HttpRequest, access: Access) -> HttpResponse:
        return ping_response()

    async def _auth(self, request: HttpRequest, access: Access) -> HttpResponse:
        stat = self.context.totals().stat_json()
        actions = stat["actions"]
        assert isinstance(actions, dict)
        return json_response(
            {
                "auth": "ok",
                "version": VERSION,
                "uptime": stat["uptime"],
                "read_only": access.read_only,
                "config_id": self._config_id(),
                "scanned": stat["scanned"],
                "learned": stat["learned"],
                "clean": actions["no action"],
                "probable": actions["add header"] + actions["rewrite subject"],
                "greylist": actions["greylist"],
                "soft_reject": actions["soft reject"],
                "reject": actions["reject"],
            }
        )

    async def _stat(self, request: HttpRequest, access: Access) -> HttpResponse:
        return json_response(await self._stat_json(access))

    async def _stat_reset(self, request: HttpRequest, access: Access) -> HttpResponse:
        stat = await self._stat_json(access)
        if self.context.cluster is not None:
            self.context.cluster.reset()
        else:
            self.context.metrics.reset()
        log.info("controller: statistics reset by %s", request.client or "unix")
        return json_response(stat)

    async def _stat_json(self, access: Access) -> dict[str, object]:
        statfiles, total = await self._statfiles()
        return {
            "version": VERSION,
            "config_id": self._config_id(),
            "read_only": access.read_only,
            **self.context.totals().stat_json(),
            "statfiles": statfiles,
            "total_learns": total,
            "fuzzy_hashes": {},
        }

    async def _statfiles(self) -> tuple[list[dict[str, object]], int]:
        """Bayes learn counts per class, from the Store (Rspamd's statfile rows)."""
        with self.context.engines.lease() as engine:
            backend = str(engine.config.section("store").get("backend", "sqlite"))
            try:
                spam, ham = await StoreStatBackend(engine.store).learn_counts()
            except StoreUnavailable as exc:
                log.warning("controller: no statistics: the store is unavailable: %s", exc)
                return [], 0
        rows = [
            {
                "symbol": symbol,
                "type": backend,
                "revision": learns,
                "size": 0,
                "total": 0,
                "used": 0,
                "languages": 0,
                "users": 0,
            }
            for symbol, learns in (("BAYES_SPAM", spam), ("BAYES_HAM", ham))
        ]
        return rows, spam + ham

    async def _counters(self, request: HttpRequest, access: Access) -> HttpResponse:
        hits = self.context.totals().symbols
        with self.context.engines.lease() as engine:
            specs = sorted(engine.registry.symbols.values(), key=lambda s: s.name)
        return json_response(
            [
                {"symbol": s.name, "weight": s.score, "hits": hits[s.name], "frequency": 0.0}
                for s in specs
            ]
        )

    def _config_id(self) -> str:
        with self.context.engines.lease() as engine:
            return self._config_ids_for(engine)

    def _config_ids_for(self, engine: Engine) -> str:
        key = id(engine.config)
        if key not in self._config_ids:
            text = json.dumps(engine.config.data, sort_keys=True, default=str)
            self._config_ids = {key: hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}
        return self._config_ids[key]

    # -- history and errors -------------------------------------------------------------------

    async def _history(self, request: HttpRequest, access: Access) -> HttpResponse:
        rows = self.context.settings.controller.history_rows
        start = _int_param(request, "from", 0)
        stop = _int_param(request, "to", rows - 1)
        if start < 0 or stop < start:
            raise HttpError(400, "need 0 <= from <= to")
        return json_response({"version": 2, "rows": await self.context.history.read(start, stop)})

    async def _history_reset(self, request: HttpRequest, access: Access) -> HttpResponse:
        await self.context.history.reset()
        log.info("controller: history reset by %s", request.client or "unix")
        return json_response({"success": True})

    async def _errors(self, request: HttpRequest, access: Access) -> HttpResponse:
        return json_response(self.context.errors.rows())

    async def _status(self, request: HttpRequest, access: Access) -> HttpResponse:
        """milterd's own: the processes serving, their counters, the last errors."""
        if self.context.cluster is not None:
            status = self.context.cluster.status()
            errors = status["last_errors"]
            assert isinstance(errors, list)
            status["last_errors"] = (errors + self.context.errors.rows())[:20]
        else:
            metrics = self.context.metrics
            uptime = round(time.time() - metrics.started, 1)
            status = {
                "mode": "single",
                "pid": os.getpid(),
                "uptime": uptime,
                "generation": self.context.generation,
                "config_generation": self.context.generation,
                "reloads": self.context.generation - 1,
                "restarts": 0,
                "workers": [
                    {
                        "pid": os.getpid(),
                        "kind": "single",
                        "slot": 0,
                        "generation": self.context.generation,
                        "uptime": uptime,
                        "messages": metrics.scanned,
                        "restarts": 0,
                    }
                ],
                "last_errors": self.context.errors.rows()[:20],
            }
        return json_response({"version": VERSION, "config_id": self._config_id(), **status})

    async def _metrics(self, request: HttpRequest, access: Access) -> HttpResponse:
        _, total = await self._statfiles()
        text = self.context.totals().render(
            {"milterd_bayes_learned_messages": ("Messages in the Bayes statistics.", total)}
        )
        return HttpResponse(200, text.encode("utf-8"), content_type=CONTENT_TYPE)

    # -- scanning and learning ----------------------------------------------------------------

    async def _scan(self, request: HttpRequest, access: Access) -> HttpResponse:
        return await self.scans.handle(request)

    async def _learn_spam(self, request: HttpRequest, access: Access) -> HttpResponse:
        return await self._learn(request, is_spam=True)

    async def _learn_ham(self, request: HttpRequest, access: Access) -> HttpResponse:
        return await self._learn(request, is_spam=False)

    async def _learn(self, request: HttpRequest, *, is_spam: bool) -> HttpResponse:
        """Rspamd's statuses: 200 learned, 208 already learned, 422 refused (too few
        tokens, Bayes switched off …), 503 the Store is unavailable."""
        message = await decode_body(request, self.context.settings.controller.max_message_size)
        if not message:
            raise HttpError(400, "no message in the request body")
        scan_request, _ = parse_scan_request(request, message)
        with self.context.engines.lease() as engine:
            try:
                outcome = await engine.learn(scan_request, is_spam=is_spam)
            except StoreUnavailable as exc:
                self.context.metrics.error("learn")
                return error_response(503, f"the store is unavailable: {exc}")
        learned = bool(outcome)
        self.context.metrics.observe_learn(is_spam=is_spam, learned=learned)
        kind = "spam" if is_spam else "ham"
        if learned:
            log.info("controller: learned a message as %s for %s", kind, request.client or "unix")
            return json_response({"success": True})
        status = 208 if outcome.already else 422
        error = {"success": False, "error": outcome.message, "error_domain": "milterd"}
        return json_response(error, status)

    # -- policy and maps ----------------------------------------------------------------------

    async def _actions(self, request: HttpRequest, access: Access) -> HttpResponse:
        return json_response(self.policy.actions())

    async def _save_actions(self, request: HttpRequest, access: Access) -> HttpResponse:
        response = await self.policy.save_actions(await self._small_body(request))
        _log_save("thresholds", request, response)
        return response

    async def _symbols(self, request: HttpRequest, access: Access) -> HttpResponse:
        return json_response(self.policy.symbols())

    async def _save_symbols(self, request: HttpRequest, access: Access) -> HttpResponse:
        response = await self.policy.save_symbols(await self._small_body(request))
        _log_save("symbol scores", request, response)
        return response

    async def _maps(self, request: HttpRequest, access: Access) -> HttpResponse:
        return json_response(self.policy.maps())

    async def _get_map(self, request: HttpRequest, access: Access) -> HttpResponse:
        return await self.policy.get_map(request.header("map") or request.query.get("map"))

    async def _save_map(self, request: HttpRequest, access: Access) -> HttpResponse:
        selector = request.header("map") or request.query.get("map")
        response = await self.policy.save_map(selector, await self._small_body(request))
        _log_save(f"map {selector}", request, response)
        return response

    async def _small_body(self, request: HttpRequest) -> bytes:
        body = await decode_body(request, self.context.settings.controller.max_message_size)
        if not body.strip():
            raise HttpError(400, "empty body")
        return body


def _log_save(what: str, request: HttpRequest, response: HttpResponse) -> None:
    if response.status == 200:
        log.info("controller: %s saved and applied for %s", what, request.client or "unix")


def _int_param(request: HttpRequest, name: str, default: int) -> int:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise HttpError(400, f"{name}: not a number") from None
