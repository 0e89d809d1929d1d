"""DKIM verification through the real engine, keys served by the loopback DNS server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from dkim_testkit import engine_with, message, publish, request, sign

from engine import ScanRequest
from engine.auth.results import DKIM_RESULTS
from engine.modules.base import Module, check
from engine.modules.dkim import Dkim

if TYPE_CHECKING:
    from pathlib import Path

    from dkim_testkit import KeyPair
    from dnsserver import DnsServer

    from engine import ScanResult
    from engine.auth.results import DkimResult
    from engine.task.task import Task

SYMBOLS = {"R_DKIM_ALLOW", "R_DKIM_REJECT", "R_DKIM_TEMPFAIL", "R_DKIM_PERMFAIL", "R_DKIM_NA"}


class StashSpy(Module):
    """Copies the DKIM results the stash holds after the filters into the result's messages."""

    name = "stash_spy"
    seen: list[DkimResult] | None = None

    @check(produces=(), depends_on=("dkim.verify",))
    def spy(self, task: Task) -> None:
        StashSpy.seen = task.stash.get(DKIM_RESULTS, [])


async def scan(tmp_path: Path, server: DnsServer, req: ScanRequest, config: str = "") -> ScanResult:
    async with engine_with(tmp_path, server, [Dkim, StashSpy], config) as engine:
        return await engine.scan(req)


def dkim_symbols(result: ScanResult) -> dict[str, list[str]]:
    return {n: list(s.options) for n, s in result.symbols.items() if n in SYMBOLS}


@pytest.mark.parametrize("key_name", ["rsa1024", "rsa2048", "ed25519"])
async def test_a_signed_message_verifies(
    tmp_path: Path, dns_server: DnsServer, key_name: str, request_: pytest.FixtureRequest
) -> None:
    key: KeyPair = request_.getfixturevalue(key_name)
    publish(dns_server, key)

    result = await scan(tmp_path, dns_server, request(sign(message(), key)))

    assert dkim_symbols(result) == {"R_DKIM_ALLOW": [f"sender.test:s={key.selector}"]}
    [seen] = StashSpy.seen or []
    assert (seen.domain, seen.selector, seen.result) == ("sender.test", key.selector, "pass")
    assert seen.algorithm == key.key.algorithm.decode()


@pytest.fixture(name="request_")
def _request_fixture(request: pytest.FixtureRequest) -> pytest.FixtureRequest:
    return request


async def test_simple_canonicalization_verifies_too(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair
) -> None:
    publish(dns_server, rsa2048)
    signed = sign(message(), rsa2048, canonicalize=(b"simple", b"simple"))

    result = await scan(tmp_path, dns_server, request(signed))

    assert dkim_symbols(result) == {"R_DKIM_ALLOW": ["sender.test:s=rsa2048"]}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b"The figures are attached.", b"The figures are attacked."),  # body
        (b"Subject: quarterly figures", b"Subject: quarterly figurez"),  # a signed header
    ],
    ids=["body", "header"],
)
async def test_an_altered_message_is_rejected(
    tmp_path: Path, dns_server: DnsServer, ed25519: KeyPair, before: bytes, after: bytes
) -> None:
    publish(dns_server, ed25519)
    signed = sign(message(), ed25519)
    assert before in signed

    result = await scan(tmp_path, dns_server, request(signed.replace(before, after)))

    assert dkim_symbols(result) == {"R_DKIM_REJECT": ["sender.test:s=ed25519"]}
    [seen] = StashSpy.seen or []
    assert seen.result == "fail"


async def test_an_unsigned_header_may_change(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair
) -> None:
    publish(dns_server, rsa2048)
    signed = sign(message(extra="X-Mailer: one\r\n"), rsa2048)

    altered = signed.replace(b"X-Mailer: one", b"X-Mailer: two")
    result = await scan(tmp_path, dns_server, request(altered))

    assert dkim_symbols(result) == {"R_DKIM_ALLOW": ["sender.test:s=rsa2048"]}


