"""The scan API (``/checkv2`` and friends) over real loopback sockets: what a client reads.

The daemon runs in-process with a small real engine (GTUBE, header checks, result
headers; no shipped rule files). The message lacks Date and Message-ID: it scores 3.5
(MISSING_DATE 1, MISSING_MID 2.5). Envelope headers are checked by their effect: settings
tables that match on the client address, sender, recipient or login change the action.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import trio
import zstandard

from engine import Engine
from engine.modules.gtube import Gtube
from engine.modules.headers import Headers
from engine.modules.milter_headers import MilterHeaders
from milterd.client import Reply, http_request
from milterd.daemon import Daemon
from milterd.http import CONTROLLER_SECTION, HTTP_SECTION, HttpSettings
from milterd.settings import MILTER_SECTION, MilterSettings

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

MODULES = (Gtube, Headers, MilterHeaders)
MESSAGE = b"From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: Hi\r\n\r\nHello\r\n"
CONFIG = """
[actions]
greylist = false
reject = 15.0

[settings.by_ip]
ip = ["203.0.113.0/24"]
actions = { reject = 3.0 }

[settings.by_sender]
from = ["@spam.test"]
actions = { add_header = 3.0 }

[settings.by_rcpt]
rcpt = ["trap@example.test"]
actions = { rewrite_subject = 3.0 }

[settings.by_user]
authenticated = true
actions = { soft_reject = 3.0 }

