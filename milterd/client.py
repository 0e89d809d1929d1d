"""Client commands that talk to a running daemon over HTTP: ``scan --connect``, ``stat``,
``history`` and ``learn --connect``.

A small HTTP/1.1 client on h11 and trio (the same parser the server uses), one request
per connection as ``rspamc`` does. The controller's password comes from ``--password``
or, so that it stays out of the process list, from ``$MILTERD_PASSWORD``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import h11
import trio
import zstandard

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence

    from engine import Config

__all__ = [
    "ClientError",
    "Reply",
    "add_connection_arguments",
    "default_address",
    "history",
    "http_request",
    "learn_files",
    "scan_files",
    "stat",
]

PASSWORD_ENV: Final = "MILTERD_PASSWORD"
_RECEIVE: Final = 64 * 1024


class ClientError(Exception):
    """The daemon could not be reached, or did not answer in HTTP."""


@dataclass(slots=True, frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The JSON error message of a failed request, or the status line's meaning."""
        try:
            value = self.json()
        except ValueError:
            return self.body.decode("utf-8", "replace").strip() or f"HTTP {self.status}"
        if isinstance(value, dict) and "error" in value:
            return str(value["error"])
        return f"HTTP {self.status}"


def parse_address(text: str) -> tuple[str, str | int]:
    """``unix:/p`` → ("unix", "/p"); ``host:port`` and ``[v6]:port`` → (host, port)."""
    if text.startswith("unix:"):
        return "unix", text[5:]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ClientError(f"{text!r}: expected HOST:PORT, [IPv6]:PORT or unix:/path")
    return host.strip("[]"), int(port)


def default_address(config: Config, section: str, fallback: str) -> str:
    """Where this machine's daemon listens: the first ``listen`` of ``section``, with a
    wildcard host replaced by the loopback address."""
    listen = config.data.get(section, {})
    value = listen.get("listen", fallback) if isinstance(listen, dict) else fallback
    items = value if isinstance(value, list) else [value]
    if not items:
        return fallback
    first = str(items[0])
    if first.startswith("unix:"):
        return first
    host, _, port = first.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}.get(host, host)
    return f"{host}:{port}"


async def http_request(
    address: str,
    method: str,
    path: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> Reply:
    """One request on a fresh connection; the reply body decompressed when it is zstd.
    Callers bound it with ``trio.fail_after``.

    Raises:
        ClientError: cannot connect, or the peer does not speak HTTP.
    """
    host, where = parse_address(address)
    try:
        if host == "unix":
            stream: trio.abc.Stream = await trio.open_unix_socket(str(where))
        else:
            stream = await trio.open_tcp_stream(host, int(where))
        async with stream:
            return await _exchange(stream, host, method, path, headers, body)
    except OSError as exc:
        raise ClientError(f"cannot connect to {address}: {exc.strerror or exc}") from None
    except (h11.ProtocolError, trio.BrokenResourceError) as exc:
        raise ClientError(f"{address}: not an HTTP answer: {exc}") from None


async def _exchange(
    stream: trio.abc.Stream,
    host: str,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
) -> Reply:
    conn = h11.Connection(h11.CLIENT)
    request_headers = [
        ("Host", "localhost" if host == "unix" else host),
        ("User-Agent", "milterd"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *headers,
    ]
    data = conn.send(h11.Request(method=method, target=path, headers=request_headers))
    data += conn.send(h11.Data(data=body)) if body else b""
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)
    status, reply_headers, chunks = 0, {}, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_RECEIVE)))
        elif isinstance(event, h11.Response):
            status = event.status_code
            reply_headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    payload = b"".join(chunks)
    if reply_headers.get("compression", "").lower() == "zstd":
        payload = zstandard.ZstdDecompressor().decompress(payload)
    return Reply(status, reply_headers, payload)


def add_connection_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--connect",
        metavar="HOST:PORT",
        help=f"the daemon's {what} (default: from the configuration)",
    )
    parser.add_argument(
        "--password",
        help=f"controller password (better: ${PASSWORD_ENV}, which ps does not show)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--json", action="store_true", help="print the daemon's JSON")


def _password_headers(args: argparse.Namespace) -> list[tuple[str, str]]:
    password = args.password or os.environ.get(PASSWORD_ENV)
    return [("Password", password)] if password else []


async def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> Reply:
    """``http_request`` to ``args.connect`` within ``args.timeout`` seconds."""
    try:
        with trio.fail_after(args.timeout):
            return await http_request(args.connect, method, path, headers=headers, body=body)
    except trio.TooSlowError:
        raise ClientError(f"{args.connect} did not answer within {args.timeout:g}s") from None


def _fail(message: str) -> int:
    print(f"milterd: {message}", file=sys.stderr)
    return 1


# -- scan and learn ---------------------------------------------------------------------------


def _envelope_headers(args: argparse.Namespace) -> list[tuple[str, str]]:
    headers = []
    for name, value in (
        ("IP", getattr(args, "ip", None)),
        ("Helo", getattr(args, "helo", None)),
        ("Hostname", getattr(args, "hostname", None)),
        ("From", getattr(args, "mail_from", None)),
    ):
        if value is not None:
            headers.append((name, value))
    headers += [("Rcpt", r) for r in getattr(args, "rcpt", None) or []]
    return headers


