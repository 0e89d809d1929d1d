"""One milter connection: protocol events → scan request → engine → milter replies.

Theory of operation: the codec (``milterd.protocol``) owns the wire and the reply
discipline; this driver owns the socket, the message being collected and the scan.

* Negotiation asks only for what the engine uses: the CONNECT, HELO, MAIL, RCPT, header
  and body events, the header-editing and quarantine actions, and "no reply" for every
  event we never act on, so Postfix streams a message without waiting on us until the
  end of it. The macro lists we want ride in the negotiation reply.
* Connection facts (client, HELO, connection macros) live for the connection; message
  facts are cleared at MAIL, ABORT and after each verdict, so several messages (and
  Postfix's ABORT after every one) work on one connection.
* A message is kept up to ``max_message_size`` bytes; the rest is passed unscanned and
  the request says so.
* At end of message the scan runs under ``scan_timeout``; a PROGRESS reply keeps Postfix
  waiting during a long scan. An engine failure or timeout gives the configured safe
  action, never a lost or bounced message.
* The engine is taken from the ``EngineSlot`` per message, never per connection: after
  a reload the next message on every open connection uses the new engine, while a
  message being scanned finishes on the one it started with.
* Garbage from the peer (``RemoteProtocolError``) closes this connection only, with a
  log line; the MTA then applies its own ``milter_default_action``.
"""

from __future__ import annotations

import itertools
import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, final

import trio

from engine import Envelope, ScanRequest, ScanResult
from engine.mime import bare_address
from milterd.logging import log_scan
from milterd.protocol import (
    NEED_DATA,
    Abort,
    ActionFlag,
    BodyChunk,
    Command,
    Connect,
    ConnectionClosed,
    Continue,
    EndOfMessage,
    Family,
    Header,
    HealthCheck,
    Helo,
    Macros,
    MacroStage,
    MailFrom,
    MilterConnection,
    MilterProtocolError,
    Negotiate,
    Progress,
    ProtocolFlag,
    Quit,
    QuitNewConnection,
    RcptTo,
    RemoteProtocolError,
    Role,
    negotiate_reply,
)
from milterd.verdict import fallback_actions, verdict_actions

if TYPE_CHECKING:
    from collections.abc import Iterator

    from engine import Engine
    from milterd.protocol import Action as MilterAction
    from milterd.settings import MilterSettings

__all__ = ["WANTED_ACTIONS", "WANTED_PROTOCOL", "EngineSlot", "MilterSession"]

log = logging.getLogger(__name__)
scan_log = logging.getLogger("milterd.scan")

WANTED_ACTIONS = ActionFlag.ADDHDRS | ActionFlag.CHGHDRS | ActionFlag.QUARANTINE
# Steps we skip entirely, and "no reply" for every step we never act on.
WANTED_PROTOCOL = (
    ProtocolFlag.NODATA
    | ProtocolFlag.NOEOH
    | ProtocolFlag.NOUNKNOWN
    | ProtocolFlag.NR_CONN
    | ProtocolFlag.NR_HELO
    | ProtocolFlag.NR_MAIL
    | ProtocolFlag.NR_RCPT
    | ProtocolFlag.NR_DATA
    | ProtocolFlag.NR_UNKN
    | ProtocolFlag.NR_HDR
    | ProtocolFlag.NR_EOH
    | ProtocolFlag.NR_BODY
)
WANTED_MACROS = (
    (MacroStage.CONNECT, "j {daemon_name} {client_addr} {client_name} {client_port} {client_ptr}"),
    (MacroStage.HELO, "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}"),
    (MacroStage.MAIL, "i {auth_type} {auth_authen} {auth_author} {mail_addr}"),
    (MacroStage.RCPT, "i {rcpt_addr} {rcpt_mailer}"),
    (MacroStage.EOM, "i"),
)
_CONNECTION_STAGES = frozenset({Command.CONNECT, Command.HELO})
_RECEIVE_SIZE = 256 * 1024
_HEALTH_REPLY = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npong\r\n"
_ids = itertools.count(1)
_CONTINUE = Continue()


