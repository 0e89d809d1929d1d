"""The controller over real loopback sockets: every endpoint, the auth matrix, saving
policy with a real reload, /metrics through Prometheus's own parser, and the client
commands (``milterd stat``, ``history``, ``learn --connect``).

Same small engine as test_http_api.py: the message scores 3.5 (MISSING_DATE 1,
MISSING_MID 2.5). Passwords are hashed with cheap scrypt parameters to keep tests fast;
the format carries them, so verification is the production code path.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import trio
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from engine import ConfigError, Engine
from engine.modules.gtube import Gtube
from engine.modules.headers import Headers
from engine.modules.milter_headers import MilterHeaders
from engine.modules.mime_types import MimeTypes
from engine.modules.regexp import Regexp
from milterd import client
from milterd.daemon import Daemon
from milterd.http import CONTROLLER_SECTION, HTTP_SECTION, HttpSettings, hash_password
from milterd.http.auth import verify_password
from milterd.http.policy import DYNAMIC_FILE
from milterd.mta import milter_exchange, split_for_milter
from milterd.settings import MILTER_SECTION, MilterSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from pathlib import Path

    from engine.modules import Module

MODULES = (Gtube, Headers, MilterHeaders)
SECTIONS = {"milter": MILTER_SECTION, "http": HTTP_SECTION, "controller": CONTROLLER_SECTION}
MESSAGE = b"From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: Hi there\r\n\r\nHello\r\n"
READ, ENABLE = "reader-secret", "admin-secret"
READ_HASH, ENABLE_HASH = hash_password(READ, ln=4), hash_password(ENABLE, ln=4)
BASE = f"""
[actions]
greylist = false
reject = 15.0

