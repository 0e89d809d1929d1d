"""Making DKIM signatures (RFC 6376 §5) and choosing what they cover.

``signed_header_list`` implements the oversigning the signing module does: each header
in ``oversign`` is listed once more than the message has it (RFC 6376 §8.15: a header
listed in ``h=`` that is absent is signed as empty, so one added later in transit breaks
the signature instead of riding on it); the others are listed as often as they occur.

``sign`` runs dkimpy and returns the header value as a milter sends it: no field name,
folded with LF (a milter header value must not carry CR; the MTA writes CRLF).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dkim  # type: ignore[import-untyped]

from engine.auth.dkim_verify import LIBRARY_ERRORS, dkimpy_logger

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from engine.auth.dkim_keys import SigningKey

__all__ = [
    "DEFAULT_HEADERS",
    "DEFAULT_OVERSIGN",
    "NEVER_SIGN",
    "SigningError",
    "sign",
    "signed_header_list",
]

# RFC 6376 §5.4.1's list, with the List-* headers of RFC 2369/2919 and the Autocrypt and
# OpenPGP headers as Rspamd signs them.
DEFAULT_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-language",
    "resent-to",
    "resent-cc",
    "resent-from",
    "resent-sender",
    "resent-message-id",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-owner",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "openpgp",
    "autocrypt",
)
# Headers no one en route has a reason to add: signed once more than present. Not the
# List-* ones (a mailing list adds them, and may), nor Sender (some lists set it).
DEFAULT_OVERSIGN = (
    "from",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "in-reply-to",
    "references",
)
# RFC 6376 §5.4: trace headers change in transit; signing them breaks the signature.
NEVER_SIGN = frozenset(
    {"return-path", "received", "comments", "keywords", "bcc", "resent-bcc", "dkim-signature"}
)


class SigningError(Exception):
    """dkimpy refused to sign (a broken message or key); the message goes unsigned."""


def signed_header_list(
    counts: Mapping[str, int], headers: Iterable[str], oversign: Iterable[str]
) -> list[str]:
    """The ``h=`` list: names in order, each repeated per occurrence (+1 if oversigned).

    ``counts`` maps lower-case header names to how often the message has them.
    """
    extra = {name.lower() for name in oversign}
    out: list[str] = []
    for name in dict.fromkeys(h.lower() for h in (*headers, *extra)):
        times = counts.get(name, 0) + (1 if name in extra else 0)
        out.extend([name] * times)
    if "from" not in out:  # RFC 6376 §5.4: From MUST be signed
        out.append("from")
    return out


def sign(
    message: bytes,
    key: SigningKey,
    domain: str,
    selector: str,
    include_headers: list[str],
    canonicalization: tuple[str, str] = ("relaxed", "relaxed"),
) -> str:
    """The DKIM-Signature value for ``message`` (pure CPU: run it in a worker thread).

    Raises:
        SigningError: the message or key could not be signed.
    """
    try:
        signer = dkim.DKIM(
            message, logger=dkimpy_logger(), signature_algorithm=key.algorithm, linesep=b"\n"
        )
        header = signer.sign(
            selector.encode("ascii"),
            domain.encode("idna"),
            key.private,
            canonicalize=(canonicalization[0].encode(), canonicalization[1].encode()),
            include_headers=[h.encode("ascii") for h in include_headers],
        )
    except (*LIBRARY_ERRORS, UnicodeError) as exc:
        raise SigningError(f"{type(exc).__name__}: {exc}") from exc
    value: bytes = header.split(b":", 1)[1]
    return value.strip().decode("ascii")
