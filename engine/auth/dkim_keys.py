"""DKIM private keys: made, read, and published (RFC 6376 §3.6, RFC 8463 for Ed25519).

A key lives in one file, PEM (PKCS#8 "PRIVATE KEY", or PKCS#1 "RSA PRIVATE KEY" as
``opendkim-genkey`` writes them) or, for Ed25519, the bare base64 seed that dkimpy's
``dknewkey`` writes. A key directory names its files ``<domain>.<selector>.key``.

``SigningKey`` holds a key in the form dkimpy signs with (PKCS#1 PEM for RSA, the
base64 seed for Ed25519) together with the ``p=`` value its DNS record must publish, so
the record printed by ``milterd dkim-keygen`` and the one a test zone serves come from the
same code as the signature.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "KEY_SUFFIX",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "DkimKeyError",
    "KeyType",
    "SigningKey",
    "generate_key",
    "key_directory",
    "load_key",
    "load_key_file",
    "txt_record_lines",
]

log = logging.getLogger(__name__)

KeyType = Literal["rsa", "ed25519"]
KEY_SUFFIX = ".key"
# RFC 8301 §3.2: signers MUST use at least 1024 bits and SHOULD use 2048; verifiers must
# accept up to 4096, so a larger key would not verify everywhere.
MIN_RSA_BITS = 1024
MAX_RSA_BITS = 4096
_ED25519_SEED = 32


class DkimKeyError(ValueError):
    """A key file that cannot be used (unreadable, not a key, a key type DKIM has not)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One private key, ready for dkimpy.

    Attributes:
        key_type: ``rsa`` or ``ed25519``.
        private: what dkimpy's ``sign`` takes: PKCS#1 PEM (RSA) or the base64 seed
            (Ed25519).
        public: the ``p=`` value of the DNS record (base64 SubjectPublicKeyInfo for RSA,
            RFC 6376 §3.6.1; the raw 32-byte key for Ed25519, RFC 8463 §4).
        bits: the RSA modulus size (256 for Ed25519).
        source: the file it came from, for logs ("" when made in memory).
    """

    key_type: KeyType
    private: bytes
    public: str
    bits: int
    source: str = ""

    @property
    def algorithm(self) -> bytes:
        """The ``a=`` value signatures made with this key carry."""
        return b"ed25519-sha256" if self.key_type == "ed25519" else b"rsa-sha256"

    def dns_record(self) -> str:
        """The TXT record value that publishes the public half (RFC 6376 §3.6.1)."""
        return f"v=DKIM1; k={self.key_type}; p={self.public}"


def generate_key(key_type: KeyType = "rsa", bits: int = 2048) -> bytes:
    """A new private key as PKCS#8 PEM.

    Raises:
        ValueError: ``bits`` is outside 1024-4096 for RSA.
    """
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if key_type == "rsa":
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise ValueError(f"RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(data: bytes, source: str = "") -> SigningKey:
    """Read a private key from PEM, or from an Ed25519 base64 seed.

    Raises:
        DkimKeyError: not a key, an encrypted one, or a type DKIM cannot sign with.
    """
    text = data.strip()
    if b"-----BEGIN" not in text:
        return _ed25519_seed(text, source)
    try:
        private = serialization.load_pem_private_key(text, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: it wants a password
        raise DkimKeyError(f"not a usable private key: {exc}") from None
    if isinstance(private, rsa.RSAPrivateKey):
        bits = private.key_size
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise DkimKeyError(f"a {bits}-bit RSA key (DKIM needs {MIN_RSA_BITS}-{MAX_RSA_BITS})")
        pkcs1 = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        spki = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return SigningKey("rsa", pkcs1, base64.b64encode(spki).decode(), bits, source)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        seed = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return _from_seed(seed, source)
    raise DkimKeyError(f"a {type(private).__name__}: DKIM signs with RSA or Ed25519 only")


def _ed25519_seed(text: bytes, source: str) -> SigningKey:
    try:
        seed = base64.b64decode(text, validate=True)
    except binascii.Error:
        seed = b""
    if len(seed) != _ED25519_SEED:
        raise DkimKeyError("neither PEM nor a base64 Ed25519 seed")
    return _from_seed(seed, source)


def _from_seed(seed: bytes, source: str) -> SigningKey:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return SigningKey(
        "ed25519", base64.b64encode(seed), base64.b64encode(public).decode(), 256, source
    )


def load_key_file(path: Path) -> SigningKey:
    """Read the key in ``path``; warn when others than its owner may read it.

    Raises:
        DkimKeyError: unreadable, or not a usable key.
    """
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise DkimKeyError(f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("dkim key %s is readable by others than its owner (chmod 600 it)", path)
    try:
        return load_key(data, str(path))
    except DkimKeyError as exc:
        raise DkimKeyError(f"{path}: {exc}") from None


def key_directory(directory: Path) -> dict[tuple[str, str], Path]:
    """The keys of a directory: (domain, selector) → path, from ``<domain>.<selector>.key``.

    The selector is the last dot-separated label before ``.key`` (a selector with dots in it
    needs an explicit ``[dkim_signing.domains]`` entry). A missing directory holds no keys.
    """
    found: dict[tuple[str, str], Path] = {}
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise DkimKeyError(f"cannot list {directory}: {exc.strerror}") from None
    for entry in entries:
        stem = entry.name[: -len(KEY_SUFFIX)] if entry.name.endswith(KEY_SUFFIX) else ""
        domain, dot, selector = stem.rpartition(".")
        if dot and domain and selector and entry.is_file():
            found[(domain.lower(), selector)] = directory / entry.name
    return found


def txt_record_lines(domain: str, selector: str, key: SigningKey) -> str:
    """The zone-file lines that publish ``key`` (strings of at most 255 octets, RFC 1035)."""
    record = key.dns_record()
    chunks = [record[i : i + 255] for i in range(0, len(record), 255)]
    owner = f"{selector}._domainkey.{domain.rstrip('.')}."
    if len(chunks) == 1:
        return f'{owner} IN TXT "{chunks[0]}"'
    body = "\n".join(f'    "{chunk}"' for chunk in chunks)
    return f"{owner} IN TXT (\n{body} )"
