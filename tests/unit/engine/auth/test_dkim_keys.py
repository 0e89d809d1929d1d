"""DKIM key files: generated, read back in every format we accept, published."""

from __future__ import annotations

import base64
import stat
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.auth.dkim_keys import (
    DkimKeyError,
    generate_key,
    key_directory,
    load_key,
    load_key_file,
    txt_record_lines,
)
from milterd.cli import main

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(("key_type", "bits"), [("rsa", 1024), ("rsa", 2048), ("ed25519", 256)])
def test_a_generated_key_reads_back(key_type: str, bits: int) -> None:
    key = load_key(generate_key(key_type, bits))  # type: ignore[arg-type]
    assert (key.key_type, key.bits) == (key_type, bits)
    assert key.dns_record().startswith(f"v=DKIM1; k={key_type}; p=")


def test_pkcs1_pem_and_a_bare_ed25519_seed_are_accepted() -> None:
    pkcs1 = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert load_key(pkcs1).key_type == "rsa"
    ed = load_key(generate_key("ed25519"))
    assert load_key(ed.private + b"\n") == ed  # dkimpy's dknewkey format


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a key",
        base64.b64encode(b"x" * 31),
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
    ],
    ids=["empty", "text", "short-seed", "bad-pem", "ecdsa", "encrypted"],
)
def test_what_is_not_a_dkim_key_is_refused(data: bytes) -> None:
    with pytest.raises(DkimKeyError):
        load_key(data)


def test_generate_refuses_weak_rsa() -> None:
    with pytest.raises(ValueError, match="1024"):
        generate_key("rsa", 512)


def test_a_key_directory_is_read_by_name(tmp_path: Path) -> None:
    for name in ("example.com.s1.key", "Sub.Example.com.2025.key", "x.key", "notes.txt"):
        (tmp_path / name).write_text("")
    assert key_directory(tmp_path) == {
        ("example.com", "s1"): tmp_path / "example.com.s1.key",
        ("sub.example.com", "2025"): tmp_path / "Sub.Example.com.2025.key",
    }
    assert key_directory(tmp_path / "missing") == {}


def test_a_key_file_others_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(generate_key("ed25519"))
    path.chmod(0o644)
    load_key_file(path)
    assert "readable by others" in caplog.text
    with pytest.raises(DkimKeyError, match="cannot read"):
        load_key_file(tmp_path / "absent.key")


def test_long_records_are_split_into_255_octet_strings() -> None:
    key = load_key(generate_key("rsa", 2048))
    text = txt_record_lines("example.com", "s1", key)
    assert text.startswith("s1._domainkey.example.com. IN TXT (")
    strings = [line.strip().strip('"').rstrip('" )') for line in text.splitlines()[1:]]
    assert all(len(s) <= 255 for s in strings)
    assert "".join(strings) == key.dns_record()


def test_keygen_writes_a_private_key_and_prints_its_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["dkim-keygen", "Example.COM", "2025e", "--type", "ed25519", "--dir", str(tmp_path)])
        == 0
    )
    path = tmp_path / "example.com.2025e.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_key_file(path)
    out = capsys.readouterr().out
    assert out == f'2025e._domainkey.example.com. IN TXT "{key.dns_record()}"\n'

    # never overwritten
    assert main(["dkim-keygen", "example.com", "2025e", "--dir", str(tmp_path)]) == 1
    assert load_key_file(path) == key
    assert "exists" in capsys.readouterr().err


def test_keygen_refuses_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dkim-keygen", "example.com", "s", "--bits", "512"])
    assert "1024 to 4096" in capsys.readouterr().err
