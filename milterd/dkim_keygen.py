"""``milterd dkim-keygen DOMAIN SELECTOR``: a new DKIM key, and the DNS record to publish.

The key is written as ``<dir>/<domain>.<selector>.key`` (PKCS#8 PEM, mode 0600), the
name the ``[dkim_signing] key_dir`` lookup expects; an existing file is never
overwritten (a key in use must not vanish before its successor is published). The TXT
record goes to standard output in zone-file syntax. See docs/dkim-keys.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.auth.dkim_keys import (
    KEY_SUFFIX,
    MAX_RSA_BITS,
    MIN_RSA_BITS,
    generate_key,
    load_key,
    txt_record_lines,
)

__all__ = ["DEFAULT_DIR", "add_arguments", "run"]

DEFAULT_DIR = "/etc/milterd/dkim"


def _bits(value: str) -> int:
    try:
        bits = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise argparse.ArgumentTypeError(f"RSA keys have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
    return bits


def _label(value: str) -> str:
    text = value.strip().rstrip(".").lower()
    if not text or "/" in text or text.startswith(".") or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{value!r} is not a domain name or selector")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("domain", type=_label, help="the signing domain (d=)")
    parser.add_argument("selector", type=_label, help="the selector (s=), e.g. 2025a")
    parser.add_argument(
        "--type", choices=("rsa", "ed25519"), default="rsa", help="key type (default rsa)"
    )
    parser.add_argument(
        "--bits", type=_bits, default=2048, help="RSA key size (default 2048, RFC 8301)"
    )
    parser.add_argument(
        "--dir", default=DEFAULT_DIR, help=f"where the key goes (default {DEFAULT_DIR})"
    )


def run(args: argparse.Namespace) -> int:
    """Write the key, print the record; 1 with a message if the key cannot be written."""
    directory = Path(args.dir)
    path = directory / f"{args.domain}.{args.selector}{KEY_SUFFIX}"
    pem = generate_key(args.type, args.bits)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never replace a key; 0600 from the start, never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"milterd: {path} exists; choose a new selector", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"milterd: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    key = load_key(pem, str(path))
    print(f"; private key written to {path} (mode 0600)", file=sys.stderr)
    print(txt_record_lines(args.domain, args.selector, key))
    return 0