@final
class EngineSlot:
    """The engine new messages are scanned with, and a count of the scans on each engine.

    ``replace`` puts a new engine in the slot (a reload); ``wait_idle`` then tells when
    the last scan still running on the old one has finished, so it can be closed.
    """

    def __init__(self, engine: Engine) -> None:
        self._current = engine
        # Keyed by id(): an engine need not be hashable, and one that is counted here is
        # also referenced (current, or waited on by its retirement), so ids stay unique.
        self._scans: dict[int, int] = {}
        self._idle: dict[int, trio.Event] = {}

    @property
    def current(self) -> Engine:
        return self._current

    @contextmanager
    def lease(self) -> Iterator[Engine]:
        """The current engine, counted as busy until the block ends."""
        engine = self._current
        key = id(engine)
        self._scans[key] = self._scans.get(key, 0) + 1
        try:
            yield engine
        finally:
            left = self._scans[key] - 1
            if left:
                self._scans[key] = left
            else:
                del self._scans[key]
                idle = self._idle.pop(key, None)
                if idle is not None:
                    idle.set()

    def replace(self, engine: Engine) -> Engine:
        """Scan new messages with ``engine``; return the engine it replaces."""
        old, self._current = self._current, engine
        return old

    def busy(self, engine: Engine) -> int:
        """How many scans run on ``engine`` now."""
        return self._scans.get(id(engine), 0)

    async def wait_idle(self, engine: Engine) -> None:
        """Return once no scan runs on ``engine`` (at once when none does)."""
        key = id(engine)
        if key not in self._scans:
            await trio.lowlevel.checkpoint()
            return
        await self._idle.setdefault(key, trio.Event()).wait()


class ScanObserver(Protocol):
    """Told of every finished scan (the controller's counters and history)."""

    def __call__(
        self,
        request: ScanRequest,
        result: ScanResult,
        elapsed: float,
        *,
        size: int,
        source: str,
    ) -> None: ...


