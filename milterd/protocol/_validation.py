"""Constructor checks shared by events and actions.

They raise ``LocalProtocolError``: building a value that cannot be put on the wire is a
local mistake; ``MilterConnection`` re-types the error as remote when the value was
decoded from the peer's bytes.
"""

from __future__ import annotations

from .errors import LocalProtocolError


def no_nul(field: str, value: str) -> None:
    """NUL terminates strings on the wire, so it can never be part of one."""
    if "\0" in value:
        raise LocalProtocolError(f"{field} must not contain NUL: {value!r}")


def no_nul_each(field: str, values: tuple[str, ...]) -> None:
    """``no_nul`` for every element of an argv-style tuple."""
    for value in values:
        if "\0" in value:
            raise LocalProtocolError(f"{field} must not contain NUL: {value!r}")


def single_line(field: str, value: str) -> None:
    """Reject NUL, CR and LF."""
    if "\0" in value or "\r" in value or "\n" in value:
        raise LocalProtocolError(f"{field} must be a single line without NUL: {value!r}")


def uint(field: str, value: int, bits: int) -> None:
    """Range-check an unsigned wire integer."""
    if not 0 <= value < (1 << bits):
        raise LocalProtocolError(f"{field} must fit in an unsigned {bits}-bit integer: {value}")


def header_name(value: str) -> None:
    """RFC 5322 §2.2 field name: printable US-ASCII except colon, at least one character."""
    if not value:
        raise LocalProtocolError("header name must not be empty")
    for ch in value:
        if not "!" <= ch <= "~" or ch == ":":
            raise LocalProtocolError(f"invalid header name {value!r}")


def header_value(value: str) -> None:
    """No NUL, no CR; a LF may only start a folded continuation line (spec §6, §10 item 9)."""
    if "\0" in value or "\r" in value:
        raise LocalProtocolError(f"header value must not contain NUL or CR: {value!r}")
    pos = value.find("\n")
    while pos >= 0:
        if value[pos + 1 : pos + 2] not in (" ", "\t"):
            raise LocalProtocolError(
                f"header value may contain LF only before folding whitespace: {value!r}"
            )
        pos = value.find("\n", pos + 1)
