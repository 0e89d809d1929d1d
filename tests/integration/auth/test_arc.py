"""ARC: chains of one and two hops, sealed by our sealing code and by dkimpy directly,
validated through the engine with keys on the loopback DNS server; broken chains fail."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dkim  # type: ignore[import-untyped]
import pytest
from dkim_testkit import delivered, engine_with, message, publish, request, sign, tags

from engine import ConfigError
from engine.modules.arc import Arc
from engine.modules.auth_results import AuthResults
from engine.modules.dkim import Dkim

if TYPE_CHECKING:
    from pathlib import Path

    from dkim_testkit import KeyPair
    from dnsserver import DnsServer

    from engine import ScanResult

ARC_SYMBOLS = {"ARC_ALLOW", "ARC_REJECT", "ARC_INVALID", "ARC_DNSFAIL", "ARC_NA"}


def arc_symbols(result: ScanResult) -> dict[str, list[str]]:
    return {n: list(s.options) for n, s in result.symbols.items() if n in ARC_SYMBOLS}


def forwarder_config(tmp_path: Path, k: KeyPair) -> str:
    path = tmp_path / f"{k.domain}.key"
    path.write_bytes(k.key.private)
    path.chmod(0o600)
    return (
        f'[arc]\nseal = true\ndomain = "{k.domain}"\nselector = "{k.selector}"\n'
        f'key = "{path}"\nseal_recipients = ["@example.test"]\n'
        f'[auth_results]\nauthserv_id = "mx.{k.domain}"\n'
    )


async def forward(tmp_path: Path, server: DnsServer, k: KeyPair, raw: bytes) -> bytes:
    """``raw`` through a forwarder that seals with ``k``: what it passes on."""
    conf = forwarder_config(tmp_path, k)
    async with engine_with(tmp_path, server, [Dkim, Arc, AuthResults], conf) as engine:
        result = await engine.scan(request(raw))
    return delivered(raw, result)


async def validate(tmp_path: Path, server: DnsServer, raw: bytes) -> ScanResult:
    async with engine_with(tmp_path, server, [Arc]) as engine:
        return await engine.scan(request(raw))


async def test_one_hop_sealed_by_us_validates(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair, forwarder: KeyPair
) -> None:
    publish(dns_server, rsa2048)
    publish(dns_server, forwarder)

    hop1 = await forward(tmp_path, dns_server, forwarder, sign(message(), rsa2048))

    head = hop1.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("ARC-Seal: i=1;")
    seal = tags(head.split("ARC-Seal:", 1)[1].split("\r\nARC-Message-Signature:")[0])
    assert (seal["cv"], seal["d"], seal["s"]) == ("none", "lists.example", "arc")
    aar = head.split("ARC-Authentication-Results:", 1)[1].split("\r\nAuthentication-Results")[0]
    assert "mx.lists.example" in aar
    assert "dkim=pass" in aar
    assert arc_symbols(await validate(tmp_path, dns_server, hop1)) == {
        "ARC_ALLOW": ["lists.example:i=1"]
    }


async def test_two_hops_sealed_by_us_validate(
    tmp_path: Path,
    dns_server: DnsServer,
    rsa2048: KeyPair,
    forwarder: KeyPair,
    forwarder2: KeyPair,
) -> None:
    publish(dns_server, rsa2048)
    publish(dns_server, forwarder)
    publish(dns_server, forwarder2)

    hop1 = await forward(tmp_path, dns_server, forwarder, sign(message(), rsa2048))
    (tmp_path / "2").mkdir()
    hop2 = await forward(tmp_path / "2", dns_server, forwarder2, hop1)

    seal2 = tags(hop2.decode().split("ARC-Seal:", 1)[1].split("\r\n")[0])
    assert (seal2["i"], seal2["cv"]) == ("2", "pass")
    assert arc_symbols(await validate(tmp_path, dns_server, hop2)) == {
        "ARC_ALLOW": ["lists.example:i=1", "forward.example:i=2"]
    }


async def test_chains_sealed_by_dkimpy_validate(
    tmp_path: Path, dns_server: DnsServer, forwarder: KeyPair, forwarder2: KeyPair
) -> None:
    publish(dns_server, forwarder)
    publish(dns_server, forwarder2)
    raw = b"Authentication-Results: mx.lists.example; spf=pass smtp.mailfrom=sender.test\r\n"
    raw += message()
    first = dkim.arc_sign(raw, b"arc", b"lists.example", forwarder.key.private, b"mx.lists.example")
    hop1 = b"".join(first) + raw
    ar2 = b"Authentication-Results: mx.forward.example; arc=pass\r\n"
    second = dkim.arc_sign(
        ar2 + hop1, b"arc2", b"forward.example", forwarder2.key.private, b"mx.forward.example"
    )
    hop2 = b"".join(second) + ar2 + hop1

    assert arc_symbols(await validate(tmp_path, dns_server, hop1)) == {
        "ARC_ALLOW": ["lists.example:i=1"]
    }
    assert arc_symbols(await validate(tmp_path, dns_server, hop2)) == {
        "ARC_ALLOW": ["lists.example:i=1", "forward.example:i=2"]
    }


async def test_a_body_changed_after_the_seal_is_rejected(
    tmp_path: Path, dns_server: DnsServer, forwarder: KeyPair
) -> None:
    publish(dns_server, forwarder)
    hop1 = await forward(tmp_path, dns_server, forwarder, message())

    altered = hop1.replace(b"figures are attached", b"figures are detached")
    result = await validate(tmp_path, dns_server, altered)

    assert set(arc_symbols(result)) == {"ARC_REJECT"}
    assert "did not verify" in result.symbols["ARC_REJECT"].options[0]


async def test_a_set_missing_a_header_is_invalid(
    tmp_path: Path, dns_server: DnsServer, forwarder: KeyPair
) -> None:
    publish(dns_server, forwarder)
    hop1 = await forward(tmp_path, dns_server, forwarder, message())
    lines = hop1.decode().split("\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("ARC-Message-Signature:"))
    end = start + 1
    while lines[end].startswith((" ", "\t")):
        end += 1
    broken = "\r\n".join(lines[:start] + lines[end:]).encode()

    result = await validate(tmp_path, dns_server, broken)

    assert set(arc_symbols(result)) == {"ARC_INVALID"}


async def test_an_unreachable_sealer_key_is_a_dns_failure(
    tmp_path: Path, dns_server: DnsServer, forwarder: KeyPair
) -> None:
    publish(dns_server, forwarder)
    hop1 = await forward(tmp_path, dns_server, forwarder, message())
    dns_server.drop(forwarder.name)
    result = await validate(tmp_path, dns_server, hop1)  # a new engine: nothing cached
    assert set(arc_symbols(result)) == {"ARC_DNSFAIL"}


async def test_no_chain_is_arc_na(tmp_path: Path, dns_server: DnsServer) -> None:
    assert arc_symbols(await validate(tmp_path, dns_server, message())) == {"ARC_NA": []}


async def test_mail_not_for_a_forwarded_recipient_is_not_sealed(
    tmp_path: Path, dns_server: DnsServer, forwarder: KeyPair
) -> None:
    conf = forwarder_config(tmp_path, forwarder)
    async with engine_with(tmp_path, dns_server, [Arc, AuthResults], conf) as engine:
        result = await engine.scan(request(message(), rcpts=("someone@elsewhere.test",)))
    assert not [n for n, _ in result.add_headers if n.startswith("ARC-")]


def test_sealing_without_a_key_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:
    with pytest.raises(ConfigError) as refused:
        engine_with(tmp_path, dns_server, [Arc], '[arc]\nseal = true\ndomain = "x.test"\n')
    assert refused.value.problems[0].key == "arc.selector"


def test_sealing_with_an_ed25519_key_is_refused(
    tmp_path: Path, dns_server: DnsServer, ed25519: KeyPair
) -> None:
    path = tmp_path / "ed.key"
    path.write_bytes(ed25519.key.private)
    conf = f'[arc]\nseal = true\ndomain = "x.test"\nselector = "s"\nkey = "{path}"\n'
    with pytest.raises(ConfigError, match="RSA keys only"):
        engine_with(tmp_path, dns_server, [Arc], conf)
