"""DMARC over real DKIM verification: a signature made here with a fresh key, checked by
the DKIM module through the loopback DNS server, decides the policy outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from dkim_testkit import engine_with, message, new_key, publish, request, sign

from engine.modules.dkim import Dkim
from engine.modules.dmarc import Dmarc
from engine.modules.spf import Spf

if TYPE_CHECKING:
    from pathlib import Path

    from dkim_testkit import KeyPair
    from dnsserver import DnsServer

MODULES = [Spf, Dkim, Dmarc]


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return new_key("sender.test", "s1", "ed25519")


@pytest.fixture
def server(dns_server: DnsServer, key: KeyPair) -> DnsServer:
    # SPF does not allow the test client: only DKIM can pass DMARC here.
    dns_server.zones.add_records(
        "sender.test",
        {"@": {"TXT": "v=spf1 -all"}, "_dmarc": {"TXT": "v=DMARC1; p=reject"}},
    )
    publish(dns_server, key)
    return dns_server


async def test_an_aligned_valid_signature_passes_dmarc(
    tmp_path: Path, server: DnsServer, key: KeyPair
) -> None:
    async with engine_with(tmp_path, server, MODULES) as engine:
        result = await engine.scan(request(sign(message(), key)))
    assert {"R_SPF_FAIL", "R_DKIM_ALLOW", "DMARC_POLICY_ALLOW"} <= set(result.symbols)


async def test_an_altered_message_fails_dmarc(
    tmp_path: Path, server: DnsServer, key: KeyPair
) -> None:
    signed = sign(message(), key).replace(b"The figures", b"The numbers")
    async with engine_with(tmp_path, server, MODULES) as engine:
        result = await engine.scan(request(signed))
    assert "DMARC_POLICY_REJECT" in result.symbols
    assert "DMARC_POLICY_ALLOW" not in result.symbols


async def test_a_key_lookup_timeout_is_dnsfail(
    tmp_path: Path, server: DnsServer, key: KeyPair
) -> None:
    server.drop(key.name)
    async with engine_with(tmp_path, server, MODULES) as engine:
        result = await engine.scan(request(sign(message(), key)))
    assert "DMARC_DNSFAIL" in result.symbols
