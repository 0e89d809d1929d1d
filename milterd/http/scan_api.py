"""The Rspamd-compatible scan API: ``/checkv2`` (and ``/check``, ``/symbols``, ``/scan``).

The message is the body; the envelope comes in headers (``IP``, ``Helo``, ``Hostname``,
``From``, ``Rcpt`` once per recipient, ``Queue-Id``, ``User``, ``MTA-Name``, ``Pass``,
``Settings-ID``, ``Settings``, ``Log-Tag``, ``Flags``, ``URL-Format``). The answer is
``ScanResult.to_json()``, Rspamd's ``/checkv2`` shape, with the message's URL hosts and
e-mail addresses (``urls``, ``emails``); ``/check`` and ``/symbols`` get the legacy v1
shape, with the symbols inside ``"default"``. A header we cannot read is a 400 with a
JSON error, not a guess; so are inline settings the engine refuses.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from typing import TYPE_CHECKING, Final

import trio

from engine import Action, Envelope, ScanRequest
from engine.mime import bare_address
from engine.settings import InlineSettings, InvalidSettings
from milterd.http.compression import (
    COMPRESSED_HEADERS,
    compress_reply,
    decode_body,
    wants_compressed_reply,
)
from milterd.http.protocol import HttpError, HttpResponse, error_response
from milterd.logging import log_scan

if TYPE_CHECKING:
    from engine import ScanResult
    from engine.result import UrlFormat
    from milterd.http.context import HttpContext
    from milterd.http.protocol import HttpRequest

__all__ = ["KNOWN_FLAGS", "SCAN_PATHS", "ScanService", "parse_scan_request"]

log = logging.getLogger(__name__)
scan_log = logging.getLogger("milterd.scan")

# Rspamd's flags (protocol.c); the ones milterd acts on are skip, no_log, zstd, groups,
# ext_urls.
KNOWN_FLAGS: Final = frozenset(
    {
        "pass_all",
        "no_log",
        "skip",
        "skip_process",
        "no_stat",
        "ssl",
        "profile",
        "milter",
        "zstd",
        "ext_urls",
        "body_block",
        "groups",
    }
)
V2_PATHS: Final = frozenset({"/checkv2", "/scan"})
LEGACY_PATHS: Final = frozenset({"/check", "/symbols"})
SCAN_PATHS: Final = V2_PATHS | LEGACY_PATHS
_SPAM: Final = frozenset({Action.REJECT, Action.REWRITE_SUBJECT, Action.ADD_HEADER})


def parse_scan_request(request: HttpRequest, message: bytes) -> tuple[ScanRequest, frozenset[str]]:
    """The engine's request and the flags, from the HTTP headers and the message.

    Raises:
        HttpError: 400 for a header that cannot be read, an inline ``Settings`` block
            included (not a JSON object, an unknown key, a value of the wrong type).
    """
    flags = _flags(request)
    envelope = _envelope(request)
    settings_id = (request.header("settings-id") or "").strip() or None
    log_tag = (request.header("log-tag") or "").strip() or envelope.queue_id
    scan_request = ScanRequest(
        envelope=envelope,
        raw=message,
        log_tag=log_tag,
        settings_id=settings_id,
        # When both come, the inline block wins and Settings-ID is ignored, as in Rspamd.
        settings=_inline_settings(request),
        url_format=_url_format(request, flags),
    )
    return scan_request, flags


def _inline_settings(request: HttpRequest) -> InlineSettings | None:
    """Rspamd's ``Settings`` header: what a ``[settings.NAME]`` table applies, as JSON."""
    text = request.header("settings")
    if text is None or not text.strip():
        return None
    try:
        block = json.loads(text)
    except ValueError:
        raise HttpError(400, "Settings: not a JSON object") from None
    if not isinstance(block, dict):
        raise HttpError(400, "Settings: not a JSON object")
    try:
        return InlineSettings.parse(block)
    except InvalidSettings as exc:
        raise HttpError(400, f"Settings: {exc}") from None


def _url_format(request: HttpRequest, flags: frozenset[str]) -> UrlFormat:
    extended = (request.header("url-format") or "").strip().lower() == "extended"
    return "extended" if extended or "ext_urls" in flags else "hosts"


def _flags(request: HttpRequest) -> frozenset[str]:
    flags: set[str] = set()
    for value in request.header_all("flags"):
        flags.update(f.strip().lower() for f in value.replace(" ", ",").split(",") if f.strip())
    if (request.header("pass") or "").strip().lower() == "all":
        flags.add("pass_all")
    if (request.header("log") or "").strip().lower() == "no":
        flags.add("no_log")
    unknown = flags - KNOWN_FLAGS
    if unknown:
        log.debug("ignoring unknown flags: %s", ", ".join(sorted(unknown)))
    return frozenset(flags)


