"""DMARC through the engine: real SPF, stashed DKIM outcomes, policies served on loopback."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from auth_support import AuthProbe, StashedDkim, auth_engine, message, request

from engine import Action
from engine.dns import ZoneData
from engine.modules.dmarc import Dmarc
from engine.modules.spf import Spf

if TYPE_CHECKING:
    from pathlib import Path

    from dnsserver import DnsServer

    from engine import ScanResult

MODULES = [Spf, StashedDkim, Dmarc, AuthProbe]
DMARC_SYMBOLS = {
    "DMARC_POLICY_ALLOW",
    "DMARC_POLICY_REJECT",
    "DMARC_POLICY_QUARANTINE",
    "DMARC_POLICY_SOFTFAIL",
    "DMARC_NA",
    "DMARC_BAD_POLICY",
    "DMARC_DNSFAIL",
}
RUA = "rua=mailto:dmarc@example.test"
# The bounce domain passes SPF for 192.0.2.0/24 and is a subdomain of example.test.
SPF_PASS = {"client": "192.0.2.10", "mail_from": "bounce@mail.example.test"}
SPF_FAIL = {"client": "203.0.113.9", "mail_from": "bounce@mail.example.test"}


def _zones(policy: str = f"v=DMARC1; p=reject; sp=quarantine; {RUA}") -> ZoneData:
    return (
        ZoneData()
        .add_records(
            "example.test",
            {
                "_dmarc": {"TXT": policy},
                "mail": {"TXT": "v=spf1 ip4:192.0.2.0/24 -all"},
                "own": {"TXT": "no spf here"},
                "_dmarc.own": {"TXT": "v=DMARC1; p=none"},
                "_dmarc.two": {"TXT": ["v=DMARC1; p=none", "v=DMARC1; p=reject"]},
                "_dmarc.bad": {"TXT": "v=DMARC1; p=bogus"},
                "_dmarc.norua": {"TXT": "v=DMARC1; sp=reject"},
                "_dmarc.rua-only": {"TXT": f"v=DMARC1; {RUA}"},
                "_dmarc.other": {"TXT": "v=dmarc1; p=reject"},  # the version is case-sensitive
            },
        )
        .add_records("elsewhere.test", {"@": {"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}})
    )


@pytest.fixture
def server(dns_server: DnsServer) -> DnsServer:
    dns_server.zones = _zones()
    return dns_server


async def _scan(
    tmp_path: Path,
    server: DnsServer,
    raw: bytes,
    *,
    toml: str = "",
    **envelope: object,
) -> ScanResult:
    async with auth_engine(tmp_path, server, MODULES, toml) as engine:
        return await engine.scan(request(raw, **envelope))  # type: ignore[arg-type]


def _dmarc(result: ScanResult) -> set[str]:
    return set(result.symbols) & DMARC_SYMBOLS


def _probe(result: ScanResult) -> tuple[str, ...]:
    return result.symbols["PROBE_DMARC"].options


async def test_an_aligned_spf_pass_passes_dmarc(tmp_path: Path, server: DnsServer) -> None:
    result = await _scan(tmp_path, server, message(), **SPF_PASS)
    assert _dmarc(result) == {"DMARC_POLICY_ALLOW"}
    assert result.symbols["DMARC_POLICY_ALLOW"].options == ("example.test", "reject")
    assert _probe(result) == (
        "pass", "example.test", "example.test", "reject", "none", "spf=True", "dkim=-"
    )  # fmt: skip


async def test_strict_spf_alignment_needs_the_same_domain(
    tmp_path: Path, server: DnsServer
) -> None:
    server.zones = _zones(f"v=DMARC1; p=reject; aspf=s; {RUA}")
    result = await _scan(tmp_path, server, message(), **SPF_PASS)
    assert _dmarc(result) == {"DMARC_POLICY_REJECT"}
    assert "SPF not aligned (strict)" in result.symbols["DMARC_POLICY_REJECT"].options[0]


@pytest.mark.parametrize(
    ("policy", "dkim", "expected"),
    [
        ("", "news.example.test=pass", "DMARC_POLICY_ALLOW"),  # relaxed: same org domain
        ("adkim=s;", "news.example.test=pass", "DMARC_POLICY_REJECT"),
        ("adkim=s;", "example.test=pass", "DMARC_POLICY_ALLOW"),
        ("", "elsewhere.test=pass", "DMARC_POLICY_REJECT"),  # valid but not aligned
        ("", "example.test=fail", "DMARC_POLICY_REJECT"),
        ("", "elsewhere.test=pass example.test=pass", "DMARC_POLICY_ALLOW"),
        ("", "example.test=temperror", "DMARC_DNSFAIL"),  # no conclusion: no policy
        ("", "elsewhere.test=temperror", "DMARC_POLICY_REJECT"),  # not aligned anyway
    ],
)
async def test_dkim_alignment(
    tmp_path: Path, server: DnsServer, policy: str, dkim: str, expected: str
) -> None:
    server.zones = _zones(f"v=DMARC1; p=reject; {policy} {RUA}")
    result = await _scan(tmp_path, server, message(dkim=dkim), **SPF_FAIL)
    assert _dmarc(result) == {expected}


async def test_an_unaligned_pass_is_named_in_the_reason(tmp_path: Path, server: DnsServer) -> None:
    result = await _scan(
        tmp_path, server, message(dkim="elsewhere.test=pass"), client="192.0.2.10",
        mail_from="bounce@elsewhere.test",
    )  # fmt: skip
    assert _dmarc(result) == {"DMARC_POLICY_REJECT"}
    reason = result.symbols["DMARC_POLICY_REJECT"].options[0]
    assert reason == "example.test : SPF not aligned (relaxed), DKIM not aligned (relaxed)"


@pytest.mark.parametrize(
    ("from_header", "expected", "policy_domain"),
    [
        ("a@news.example.test", "DMARC_POLICY_QUARANTINE", "example.test"),  # sp applies
        ("a@example.test", "DMARC_POLICY_REJECT", "example.test"),  # p applies
        ("a@own.example.test", "DMARC_POLICY_SOFTFAIL", "own.example.test"),  # its own p=none
        ("a@deep.own.example.test", "DMARC_POLICY_QUARANTINE", "example.test"),
    ],
)
async def test_subdomains_fall_back_to_the_organisational_domain(
    tmp_path: Path, server: DnsServer, from_header: str, expected: str, policy_domain: str
) -> None:
    result = await _scan(tmp_path, server, message(from_header), **SPF_FAIL)
    assert _dmarc(result) == {expected}
    assert _probe(result)[2] == policy_domain


async def test_without_sp_the_subdomain_gets_p(tmp_path: Path, server: DnsServer) -> None:
    server.zones = _zones(f"v=DMARC1; p=reject; {RUA}")
    result = await _scan(tmp_path, server, message("a@news.example.test"), **SPF_FAIL)
    assert _dmarc(result) == {"DMARC_POLICY_REJECT"}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("p=reject; pct=0", "DMARC_POLICY_QUARANTINE"),
        ("p=quarantine; pct=0", "DMARC_POLICY_SOFTFAIL"),
        ("p=reject; pct=100", "DMARC_POLICY_REJECT"),
        ("p=none; pct=0", "DMARC_POLICY_SOFTFAIL"),
    ],
)
async def test_pct_sampled_out_messages_get_the_next_weaker_policy(
    tmp_path: Path, server: DnsServer, policy: str, expected: str
) -> None:
    server.zones = _zones(f"v=DMARC1; {policy}")
    result = await _scan(tmp_path, server, message(), **SPF_FAIL)
    assert _dmarc(result) == {expected}
    sampled_out = "sampled_out" in result.symbols[expected].options
    assert sampled_out == ("pct=0" in policy and "none" not in policy)


async def test_pct_sampling_is_deterministic_per_message(tmp_path: Path, server: DnsServer) -> None:
    server.zones = _zones("v=DMARC1; p=reject; pct=50")
    rejected = []
    async with auth_engine(tmp_path, server, MODULES) as engine:
        for n in range(60):
            raw = message(message_id=f"<{n}@example.test>")
            first = _dmarc(await engine.scan(request(raw, **SPF_FAIL)))  # type: ignore[arg-type]
            again = _dmarc(await engine.scan(request(raw, **SPF_FAIL)))  # type: ignore[arg-type]
            assert first == again
            rejected.append(first == {"DMARC_POLICY_REJECT"})
    assert 15 < sum(rejected) < 45  # about half, and never all or none


@pytest.mark.parametrize(
    ("from_header", "expected"),
    [
        ("a@two.example.test", "DMARC_BAD_POLICY"),  # two records
        ("a@bad.example.test", "DMARC_BAD_POLICY"),  # p=bogus
        ("a@norua.example.test", "DMARC_BAD_POLICY"),  # no p, no rua
        ("a@rua-only.example.test", "DMARC_POLICY_SOFTFAIL"),  # no p, rua: p=none
        ("a@other.example.test", "DMARC_POLICY_QUARANTINE"),  # v=dmarc1 ignored: org's sp
        ("a@elsewhere.test", "DMARC_NA"),
    ],
)
async def test_bad_and_missing_policies(
    tmp_path: Path, server: DnsServer, from_header: str, expected: str
) -> None:
    result = await _scan(tmp_path, server, message(from_header), **SPF_FAIL)
    assert _dmarc(result) == {expected}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"Subject: x\r\n\r\nbody\r\n", "No From header"),
        (b"From: a@example.test\r\nFrom: b@example.test\r\n\r\nx\r\n", "Duplicate From header"),
        (b"From: undisclosed\r\n\r\nx\r\n", "No domain in From header"),
        (b"From: a@example.test, b@elsewhere.test\r\n\r\nx\r\n", "Several From domains"),
    ],
)
async def test_without_one_from_domain_there_is_no_dmarc(
    tmp_path: Path, server: DnsServer, raw: bytes, reason: str
) -> None:
    result = await _scan(tmp_path, server, raw, **SPF_FAIL)
    assert _dmarc(result) == {"DMARC_NA"}
    assert result.symbols["DMARC_NA"].options == (reason,)


async def test_dns_trouble_is_dnsfail_not_a_verdict(tmp_path: Path, server: DnsServer) -> None:
    server.fail("_dmarc.example.test")
    result = await _scan(tmp_path, server, message(), **SPF_FAIL)
    assert _dmarc(result) == {"DMARC_DNSFAIL"}


async def test_an_aligned_spf_temperror_is_dnsfail(tmp_path: Path, server: DnsServer) -> None:
    server.fail("mail.example.test")
    result = await _scan(tmp_path, server, message(), **SPF_PASS)
    assert "R_SPF_DNSFAIL" in result.symbols
    assert _dmarc(result) == {"DMARC_DNSFAIL"}


@pytest.mark.parametrize("reject_on_policy", [False, True])
async def test_reject_on_policy_forces_the_reject_action(
    tmp_path: Path, server: DnsServer, reject_on_policy: bool
) -> None:
    toml = f"[dmarc]\nreject_on_policy = {str(reject_on_policy).lower()}\n"
    result = await _scan(tmp_path, server, message(), toml=toml, **SPF_FAIL)
    assert _dmarc(result) == {"DMARC_POLICY_REJECT"}
    assert (result.action is Action.REJECT) == reject_on_policy
    if reject_on_policy:
        assert result.messages["smtp_message"] == "Rejected by the DMARC policy of example.test"


async def test_a_quarantine_policy_is_never_forced_to_reject(
    tmp_path: Path, server: DnsServer
) -> None:
    toml = "[dmarc]\nreject_on_policy = true\n"
    result = await _scan(tmp_path, server, message("a@news.example.test"), toml=toml, **SPF_FAIL)
    assert _dmarc(result) == {"DMARC_POLICY_QUARANTINE"}
    assert result.action is not Action.REJECT


async def test_authenticated_senders_are_not_checked(tmp_path: Path, server: DnsServer) -> None:
    result = await _scan(tmp_path, server, message(), auth_user="alice", **SPF_FAIL)
    assert not _dmarc(result)
    assert server.count("_dmarc.example.test") == 0


REPORTING = "[dmarc]\nreporting = true\n"


async def test_aggregate_data_is_off_by_default(tmp_path: Path, server: DnsServer) -> None:
    async with auth_engine(tmp_path, server, MODULES) as engine:
        await engine.scan(request(message(), **SPF_PASS))  # type: ignore[arg-type]
        assert [k async for k in engine.store.scan("dmarc:*")] == []


async def test_aggregate_data_is_kept_per_domain_and_day(tmp_path: Path, server: DnsServer) -> None:
    when = time.mktime((2024, 5, 17, 12, 0, 0, 0, 0, -1))
    day = time.strftime("%Y%m%d", time.gmtime(when))
    async with auth_engine(tmp_path, server, MODULES, REPORTING) as engine:
        for envelope in (SPF_PASS, SPF_PASS, SPF_FAIL):
            await engine.scan(request(message(), received_at=when, **envelope))  # type: ignore[arg-type]
        # No rua at own.example.test: nothing to report to, nothing kept.
        await engine.scan(request(message("a@own.example.test"), received_at=when, **SPF_FAIL))  # type: ignore[arg-type]
        index = await engine.store.hgetall(f"dmarc:idx:{day}")
        rows = await engine.store.hgetall(f"dmarc:rows:{day}:example.test")
    assert index == {"example.test": b"3", "#domains": b"1"}
    assert rows == {
        "192.0.2.10,example.test,none,fail,pass,mail.example.test=pass,": b"2",
        "203.0.113.9,example.test,reject,fail,fail,mail.example.test=fail,": b"1",
        "#rows": b"2",
    }


async def test_aggregate_rows_are_bounded(tmp_path: Path, server: DnsServer) -> None:
    when = time.time()
    day = time.strftime("%Y%m%d", time.gmtime(when))
    toml = REPORTING + "reporting_max_rows = 2\n"
    async with auth_engine(tmp_path, server, MODULES, toml) as engine:
        for last in range(1, 6):
            envelope = {"client": f"203.0.113.{last}", "mail_from": "bounce@mail.example.test"}
            await engine.scan(request(message(), received_at=when, **envelope))  # type: ignore[arg-type]
        rows = await engine.store.hgetall(f"dmarc:rows:{day}:example.test")
    assert rows["#rows"] == b"2"
    assert rows["overflow"] == b"3"
    assert len(rows) == 4  # two rows, their count, the overflow