async def test_a_missing_key_is_a_permanent_failure(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair, other_domain: KeyPair
) -> None:
    publish(dns_server, other_domain)  # a zone for another domain only: NXDOMAIN for ours
    dns_server.zones.add_records("_domainkey.sender.test", {"unrelated": {"TXT": "x"}})

    result = await scan(tmp_path, dns_server, request(sign(message(), rsa2048)))

    assert dkim_symbols(result) == {"R_DKIM_PERMFAIL": ["sender.test:s=rsa2048"]}
    [seen] = StashSpy.seen or []
    assert (seen.result, seen.reason) == ("permerror", "no key published")


@pytest.mark.parametrize(
    "record",
    ["v=DKIM1; k=rsa; p=", "v=DKIM1; k=rsa; p=bm90IGEga2V5", "v=DKIM2; p=AAAA"],
    ids=["revoked", "garbage", "bad-version"],
)
async def test_an_unusable_key_record_is_a_permanent_failure(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair, record: str
) -> None:
    dns_server.zones.add_records("_domainkey.sender.test", {"rsa2048": {"TXT": record}})

    result = await scan(tmp_path, dns_server, request(sign(message(), rsa2048)))

    assert dkim_symbols(result) == {"R_DKIM_PERMFAIL": ["sender.test:s=rsa2048"]}


async def test_a_key_of_the_wrong_type_is_a_permanent_failure(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair, ed25519: KeyPair
) -> None:
    # The Ed25519 key published under the RSA signature's selector.
    record = ed25519.key.dns_record()
    dns_server.zones.add_records("_domainkey.sender.test", {"rsa2048": {"TXT": record}})

    result = await scan(tmp_path, dns_server, request(sign(message(), rsa2048)))

    assert dkim_symbols(result) == {"R_DKIM_PERMFAIL": ["sender.test:s=rsa2048"]}


async def test_a_short_key_is_refused_when_configured(
    tmp_path: Path, dns_server: DnsServer, rsa1024: KeyPair
) -> None:
    publish(dns_server, rsa1024)
    config = "[dkim]\nmin_key_bits = 2048\n"

    result = await scan(tmp_path, dns_server, request(sign(message(), rsa1024)), config)

    assert dkim_symbols(result) == {"R_DKIM_PERMFAIL": ["sender.test:s=rsa1024"]}


async def test_a_dns_timeout_is_a_temporary_failure(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair
) -> None:
    publish(dns_server, rsa2048)
    dns_server.delay(rsa2048.name, 3.0)  # past the resolver's lifetime (0.6 s)

    result = await scan(tmp_path, dns_server, request(sign(message(), rsa2048)))

    assert dkim_symbols(result) == {"R_DKIM_TEMPFAIL": ["sender.test:s=rsa2048"]}
    [seen] = StashSpy.seen or []
    assert seen.result == "temperror"
    assert dns_server.count(rsa2048.name, "TXT") >= 1


async def test_servfail_is_a_temporary_failure(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair
) -> None:
    publish(dns_server, rsa2048)
    dns_server.fail(rsa2048.name)

    result = await scan(tmp_path, dns_server, request(sign(message(), rsa2048)))

    assert dkim_symbols(result) == {"R_DKIM_TEMPFAIL": ["sender.test:s=rsa2048"]}


async def test_every_signature_is_checked_and_reported(
    tmp_path: Path,
    dns_server: DnsServer,
    rsa2048: KeyPair,
    ed25519: KeyPair,
    other_domain: KeyPair,
    rsa1024: KeyPair,
) -> None:
    publish(dns_server, rsa2048, ed25519)
    publish(dns_server, other_domain)
    dns_server.drop(rsa1024.name)  # its key never comes
    raw = sign(sign(sign(message(), rsa2048), ed25519), rsa1024)
    # A relay's signature made over a different body: it fails, the others pass.
    relayed = sign(message(body="another body\r\n"), other_domain)
    relay_header = relayed[: relayed.index(b"From: ")]
    raw = relay_header + raw

    result = await scan(tmp_path, dns_server, request(raw))

    assert dkim_symbols(result) == {
        "R_DKIM_ALLOW": ["sender.test:s=ed25519", "sender.test:s=rsa2048"],
        "R_DKIM_REJECT": ["relay.test:s=mail"],
        "R_DKIM_TEMPFAIL": ["sender.test:s=rsa1024"],
    }
    assert [(r.domain, r.selector, r.result) for r in StashSpy.seen or []] == [
        ("relay.test", "mail", "fail"),
        ("sender.test", "rsa1024", "temperror"),
        ("sender.test", "ed25519", "pass"),
        ("sender.test", "rsa2048", "pass"),
    ]