class MilterSession:
    """Serve one MTA connection until it quits, closes or misbehaves.

    ``engine`` is an ``EngineSlot`` (the daemon's, which a reload refills) or an engine
    to use for every message.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        engine: Engine | EngineSlot,
        settings: MilterSettings,
        peer: str = "",
        on_scanned: ScanObserver | None = None,
    ) -> None:
        self.stream = stream
        self.engines = engine if isinstance(engine, EngineSlot) else EngineSlot(engine)
        self.settings = settings
        self.peer = peer
        self.on_scanned = on_scanned
        self.id = next(_ids)
        self.conn = MilterConnection(Role.FILTER, max_frame_size=settings.max_frame_size)
        self._connection_macros: dict[str, str] = {}
        self._connect: Connect | None = None
        self._helo: str | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        self._message_macros: dict[str, str] = {}
        self._mail_from: str | None = None
        self._mail_args: tuple[str, ...] = ()
        self._rcpts: list[str] = []
        self._headers: list[tuple[str, str]] = []
        self._header_counts: dict[str, int] = {}
        self._body = bytearray()
        self._size = 0
        self._truncated = False

    async def run(self) -> None:
        try:
            await self._serve()
        except RemoteProtocolError as exc:
            log.warning(
                "connection %d from %s: closing after a protocol error: %s",
                self.id,
                self.peer or "?",
                exc,
            )
        except MilterProtocolError as exc:
            # Our own misuse of the codec: a bug, but it costs only this connection.
            log.error("connection %d: internal protocol error: %s", self.id, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("connection %d: peer went away", self.id)

    async def _serve(self) -> None:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                data = await self.stream.receive_some(_RECEIVE_SIZE)
                conn.receive_data(data)
                continue
            if isinstance(event, ConnectionClosed | Quit):
                return
            if isinstance(event, EndOfMessage):
                if event.data:
                    self._add_body(event.data)
                await self._send(await self._verdict())
                self._reset_message()
                continue
            if isinstance(event, HealthCheck):
                await self.stream.send_all(_HEALTH_REPLY)
                return
            self._handle(event)
            if isinstance(event, Negotiate):
                reply = negotiate_reply(
                    event, actions=WANTED_ACTIONS, protocol=WANTED_PROTOCOL, macros=WANTED_MACROS
                )
                await self.stream.send_all(conn.send(reply))
            elif conn.reply_owed is not None:
                await self.stream.send_all(conn.send(_CONTINUE))

    def _handle(self, event: object) -> None:
        """Collect what an event tells us (pure bookkeeping, no I/O)."""
        if isinstance(event, BodyChunk):
            self._add_body(event.data)
        elif isinstance(event, Header):
            self._add_header(event.name, event.value)
        elif isinstance(event, Macros):
            target = (
                self._connection_macros
                if event.stage in _CONNECTION_STAGES
                else self._message_macros
            )
            for name, value in event.pairs:
                target[name.strip("{}")] = value
        elif isinstance(event, RcptTo):
            self._rcpts.append(bare_address(event.address))
        elif isinstance(event, MailFrom):
            macros = self._message_macros
            self._reset_message()
            self._message_macros = macros  # the MAIL macros arrived just before MAIL itself
            self._mail_from = bare_address(event.address)
            self._mail_args = event.args
        elif isinstance(event, Abort):
            self._reset_message()
        elif isinstance(event, Connect):
            self._connect = event
        elif isinstance(event, Helo):
            self._helo = event.name
        elif isinstance(event, QuitNewConnection):
            self._reset_message()
            self._connect, self._helo = None, None
            self._connection_macros = {}

    def _add_header(self, name: str, value: str) -> None:
        key = name.lower()
        self._header_counts[key] = self._header_counts.get(key, 0) + 1
        size = len(name) + len(value) + 4
        if self._size + size > self.settings.max_message_size:
            self._truncated = True
            return
        self._size += size
        self._headers.append((name, value))

    def _add_body(self, data: bytes) -> None:
        room = self.settings.max_message_size - self._size
        if len(data) > room:
            data = data[: max(room, 0)]
            self._truncated = True
        self._size += len(data)
        self._body += data

    async def _verdict(self) -> list[MilterAction]:
        request = self._request()
        started = time.perf_counter()
        result: ScanResult | None = None
        reason = "timeout"
        with trio.move_on_after(self.settings.scan_timeout):
            try:
                result = await self._scan_keeping_alive(request)
            # The session's top-level guard: whatever went wrong inside the engine, the
            # MTA gets the configured safe action for this message instead of an error.
            except Exception:
                log.exception(
                    "connection %d: scan failed; applying on_error=%s",
                    self.id,
                    self.settings.on_error,
                )
                reason = "error"
        if result is None:
            scan_log.warning(
                "qid=%s scan %s; safe action %s",
                request.envelope.queue_id or "-",
                reason,
                self.settings.on_error,
            )
            return fallback_actions(self.settings, reason, self._granted)
        elapsed = time.perf_counter() - started
        self._log_result(request, result, elapsed)
        if self.on_scanned is not None:
            # Statistics, history and metrics count milter scans like API scans.
            self.on_scanned(request, result, elapsed, size=self._size, source="milter")
        return verdict_actions(result, self.settings, self._header_counts, self._granted)

    async def _scan_keeping_alive(self, request: ScanRequest) -> ScanResult:
        """Scan, sending PROGRESS every ``progress_interval`` so the MTA keeps waiting."""
        result: list[ScanResult] = []

        async def scan() -> None:
            with self.engines.lease() as engine:
                result.append(await engine.scan(request))
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(scan)
            while True:
                await trio.sleep(self.settings.progress_interval)
                try:
                    await self.stream.send_all(self.conn.send(Progress()))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # the MTA went away: not a scan failure; sending the verdict notices
        return result[0]

    def _request(self) -> ScanRequest:
        macros = {**self._connection_macros, **self._message_macros}
        connect = self._connect
        address = (
            connect.address if connect and connect.family in (Family.INET, Family.INET6) else None
        )
        hostname = connect.hostname if connect else None
        if hostname is None or hostname.startswith("[") or hostname == "unknown":
            hostname = None  # Postfix's way of saying the client has no (verified) name
        envelope = Envelope(
            client_addr=address or macros.get("client_addr"),
            client_name=hostname,
            client_port=connect.port if connect else None,
            helo=self._helo,
            mail_from=self._mail_from,
            mail_args=self._mail_args,
            rcpts=tuple(self._rcpts),
            queue_id=macros.get("i"),
            auth_user=macros.get("auth_authen") or None,
            mta_name=macros.get("daemon_name") or macros.get("j"),
            macros=macros,
        )
        return ScanRequest(
            envelope=envelope,
            headers=tuple(self._headers),
            body=bytes(self._body),
            body_truncated=self._truncated,
            log_tag=envelope.queue_id,
        )

    @property
    def _granted(self) -> ActionFlag:
        negotiated = self.conn.negotiated
        return negotiated.actions if negotiated else ActionFlag.NONE

    async def _send(self, actions: list[MilterAction]) -> None:
        await self.stream.send_all(self.conn.send_many(actions))

    def _log_result(self, request: ScanRequest, result: ScanResult, elapsed: float) -> None:
        log_scan(request, result, elapsed, qid=request.envelope.queue_id, via="milter")