def _envelope(request: HttpRequest) -> Envelope:
    address = _ip(request.header("ip"))
    hostname = (request.header("hostname") or "").strip()
    sender = request.header("from")
    return Envelope(
        client_addr=address,
        # An MTA that could not resolve the client says "unknown"; Rspamd treats it as none.
        client_name=hostname if hostname and hostname.lower() != "unknown" else None,
        helo=(request.header("helo") or "").strip() or None,
        mail_from=bare_address(sender) if sender is not None else None,
        rcpts=tuple(bare_address(r) for r in request.header_all("rcpt") if r.strip()),
        queue_id=(request.header("queue-id") or "").strip() or None,
        auth_user=(request.header("user") or "").strip() or None,
        mta_name=(request.header("mta-name") or "").strip() or None,
    )


def _ip(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    text = value.strip().strip("[]")
    if text[:5].lower() == "ipv6:":  # an SMTP address literal, [IPv6:...]
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise HttpError(400, f"IP: {value.strip()!r} is not an IP address") from None


class ScanService:
    """Answers scan requests for the scan API and the controller alike."""

    def __init__(self, context: HttpContext) -> None:
        self.context = context

    async def handle(self, request: HttpRequest) -> HttpResponse:
        context = self.context
        message = await decode_body(request, context.settings.max_message_size)
        if not message:
            raise HttpError(400, "no message in the request body")
        scan_request, flags = parse_scan_request(request, message)
        if "skip" in flags:
            payload = self._skipped(scan_request)
        else:
            result = await self._scan(scan_request, flags, len(message))
            if isinstance(result, HttpResponse):
                return result
            payload = result.to_json()
            if "groups" in flags:
                payload["groups"] = _groups(result)
        if request.path in LEGACY_PATHS:
            payload = _legacy(payload)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if wants_compressed_reply(request, flags):
            return HttpResponse(200, await compress_reply(body), headers=COMPRESSED_HEADERS)
        return HttpResponse(200, body)

    async def _scan(
        self, request: ScanRequest, flags: frozenset[str], size: int
    ) -> ScanResult | HttpResponse:
        context = self.context
        started = time.perf_counter()
        with trio.move_on_after(context.settings.scan_timeout) as deadline:
            try:
                with context.engines.lease() as engine:
                    result = await engine.scan(request)
            except InvalidSettings as exc:  # names this engine does not know
                return error_response(400, f"Settings: {exc}")
            # The request's top-level guard: whatever failed inside the engine, this
            # client gets a 500 and every other connection goes on.
            except Exception:
                log.exception("%s: scan failed", request.log_tag or "http")
                context.metrics.error("scan")
                return error_response(500, "the scan failed (see the server log)")
        if deadline.cancelled_caught:
            context.metrics.error("scan")
            log.warning("%s: scan timed out", request.log_tag or "http")
            return error_response(504, "the scan timed out")
        elapsed = time.perf_counter() - started
        keep = "no_log" not in flags
        context.scanned(request, result, elapsed, size=size, source="http", keep=keep)
        if keep:
            _log_result(request, result, elapsed)
        return result

    def _skipped(self, request: ScanRequest) -> dict[str, object]:
        """Rspamd's answer for flag ``skip``: nothing ran, no action."""
        with self.context.engines.lease() as engine:
            thresholds = engine.thresholds
        return {
            "is_skipped": True,
            "score": 0.0,
            "required_score": thresholds.required_score,
            "action": Action.NO_ACTION.value,
            "thresholds": thresholds.as_dict(),
            "symbols": {},
            "messages": {},
            "message-id": "",
            "time_real": 0.0,
            "milter": {"add_headers": {}, "remove_headers": {}},
        }


def _groups(result: ScanResult) -> dict[str, object]:
    totals: dict[str, float] = {}
    for sym in result.symbols.values():
        totals[sym.group] = totals.get(sym.group, 0.0) + sym.score
    return {group: {"score": score} for group, score in totals.items()}


def _legacy(payload: dict[str, object]) -> dict[str, object]:
    """Rspamd's v1 shape (``/check``, ``/symbols``): one metric, ``default``, holding the
    verdict and the symbols by name; the milter block is called ``rmilter``."""
    symbols = payload.pop("symbols")
    assert isinstance(symbols, dict)
    action = str(payload["action"])
    metric: dict[str, object] = {
        "is_spam": Action(action) in _SPAM,
        "is_skipped": payload.pop("is_skipped"),
        "score": payload.pop("score"),
        "required_score": payload.pop("required_score"),
        "action": payload.pop("action"),
        **symbols,
    }
    payload.pop("thresholds", None)
    if "milter" in payload:
        payload["rmilter"] = payload.pop("milter")
    return {"default": metric, **payload}


def _log_result(request: ScanRequest, result: ScanResult, elapsed: float) -> None:
    log_scan(request, result, elapsed, qid=request.log_tag, via="http")


def ping_response() -> HttpResponse:
    """``/ping``: Rspamd's exact answer, for health checks that compare it."""
    return HttpResponse(200, b"pong\r\n", content_type="text/plain")
