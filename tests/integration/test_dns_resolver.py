"""The resolver against a real authoritative server on loopback (UDP and TCP), never patched.

Timeouts here are real seconds (dnspython's sockets and the server's thread do not follow a
trio test clock), kept to fractions of a second; only the cache's clock is injected.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import dns.rcode
import pytest
import trio

from engine.config import Section, load_config
from engine.dns import (
    DNS_SECTION,
    DnsAnswer,
    DnsSettings,
    DnsStatus,
    MxRecord,
    Nameserver,
    Resolver,
    ZoneData,
    parse_nameserver,
    reverse_name,
)
from engine.errors import ConfigError

SUPPORT = Path(__file__).resolve().parents[1] / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))
from dnsserver import DnsServer  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

DKIM_KEY = "v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 9
BIG_TXT = "v=spf1 " + " ".join(f"ip4:198.51.100.{i}" for i in range(200)) + " -all"

EXAMPLE_ZONE = """
$TTL 300
@        IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60
@        IN NS  ns
@        IN A   192.0.2.1
@        IN AAAA 2001:db8::1
@        IN MX  20 mx2
@        IN MX  10 mx1
@        IN TXT "v=spf1 ip4:192.0.2.0/24" " -all"
www      IN CNAME @
mx1      IN A   192.0.2.25
mx2      IN A   192.0.2.26
nodata   IN TXT "only text here"
a.b.c    IN A   192.0.2.3
*.wild   IN A   192.0.2.99
nullmx   IN MX  0 .
"""


def make_zones() -> ZoneData:
    zones = ZoneData().add_text("example.test", EXAMPLE_ZONE)
    zones.add_records(
        "keys.test",
        {
            "@": {"MX": "10 mail"},  # relative to the zone, as in a zone file
            "mail": {"A": ["192.0.2.30", "192.0.2.31"]},
            "sel._domainkey": {"TXT": DKIM_KEY},
            "big": {"TXT": BIG_TXT},
        },
        negative_ttl=30,
    )
    zones.add_records("2.0.192.in-addr.arpa", {"1": {"PTR": "example.test."}})
    zones.add_records("bl.test", {"2.0.0.127": {"A": "127.0.0.2", "TXT": "listed"}})
    return zones


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer(make_zones()) as running:
        yield running


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- answers -----------------------------------------------------------------------------


async def test_typed_lookups(server: DnsServer) -> None:
    resolver = server.resolver()
    a = await resolver.a("example.test")
    assert (a.status, a.records, a.ttl, a.name, a.rdtype) == (
        DnsStatus.NOERROR,
        ("192.0.2.1",),
        300,
        "example.test",
        "A",
    )
    assert (await resolver.aaaa("EXAMPLE.test.")).records == ("2001:db8::1",)
    assert (await resolver.txt("example.test")).records == ("v=spf1 ip4:192.0.2.0/24 -all",)
    assert (await resolver.mx("example.test")).records == (
        MxRecord(10, "mx1.example.test"),
        MxRecord(20, "mx2.example.test"),
    )
    assert (await resolver.mx("nullmx.example.test")).records == (MxRecord(0, ""),)
    assert (await resolver.ptr("192.0.2.1")).records == ("example.test",)
    assert (await resolver.a("www.example.test")).records == ("192.0.2.1",)  # via CNAME
    assert (await resolver.a("anything.wild.example.test")).records == ("192.0.2.99",)
    listed = await resolver.a(reverse_name("127.0.0.2", "bl.test"))
    assert listed.records == ("127.0.0.2",)
    assert (await resolver.mx("keys.test")).records == (MxRecord(10, "mail.keys.test"),)
    assert sorted((await resolver.a("mail.keys.test")).records) == ["192.0.2.30", "192.0.2.31"]
    idn = await resolver.a("bücher.example.test")
    assert (idn.status, idn.name) == (DnsStatus.NXDOMAIN, "xn--bcher-kva.example.test")
    raw = await resolver.query("example.test", "MX")
    assert raw.ok
    assert len(raw.records) == 2


async def test_long_txt_records_come_back_joined(server: DnsServer) -> None:
    resolver = server.resolver()
    assert (await resolver.txt("sel._domainkey.keys.test")).records == (DKIM_KEY,)
    assert len(DKIM_KEY) > 255  # so it was served as several strings


async def test_nxdomain_and_nodata_are_permanent(server: DnsServer) -> None:
    resolver = server.resolver()
    missing = await resolver.a("missing.example.test")
    assert (missing.status, missing.records, missing.ttl) == (DnsStatus.NXDOMAIN, (), 60)
    assert missing.permanent
    assert not missing.temporary
    nodata = await resolver.a("nodata.example.test")
    assert (nodata.status, nodata.ttl) == (DnsStatus.NODATA, 60)
    # b.c.example.test has no records but a name below it: it exists (RFC 8020).
    assert (await resolver.a("b.c.example.test")).status is DnsStatus.NODATA
    assert (await resolver.a("2.0.0.127.bl.test")).ok
    assert (await resolver.a("3.0.0.127.bl.test")).status is DnsStatus.NXDOMAIN


async def test_servfail_and_refused_are_temporary_and_not_cached(server: DnsServer) -> None:
    resolver = server.resolver()
    server.fail("broken.example.test")
    for _ in range(2):
        answer = await resolver.a("broken.example.test")
        assert answer.status is DnsStatus.SERVFAIL
        assert answer.temporary
    # One query per lookup: a server that said SERVFAIL is not asked again within one.
    assert server.count("broken.example.test") == 2
    server.fail("nope.example.test", dns.rcode.REFUSED)
    assert (await resolver.a("nope.example.test")).status is DnsStatus.REFUSED
    # A name in no zone of this server is refused, as an authoritative server does.
    assert (await resolver.a("elsewhere.invalid")).status is DnsStatus.REFUSED


async def test_timeout_is_temporary_after_retransmits(server: DnsServer) -> None:
    server.drop("mx1.example.test")
    resolver = server.resolver(timeout=0.1, attempts=3, lifetime=2.0)
    answer = await resolver.a("mx1.example.test")
    assert answer.status is DnsStatus.TIMEOUT
    assert answer.temporary
    assert server.count("mx1.example.test") == 3
    server.reset()
    server.delay("mx1.example.test", 0.02)  # late, but within the timeout
    assert (await resolver.a("mx1.example.test")).records == ("192.0.2.25",)


async def test_lifetime_bounds_the_whole_lookup(server: DnsServer) -> None:
    server.drop("mx1.example.test")
    resolver = server.resolver(timeout=0.15, attempts=10, lifetime=0.4)
    answer = await resolver.a("mx1.example.test")
    assert answer.status is DnsStatus.TIMEOUT
    assert "within 0.4 s" in answer.detail
    # Tries at 0, 0.15 and 0.3 s, the last cut short; attempts=10 would have made ten.
    assert 2 <= server.count("mx1.example.test") <= 3


async def test_next_server_answers_when_the_first_is_silent_or_failing(server: DnsServer) -> None:
    with DnsServer(make_zones()) as first:
        first.drop("example.test")
        first.fail("mx1.example.test")
        servers = (parse_nameserver(first.nameserver), parse_nameserver(server.nameserver))
        resolver = server.resolver(nameservers=servers, timeout=0.1)
        assert (await resolver.a("example.test")).records == ("192.0.2.1",)
        assert (await resolver.a("mx1.example.test")).records == ("192.0.2.25",)
        assert (first.count(), server.count()) == (2, 2)


async def test_rotate_spreads_lookups_over_the_servers(server: DnsServer) -> None:
    with DnsServer(make_zones()) as other:
        servers = (parse_nameserver(server.nameserver), parse_nameserver(other.nameserver))
        resolver = server.resolver(nameservers=servers, rotate=True)
        for name in ("example.test", "mx1.example.test", "mx2.example.test", "keys.test"):
            assert (await resolver.query(name, "A")).permanent
        assert (server.count(), other.count()) == (2, 2)


async def test_truncated_udp_answers_are_asked_again_over_tcp(server: DnsServer) -> None:
    resolver = server.resolver()
    server.truncate("example.test")
    assert (await resolver.a("example.test")).records == ("192.0.2.1",)
    assert server.count("example.test", transport="udp") == 1
    assert server.count("example.test", transport="tcp") == 1
    # Larger than the 1232 bytes announced over EDNS: the server truncates by itself.
    assert (await resolver.txt("big.keys.test")).records == (BIG_TXT,)
    assert server.count("big.keys.test", transport="tcp") == 1


async def test_formerr_to_edns_is_asked_again_without_it(server: DnsServer) -> None:
    server.fail("example.test", dns.rcode.FORMERR)
    answer = await server.resolver().a("example.test")
    assert (answer.status, answer.temporary) == (DnsStatus.ERROR, True)
    assert server.count("example.test") == 2


async def test_ipv6_nameserver(server: DnsServer) -> None:
    if not server.ipv6:
        pytest.skip("no IPv6 loopback on this machine")
    ns = parse_nameserver(server.nameserver6)
    assert ns == Nameserver("::1", server.port)
    resolver = server.resolver(nameservers=(ns,))
    assert (await resolver.a("example.test")).records == ("192.0.2.1",)
    server.truncate("example.test")
    assert (await resolver.aaaa("example.test")).records == ("2001:db8::1",)
    assert {(q.family, q.transport) for q in server.queries} == {(6, "udp"), (6, "tcp")}


# -- the cache ---------------------------------------------------------------------------


async def test_answers_are_cached_for_their_ttl(server: DnsServer) -> None:
    clock = FakeClock()
    resolver = Resolver.from_settings(server.settings(), clock=clock)
    assert (await resolver.a("example.test")).ttl == 300
    clock.now += 100
    again = await resolver.a("example.test")
    assert (again.records, again.ttl) == (("192.0.2.1",), 200)
    assert server.count("example.test") == 1
    clock.now += 200
    assert (await resolver.a("example.test")).ttl == 300
    assert server.count("example.test") == 2
    assert resolver.stats.cache_hits == 1


async def test_negative_answers_are_cached_by_the_soa_minimum(server: DnsServer) -> None:
    clock = FakeClock()
    resolver = Resolver.from_settings(server.settings(max_negative_ttl=45), clock=clock)
    for _ in range(3):
        assert (await resolver.a("missing.example.test")).status is DnsStatus.NXDOMAIN
        assert (await resolver.a("missing.keys.test")).status is DnsStatus.NXDOMAIN
    assert (server.count("missing.example.test"), server.count("missing.keys.test")) == (1, 1)
    clock.now += 31  # keys.test: negative TTL 30
    await resolver.a("missing.example.test")
    await resolver.a("missing.keys.test")
    assert (server.count("missing.example.test"), server.count("missing.keys.test")) == (1, 2)
    clock.now += 15  # example.test says 60, but max_negative_ttl is 45
    await resolver.a("missing.example.test")
    assert server.count("missing.example.test") == 2


async def test_ttls_are_clamped_and_the_cache_is_bounded(server: DnsServer) -> None:
    clock = FakeClock()
    resolver = Resolver.from_settings(
        server.settings(max_ttl=10, min_ttl=5, cache_size=2), clock=clock
    )
    assert (await resolver.a("example.test")).ttl == 10
    await resolver.a("mx1.example.test")
    await resolver.a("mx2.example.test")  # evicts example.test, the least recently used
    assert len(resolver.cache) == 2
    await resolver.a("example.test")
    assert server.count("example.test") == 2


# -- one query in flight -----------------------------------------------------------------


@pytest.mark.parametrize("cache_size", [10_000, 0])
async def test_100_concurrent_lookups_send_one_query(server: DnsServer, cache_size: int) -> None:
    resolver = server.resolver(cache_size=cache_size)
    server.delay("example.test", 0.2)  # all 100 are waiting before the answer comes
    answers: list[DnsAnswer[str]] = []

    async def scan() -> None:
        answers.append(await resolver.a("example.test"))

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(scan)
    assert [a.records for a in answers] == [("192.0.2.1",)] * 100
    assert server.count() == 1
    assert resolver.stats.coalesced == 99
    assert resolver.stats.upstream == 1


async def test_a_cancelled_lookup_does_not_fail_the_ones_waiting_for_it(
    server: DnsServer,
) -> None:
    resolver = server.resolver()
    server.delay("example.test", 0.2)
    answers: list[DnsAnswer[str]] = []

    async def impatient() -> None:
        with trio.move_on_after(0.05):
            await resolver.a("example.test")

    async def patient() -> None:
        answers.append(await resolver.a("example.test"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(impatient)
        await trio.sleep(0.01)  # let it lead
        nursery.start_soon(patient)
    assert [a.records for a in answers] == [("192.0.2.1",)]
    assert server.count() == 2  # the leader's query, then the follower's own


# -- names -------------------------------------------------------------------------------


async def test_bad_names_are_permanent_and_never_sent(server: DnsServer) -> None:
    resolver = server.resolver()
    for name in ("a..example.test", "x" * 64 + ".example.test", "a." * 130 + "test", ""):
        answer = await resolver.a(name)
        assert (answer.status, answer.permanent) == (DnsStatus.BADNAME, True)
    assert (await resolver.ptr("not-an-address")).status is DnsStatus.BADNAME
    assert server.count() == 0
    with pytest.raises(ValueError, match="unknown DNS record type"):
        await resolver.query("example.test", "NOPE")


def test_reverse_names() -> None:
    assert reverse_name("192.0.2.1") == "1.2.0.192.in-addr.arpa"
    assert reverse_name("192.0.2.1", "zen.example.") == "1.2.0.192.zen.example"
    assert reverse_name("::ffff:192.0.2.1", "bl.test") == "1.2.0.192.bl.test"
    v6 = reverse_name("2001:db8::1", "bl.test")
    assert v6 == "1.0.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2.bl.test"
    assert Resolver.reverse("2001:db8::1").endswith(".ip6.arpa")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        reverse_name("example.test")


async def test_zone_data_resolver_answers_without_sockets() -> None:
    resolver = Resolver.from_zones(make_zones())
    assert (await resolver.mx("example.test")).records[0] == MxRecord(10, "mx1.example.test")
    assert (await resolver.a("missing.example.test")).status is DnsStatus.NXDOMAIN
    assert (await resolver.txt("big.keys.test")).records == (BIG_TXT,)


# -- configuration -----------------------------------------------------------------------


def test_nameserver_syntax() -> None:
    assert parse_nameserver("127.0.0.1") == Nameserver("127.0.0.1", 53)
    assert parse_nameserver("127.0.0.1:5301") == Nameserver("127.0.0.1", 5301)
    assert parse_nameserver("[::1]:53") == Nameserver("::1", 53)
    assert parse_nameserver("[2001:DB8::1]") == Nameserver("2001:db8::1", 53)
    assert parse_nameserver("::1") == Nameserver("::1", 53)
    assert str(Nameserver("::1", 5301)) == "[::1]:5301"
    assert str(Nameserver("127.0.0.1")) == "127.0.0.1:53"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["localhost:53"]', "'localhost' is not an IP address"),
        ('["[::1]53"]', "write an IPv6 server as [address]:port"),
        ('["127.0.0.1:70000"]', "the port must be a number from 1 to 65535"),
        ('["127.0.0.1:"]', "the port must be a number from 1 to 65535"),
        ("[53]", 'must be a list of strings such as "127.0.0.1:53", not 53'),
        ('"127.0.0.1"', "must be a list, not str"),
    ],
)
def test_bad_nameservers_are_refused_with_file_and_line(
    tmp_path: Path, value: str, message: str
) -> None:
    (tmp_path / "milterd.toml").write_text(f"[dns]\ntimeout = 2.0\nnameservers = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, Section({"dns": DNS_SECTION}), environ={})
    (problem,) = info.value.problems
    assert (problem.key, problem.line) == ("dns.nameservers", 3)
    assert problem.file.endswith("milterd.toml")
    assert message in problem.message


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("timeout = 0.0", "dns.timeout", "must be between 0.01 and 30"),
        ("attempts = 0", "dns.attempts", "must be between 1 and 10"),
        ("edns_buffer_size = 100", "dns.edns_buffer_size", "must be 0 (no EDNS) or from 512"),
        ("cache_size = -1", "dns.cache_size", "must be ≥ 0"),
        ("resolver = 1", "dns.resolver", "unknown key"),
        ("min_ttl = 600\nmax_ttl = 60", "dns.min_ttl", "must not exceed max_ttl (60)"),
        ("timeout = 3.0\nlifetime = 2.0", "dns.lifetime", "must be at least timeout (3.0)"),
    ],
)
def test_bad_dns_options_are_refused(tmp_path: Path, line: str, key: str, message: str) -> None:
    (tmp_path / "milterd.toml").write_text(f"[dns]\n{line}\n")

    def build() -> Resolver:
        config = load_config(tmp_path, Section({"dns": DNS_SECTION}), environ={})
        return Resolver.from_config(config, resolv_conf=tmp_path / "resolv.conf")

    with pytest.raises(ConfigError) as info:
        build()
    (problem,) = info.value.problems
    assert problem.key == key
    assert problem.line is not None
    assert message in problem.message


def test_default_nameservers_come_from_resolv_conf(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "# generated\nsearch example.test\nnameserver 10.0.0.53\nnameserver fe80::1\n"
        "nameserver bogus\noptions rotate\n"
    )
    config = load_config(None, Section({"dns": DNS_SECTION}), environ={})
    settings = DnsSettings.from_config(config, resolv)
    assert settings.nameservers == (Nameserver("10.0.0.53"), Nameserver("fe80::1"))
    missing = DnsSettings.from_config(config, tmp_path / "absent")
    assert missing.nameservers == (Nameserver("127.0.0.1"),)
    configured = load_config(tmp_path, Section({"dns": DNS_SECTION}), environ={})
    assert configured.section("dns")["nameservers"] == []
