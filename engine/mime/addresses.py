"""E-mail addresses in headers and envelopes."""

from __future__ import annotations

import re
from email.utils import getaddresses

__all__ = ["bare_address", "domain_of", "is_valid_address", "parse_address_list"]

# Practical RFC 5322 §3.4.1 addr-spec check: a dot-atom or quoted local part, a domain of
# labels or an address literal. Strict enough to tell garbage from mail.
_ADDR = re.compile(
    r"^(?:[A-Za-z0-9!#$%&\'*+/=?^_`{|}~\x80-\U0010ffff-]+(?:\.[A-Za-z0-9!#$%&\'*+/=?^_`{|}~\x80-\U0010ffff-]+)*"
    r'|"(?:[^"\\\r\n]|\\.)*")@(?:[A-Za-z0-9\x80-\U0010ffff](?:[A-Za-z0-9\x80-\U0010ffff-]*[A-Za-z0-9\x80-\U0010ffff])?'
    r"(?:\.[A-Za-z0-9\x80-\U0010ffff](?:[A-Za-z0-9\x80-\U0010ffff-]*[A-Za-z0-9\x80-\U0010ffff])?)*|\[[^\]\s]+\])$"
)


def parse_address_list(value: str) -> list[tuple[str, str]]:
    """``"A" <a@x>, b@y`` → ``[("A", "a@x"), ("", "b@y")]``; junk yields empty addresses."""
    return getaddresses([value.replace("\n", " ")])


def bare_address(value: str) -> str:
    """An envelope address as the MTA sent it (``<a@x>``) without brackets or spaces."""
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value.strip()


def is_valid_address(address: str) -> bool:
    return bool(_ADDR.match(address))


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower()
