"""HTTP/1.1 on h11: one request in, one response out, with the limits a filter needs.

Theory of operation: h11 owns the wire (framing, keep-alive, HTTP/1.0 clients such as
``rspamc``, chunked bodies, ``Expect: 100-continue``); this module drives it over a trio
stream and turns its events into an ``HttpRequest`` a handler can use, and a handler's
``HttpResponse`` back into bytes.

* Rule 1: a body larger than the limit is refused (413) from its ``Content-Length``,
  before any of it is read; a chunked body is refused as soon as it grows past the limit.
  Either way the connection closes after the answer, since the rest of the body is unread.
* Rule 2: anything the client gets wrong (bad framing, a timeout) is an ``HttpError``
  with a 4xx status, answered with a JSON error when h11 still lets us answer, and then
  the connection closes. It never reaches another connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, urlsplit

import h11

if TYPE_CHECKING:
    from collections.abc import Mapping

    import trio

__all__ = [
    "HttpError",
    "HttpRequest",
    "HttpResponse",
    "RequestReader",
    "error_response",
    "json_response",
]

_RECEIVE_SIZE: Final = 64 * 1024
MAX_HEADER_BYTES: Final = 64 * 1024
SERVER_NAME: Final = b"milterd"
_EMPTY: Mapping[str, str] = MappingProxyType({})
_REASONS: Final = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}


class HttpError(Exception):
    """A request we refuse: its status and a message for the JSON error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> HttpResponse:
        return error_response(self.status, self.message)


@dataclass(slots=True, frozen=True)
class HttpRequest:
    """One request. Header names are lower case; values are decoded as UTF-8 (an invalid
    byte becomes U+FFFD). ``client`` is the peer's address, ``None`` on a unix socket."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    client: str | None = "127.0.0.1"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (lower case), in order (``Rcpt`` repeats)."""
        return [value for key, value in self.headers if key == name]


@dataclass(slots=True, frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(value: object, status: int = 200) -> HttpResponse:
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HttpResponse(status, body)


def error_response(status: int, message: str) -> HttpResponse:
    """Rspamd's error shape: ``{"error": "...", "error_domain": "..."}``."""
    return json_response({"error": message, "error_domain": "milterd"}, status)


class RequestReader:
    """One connection's h11 state, read and written through a trio stream."""

    def __init__(self, stream: trio.abc.Stream, max_body: int) -> None:
        self.stream = stream
        self.max_body = max_body
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._head = False

    async def read(self, client: str | None) -> HttpRequest | None:
        """The next whole request, or None when the client closed between requests.

        Raises:
            HttpError: the request is malformed (400) or too large (413, Rule 1).
        """
        try:
            head = await self._next_event()
            if isinstance(head, h11.ConnectionClosed):
                return None
            assert isinstance(head, h11.Request)
            self._head = head.method == b"HEAD"
            self._check_length(head)
            if self.conn.they_are_waiting_for_100_continue:
                await self._send(h11.InformationalResponse(status_code=100, headers=[]))
            body = await self._read_body()
        except h11.RemoteProtocolError as exc:
            raise HttpError(exc.error_status_hint, f"malformed request: {exc}") from None
        target = head.target.decode("utf-8", "replace")
        parts = urlsplit(target)
        return HttpRequest(
            method=head.method.decode("ascii", "replace").upper(),
            path=parts.path or "/",
            headers=tuple(
                (name.decode("ascii", "replace"), value.decode("utf-8", "replace"))
                for name, value in head.headers
            ),
            body=body,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            client=client,
        )

    def _check_length(self, head: h11.Request) -> None:
        for name, value in head.headers:
            if name == b"content-length" and int(value) > self.max_body:
                raise HttpError(413, f"request body over the limit of {self.max_body} bytes")

    async def _read_body(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            if not isinstance(event, h11.Data):
                raise HttpError(400, "the request body ended early")
            size += len(event.data)
            if size > self.max_body:
                raise HttpError(413, f"request body over the limit of {self.max_body} bytes")
            chunks.append(bytes(event.data))

    async def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.receive_some(_RECEIVE_SIZE)
            self.conn.receive_data(bytes(data))  # b"" is end of stream: h11 turns it into an event

    @property
    def between_requests(self) -> bool:
        """No byte of a next request has arrived (an idle keep-alive connection)."""
        return self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]

    @property
    def can_respond(self) -> bool:
        """Whether a response may still be sent on this connection (Rule 2)."""
        return self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    async def respond(self, response: HttpResponse) -> None:
        headers = [
            (b"Server", SERVER_NAME),
            (b"Content-Type", response.content_type.encode("latin-1")),
            (b"Content-Length", str(len(response.body)).encode("ascii")),
        ]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        if self.conn.their_state is not h11.DONE:
            headers.append((b"Connection", b"close"))  # the body was not read: Rule 1
        # A reason phrase always: rspamc 3.4 crashes on a status line without one.
        reason = _REASONS.get(response.status, b"Unknown")
        await self._send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        if response.body and not self._head:  # HEAD: the headers only (RFC 9110 §9.3.2)
            await self._send(h11.Data(data=response.body))
        await self._send(h11.EndOfMessage())

    def next_cycle(self) -> bool:
        """Get ready for the next request on a kept-alive connection; False: close it."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True
        return False

    async def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)
