"""The SPF module through the engine, pyspf and our resolver, against DNS on loopback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
from auth_support import AuthProbe, auth_engine, message, request

from engine.dns import ZoneData
from engine.modules.spf import Spf

if TYPE_CHECKING:
    from pathlib import Path

    from dnsserver import DnsServer

SPF_SYMBOLS = {
    "R_SPF_ALLOW",
    "R_SPF_FAIL",
    "R_SPF_SOFTFAIL",
    "R_SPF_NEUTRAL",
    "R_SPF_NA",
    "R_SPF_DNSFAIL",
    "R_SPF_PERMFAIL",
}


def _zones() -> ZoneData:
    return ZoneData().add_records(
        "example.test",
        {
            "@": {"TXT": ["v=spf1 ip4:192.0.2.0/24 include:_spf.example.test -all", "other"]},
            "_spf": {"TXT": "v=spf1 a:relay.example.test mx ~all"},
            "relay": {"A": "198.51.100.7"},
            "mx1": {"A": "198.51.100.25", "AAAA": "2001:db8::25"},
            "soft": {"TXT": "v=spf1 ~all"},
            "neutral": {"TXT": "v=spf1 ?all"},
            "none": {"A": "192.0.2.99"},
            "broken": {"TXT": "v=spf1 ip4:192.0.2.300 -all"},
            "loop": {"TXT": "v=spf1 include:loop.example.test -all"},
            "slow": {"TXT": "v=spf1 -all"},
            "helo": {"TXT": "v=spf1 ip4:203.0.113.0/24 -all"},
            "macro": {"TXT": "v=spf1 exists:%{l}.users.example.test -all"},
            "alice.users": {"A": "127.0.0.2"},
            "bob.users": {"A": "127.0.0.2"},
            "v6": {"TXT": "v=spf1 mx:mx.example.test -all"},
            "mx": {"MX": "10 mx1.example.test."},
            "voids": {"TXT": "v=spf1 a:n1.example.test a:n2.example.test a:n3.example.test -all"},
        },
        ttl=600,
    )


@pytest.fixture
def spf_server(dns_server: DnsServer) -> DnsServer:
    dns_server.zones = _zones()
    return dns_server


async def _scan(
    tmp_path: Path, server: DnsServer, *, toml: str = "", **envelope: object
) -> dict[str, tuple[str, ...]]:
    async with auth_engine(tmp_path, server, [Spf, AuthProbe], toml) as engine:
        result = await engine.scan(request(message(), **envelope))  # type: ignore[arg-type]
    return {name: hit.options for name, hit in result.symbols.items()}


@pytest.mark.parametrize(
    ("client", "sender", "symbol", "option"),
    [
        ("192.0.2.10", "a@example.test", "R_SPF_ALLOW", "ip4:192.0.2.0/24"),
        ("198.51.100.7", "a@example.test", "R_SPF_ALLOW", "include:_spf.example.test"),
        ("203.0.113.1", "a@example.test", "R_SPF_FAIL", "-all"),
        ("203.0.113.1", "a@soft.example.test", "R_SPF_SOFTFAIL", "~all"),
        ("203.0.113.1", "a@neutral.example.test", "R_SPF_NEUTRAL", "?all"),
        ("203.0.113.1", "a@none.example.test", "R_SPF_NA", "none.example.test"),
        ("203.0.113.1", "a@nxdomain.example.test", "R_SPF_NA", "nxdomain.example.test"),
        ("203.0.113.1", "a@broken.example.test", "R_SPF_PERMFAIL", "broken.example.test"),
        ("203.0.113.1", "a@loop.example.test", "R_SPF_PERMFAIL", "loop.example.test"),
        ("203.0.113.1", "a@voids.example.test", "R_SPF_PERMFAIL", "voids.example.test"),
        ("2001:db8::25", "a@v6.example.test", "R_SPF_ALLOW", "mx:mx.example.test"),
        ("::ffff:192.0.2.10", "a@example.test", "R_SPF_ALLOW", "ip4:192.0.2.0/24"),
    ],
)
async def test_each_spf_result_has_its_symbol(
    tmp_path: Path, spf_server: DnsServer, client: str, sender: str, symbol: str, option: str
) -> None:
    symbols = await _scan(tmp_path, spf_server, client=client, mail_from=sender)
    assert set(symbols) & SPF_SYMBOLS == {symbol}
    assert symbols[symbol][0] == option


async def test_a_dns_timeout_is_a_temporary_failure_not_a_verdict(
    tmp_path: Path, spf_server: DnsServer
) -> None:
    spf_server.delay("slow.example.test", 5.0)  # longer than the resolver's lifetime
    symbols = await _scan(
        tmp_path, spf_server, client="203.0.113.1", mail_from="a@slow.example.test"
    )
    assert set(symbols) & SPF_SYMBOLS == {"R_SPF_DNSFAIL"}
    assert symbols["PROBE_SPF"][0] == "temperror"
    assert "ENGINE_MODULE_TIMEOUT" not in symbols


async def test_the_evaluation_budget_ends_as_dnsfail_before_the_check_timeout(
    tmp_path: Path, spf_server: DnsServer
) -> None:
    spf_server.delay("slow.example.test", 5.0)
    # The resolver would wait 0.3 s (auth_engine's timeout); the SPF budget is shorter.
    symbols = await _scan(
        tmp_path,
        spf_server,
        toml="[spf]\ntimeout = 0.1\n",
        client="203.0.113.1",
        mail_from="a@slow.example.test",
    )
    assert set(symbols) & SPF_SYMBOLS == {"R_SPF_DNSFAIL"}
    assert "longer than" in symbols["R_SPF_DNSFAIL"][1]


async def test_servfail_is_dnsfail(tmp_path: Path, spf_server: DnsServer) -> None:
    spf_server.fail("example.test")
    symbols = await _scan(tmp_path, spf_server, client="192.0.2.10", mail_from="a@example.test")
    assert set(symbols) & SPF_SYMBOLS == {"R_SPF_DNSFAIL"}


async def test_the_null_sender_is_checked_by_its_helo_name(
    tmp_path: Path, spf_server: DnsServer
) -> None:
    symbols = await _scan(
        tmp_path, spf_server, client="203.0.113.5", mail_from="", helo="helo.example.test"
    )
    assert set(symbols) & SPF_SYMBOLS == {"R_SPF_ALLOW"}
    assert symbols["PROBE_SPF"][:4] == (
        "pass",
        "helo",
        "helo.example.test",
        "postmaster@helo.example.test",
    )


@pytest.mark.parametrize("helo", ["[203.0.113.5]", "203.0.113.5", ""])
async def test_a_null_sender_without_a_helo_domain_has_no_spf(
    tmp_path: Path, spf_server: DnsServer, helo: str
) -> None:
    symbols = await _scan(tmp_path, spf_server, client="203.0.113.5", mail_from="", helo=helo)
    assert set(symbols) & SPF_SYMBOLS == {"R_SPF_NA"}
    assert spf_server.count() == 0


@pytest.mark.parametrize(
    ("envelope", "toml"),
    [
        ({"client": "127.0.0.1"}, ""),
        ({"client": "10.1.2.3"}, ""),
        ({"client": "203.0.113.1", "auth_user": "alice"}, ""),
        ({"client": "203.0.113.1"}, '[spf]\nlocal_networks = ["203.0.113.0/24"]\n'),
    ],
)
async def test_authenticated_and_local_senders_are_not_checked(
    tmp_path: Path, spf_server: DnsServer, envelope: dict[str, str], toml: str
) -> None:
    symbols = await _scan(tmp_path, spf_server, toml=toml, mail_from="a@example.test", **envelope)
    assert not set(symbols) & SPF_SYMBOLS
    assert symbols["PROBE_SPF"][0] == "none"
    assert symbols["PROBE_SPF"][-1] == "True"  # skipped
    assert spf_server.count() == 0


async def test_local_clients_are_checked_when_asked(tmp_path: Path, spf_server: DnsServer) -> None:
    symbols = await _scan(
        tmp_path,
        spf_server,
        toml="[spf]\ncheck_local = true\n",
        client="127.0.0.1",
        mail_from="a@example.test",
    )
    assert set(symbols) & SPF_SYMBOLS == {"R_SPF_FAIL"}


async def test_no_client_address_means_no_check(tmp_path: Path, spf_server: DnsServer) -> None:
    symbols = await _scan(tmp_path, spf_server, client="", mail_from="a@example.test")
    assert not set(symbols) & (SPF_SYMBOLS | {"PROBE_SPF"})


# The result cache is per (client IP, domain): with the resolver's own cache off
# ("cache_size = 0" lands in auth_engine's [dns] table), only the SPF cache can spare the
# server a second round of queries.


async def test_results_are_cached_per_ip_and_domain(tmp_path: Path, spf_server: DnsServer) -> None:
    async with auth_engine(tmp_path, spf_server, [Spf], "cache_size = 0\n") as engine:
        first = await engine.scan(request(message(), client="198.51.100.7"))
        after_first = spf_server.count()
        again = await engine.scan(
            request(message(), client="198.51.100.7", mail_from="other@example.test")
        )
        after_again = spf_server.count()
        other_ip = await engine.scan(request(message(), client="198.51.100.8"))
    assert set(first.symbols) == set(again.symbols) == {"R_SPF_ALLOW"}
    assert "R_SPF_FAIL" in other_ip.symbols
    assert after_first == 3  # example.test, _spf.example.test TXT, relay A
    assert after_again == after_first  # answered from the SPF cache
    assert spf_server.count() > after_again  # another IP: evaluated again


async def test_records_with_sender_macros_are_cached_per_sender(
    tmp_path: Path, spf_server: DnsServer
) -> None:
    async with auth_engine(tmp_path, spf_server, [Spf], "cache_size = 0\n") as engine:
        alice = await engine.scan(request(message(), mail_from="alice@macro.example.test"))
        count = spf_server.count()
        alice_again = await engine.scan(request(message(), mail_from="alice@macro.example.test"))
        assert spf_server.count() == count  # the same sender: cached
        mallory = await engine.scan(request(message(), mail_from="mallory@macro.example.test"))
        assert spf_server.count() > count  # %{l} differs: evaluated again
    assert "R_SPF_ALLOW" in alice.symbols
    assert "R_SPF_ALLOW" in alice_again.symbols
    assert "R_SPF_FAIL" in mallory.symbols


async def test_temporary_failures_are_not_cached(tmp_path: Path, spf_server: DnsServer) -> None:
    async with auth_engine(tmp_path, spf_server, [Spf], "cache_size = 0\n") as engine:
        spf_server.fail("example.test")
        failed = await engine.scan(request(message()))
        spf_server.reset()
        recovered = await engine.scan(request(message()))
    assert "R_SPF_DNSFAIL" in failed.symbols
    assert "R_SPF_ALLOW" in recovered.symbols


async def test_concurrent_scans_share_one_evaluation(tmp_path: Path, spf_server: DnsServer) -> None:
    spf_server.delay("example.test", 0.2)
    results = []
    async with auth_engine(tmp_path, spf_server, [Spf], "cache_size = 0\n") as engine:

        async def scan() -> None:
            results.append(await engine.scan(request(message(), client="198.51.100.7")))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(scan)
    assert all("R_SPF_ALLOW" in r.symbols for r in results)
    assert spf_server.count("example.test", "TXT") == 1
