"""The Authentication-Results header: its content, its authserv-id, and forged ones removed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dkim_testkit import engine_with, message, publish, request, sign

from engine.modules.arc import Arc
from engine.modules.auth_results import AuthResults
from engine.modules.dkim import Dkim

if TYPE_CHECKING:
    from pathlib import Path

    from dkim_testkit import KeyPair
    from dnsserver import DnsServer

    from engine import ScanResult

MODULES = [Dkim, Arc, AuthResults]


def ar_headers(result: ScanResult) -> list[str]:
    return [v for n, v in result.add_headers if n == "Authentication-Results"]


async def test_the_header_lists_every_result_under_our_authserv_id(
    tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair, ed25519: KeyPair
) -> None:
    publish(dns_server, rsa2048, ed25519)
    raw = sign(sign(message(), rsa2048), ed25519)
    conf = '[auth_results]\nauthserv_id = "MX.Example.Test"\n'
    async with engine_with(tmp_path, dns_server, MODULES, conf) as engine:
        result = await engine.scan(request(raw))

    [value] = ar_headers(result)
    lines = value.split(";\n\t")
    assert lines[0] == "mx.example.test"
    ed = next(line for line in lines if "header.s=ed25519" in line)
    assert ed.startswith(
        "dkim=pass header.d=sender.test header.i=@sender.test header.a=ed25519-sha256 "
        "header.s=ed25519 header.b="  # RFC 6008: the start of b=, quoted when it holds a /
    )
    assert any(
        line.startswith("dkim=pass header.d=sender.test") and "rsa2048" in line for line in lines
    )
    assert lines[-1] == "arc=none"
    assert result.remove_headers == {}


async def test_failures_say_why(tmp_path: Path, dns_server: DnsServer, rsa2048: KeyPair) -> None:
    publish(dns_server, rsa2048)
    raw = sign(message(), rsa2048).replace(b"attached", b"detached")
    async with engine_with(tmp_path, dns_server, MODULES) as engine:
        result = await engine.scan(request(raw, macros={"j": "mx.e2e.test"}))
    [value] = ar_headers(result)
    assert value.startswith("mx.e2e.test;\n\tdkim=fail (body hash mismatch) header.d=sender.test")


async def test_no_result_at_all_is_none(tmp_path: Path, dns_server: DnsServer) -> None:
    async with engine_with(tmp_path, dns_server, [AuthResults]) as engine:
        result = await engine.scan(request(message(), macros={"j": "mx.e2e.test"}))
    assert ar_headers(result) == ["mx.e2e.test; none"]


async def test_forged_headers_claiming_our_authserv_id_are_removed(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    theirs = "Authentication-Results: mx.upstream.test; spf=pass smtp.mailfrom=x@sender.test\r\n"
    forged = 'Authentication-Results: (comment) "MX.E2E.TEST"; dkim=pass header.d=bank.test\r\n'
    env = {"macros": {"j": "mx.e2e.test"}}
    async with engine_with(tmp_path, dns_server, [AuthResults]) as engine:
        one = await engine.scan(request((theirs + forged).encode() + message(), **env))
        two = await engine.scan(request((forged + theirs + forged).encode() + message(), **env))
        none = await engine.scan(request(theirs.encode() + message(), **env))
    assert one.remove_headers == {"Authentication-Results": 2}  # the second one only
    assert two.remove_headers == {"Authentication-Results": 0}  # several: all of them
    assert none.remove_headers == {}
    assert len(ar_headers(one)) == 1


async def test_local_and_authenticated_mail_gets_no_header_but_loses_forgeries(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    forged = b"Authentication-Results: mx.e2e.test; dkim=pass\r\n"
    env = {"macros": {"j": "mx.e2e.test"}}
    async with engine_with(tmp_path, dns_server, [AuthResults]) as engine:
        local = await engine.scan(request(forged + message(), client="127.0.0.1", **env))
        authed = await engine.scan(request(message(), auth_user="alice", **env))
    assert ar_headers(local) == ar_headers(authed) == []
    assert local.remove_headers == {"Authentication-Results": 1}


async def test_the_system_host_name_is_the_last_resort(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    import socket

    async with engine_with(tmp_path, dns_server, [AuthResults]) as engine:
        result = await engine.scan(request(message()))
    assert ar_headers(result) == [f"{socket.gethostname().lower()}; none"]
