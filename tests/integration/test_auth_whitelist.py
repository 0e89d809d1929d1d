"""Whitelisting by authentication: listed domains are trusted only when they authenticate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from auth_support import AuthProbe, StashedDkim, auth_engine, message, request

from engine.dns import ZoneData
from engine.errors import ConfigError
from engine.modules.dmarc import Dmarc
from engine.modules.spf import Spf
from engine.modules.whitelist import Whitelist

if TYPE_CHECKING:
    from pathlib import Path

    from dnsserver import DnsServer

MODULES = [Spf, StashedDkim, Dmarc, Whitelist, AuthProbe]
LISTS = {
    "WHITELIST_SPF",
    "BLACKLIST_SPF",
    "WHITELIST_DKIM",
    "BLACKLIST_DKIM",
    "WHITELIST_SPF_DKIM",
    "BLACKLIST_SPF_DKIM",
    "WHITELIST_DMARC",
    "BLACKLIST_DMARC",
}
SPF_PASS = {"client": "192.0.2.10", "mail_from": "bounce@mail.example.test"}
SPF_FAIL = {"client": "203.0.113.9", "mail_from": "bounce@mail.example.test"}


@pytest.fixture
def server(dns_server: DnsServer) -> DnsServer:
    dns_server.zones = ZoneData().add_records(
        "example.test",
        {
            "_dmarc": {"TXT": "v=DMARC1; p=reject"},
            "mail": {"TXT": "v=spf1 ip4:192.0.2.0/24 -all"},
        },
    )
    return dns_server


async def _lists(
    tmp_path: Path, server: DnsServer, entries: str, raw: bytes, toml: str = "", **envelope: str
) -> dict[str, tuple[str, ...]]:
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "auth.map").write_text(entries)
    toml = f'[whitelist]\nshipped_map = false\nmaps = ["auth.map"]\n{toml}'
    async with auth_engine(tmp_path, server, MODULES, toml) as engine:
        result = await engine.scan(request(raw, **envelope))  # type: ignore[arg-type]
    return {k: v.options for k, v in result.symbols.items() if k in LISTS}


@pytest.mark.parametrize(
    ("entry", "envelope", "dkim", "expected"),
    [
        ("example.test spf", SPF_PASS, "", {"WHITELIST_SPF"}),
        ("example.test spf", SPF_FAIL, "", set()),  # listed, not authenticated: no bonus
        ("example.test spf both", SPF_FAIL, "", {"BLACKLIST_SPF"}),
        ("example.test spf bl", SPF_PASS, "", set()),
        ("example.test dkim", SPF_FAIL, "example.test=pass", {"WHITELIST_DKIM"}),
        ("example.test dkim", SPF_FAIL, "example.test=fail", set()),
        ("example.test dkim bl", SPF_FAIL, "example.test=fail", {"BLACKLIST_DKIM"}),
        ("example.test dkim bl", SPF_FAIL, "example.test=permerror", set()),
        ("example.test dkim", SPF_FAIL, "elsewhere.test=pass", set()),
        ("example.test spf_dkim", SPF_PASS, "example.test=pass", {"WHITELIST_SPF_DKIM"}),
        ("example.test spf_dkim", SPF_PASS, "", set()),  # one of two is not enough
        ("example.test spf_dkim both", SPF_FAIL, "example.test=pass", {"BLACKLIST_SPF_DKIM"}),
        ("example.test dmarc", SPF_PASS, "", {"WHITELIST_DMARC"}),
        ("example.test dmarc", SPF_FAIL, "", set()),
        ("example.test dmarc both", SPF_FAIL, "", {"BLACKLIST_DMARC"}),
        ("example.test dmarc", SPF_FAIL, "example.test=pass", {"WHITELIST_DMARC"}),
        ("mail.example.test dmarc", SPF_PASS, "", set()),  # an entry covers only below it
        ("test dmarc", SPF_PASS, "", set()),  # never a public suffix
    ],
)
async def test_a_listed_domain_is_trusted_only_when_it_authenticates(
    tmp_path: Path,
    server: DnsServer,
    entry: str,
    envelope: dict[str, str],
    dkim: str,
    expected: set[str],
) -> None:
    found = await _lists(tmp_path, server, entry + "\n", message(dkim=dkim), **envelope)
    assert set(found) == expected


async def test_the_option_names_the_listed_domain(tmp_path: Path, server: DnsServer) -> None:
    found = await _lists(
        tmp_path, server, "# comment\nexample.test dmarc\n", message("a@news.example.test"),
        **SPF_PASS,
    )  # fmt: skip
    assert found == {"WHITELIST_DMARC": ("example.test",)}


async def test_dns_trouble_never_blacklists(tmp_path: Path, server: DnsServer) -> None:
    server.fail("mail.example.test")
    found = await _lists(tmp_path, server, "example.test spf both\n", message(), **SPF_PASS)
    assert found == {}


async def test_it_works_without_the_dmarc_module(tmp_path: Path, server: DnsServer) -> None:
    found = await _lists(
        tmp_path, server, "example.test spf\nexample.test dmarc\n", message(),
        toml="[dmarc]\nenabled = false\n", **SPF_PASS,
    )  # fmt: skip
    assert found == {"WHITELIST_SPF": ("example.test",)}


@pytest.mark.parametrize(
    "line", ["example.test", "example.test smtp", "example.test dkim maybe", "a b c d"]
)
async def test_a_bad_map_line_stops_the_start(tmp_path: Path, server: DnsServer, line: str) -> None:
    with pytest.raises(ConfigError, match=r"auth\.map"):
        await _lists(tmp_path, server, line + "\n", message(), **SPF_PASS)


async def test_the_shipped_map_loads(tmp_path: Path, server: DnsServer) -> None:
    async with auth_engine(tmp_path, server, MODULES) as engine:
        module = next(m for m in engine.modules if isinstance(m, Whitelist))
    assert "paypal.com" in module.entries["dmarc"]