async def test_only_max_signatures_are_checked(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair, ed25519: KeyPair
) -> None:
    publish(dns_server, rsa2048, ed25519)
    raw = sign(sign(message(), rsa2048), ed25519)

    result = await scan(tmp_path, dns_server, request(raw), "[dkim]\nmax_signatures = 1\n")

    assert dkim_symbols(result) == {"R_DKIM_ALLOW": ["sender.test:s=ed25519"]}
    assert dns_server.count(rsa2048.name) == 0


async def test_no_signature_is_r_dkim_na(tmp_path: Path, dns_server: DnsServer) -> None:
    result = await scan(tmp_path, dns_server, request(message()))

    assert dkim_symbols(result) == {"R_DKIM_NA": []}
    assert StashSpy.seen == []


@pytest.mark.parametrize(
    "garbage",
    [
        b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test\r\n",  # tags missing
        b"DKIM-Signature: this is no tag list\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; c=odd/odd; d=sender.test; s=x; h=from; bh=AA==; b=AA==\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=x; h=from; bh=!!; b=!!\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d="
        + b"x" * 300
        + b"; s=x; h=from; bh=AA==; b=AA==\r\n",
        b"DKIM-Signature:\r\n",
    ],
)
async def test_a_broken_signature_is_a_permanent_failure_never_an_error(
    tmp_path: Path, dns_server: DnsServer, garbage: bytes
) -> None:
    dns_server.zones.add_records("_domainkey.sender.test", {"x": {"TXT": "v=DKIM1; p=AAAA"}})

    result = await scan(tmp_path, dns_server, request(garbage + message()))

    assert set(dkim_symbols(result)) == {"R_DKIM_PERMFAIL"}
    assert "ENGINE_MODULE_ERROR" not in result.symbols


async def test_local_and_authenticated_mail_is_not_checked(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair
) -> None:
    publish(dns_server, rsa2048)
    raw = sign(message(), rsa2048)
    async with engine_with(tmp_path, dns_server, [Dkim]) as engine:
        local = await engine.scan(request(raw, client="127.0.0.1"))
        authenticated = await engine.scan(request(raw, auth_user="alice"))
    assert dkim_symbols(local) == dkim_symbols(authenticated) == {}
    assert dns_server.count(rsa2048.name) == 0


async def test_a_truncated_message_is_not_judged(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair
) -> None:
    publish(dns_server, rsa2048)
    signed = sign(message(), rsa2048)
    head, _, body = signed.partition(b"\r\n\r\n")
    headers = tuple(
        (line.split(b":", 1)[0].decode(), line.split(b":", 1)[1].strip().decode())
        for line in head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ").split(b"\r\n")
    )
    req = ScanRequest(
        envelope=request(b"").envelope, headers=headers, body=body[:5], body_truncated=True
    )

    result = await scan(tmp_path, dns_server, req)

    assert dkim_symbols(result) == {}


async def test_a_key_is_fetched_once_for_many_messages(
    tmp_path: Path, dns_server: DnsServer, ed25519: KeyPair
) -> None:
    publish(dns_server, ed25519)
    raw = sign(message(), ed25519)
    async with engine_with(tmp_path, dns_server, [Dkim]) as engine:
        results = [await engine.scan(request(raw)) for _ in range(3)]
    assert all("R_DKIM_ALLOW" in r.symbols for r in results)
    assert dns_server.count(ed25519.name, "TXT") == 1  # the resolver's cache answers
