"""DKIM and ARC in tests: fresh keys, their DNS records, signed messages, engines.

Keys are generated per test session (``new_key``), published on the loopback DNS server
(``publish``: one zone per ``_domainkey.<domain>``, so they sit beside any other zone a
test serves), and used with dkimpy directly to sign what a remote sender would send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import dkim  # type: ignore[import-untyped]

from engine import Engine, Envelope, ScanRequest
from engine.auth.dkim_keys import KeyType, SigningKey, generate_key, load_key

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from dnsserver import DnsServer

    from engine import ScanResult
    from engine.modules import Module

__all__ = [
    "CLIENT_IP",
    "KeyPair",
    "delivered",
    "engine_with",
    "message",
    "new_key",
    "publish",
    "request",
    "sign",
    "tags",
]

CLIENT_IP = "203.0.113.5"  # TEST-NET-3: an outside client, checked like any other


@dataclass(frozen=True)
class KeyPair:
    domain: str
    selector: str
    key: SigningKey

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def new_key(domain: str, selector: str, key_type: KeyType = "rsa", bits: int = 2048) -> KeyPair:
    return KeyPair(domain, selector, load_key(generate_key(key_type, bits)))


def publish(server: DnsServer, *keys: KeyPair, extra: dict[str, str] | None = None) -> None:
    """Serve the keys' records (and ``extra``: selector → raw TXT) under each domain."""
    by_domain: dict[str, dict[str, dict[str, str]]] = {}
    for k in keys:
        by_domain.setdefault(k.domain, {})[k.selector] = {"TXT": k.key.dns_record()}
    for selector, text in (extra or {}).items():
        domain = keys[0].domain
        by_domain.setdefault(domain, {})[selector] = {"TXT": text}
    for domain, records in by_domain.items():
        server.zones.add_records(f"_domainkey.{domain}", records)


def message(
    subject: str = "quarterly figures",
    body: str = "The figures are attached.\r\n",
    *,
    sender: str = "alice@sender.test",
    extra: str = "",
) -> bytes:
    return (
        f"From: Alice <{sender}>\r\n"
        "To: bob@example.test\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 17 Nov 2025 10:00:00 +0000\r\n"
        "Message-ID: <figures.1@sender.test>\r\n"
        f"{extra}"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"{body}"
    ).encode()


def sign(
    raw: bytes, k: KeyPair, canonicalize: tuple[bytes, bytes] = (b"relaxed", b"relaxed")
) -> bytes:
    """``raw`` with a DKIM-Signature by ``k`` on top, as a remote signer sends it."""
    header = dkim.sign(
        raw,
        k.selector.encode(),
        k.domain.encode(),
        k.key.private,
        signature_algorithm=k.key.algorithm,
        canonicalize=canonicalize,
    )
    return bytes(header) + raw


def engine_with(
    tmp_path: Path, server: DnsServer, modules: Sequence[type[Module]], config: str = ""
) -> Engine:
    """An engine of ``modules`` whose DNS is ``server`` (short timeouts: a dropped query
    is a temporary failure within a second)."""
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "milterd.toml").write_text(
        f'[options]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[dns]\nnameservers = ["{server.nameserver}"]\n'
        "timeout = 0.3\nattempts = 1\nlifetime = 0.6\n" + config
    )
    return Engine.from_config(Engine.load_config(conf, modules=modules), modules=modules)


def request(raw: bytes, client: str = CLIENT_IP, **envelope: object) -> ScanRequest:
    fields: dict[str, object] = {
        "client_addr": client,
        "mail_from": "alice@sender.test",
        "rcpts": ("bob@example.test",),
    }
    fields.update(envelope)
    return ScanRequest(envelope=Envelope(**fields), raw=raw)  # type: ignore[arg-type]


def delivered(raw: bytes, result: ScanResult) -> bytes:
    """``raw`` as the MTA passes it on after the verdict: the headers milterd prepends
    (``milterd.verdict.PREPENDED``) on top, in the result's order, folds as CRLF."""
    from milterd.verdict import PREPENDED

    top = b"".join(
        f"{name}: {value}\r\n".replace("\n", "\r\n").replace("\r\r", "\r").encode()
        for name, value in result.add_headers
        if name.lower() in PREPENDED
    )
    return top + raw


def tags(value: str) -> dict[str, str]:
    """A DKIM/ARC tag list as a dict (whitespace removed from values)."""
    out = {}
    for part in value.split(";"):
        name, _, text = part.partition("=")
        if name.strip():
            out[name.strip()] = "".join(text.split())
    return out
