"""A map saved through the controller (``/savemap``) is what the next scan reads.

A real daemon on loopback, with a reload (``load_engine``) as ``milterd run`` has: the
controller writes ``<config_dir>/maps/NAME``, reloads, and the new engine reads the site's
copy before the shipped map, for the rules' function atoms and the modules alike. A map
the new engine cannot use is refused: 409, and the file gets its previous content back.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import trio

from engine import Engine
from engine.modules.headers import Headers
from engine.modules.mime_types import MimeTypes
from engine.modules.regexp import Regexp
from milterd import client
from milterd.daemon import Daemon
from milterd.http import CONTROLLER_SECTION, HTTP_SECTION, HttpSettings, hash_password
from milterd.settings import MILTER_SECTION, MilterSettings

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

MODULES = (Headers, MimeTypes, Regexp)
SECTIONS = {"milter": MILTER_SECTION, "http": HTTP_SECTION, "controller": CONTROLLER_SECTION}
ENABLE = "admin-secret"
CONFIG = f"""
[controller]
enable_password = "{hash_password(ENABLE, ln=4)}"

[regexp]
engine = "re"

[rules.SHORT_LINK]
expression = 'has_shortener_url()'
score = 1.0

[rules.ODD_TLD]
expression = 'has_suspicious_tld_url()'
score = 1.0
"""
MESSAGE = (
    b"From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: Links\r\n\r\n"
    b"See https://go.sho.rt/x and https://shop.example.museum/.\r\n"
)


class Site:
    def __init__(self, daemon: Daemon, config_dir: Path) -> None:
        assert daemon.http is not None
        self.config_dir = config_dir
        self.scan_address = f"127.0.0.1:{daemon.http.scan_listeners[0].socket.getsockname()[1]}"
        self.address = f"127.0.0.1:{daemon.http.controller_listeners[0].socket.getsockname()[1]}"

    async def save_map(self, name: str, text: bytes) -> client.Reply:
        return await self.call("/savemap", body=text, headers=[("Map", name)])

    async def call(
        self, path: str, *, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
    ) -> client.Reply:
        with trio.fail_after(10):
            return await client.http_request(
                self.address,
                "POST" if body else "GET",
                path,
                headers=[("Password", ENABLE), *headers],
                body=body,
            )

    async def symbols(self) -> set[str]:
        with trio.fail_after(10):
            reply = await client.http_request(self.scan_address, "POST", "/checkv2", body=MESSAGE)
        assert reply.status == 200, reply.body
        value = reply.json()
        assert isinstance(value, dict)
        symbols = value["symbols"]
        assert isinstance(symbols, dict)
        return set(symbols) & {"SHORT_LINK", "ODD_TLD"}


@pytest.fixture
async def site(tmp_path: Path, nursery: trio.Nursery) -> Site:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "milterd.toml").write_text(CONFIG, encoding="utf-8")
    environ = {"MILTERD_DATA_DIR": str(tmp_path / "data")}

    def load() -> Engine:
        config = Engine.load_config(
            etc, SECTIONS, environ=environ, modules=MODULES, rules_dir=tmp_path
        )
        return Engine.from_config(config, modules=MODULES)

    engine = load()
    http = HttpSettings.from_config(engine.config)
    http = replace(
        http,
        listen=("127.0.0.1:0",),
        controller=replace(http.controller, listen=("127.0.0.1:0",)),
    )
    daemon = Daemon(engine, MilterSettings.defaults(), load_engine=load, http=http)
    await nursery.start(lambda task_status: daemon.serve(["127.0.0.1:0"], task_status=task_status))
    return Site(daemon, etc)


async def test_saved_map_entries_fire_on_the_next_scan(site: Site) -> None:
    assert await site.symbols() == set()  # neither is in the shipped maps
    shorteners = b"# our shorteners\nsho.rt\n"
    assert (await site.save_map("url_shorteners.map", shorteners)).status == 200
    assert (site.config_dir / "maps" / "url_shorteners.map").read_bytes() == shorteners
    assert await site.symbols() == {"SHORT_LINK"}
    assert (await site.save_map("suspicious_tlds", b"museum\n")).status == 200
    assert await site.symbols() == {"SHORT_LINK", "ODD_TLD"}
    maps = (await site.call("/maps")).json()
    assert isinstance(maps, list)
    uris = {m["name"]: m["uri"] for m in maps}
    local = site.config_dir / "maps"
    assert uris["url_shorteners.map"] == f"file://{local / 'url_shorteners.map'}"
    assert uris["suspicious_tlds.map"] == f"file://{local / 'suspicious_tlds.map'}"


async def test_a_map_the_new_engine_refuses_is_undone(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert (await site.save_map("url_shorteners.map", b"sho.rt\n")).status == 200
    reply = await site.save_map("mime_types.map", b"text/plain lots\n")
    assert reply.status == 409
    assert not (site.config_dir / "maps" / "mime_types.map").exists()
    refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        "mime_types.map: 'text/plain lots': the weight is not a number" in m for m in refused
    )
    assert await site.symbols() == {"SHORT_LINK"}  # the engine of the last good save
