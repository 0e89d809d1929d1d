"""DKIM signing of outbound mail: which messages, which key, which headers; and the
signature verifies at the next hop through our own verifier."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from dkim_testkit import (
    KeyPair,
    delivered,
    engine_with,
    message,
    new_key,
    publish,
    request,
    tags,
)

from engine import ConfigError, Engine
from engine.auth.dkim_keys import generate_key
from engine.modules.dkim import Dkim
from engine.modules.dkim_signing import DkimSigning

if TYPE_CHECKING:
    from pathlib import Path

    from dnsserver import DnsServer

    from engine import ScanResult

LOCAL = "127.0.0.1"


@pytest.fixture(scope="module")
def keys() -> dict[str, KeyPair]:
    return {
        "rsa": new_key("sender.test", "s2025"),
        "ed": new_key("sender.test", "e2025", "ed25519"),
        "relay": new_key("relay.test", "mail"),
        "mapped": new_key("mapped.test", "sel.with.dots"),
    }


@pytest.fixture
def key_dir(tmp_path: Path, keys: dict[str, KeyPair]) -> Path:
    directory = tmp_path / "dkim"
    directory.mkdir()
    for name in ("rsa", "ed", "relay"):
        k = keys[name]
        path = directory / f"{k.domain}.{k.selector}.key"
        path.write_bytes(k.key.private if k.key.key_type == "rsa" else generate_key("rsa"))
        path.chmod(0o600)
    # The Ed25519 key as dkimpy's dknewkey writes it: the bare base64 seed.
    (directory / "sender.test.e2025.key").write_bytes(keys["ed"].key.private + b"\n")
    (directory / "README").write_text("not a key")
    mapped = tmp_path / "mapped.pem"
    mapped.write_bytes(keys["mapped"].key.private)
    mapped.chmod(0o600)
    return directory


def config(key_dir: Path, extra: str = "") -> str:
    mapped = key_dir.parent / "mapped.pem"
    return (
        f'[dkim_signing]\nkey_dir = "{key_dir}"\n{extra}\n'
        f'[dkim_signing.domains."mapped.test"]\nselector = "sel.with.dots"\npath = "{mapped}"\n'
    )


def signatures(result: ScanResult) -> list[dict[str, str]]:
    return [tags(v) for n, v in result.add_headers if n == "DKIM-Signature"]


async def sign_and_verify(
    tmp_path: Path, server: DnsServer, key_dir: Path, raw: bytes, extra: str = "", **env: object
) -> tuple[ScanResult, ScanResult]:
    """Scan ``raw`` on the way out (signing), then what leaves on the way in (verifying)."""
    async with engine_with(tmp_path, server, [DkimSigning], config(key_dir, extra)) as out:
        outbound = await out.scan(request(raw, **{"client": LOCAL, **env}))  # type: ignore[arg-type]
    async with engine_with(tmp_path, server, [Dkim]) as inbound_engine:
        inbound = await inbound_engine.scan(request(delivered(raw, outbound)))
    return outbound, inbound


async def test_local_mail_is_signed_by_every_key_of_its_domain_and_verifies(
    tmp_path: Path, dns_server: DnsServer, key_dir: Path, keys: dict[str, KeyPair]
) -> None:
    publish(dns_server, keys["rsa"], keys["ed"])

    outbound, inbound = await sign_and_verify(tmp_path, dns_server, key_dir, message())

    sigs = signatures(outbound)
    assert sorted((s["d"], s["s"], s["a"], s["c"]) for s in sigs) == [
        ("sender.test", "e2025", "ed25519-sha256", "relaxed/relaxed"),
        ("sender.test", "s2025", "rsa-sha256", "relaxed/relaxed"),
    ]
    assert set(inbound.symbols["R_DKIM_ALLOW"].options) == {
        "sender.test:s=s2025",
        "sender.test:s=e2025",
    }
    assert "R_DKIM_REJECT" not in inbound.symbols


async def test_headers_are_oversigned(
    tmp_path: Path, dns_server: DnsServer, key_dir: Path, keys: dict[str, KeyPair]
) -> None:
    publish(dns_server, keys["rsa"], keys["ed"])
    raw = message(extra="List-Id: <figures.sender.test>\r\nCc: carol@example.test\r\n")

    outbound, inbound = await sign_and_verify(
        tmp_path, dns_server, key_dir, raw, 'selector = "s2025"'
    )

    [sig] = signatures(outbound)
    signed = sig["h"].split(":")
    # present once, signed twice: one more cannot be added
    for name in ("from", "to", "subject", "date", "message-id", "cc", "content-type"):
        assert signed.count(name) == 2, name
    # absent, oversigned: none may be added
    assert signed.count("reply-to") == 1
    assert signed.count("in-reply-to") == 1
    # signed as present, not oversigned (a list may add its own)
    assert signed.count("list-id") == 1
    assert "list-post" not in signed
    assert "received" not in signed
    assert "R_DKIM_ALLOW" in inbound.symbols


async def test_an_added_from_breaks_the_oversigned_signature(
    tmp_path: Path, dns_server: DnsServer, key_dir: Path, keys: dict[str, KeyPair]
) -> None:
    publish(dns_server, keys["rsa"])
    async with engine_with(
        tmp_path, dns_server, [DkimSigning], config(key_dir, 'selector = "s2025"')
    ) as e:
        outbound = await e.scan(request(message(), client=LOCAL))
    forged = delivered(message(), outbound).replace(
        b"From: Alice", b"From: Mallory <m@evil.test>\r\nFrom: Alice"
    )
    async with engine_with(tmp_path, dns_server, [Dkim]) as e:
        inbound = await e.scan(request(forged))
    assert "R_DKIM_REJECT" in inbound.symbols


@pytest.mark.parametrize(
    ("sender", "wanted"),
    [
        ("bob@relay.test", {("relay.test", "mail")}),
        ("news@mapped.test", {("mapped.test", "sel.with.dots")}),
        # a parent domain's keys, both of them
        ("alice@news.sender.test", {("sender.test", "s2025"), ("sender.test", "e2025")}),
    ],
)
async def test_the_key_is_chosen_by_the_from_domain(
    tmp_path: Path,
    dns_server: DnsServer,
    key_dir: Path,
    keys: dict[str, KeyPair],
    sender: str,
    wanted: set[tuple[str, str]],
) -> None:
    publish(dns_server, keys["relay"])
    publish(dns_server, keys["mapped"])
    publish(dns_server, keys["rsa"], keys["ed"])
    raw = message(sender=sender)

    outbound, inbound = await sign_and_verify(tmp_path, dns_server, key_dir, raw, mail_from=sender)

    assert {(s["d"], s["s"]) for s in signatures(outbound)} == wanted
    assert len(inbound.symbols["R_DKIM_ALLOW"].options) == len(wanted)


async def test_an_authenticated_user_is_signed_from_anywhere(
    tmp_path: Path, dns_server: DnsServer, key_dir: Path
) -> None:
    async with engine_with(tmp_path, dns_server, [DkimSigning], config(key_dir)) as engine:
        signed = await engine.scan(request(message(), auth_user="alice"))
        outside = await engine.scan(request(message()))
    assert len(signatures(signed)) == 2
    assert signatures(outside) == []


@pytest.mark.parametrize(
    ("sender", "mail_from", "extra"),
    [
        ("alice@sender.test", "alice@other.test", ""),  # From is not the sender's domain
        ("alice@nokey.test", "alice@nokey.test", ""),  # no key for the domain
        ("alice@news.sender.test", "alice@news.sender.test", "sign_subdomains = false"),
    ],
)
async def test_mail_is_left_unsigned_when_it_is_not_ours_to_sign(
    tmp_path: Path, dns_server: DnsServer, key_dir: Path, sender: str, mail_from: str, extra: str
) -> None:
    async with engine_with(tmp_path, dns_server, [DkimSigning], config(key_dir, extra)) as engine:
        result = await engine.scan(request(message(sender=sender), LOCAL, mail_from=mail_from))
    assert signatures(result) == []


async def test_the_rewritten_subject_is_what_gets_signed(
    tmp_path: Path, dns_server: DnsServer, key_dir: Path, keys: dict[str, KeyPair]
) -> None:
    publish(dns_server, keys["rsa"])
    rung = "[actions]\nrewrite_subject = -100.0\ngreylist = false\nadd_header = false\n"
    conf = config(key_dir, 'selector = "s2025"') + rung
    async with engine_with(tmp_path, dns_server, [DkimSigning], conf) as engine:
        outbound = await engine.scan(request(message(), client=LOCAL))
    assert outbound.subject == "*** SPAM *** quarterly figures"
    rewritten = delivered(message(), outbound).replace(
        b"Subject: quarterly figures", f"Subject: {outbound.subject}".encode()
    )
    async with engine_with(tmp_path, dns_server, [Dkim]) as engine:
        inbound = await engine.scan(request(rewritten))
    assert "R_DKIM_ALLOW" in inbound.symbols


async def test_a_rejected_message_is_not_signed(
    tmp_path: Path, dns_server: DnsServer, key_dir: Path
) -> None:
    conf = config(key_dir) + "[actions]\nreject = -100.0\n"
    async with engine_with(tmp_path, dns_server, [DkimSigning], conf) as engine:
        result = await engine.scan(request(message(), client=LOCAL))
    assert signatures(result) == []


def test_an_unreadable_key_stops_the_start(tmp_path: Path, dns_server: DnsServer) -> None:
    directory = tmp_path / "dkim"
    directory.mkdir()
    (directory / "sender.test.bad.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n")
    with pytest.raises(ConfigError) as refused:
        engine_with(
            tmp_path, dns_server, [DkimSigning], f'[dkim_signing]\nkey_dir = "{directory}"\n'
        )
    [problem] = refused.value.problems
    assert problem.key == "dkim_signing.key_dir"
    assert "sender.test.bad.key" in problem.message


def test_signing_a_trace_header_is_refused(tmp_path: Path, dns_server: DnsServer) -> None:
    with pytest.raises(ConfigError, match=r"received must not be signed"):
        engine_with(
            tmp_path, dns_server, [DkimSigning], '[dkim_signing]\noversign = ["Received"]\n'
        )


def test_no_key_directory_means_no_signing(tmp_path: Path, dns_server: DnsServer) -> None:
    engine = engine_with(
        tmp_path, dns_server, [DkimSigning], f'[dkim_signing]\nkey_dir = "{tmp_path}/none"\n'
    )
    assert isinstance(engine, Engine)