[controller]
password = "{READ_HASH}"
enable_password = "{ENABLE_HASH}"
"""


class Controller:
    def __init__(self, daemon: Daemon, config_dir: Path) -> None:
        assert daemon.http is not None
        self.daemon = daemon
        self.http = daemon.http
        self.config_dir = config_dir
        scan_port = daemon.http.scan_listeners[0].socket.getsockname()[1]
        port = daemon.http.controller_listeners[0].socket.getsockname()[1]
        self.scan_address = f"127.0.0.1:{scan_port}"
        self.address = f"127.0.0.1:{port}"
        self.milter_port = 0

    async def call(
        self,
        path: str,
        password: str | None = ENABLE,
        *,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
        method: str | None = None,
    ) -> client.Reply:
        extra = [("Password", password)] if password is not None else []
        with trio.fail_after(10):
            return await client.http_request(
                self.address,
                method or ("POST" if body else "GET"),
                path,
                headers=[*extra, *headers],
                body=body,
            )

    async def scan(self, headers: Sequence[tuple[str, str]] = ()) -> dict[str, object]:
        with trio.fail_after(10):
            reply = await client.http_request(
                self.scan_address, "POST", "/checkv2", headers=headers, body=MESSAGE
            )
        assert reply.status == 200, reply.body
        value = reply.json()
        assert isinstance(value, dict)
        return value


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    """A test that expects error records checks them and clears them."""
    caplog.set_level(logging.DEBUG)
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


@pytest.fixture
def start(tmp_path: Path, nursery: trio.Nursery) -> Callable[..., Awaitable[Controller]]:
    """Start a daemon whose milterd.toml is ``BASE`` plus the given text (and whose engine
    has ``modules``)."""

    async def start(extra: str = "", modules: tuple[type[Module], ...] = MODULES) -> Controller:
        etc = tmp_path / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "milterd.toml").write_text(BASE + extra, encoding="utf-8")
        environ = {"MILTERD_DATA_DIR": str(tmp_path / "data")}

        def load() -> Engine:
            config = Engine.load_config(
                etc, SECTIONS, environ=environ, modules=modules, rules_dir=tmp_path
            )
            return Engine.from_config(config, modules=modules)

        engine = load()
        http = HttpSettings.from_config(engine.config)
        http = replace(
            http,
            listen=("127.0.0.1:0",),
            controller=replace(http.controller, listen=("127.0.0.1:0",)),
        )
        daemon = Daemon(engine, MilterSettings.defaults(), load_engine=load, http=http)
        milter = await nursery.start(
            lambda task_status: daemon.serve(["127.0.0.1:0"], task_status=task_status)
        )
        controller = Controller(daemon, etc)
        controller.milter_port = milter[0].socket.getsockname()[1]
        return controller

    return start


@pytest.fixture
async def controller(start: Callable[..., Awaitable[Controller]]) -> Controller:
    return await start("")


def _json(reply: client.Reply) -> object:
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    return reply.json()


# -- authentication --------------------------------------------------------------------------------

READ_ENDPOINT, ENABLE_ENDPOINT = "/stat", "/statreset"


@pytest.mark.parametrize(
    ("password", "read_status", "enable_status"),
    [
        (None, 403, 403),  # no password
        (READ, 200, 403),  # the read password
        (ENABLE, 200, 200),  # the enable password
        ("wrong", 403, 403),  # a wrong one
    ],
    ids=["none", "read", "enable", "wrong"],
)
async def test_auth_matrix(
    controller: Controller, password: str | None, read_status: int, enable_status: int
) -> None:
    read = await controller.call(READ_ENDPOINT, password)
    enable = await controller.call(ENABLE_ENDPOINT, password)
    assert (read.status, enable.status) == (read_status, enable_status)
    for reply in (read, enable):
        if reply.status == 403:
            assert _json(reply)["error"]  # type: ignore[index]
    assert (await controller.call("/ping", None)).body == b"pong\r\n"


async def test_trusted_network_needs_no_password(
    start: Callable[[str], Awaitable[Controller]],
) -> None:
    controller = await start('trusted_networks = ["127.0.0.0/8"]\n')
    assert (await controller.call(READ_ENDPOINT, None)).status == 200
    assert (await controller.call(ENABLE_ENDPOINT, None)).status == 200
    # ...unless it forwards for an address that is not trusted.
    forwarded = [("X-Forwarded-For", "203.0.113.9, 127.0.0.1, 198.51.100.1")]
    assert (await controller.call(READ_ENDPOINT, None, headers=forwarded)).status == 403
    assert (await controller.call(READ_ENDPOINT, READ, headers=forwarded)).status == 200


async def test_a_forwarded_for_header_from_an_untrusted_peer_is_ignored(
    controller: Controller,
) -> None:
    spoofed = [("X-Forwarded-For", "127.0.0.1"), ("X-Real-IP", "127.0.0.1")]
    assert (await controller.call(READ_ENDPOINT, None, headers=spoofed)).status == 403


async def test_refusals_are_logged_with_the_client_and_slowed_down(
    controller: Controller, caplog: pytest.LogCaptureFixture
) -> None:
    auth = controller.http.controller.auth
    assert auth.penalty("127.0.0.1") == 0
    assert (await controller.call(READ_ENDPOINT, "wrong")).status == 403
    first = auth.penalty("127.0.0.1")
    assert (await controller.call(READ_ENDPOINT, "wrong")).status == 403
    assert 0 < first < auth.penalty("127.0.0.1")
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2
    assert all("from 127.0.0.1" in r and "/stat" in r for r in refusals)
    assert (await controller.call(READ_ENDPOINT, READ)).status == 200
    assert auth.penalty("127.0.0.1") == 0  # a success forgives


def test_password_hashes() -> None:
    stored = hash_password("pässword", ln=4)
    assert stored.startswith("$scrypt$ln=4,r=8,p=1$")
    assert verify_password("pässword", stored)
    assert not verify_password("password", stored)
    assert not verify_password("pässword", "$scrypt$ln=99,r=8,p=1$AAAA$AAAA")
    assert not verify_password("x", "plain text")


def test_plain_text_passwords_are_refused_in_the_config(tmp_path: Path) -> None:
    (tmp_path / "milterd.toml").write_text('[controller]\npassword = "secret"\n')
    with pytest.raises(ConfigError) as caught:
        Engine.load_config(tmp_path, SECTIONS, modules=MODULES, rules_dir=tmp_path)
    [problem] = caught.value.problems
    assert problem.key == "controller.password"
    assert "milterd pw" in problem.message


# -- statistics, history, errors, metrics ---------------------------------------------------------


async def test_stat_counts_scans_and_statreset_zeroes_them(controller: Controller) -> None:
    await controller.scan()
    await controller.scan()
    stat = _json(await controller.call("/stat", READ))
    assert isinstance(stat, dict)
    assert stat["scanned"] == 2
    assert stat["actions"]["no action"] == 2
    assert stat["ham_count"] == 2
    assert stat["spam_count"] == 0
    assert stat["read_only"] is True
    assert [row["symbol"] for row in stat["statfiles"]] == ["BAYES_SPAM", "BAYES_HAM"]
    assert len(stat["scan_times"]) == 2
    reset = _json(await controller.call("/statreset"))
    assert reset["scanned"] == 2  # type: ignore[index]  # the counts as they were
    assert _json(await controller.call("/stat"))["scanned"] == 0  # type: ignore[index]


async def test_milter_scans_count_in_stat_and_history(controller: Controller) -> None:
    headers, body = split_for_milter(MESSAGE)
    stream = await trio.open_tcp_stream("127.0.0.1", controller.milter_port)
    async with stream:
        reply = await milter_exchange(stream, headers, body)
    assert reply.final is not None
    stat = _json(await controller.call("/stat", READ))
    assert stat["scanned"] == 1  # type: ignore[index]
    await controller.http.context.history.flush()
    history = _json(await controller.call("/history", READ))
    assert isinstance(history, dict)
    assert len(history["rows"]) == 1


async def test_auth_endpoint(controller: Controller) -> None:
    await controller.scan()
    info = _json(await controller.call("/auth", READ))
    assert isinstance(info, dict)
    assert (info["auth"], info["read_only"], info["scanned"], info["clean"]) == ("ok", True, 1, 1)
    assert _json(await controller.call("/auth", ENABLE))["read_only"] is False  # type: ignore[index]


async def test_history_keeps_recent_scans_in_the_store(controller: Controller) -> None:
    await controller.scan([("IP", "198.51.100.7"), ("Queue-Id", "Q1"), ("From", "a@x.test")])
    await controller.scan([("Queue-Id", "Q2"), ("Rcpt", "b@y.test")])
    await controller.http.context.history.flush()
    history = _json(await controller.call("/history", READ))
    assert isinstance(history, dict)
    assert history["version"] == 2
    newest, oldest = history["rows"]
    assert (newest["qid"], oldest["qid"]) == ("Q2", "Q1")
    assert (oldest["ip"], oldest["sender_smtp"], newest["rcpt_smtp"]) == (
        "198.51.100.7",
        "a@x.test",
        ["b@y.test"],
    )
    assert newest["subject"] == "Hi there"
    assert newest["action"] == "no action"
    assert newest["score"] == pytest.approx(3.5)
    assert newest["symbols"]["MISSING_MID"]["score"] == 2.5
    page = _json(await controller.call("/history?from=1&to=1", READ))
    assert [r["qid"] for r in page["rows"]] == ["Q1"]  # type: ignore[index]
    assert (await controller.call("/history?from=x", READ)).status == 400
    assert (await controller.call("/historyreset", READ)).status == 403
    assert (await controller.call("/historyreset")).status == 200
    assert _json(await controller.call("/history", READ))["rows"] == []  # type: ignore[index]


async def test_history_is_bounded(start: Callable[[str], Awaitable[Controller]]) -> None:
    controller = await start("history_rows = 2\n")
    for qid in ("A", "B", "C"):
        await controller.scan([("Queue-Id", qid)])
    await controller.http.context.history.flush()
    rows = _json(await controller.call("/history", READ))["rows"]  # type: ignore[index]
    assert [r["qid"] for r in rows] == ["C", "B"]


async def test_no_log_flag_keeps_a_scan_out_of_the_history(controller: Controller) -> None:
    await controller.scan([("Flags", "no_log")])
    await controller.http.context.history.flush()
    assert _json(await controller.call("/history", READ))["rows"] == []  # type: ignore[index]
    assert _json(await controller.call("/stat", READ))["scanned"] == 1  # type: ignore[index]


async def test_errors_ring(controller: Controller, caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("engine.somewhere").error("the disk is on fire")
    rows = _json(await controller.call("/errors", READ))
    assert isinstance(rows, list)
    assert rows[0]["message"] == "the disk is on fire"
    assert rows[0]["module"] == "engine.somewhere"
    assert rows[0]["type"] == "error"
    caplog.clear()


async def test_metrics_parse_as_openmetrics(controller: Controller) -> None:
    await controller.scan()
    assert (await controller.call("/statreset", READ)).status == 403  # counted: auth error
    reply = await controller.call("/metrics", READ)
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert families["milterd_scans"].type == "counter"
    assert samples["milterd_scans_total", (("action", "no action"),)] == 1
    assert samples["milterd_scans_total", (("action", "reject"),)] == 0
    assert samples["milterd_symbol_hits_total", (("symbol", "MISSING_MID"),)] == 1
    assert families["milterd_scan_duration_seconds"].type == "histogram"
    assert samples["milterd_scan_duration_seconds_count", ()] == 1
    assert samples["milterd_scan_duration_seconds_bucket", (("le", "+Inf"),)] == 1
    assert samples["milterd_learns_total", (("class", "spam"), ("result", "learned"))] == 0
    assert samples["milterd_errors_total", (("source", "auth"),)] == 1
    assert families["milterd_uptime_seconds"].type == "gauge"


# -- scanning and learning ----------------------------------------------------------------------


async def test_controller_scans_too_with_the_read_password(controller: Controller) -> None:
    assert (await controller.call("/checkv2", None, body=MESSAGE)).status == 403
    reply = await controller.call("/checkv2", READ, body=MESSAGE)
    assert _json(reply)["score"] == pytest.approx(3.5)  # type: ignore[index]


@pytest.mark.parametrize("path", ["/learnspam", "/learnham"])
async def test_learning_refused_by_the_engine_is_422_with_its_reason(
    controller: Controller, path: str
) -> None:
    # This engine has no bayes module: the engine refuses, and says why.
    assert (await controller.call(path, READ, body=MESSAGE)).status == 403
    reply = await controller.call(path, body=MESSAGE)
    assert reply.status == 422
    assert _json(reply)["error"] == "not learned: the bayes module is disabled"  # type: ignore[index]
    assert sum(controller.http.context.metrics.learns.values()) == 1


async def test_learning_needs_a_message(controller: Controller) -> None:
    assert (await controller.call("/learnspam", method="POST")).status == 400


# -- actions, symbols and maps -------------------------------------------------------------------


async def test_actions(controller: Controller) -> None:
    actions = _json(await controller.call("/actions", READ))
    assert actions == [
        {"action": "reject", "value": 15.0},
        {"action": "soft reject", "value": None},
        {"action": "rewrite subject", "value": None},
        {"action": "add header", "value": 6.0},
        {"action": "greylist", "value": None},
    ]


async def test_saveactions_persists_and_applies_at_once(controller: Controller) -> None:
    body = json.dumps([3.0, None, 2.0, None]).encode()  # Rspamd's array order
    assert (await controller.call("/saveactions", READ, body=body)).status == 403
    reply = await controller.call("/saveactions", body=body)
    assert (reply.status, _json(reply)) == (200, {"success": True})
    saved = (controller.config_dir / "local.d" / DYNAMIC_FILE).read_text()
    assert "reject = 3.0" in saved
    assert "add_header = 2.0" in saved
    assert "rewrite_subject = false" in saved
    assert (await controller.scan())["action"] == "reject"  # 3.5 >= 3, no restart
    values = {a["action"]: a["value"] for a in _json(await controller.call("/actions"))}  # type: ignore[union-attr,index]
    assert values["reject"] == 3.0
    # The object form (a milterd extension) reaches the rungs Rspamd's array does not.
    reply = await controller.call("/saveactions", body=b'{"soft_reject": 3.2, "reject": 20}')
    assert reply.status == 200
    assert (await controller.scan())["action"] == "soft reject"


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2, 3]",
        b'[1, 2, 3, "x"]',
        b'{"no action": 1}',
        b'{"bogus": 1}',
        b"nope",
        b"[1e999, 1, 1, 1]",
    ],
)
async def test_saveactions_refuses_bad_input(controller: Controller, body: bytes) -> None:
    reply = await controller.call("/saveactions", body=body)
    assert reply.status == 400
    assert not (controller.config_dir / "local.d" / DYNAMIC_FILE).exists()


async def test_symbols_and_savesymbols(controller: Controller) -> None:
    await controller.scan()
    groups = _json(await controller.call("/symbols", READ))
    assert isinstance(groups, list)
    rules = {r["symbol"]: r for g in groups for r in g["rules"]}
    assert rules["MISSING_MID"]["weight"] == 2.5
    assert rules["MISSING_MID"]["frequency"] == 1
    body = json.dumps([{"name": "MISSING_MID", "value": 10.0}]).encode()
    assert (await controller.call("/savesymbols", body=body)).status == 200
    assert (await controller.scan())["score"] == pytest.approx(11.0)
    counters = _json(await controller.call("/counters", READ))
    assert {"symbol": "MISSING_MID", "weight": 10.0, "hits": 2, "frequency": 0.0} in counters  # type: ignore[operator]
    unknown = json.dumps([{"name": "NO_SUCH_SYMBOL", "value": 1}]).encode()
    assert (await controller.call("/savesymbols", body=unknown)).status == 400
    assert (await controller.call("/savesymbols", body=b"[]")).status == 404


async def test_a_save_the_reload_refuses_is_undone(
    controller: Controller, caplog: pytest.LogCaptureFixture
) -> None:
    local = controller.config_dir / "local.d"
    local.mkdir()
    (local / "broken.toml").write_text('[options]\ntask_timeout = "x"\n')  # a bad edit
    reply = await controller.call("/saveactions", body=b"[10, null, 5, null]")
    assert reply.status == 409
    assert not (local / DYNAMIC_FILE).exists()
    assert (await controller.scan())["action"] == "no action"  # still the old engine
    assert any("reload refused" in r.getMessage() for r in caplog.records)
    caplog.clear()


async def test_maps(controller: Controller) -> None:
    maps = _json(await controller.call("/maps", READ))
    assert isinstance(maps, list)
    by_name = {m["name"]: m for m in maps}
    shorteners = by_name["url_shorteners.map"]
    assert shorteners["editable"] is True
    text = await controller.call("/getmap", READ, headers=[("Map", str(shorteners["map"]))])
    assert text.status == 200
    assert text.headers["content-type"].startswith("text/plain")
    same = await controller.call("/getmap", READ, headers=[("Map", "url_shorteners")])
    assert same.body == text.body
    assert (await controller.call("/getmap", READ)).status == 400
    assert (await controller.call("/getmap", READ, headers=[("Map", "999")])).status == 404
    new = b"# shorteners, site list\nsho.rt\n"
    saving = [("Map", "url_shorteners.map")]
    assert (await controller.call("/savemap", READ, body=new, headers=saving)).status == 403
    assert (await controller.call("/savemap", body=new, headers=saving)).status == 200
    assert (controller.config_dir / "maps" / "url_shorteners.map").read_bytes() == new
    assert (await controller.call("/getmap", READ, headers=saving)).body == new
    bad = await controller.call("/savemap", body=b"\xff\xfe", headers=saving)
    assert bad.status == 400


async def test_unknown_endpoint(controller: Controller) -> None:
    assert (await controller.call("/nowhere")).status == 404


# -- client commands --------------------------------------------------------------------------------


def _args(controller: Controller, **values: object) -> argparse.Namespace:
    defaults: dict[str, object] = {
        "connect": controller.address,
        "password": READ,
        "timeout": 10.0,
        "json": False,
        "limit": 20,
    }
    return argparse.Namespace(**{**defaults, **values})


async def test_client_stat_and_history(
    controller: Controller, capsys: pytest.CaptureFixture[str]
) -> None:
    await controller.scan([("Queue-Id", "QC1")])
    await controller.http.context.history.flush()
    assert await client.stat(_args(controller)) == 0
    out = capsys.readouterr().out
    assert "Messages scanned: 1" in out
    assert "no action" in out
    assert await client.stat(_args(controller, json=True)) == 0
    assert json.loads(capsys.readouterr().out)["scanned"] == 1
    assert await client.history(_args(controller)) == 0
    out = capsys.readouterr().out
    assert "QC1" in out
    assert "MISSING_MID" in out
    assert "'Hi there'" in out
    assert await client.history(_args(controller, json=True)) == 0
    assert json.loads(capsys.readouterr().out)[0]["qid"] == "QC1"
    assert await client.stat(_args(controller, password="wrong")) == 1
    assert "403" in capsys.readouterr().err


async def test_client_scan_connect(
    controller: Controller, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    args = _args(controller, connect=controller.scan_address, ip="203.0.113.1", rcpt=["x@y.test"])
    assert await client.scan_files(args, [str(message)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{message}: no action (score 3.50 / 15.00)")
    assert "MISSING_MID" in out
    assert await client.scan_files(replace_json(args), [str(message)]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == str(message)


def replace_json(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "json": True})


async def test_client_learn_connect(
    controller: Controller, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    status = await client.learn_files(
        _args(controller, password=ENABLE), [str(message)], is_spam=True
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "not learned: the bayes module is disabled" in out


async def test_client_reports_an_unreachable_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        args = argparse.Namespace(
            connect=f"127.0.0.1:{s.getsockname()[1]}", password=None, timeout=5.0, json=False
        )
        assert await client.stat(args) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_pw_prints_a_hash_that_verifies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from milterd.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["pw", "--stdin"]) == 0
    stored = capsys.readouterr().out.strip()
    assert stored.startswith("$scrypt$ln=15,r=8,p=1$")
    assert verify_password("correct horse", stored)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["pw", "--stdin"]) == 1


# -- maps: a saved map is what the next scan reads ---------------------------------------------
# The controller writes <config_dir>/maps/NAME and reloads; the new engine reads the site's
# copy before the shipped map, for the rules' function atoms and the modules alike.

MAP_RULES = """
[regexp]
engine = "re"