async def scan_files(args: argparse.Namespace, files: Sequence[str]) -> int:
    """``milterd scan --connect``: POST each file to ``/checkv2``; print like ``scan``."""
    status = 0
    headers = _envelope_headers(args)
    for name in files:
        raw = _read(name)
        if raw is None:
            status = 1
            continue
        try:
            reply = await _call(args, "POST", "/checkv2", headers, raw)
        except ClientError as exc:
            return _fail(str(exc))
        if reply.status != 200:
            status = 1
            print(f"milterd: {name}: {reply.status} {reply.error}", file=sys.stderr)
            continue
        result = reply.json()
        assert isinstance(result, dict)
        if args.json:
            print(json.dumps({"file": name, **result}, ensure_ascii=False))
        else:
            print(format_scan(name, result))
    return status


def format_scan(name: str, result: Mapping[str, object]) -> str:
    lines = [
        f"{name}: {result.get('action')} (score {_num(result.get('score')):.2f} / "
        f"{_num(result.get('required_score')):.2f})"
    ]
    symbols = result.get("symbols")
    rows = list(symbols.values()) if isinstance(symbols, dict) else []
    for sym in sorted(rows, key=lambda s: (-abs(_num(s.get("score"))), str(s.get("name")))):
        options = sym.get("options") or []
        extra = f" [{', '.join(map(str, options))}]" if options else ""
        lines.append(
            f"  {sym.get('name', ''):<28} {_num(sym.get('score')):6.2f}  "
            f"{sym.get('description', '')}{extra}"
        )
    return "\n".join(lines)


async def learn_files(args: argparse.Namespace, files: Sequence[str], *, is_spam: bool) -> int:
    """``milterd learn --connect``: POST each file to ``/learnspam`` or ``/learnham``.

    Exit status 0 when every message was learned or had been already (Rspamd's 208), as
    learning scripts (IMAPSieve and the like) expect.
    """
    path = "/learnspam" if is_spam else "/learnham"
    headers = _password_headers(args) + _envelope_headers(args)
    status = 0
    for name in files:
        raw = _read(name)
        if raw is None:
            status = 1
            continue
        try:
            reply = await _call(args, "POST", path, headers, raw)
        except ClientError as exc:
            return _fail(str(exc))
        if args.json:
            print(json.dumps({"file": name, "status": reply.status, **_as_dict(reply)}))
        elif reply.status == 200:
            print(f"{name}: learned as {'spam' if is_spam else 'ham'}")
        else:
            print(f"{name}: not learned: {reply.error}")
        if reply.status not in (200, 208):
            status = 1
    return status


def _read(name: str) -> bytes | None:
    try:
        return sys.stdin.buffer.read() if name == "-" else _read_file(name)
    except OSError as exc:
        print(f"milterd: {name}: {exc.strerror}", file=sys.stderr)
        return None


def _read_file(name: str) -> bytes:
    with open(name, "rb") as f:
        return f.read()


def _as_dict(reply: Reply) -> dict[str, object]:
    try:
        value = reply.json()
    except ValueError:
        return {"body": reply.body.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"value": value}


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


# -- stat and history ---------------------------------------------------------------------------


async def controller_json(args: argparse.Namespace, path: str) -> dict[str, Any] | int:
    """GET ``path`` from the controller: its JSON object, or the exit status after saying
    what went wrong (unreachable, refused, not an object)."""
    try:
        reply = await _call(args, "GET", path, _password_headers(args))
    except ClientError as exc:
        return _fail(str(exc))
    if reply.status != 200:
        return _fail(f"{path}: {reply.status} {reply.error}")
    data = reply.json()
    if not isinstance(data, dict):
        return _fail(f"{path}: the answer is not a JSON object")
    return data


async def stat(args: argparse.Namespace) -> int:
    """``milterd stat``: the controller's ``/stat``, readable or as JSON."""
    data = await controller_json(args, "/stat")
    if isinstance(data, int):
        return data
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    scanned = int(_num(data.get("scanned")))
    lines = [f"Uptime: {_duration(_num(data.get('uptime')))}", f"Messages scanned: {scanned}"]
    actions = data.get("actions")
    if isinstance(actions, dict):
        for action, count in actions.items():
            share = 100.0 * _num(count) / scanned if scanned else 0.0
            lines.append(f"  {action:<16} {int(_num(count)):>8}  {share:5.1f}%")
    times = [_num(t) for t in data.get("scan_times") or []]
    if times:
        lines.append(f"Average scan time: {1000 * sum(times) / len(times):.1f} ms")
    lines.append(f"Messages learned: {int(_num(data.get('learned')))}")
    lines += [
        f"Statistics {row.get('symbol')}: {int(_num(row.get('revision')))} learned "
        f"({row.get('type')})"
        for row in data.get("statfiles") or []
    ]
    print("\n".join(lines))
    return 0


async def history(args: argparse.Namespace) -> int:
    """``milterd history``: the last ``--limit`` scans, newest first."""
    data = await controller_json(args, f"/history?from=0&to={max(args.limit, 1) - 1}")
    if isinstance(data, int):
        return data
    rows = data.get("rows") or []
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_num(row.get("unix_time"))))
        symbols = row.get("symbols") or {}
        print(
            f"{when} {row.get('qid') or '-'} {row.get('ip') or '-'} "
            f"<{row.get('sender_smtp', '')}> -> {','.join(row.get('rcpt_smtp') or []) or '-'}: "
            f"{row.get('action')} {_num(row.get('score')):.2f}/"
            f"{_num(row.get('required_score')):.2f} {str(row.get('subject', ''))[:60]!r}"
        )
        if symbols:
            print("    " + " ".join(sorted(symbols)))
    if not rows:
        print("no scans in the history")
    return 0


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    return f"{days}d {hours}h {minutes}m {s}s" if days else f"{hours}h {minutes}m {s}s"