[settings.strict]
actions = { reject = 1.0 }
"""
LIMIT = 64 * 1024


class Server:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        assert daemon.http is not None
        name = daemon.http.scan_listeners[0].socket.getsockname()
        self.address = f"127.0.0.1:{name[1]}"
        self.port = int(name[1])

    async def post(
        self, path: str = "/checkv2", body: bytes = MESSAGE, headers: Sequence[tuple[str, str]] = ()
    ) -> Reply:
        with trio.fail_after(10):
            return await http_request(self.address, "POST", path, headers=headers, body=body)

    async def raw(self, data: bytes) -> bytes:
        """Send ``data`` as it is; everything the server answers until it closes."""
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            async with stream:
                await stream.send_all(data)
                return await _read_all(stream)


async def _read_all(stream: trio.abc.Stream) -> bytes:
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _status_and_json(raw: bytes) -> tuple[int, object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


@pytest.fixture
async def server(tmp_path: Path, nursery: trio.Nursery) -> Server:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "milterd.toml").write_text(CONFIG, encoding="utf-8")
    config = Engine.load_config(
        etc,
        {"milter": MILTER_SECTION, "http": HTTP_SECTION, "controller": CONTROLLER_SECTION},
        environ={"MILTERD_DATA_DIR": str(tmp_path / "data")},
        modules=MODULES,
        rules_dir=tmp_path,
    )
    http = HttpSettings.from_config(config)
    http = replace(
        http,
        listen=("127.0.0.1:0",),
        max_message_size=LIMIT,
        request_timeout=2.0,
        controller=replace(http.controller, listen=()),
    )
    daemon = Daemon(
        Engine.from_config(config, modules=MODULES), MilterSettings.defaults(), http=http
    )
    await nursery.start(lambda task_status: daemon.serve(["127.0.0.1:0"], task_status=task_status))
    return Server(daemon)


def _json(reply: Reply) -> dict[str, object]:
    value = reply.json()
    assert isinstance(value, dict)
    return value


# -- the answer --------------------------------------------------------------------------------


async def test_ping(server: Server) -> None:
    with trio.fail_after(10):
        reply = await http_request(server.address, "GET", "/ping")
    assert (reply.status, reply.body) == (200, b"pong\r\n")
    assert reply.headers["content-type"] == "text/plain"


async def test_checkv2_answers_rspamds_shape(server: Server) -> None:
    reply = await server.post(headers=[("Queue-Id", "4ABC"), ("IP", "198.51.100.7")])
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    result = _json(reply)
    assert result["action"] == "no action"
    assert result["score"] == pytest.approx(3.5)
    assert result["required_score"] == 15.0
    assert result["is_skipped"] is False
    assert result["message-id"] == ""
    assert isinstance(result["time_real"], float)
    assert result["thresholds"] == {"add header": 6.0, "reject": 15.0}
    symbols = result["symbols"]
    assert isinstance(symbols, dict)
    assert set(symbols) >= {"MISSING_DATE", "MISSING_MID"}
    assert symbols["MISSING_MID"] == {
        "name": "MISSING_MID",
        "score": 2.5,
        "metric_score": 2.5,
        "description": "Message-ID header is missing or empty",
    }
    milter = result["milter"]
    assert isinstance(milter, dict)
    assert set(milter) == {"add_headers", "remove_headers"}


@pytest.mark.parametrize(
    ("headers", "action"),
    [
        ([("IP", "203.0.113.9")], "reject"),
        ([("IP", "[IPv6:::ffff:203.0.113.9]")], "reject"),
        ([("From", "<mallory@spam.test>")], "add header"),
        ([("Rcpt", "bob@example.test"), ("Rcpt", "<trap@example.test>")], "rewrite subject"),
        ([("User", "alice")], "soft reject"),
        ([("Settings-ID", "strict")], "reject"),
        ([("IP", "198.51.100.7"), ("From", "alice@sender.test")], "no action"),
    ],
)
async def test_envelope_headers_reach_the_engine(
    server: Server, headers: list[tuple[str, str]], action: str
) -> None:
    reply = await server.post(headers=headers)
    assert reply.status == 200, reply.body
    assert _json(reply)["action"] == action


@pytest.mark.parametrize("path", ["/check", "/symbols"])
async def test_legacy_paths_answer_the_v1_shape(server: Server, path: str) -> None:
    result = _json(await server.post(path))
    metric = result["default"]
    assert isinstance(metric, dict)
    assert metric["is_spam"] is False
    assert metric["action"] == "no action"
    assert metric["score"] == pytest.approx(3.5)
    assert metric["MISSING_MID"]["score"] == 2.5  # type: ignore[index]
    assert "rmilter" in result
    assert "symbols" not in result


async def test_scan_alias_and_http10_client_like_rspamc(server: Server) -> None:
    request = (
        b"POST /scan HTTP/1.0\r\nContent-Length: %d\r\nFlags: body_block\r\n\r\n" % len(MESSAGE)
    ) + MESSAGE
    status, result = _status_and_json(await server.raw(request))
    assert status == 200
    assert isinstance(result, dict)
    assert result["action"] == "no action"


async def test_skip_flag_scans_nothing(server: Server) -> None:
    result = _json(await server.post(headers=[("Flags", "skip,no_log")]))
    assert result["is_skipped"] is True
    assert result["symbols"] == {}
    assert result["action"] == "no action"


async def test_groups_flag_adds_group_scores(server: Server) -> None:
    result = _json(await server.post(headers=[("Flags", "groups")]))
    groups = result["groups"]
    assert isinstance(groups, dict)
    assert groups["headers"]["score"] == pytest.approx(3.5)  # type: ignore[index]


async def test_keep_alive_serves_several_requests_on_one_connection(server: Server) -> None:
    one = b"POST /checkv2 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(MESSAGE)
    last = b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = await server.raw(one + MESSAGE + one + MESSAGE + last)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.endswith(b"pong\r\n")


# -- compression ---------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Compression", "Content-Encoding"])
async def test_zstd_request_gets_a_zstd_reply(server: Server, header: str) -> None:
    body = zstandard.ZstdCompressor().compress(MESSAGE)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            head = b"POST /checkv2 HTTP/1.0\r\n%s: zstd\r\nContent-Length: %d\r\n\r\n" % (
                header.encode(),
                len(body),
            )
            await stream.send_all(head + body)
            raw = await _read_all(stream)
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert b"Compression: zstd" in head
    assert b"Content-Encoding: zstd" in head
    result = json.loads(zstandard.ZstdDecompressor().decompress(payload))
    assert result["score"] == pytest.approx(3.5)


@pytest.mark.parametrize(
    "headers",
    [[("Accept-Encoding", "gzip, zstd")], [("Flags", "zstd")]],
)
async def test_client_may_ask_for_a_zstd_reply(
    server: Server, headers: list[tuple[str, str]]
) -> None:
    reply = await server.post(headers=headers)  # the client decompresses on Compression: zstd
    assert reply.headers["compression"] == "zstd"
    assert _json(reply)["score"] == pytest.approx(3.5)


async def test_zstd_body_is_recognised_by_its_magic(server: Server) -> None:
    reply = await server.post(body=zstandard.ZstdCompressor().compress(MESSAGE))
    assert reply.status == 200
    assert reply.headers["compression"] == "zstd"


async def test_plain_request_gets_a_plain_reply(server: Server) -> None:
    reply = await server.post()
    assert "compression" not in reply.headers


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ([("Content-Encoding", "gzip")], MESSAGE, 415),
        ([("Compression", "zstd")], b"\x28\xb5\x2f\xfd garbage", 400),
        ([("Compression", "zstd")], zstandard.ZstdCompressor().compress(b"x" * (LIMIT + 1)), 413),
    ],
)
async def test_bad_compression_is_a_json_error(
    server: Server, headers: list[tuple[str, str]], body: bytes, status: int
) -> None:
    reply = await server.post(body=body, headers=headers)
    assert reply.status == status
    assert _json(reply)["error"]


# -- malformed and oversized ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([("IP", "not-an-address")], "IP"),
        ([("Settings", "{not json")], "Settings"),
        ([("Settings", "[1, 2]")], "Settings"),
    ],
)
async def test_unreadable_envelope_header_is_400(
    server: Server, headers: list[tuple[str, str]], message: str
) -> None:
    reply = await server.post(headers=headers)
    assert reply.status == 400
    error = _json(reply)
    assert message in str(error["error"])
    assert error["error_domain"] == "milterd"


# -- inline settings (the Settings header) ---------------------------------------------------------


async def test_inline_settings_disable_symbols(server: Server) -> None:
    settings = json.dumps({"symbols_disabled": ["MISSING_MID"]})
    result = _json(await server.post(headers=[("Settings", settings)]))
    symbols = result["symbols"]
    assert isinstance(symbols, dict)
    assert "MISSING_MID" not in symbols
    assert "MISSING_DATE" in symbols
    assert result["score"] == pytest.approx(1.0)
    assert "settings_id" not in result


async def test_inline_settings_change_thresholds(server: Server) -> None:
    settings = json.dumps({"actions": {"reject": 3, "add_header": None}})
    result = _json(await server.post(headers=[("Settings", settings)]))
    assert result["action"] == "reject"
    assert result["required_score"] == 3.0
    assert result["thresholds"] == {"reject": 3.0}
    scores = json.dumps({"scores": {"MISSING_DATE": 5.0}})
    assert _json(await server.post(headers=[("Settings", scores)]))["action"] == "add header"


async def test_inline_settings_win_over_settings_id(server: Server) -> None:
    named = _json(await server.post(headers=[("Settings-ID", "strict")]))
    assert named["action"] == "reject"
    both = [("Settings-ID", "strict"), ("Settings", '{"actions": {"add_header": 2}}')]
    result = _json(await server.post(headers=both))
    assert result["action"] == "add header"
    assert "settings_id" not in result


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"ip": ["203.0.113.0/24"]}, "ip"),  # a condition: inline settings always apply
        ({"symbols_enabled": 3}, "symbols_enabled"),
        ({"actions": {"rejectt": 3}}, "actions.rejectt"),
        ({"scores": {"NO_SUCH_SYMBOL": 1}}, "scores.NO_SUCH_SYMBOL"),
        ({"symbols_disabled": ["NO_SUCH_SYMBOL"]}, "symbols_disabled"),
        ({"groups_enabled": ["no_such_group"]}, "groups_enabled"),
    ],
)
async def test_bad_inline_settings_are_400_naming_the_key(
    server: Server, settings: dict[str, object], key: str
) -> None:
    reply = await server.post(headers=[("Settings", json.dumps(settings))])
    assert reply.status == 400
    error = _json(reply)
    assert str(error["error"]).startswith(f"Settings: {key}: ")
    assert error["error_domain"] == "milterd"


# -- urls and emails -------------------------------------------------------------------------------

LINKS = (
    b"From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: Links\r\n\r\n"
    b"See https://www.Example.COM/a, https://www.example.com/b and http://sho.rt/x.\r\n"
    b"Questions: carol@Help.Example.COM\r\n"
)


async def test_urls_and_emails_are_reported(server: Server) -> None:
    result = _json(await server.post(body=LINKS))
    assert result["urls"] == ["www.example.com", "sho.rt"]
    assert result["emails"] == ["carol@help.example.com"]
    legacy = _json(await server.post("/check", body=LINKS))
    assert legacy["urls"] == ["www.example.com", "sho.rt"]
    plain = _json(await server.post())  # a message without any: no keys, as Rspamd
    assert "urls" not in plain
    assert "emails" not in plain


@pytest.mark.parametrize("header", [("Flags", "ext_urls"), ("URL-Format", "extended")])
async def test_extended_urls(server: Server, header: tuple[str, str]) -> None:
    result = _json(await server.post(body=LINKS, headers=[header]))
    assert result["urls"] == [
        {
            "url": "https://www.example.com/a",
            "tld": "example.com",
            "host": "www.example.com",
            "flags": ["text"],
        },
        {
            "url": "https://www.example.com/b",
            "tld": "example.com",
            "host": "www.example.com",
            "flags": ["text"],
        },
        {"url": "http://sho.rt/x", "tld": "sho.rt", "host": "sho.rt", "flags": ["text"]},
    ]
    assert result["emails"] == ["carol@help.example.com"]


async def test_empty_body_is_400(server: Server) -> None:
    reply = await server.post(body=b"")
    assert reply.status == 400


async def test_unknown_path_and_method(server: Server) -> None:
    assert (await server.post("/nowhere")).status == 404
    status, error = _status_and_json(
        await server.raw(b"PUT /checkv2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    )
    assert status == 405
    assert isinstance(error, dict)


async def test_malformed_request_line_is_400_and_closes(server: Server) -> None:
    status, error = _status_and_json(await server.raw(b"THIS IS NOT HTTP\r\n\r\n"))
    assert status == 400
    assert isinstance(error, dict)
    assert "malformed" in error["error"]


async def test_oversized_body_is_refused_before_it_is_sent(server: Server) -> None:
    # Only the head is sent: the 413 must come from Content-Length alone.
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(
                b"POST /checkv2 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1)
            )
            status, error = _status_and_json(await _read_all(stream))
    assert status == 413
    assert isinstance(error, dict)
    assert str(LIMIT) in error["error"]


async def test_oversized_chunked_body_is_refused_while_it_arrives(server: Server) -> None:
    chunk = b"x" * 4096
    data = b"POST /checkv2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += b"%x\r\n%s\r\n" % (len(chunk), chunk) * (LIMIT // len(chunk) + 1)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(data)  # the terminating 0-chunk never comes
            status, _ = _status_and_json(await _read_all(stream))
    assert status == 413


async def test_a_stalled_client_gets_408_and_others_are_served(server: Server) -> None:
    with trio.fail_after(10):
        stalled = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stalled:
            await stalled.send_all(b"POST /checkv2 HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            reply = await server.post()  # another connection meanwhile
            assert reply.status == 200
            status, _ = _status_and_json(await _read_all(stalled))
    assert status == 408


async def test_a_garbage_connection_does_not_hurt_a_scan_in_flight(server: Server) -> None:
    results: list[int] = []

    async def scan() -> None:
        results.append((await server.post()).status)

    async def garbage() -> None:
        await server.raw(b"\x00\x01\x02 garbage\r\n\r\n")

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(scan)
            nursery.start_soon(garbage)
    assert results == [200, 200, 200]
