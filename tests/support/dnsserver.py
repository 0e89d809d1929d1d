"""An authoritative DNS server on loopback for tests: zone data over UDP and TCP, with knobs.

Usage::

    zones = ZoneData().add_records("example.test", {"@": {"A": "192.0.2.1", "TXT": "v=spf1 -all"}})
    with DnsServer(zones) as server:
        resolver = server.resolver()           # a real Resolver asking this server
        server.delay("slow.example.test", 2.0) # answer late (math.inf: never)
        server.fail("broken.example.test")     # SERVFAIL (or any rcode)
        server.truncate("big.example.test")    # TC bit over UDP: the client must use TCP
        server.count("example.test", "A")      # queries that reached the server

The answers come from ``engine.dns.ZoneData`` (the same data module unit tests load into
``Resolver.from_zones``). The server listens on one ephemeral port on 127.0.0.1 and, when
the machine has it, ::1, for both UDP and TCP, so "host:port" reaches either transport.
UDP replies larger than the client's EDNS payload (512 bytes without EDNS) are truncated
as a real server truncates them, so large TXT records exercise the TCP fallback too.

It runs its own ``trio.run`` in a thread: it keeps answering whatever the test's trio
loop is doing (including while a test blocks it), and a benchmark measuring the client's
CPU with ``time.thread_time()`` does not count the server's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import trio

from engine.dns import DnsSettings, Resolver, ZoneData, parse_nameserver

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["DnsServer", "LoggedQuery"]

_HOST4, _HOST6 = "127.0.0.1", "::1"
_START_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class LoggedQuery:
    transport: str  # "udp" or "tcp"
    family: int  # 4 or 6
    name: str  # lower-case, no final dot
    rdtype: str


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class DnsServer:
    """An authoritative server for ``zones`` on loopback; start with ``with`` or ``start()``."""

    def __init__(self, zones: ZoneData | None = None, *, ipv6: bool | None = None) -> None:
        """Args:
        zones: what to serve (add zones later with ``server.zones.add_…``).
        ipv6: also listen on ::1; None: when the machine supports it.
        """
        self.zones = ZoneData() if zones is None else zones
        self.queries: list[LoggedQuery] = []
        self.port = 0
        self.ipv6 = _has_ipv6() if ipv6 is None else ipv6
        self._delays: dict[str, float] = {}
        self._rcodes: dict[str, dns.rcode.Rcode] = {}
        self._truncated: set[str] = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._failure: BaseException | None = None

    # -- knobs --------------------------------------------------------------------------

    def delay(self, name: str, seconds: float) -> None:
        """Answer queries for ``name`` after ``seconds`` (``math.inf``: never)."""
        self._delays[_key(name)] = seconds

    def drop(self, name: str) -> None:
        """Never answer queries for ``name`` (the client times out)."""
        self.delay(name, math.inf)

    def fail(self, name: str, rcode: dns.rcode.Rcode = dns.rcode.SERVFAIL) -> None:
        """Answer queries for ``name`` with ``rcode`` and nothing else."""
        self._rcodes[_key(name)] = rcode

    def truncate(self, name: str) -> None:
        """Answer UDP queries for ``name`` with an empty, truncated (TC) reply."""
        self._truncated.add(_key(name))

    def reset(self) -> None:
        """Forget the knobs and the query log (the zones stay)."""
        self._delays.clear()
        self._rcodes.clear()
        self._truncated.clear()
        self.queries.clear()

    def count(
        self, name: str | None = None, rdtype: str | None = None, transport: str | None = None
    ) -> int:
        """How many logged queries match every given field."""
        return sum(
            1
            for q in list(self.queries)
            if (name is None or q.name == _key(name))
            and (rdtype is None or q.rdtype == rdtype.upper())
            and (transport is None or q.transport == transport)
        )

    # -- addresses and clients ----------------------------------------------------------

    @property
    def nameserver(self) -> str:
        """ "127.0.0.1:port", for ``[dns] nameservers``."""
        return f"{_HOST4}:{self.port}"

    @property
    def nameserver6(self) -> str:
        """ "[::1]:port" (only when ``ipv6``)."""
        return f"[{_HOST6}]:{self.port}"

    def settings(self, **overrides: object) -> DnsSettings:
        """``DnsSettings`` asking this server, with short timeouts fit for tests."""
        base = DnsSettings(nameservers=(parse_nameserver(self.nameserver),), timeout=0.5)
        return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]

    def resolver(self, **overrides: object) -> Resolver:
        """A real ``Resolver`` (network upstream, cache) asking this server."""
        return Resolver.from_settings(self.settings(**overrides))

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> DnsServer:
        self._thread = threading.Thread(target=self._run, name="test-dns-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the test DNS server did not start")
        if self._failure is not None:
            raise RuntimeError("the test DNS server failed to start") from self._failure
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._token is not None and self._cancel is not None:
            # Thread-safe, and unlike trio.from_thread it works from inside a trio run too
            # (a test's own thread).
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._cancel.cancel)
        self._thread.join(_START_TIMEOUT)
        self._thread = None
        if self._failure is not None:
            raise RuntimeError("the test DNS server failed") from self._failure

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except Exception as exc:  # a bug in the server: stop() re-raises it in the test
            self._failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        udp, tcp = await self._bind()
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                for sock in udp:
                    nursery.start_soon(self._serve_udp, sock, nursery)
                for listener in tcp:
                    nursery.start_soon(trio.serve_listeners, self._serve_tcp, [listener])
                self._ready.set()
        finally:
            for sock in udp:
                sock.close()
            with trio.CancelScope(shield=True):
                for listener in tcp:
                    await listener.aclose()

    async def _bind(self) -> tuple[list[trio.socket.SocketType], list[trio.SocketListener]]:
        """UDP and TCP on one ephemeral port, on every loopback address."""
        hosts = [(socket.AF_INET, _HOST4)] + ([(socket.AF_INET6, _HOST6)] if self.ipv6 else [])
        for _ in range(50):
            udp: list[trio.socket.SocketType] = []
            tcp: list[trio.socket.SocketType] = []
            try:
                for family, host in hosts:
                    udp.append(trio.socket.socket(family, socket.SOCK_DGRAM))
                    await udp[-1].bind((host, self.port))
                    self.port = udp[-1].getsockname()[1]
                    tcp.append(trio.socket.socket(family, socket.SOCK_STREAM))
                    tcp[-1].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    await tcp[-1].bind((host, self.port))
                    tcp[-1].listen(64)
            except OSError as exc:
                for sock in udp + tcp:
                    sock.close()
                self.port = 0
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue  # another process holds this port on some address: pick another
            return udp, [trio.SocketListener(sock) for sock in tcp]
        raise RuntimeError("no free port for the test DNS server")

    # -- answering ----------------------------------------------------------------------

    async def _answer(self, wire: bytes, transport: str, family: int) -> bytes | None:
        """The reply to ``wire`` (None: none at all), after any delay."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # garbage gets no reply, as from a real server
        if len(query.question) != 1:
            return self.zones.answer(query).to_wire()
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append(LoggedQuery(transport, family, name, rdtype))
        delay = self._delays.get(name, 0.0)
        if delay == math.inf:
            await trio.sleep_forever()
        if delay:
            await trio.sleep(delay)
        if name in self._rcodes:
            response = dns.message.make_response(query)
            response.set_rcode(self._rcodes[name])
            return response.to_wire()
        response = self.zones.answer(query)
        if transport == "tcp":
            return response.to_wire(max_size=65535)  # not the client's UDP payload size
        limit = max(512, query.payload) if query.edns >= 0 else 512  # RFC 6891 §6.2.5
        if name not in self._truncated:
            try:
                return response.to_wire(max_size=limit)
            except dns.exception.TooBig:
                pass
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.TC | (response.flags & dns.flags.AA)
        return truncated.to_wire()

    async def _serve_udp(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        family = 6 if sock.family == socket.AF_INET6 else 4
        while True:
            wire, address = await sock.recvfrom(65535)
            nursery.start_soon(self._reply_udp, sock, wire, address, family)

    async def _reply_udp(
        self, sock: trio.socket.SocketType, wire: bytes, address: tuple[object, ...], family: int
    ) -> None:
        reply = await self._answer(wire, "udp", family)
        if reply is not None:
            with contextlib.suppress(OSError):  # the client went away, as real ones do
                await sock.sendto(reply, address)

    async def _serve_tcp(self, stream: trio.SocketStream) -> None:
        family = 6 if stream.socket.family == socket.AF_INET6 else 4
        async with stream:
            try:
                # Several queries may come over one connection, one after the other
                # (RFC 7766 §6.2.1); each is a two-byte length and a message.
                while (size := await _read(stream, 2)) is not None:
                    wire = await _read(stream, int.from_bytes(size, "big"))
                    reply = None if wire is None else await self._answer(wire, "tcp", family)
                    if reply is None:
                        return
                    await stream.send_all(len(reply).to_bytes(2, "big") + reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client closed first


async def _read(stream: trio.SocketStream, count: int) -> bytes | None:
    """Exactly ``count`` bytes, or None at end of stream."""
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind((_HOST6, 0))
    except OSError:
        return False
    return True