[rules.SHORT_LINK]
expression = 'has_shortener_url()'
score = 1.0

[rules.ODD_TLD]
expression = 'has_suspicious_tld_url()'
score = 1.0
"""
LINKS = (
    b"From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: Links\r\n\r\n"
    b"See https://go.sho.rt/x and https://shop.example.museum/.\r\n"
)


async def _map_symbols(site: Controller) -> set[str]:
    with trio.fail_after(10):
        reply = await client.http_request(site.scan_address, "POST", "/checkv2", body=LINKS)
    assert reply.status == 200, reply.body
    value = reply.json()
    assert isinstance(value, dict)
    symbols = value["symbols"]
    assert isinstance(symbols, dict)
    return set(symbols) & {"SHORT_LINK", "ODD_TLD"}


async def _save_map(site: Controller, name: str, text: bytes) -> client.Reply:
    return await site.call("/savemap", body=text, headers=[("Map", name)])


async def test_saved_map_entries_fire_on_the_next_scan(
    start: Callable[..., Awaitable[Controller]],
) -> None:
    site = await start(MAP_RULES, (Headers, MimeTypes, Regexp))
    assert await _map_symbols(site) == set()  # neither is in the shipped maps
    shorteners = b"# our shorteners\nsho.rt\n"
    assert (await _save_map(site, "url_shorteners.map", shorteners)).status == 200
    assert (site.config_dir / "maps" / "url_shorteners.map").read_bytes() == shorteners
    assert await _map_symbols(site) == {"SHORT_LINK"}
    assert (await _save_map(site, "suspicious_tlds", b"museum\n")).status == 200
    assert await _map_symbols(site) == {"SHORT_LINK", "ODD_TLD"}
    maps = (await site.call("/maps")).json()
    assert isinstance(maps, list)
    uris = {m["name"]: m["uri"] for m in maps}
    local = site.config_dir / "maps"
    assert uris["url_shorteners.map"] == f"file://{local / 'url_shorteners.map'}"
    assert uris["suspicious_tlds.map"] == f"file://{local / 'suspicious_tlds.map'}"


async def test_a_map_the_new_engine_refuses_is_undone(
    start: Callable[..., Awaitable[Controller]], caplog: pytest.LogCaptureFixture
) -> None:
    site = await start(MAP_RULES, (Headers, MimeTypes, Regexp))
    caplog.set_level(logging.INFO)
    assert (await _save_map(site, "url_shorteners.map", b"sho.rt\n")).status == 200
    reply = await _save_map(site, "mime_types.map", b"text/plain lots\n")
    assert reply.status == 409
    assert not (site.config_dir / "maps" / "mime_types.map").exists()
    refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        "mime_types.map: 'text/plain lots': the weight is not a number" in m for m in refused
    )
    assert await _map_symbols(site) == {"SHORT_LINK"}  # the engine of the last good save
    caplog.clear()
