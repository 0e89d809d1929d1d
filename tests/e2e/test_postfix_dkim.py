"""Through the real Postfix: milterd signs on the way out, verifies on the way in, and the
Authentication-Results header arrives in the delivered message.

The DKIM key is made for the test, published by the loopback DNS server, and milterd's
``[dns] nameservers`` point there. "Out" is a message from 127.0.0.1 (one of the signing
networks); "in" is the copy Postfix delivered, sent again from the outside address
203.0.113.5 (XCLIENT), as the recipient's MX would receive it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from dkim_testkit import new_key, publish
from e2e_support import SENDER, message

from milterd.cli import EXTRA_SECTIONS

if TYPE_CHECKING:
    from pathlib import Path

    from dnsserver import DnsServer
    from e2e_support import Milterd, Postfix

pytestmark = [pytest.mark.e2e, pytest.mark.postfix]

AUTHSERV_ID = "mx.e2e.test"  # the instance's myhostname: milterd reads it from macro j


def config(server: DnsServer, key_dir: Path) -> str:
    text = (
        f'[dns]\nnameservers = ["{server.nameserver}"]\ntimeout = 0.5\n'
        f'[dkim_signing]\nkey_dir = "{key_dir}"\n'
    )
    # The HTTP listeners, where milterd has them, are not what this test is about: off, so
    # their fixed default ports cannot collide with another milterd on the machine.
    for section in ("http", "controller"):
        if section in EXTRA_SECTIONS:
            text += f"[{section}]\nlisten = []\n"
    return text


def header_lines(raw: bytes) -> list[str]:
    """Unfolded header lines, top to bottom."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    return head.replace("\n\t", " ").replace("\n ", " ").split("\n")


def test_signed_on_the_way_out_verified_on_the_way_in(
    postfix: Postfix, milterd: Milterd, dns_server: DnsServer, tmp_path: Path
) -> None:
    key = new_key("sender.test", "e2e")
    publish(dns_server, key)
    # SPF and DMARC for the sender, so those checks (where milterd has them) pass and DMARC
    # aligns on the DKIM signature.
    dns_server.zones.add_records(
        "sender.test",
        {"@": {"TXT": "v=spf1 ip4:203.0.113.5 -all"}, "_dmarc": {"TXT": "v=DMARC1; p=reject"}},
    )
    key_dir = tmp_path / "dkim"
    key_dir.mkdir()
    (key_dir / "sender.test.e2e.key").write_bytes(key.key.private)
    (key_dir / "sender.test.e2e.key").chmod(0o600)
    milterd.use(config(dns_server, key_dir))

    # Out: from a local client, signed.
    out = postfix.send(message("signed on the way out"), client_ip=None)
    assert out.code == 250, out
    assert out.queue_id is not None
    sent = _wait_path(postfix, out.queue_id).read_bytes()
    lines = header_lines(sent)
    [signature] = [line for line in lines if line.startswith("DKIM-Signature:")]
    assert " d=sender.test;" in signature
    assert " s=e2e;" in signature
    received = next(i for i, line in enumerate(lines) if line.startswith("Received:"))
    assert lines.index(signature) < received  # inserted on top, above Postfix's Received
    assert not any(line.startswith("Authentication-Results:") for line in lines)  # local mail
    assert dns_server.count(key.name) == 0  # our own mail is not verified

    # In: the delivered copy from outside, with a forged result claiming our authserv-id.
    forged = f"Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d=bank.test\n".encode()
    incoming = (forged + sent.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    back = postfix.send(incoming, sender=SENDER)
    assert back.code == 250, back
    assert back.queue_id is not None
    arrived = postfix.delivered(back.queue_id)

    results = arrived.get_all("Authentication-Results", [])
    assert len(results) == 1, results  # the forgery is gone, ours is there
    ours = " ".join(results[0].split())
    assert ours.startswith(f"{AUTHSERV_ID}; ")
    [dkim_clause] = [c for c in ours.split("; ") if c.startswith("dkim=")]
    assert dkim_clause.startswith("dkim=pass header.d=sender.test")
    assert "header.s=e2e" in dkim_clause
    if "dmarc=" in ours:  # the DMARC module aligns on our signature
        assert "dmarc=pass" in ours
    spamd = " ".join(arrived["X-Spamd-Result"].split())
    assert "R_DKIM_ALLOW" in spamd
    assert "sender.test:s=e2e" in spamd
    assert dns_server.count(key.name, "TXT") >= 1  # the key came from the loopback server


def _wait_path(postfix: Postfix, queue_id: str) -> Path:
    postfix.delivered(queue_id)
    found = postfix.find_delivered(queue_id)
    assert found is not None
    return found
