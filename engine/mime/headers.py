"""Header blocks: splitting raw bytes into headers and body, lookup, RFC 2047 decoding.

Values are kept the way a milter receives them: without the one space that follows the
colon, folded lines joined with LF. Bytes that are not UTF-8 survive as surrogate
escapes, so nothing a spammer sent is lost before the checks see it.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "HeaderList",
    "decode_rfc2047",
    "parse_header_block",
    "split_message",
]

_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=".decode())
_BETWEEN_WORDS = re.compile(r"(\?=)\s+(=\?)")
_QP_HEX = re.compile(r"=([0-9A-Fa-f]{2})")
_FOLDING = re.compile(r"\n[ \t]*")


class HeaderList:
    """Ordered headers with case-insensitive lookup; duplicates kept in order."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] = {}
        for name, value in items:
            self.append(name, value)

    def append(self, name: str, value: str) -> None:
        self._items.append((name, value))
        self._index.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return self._index.get(name.lower(), [])

    def count(self, name: str) -> int:
        return len(self._index.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def to_bytes(self) -> bytes:
        """The header block as it would travel: ``Name: value`` lines, CRLF, folds restored."""
        lines = [f"{n}: {v}".replace("\n", "\r\n") for n, v in self._items]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def split_message(raw: bytes) -> tuple[bytes, bytes, bool]:
    """Split raw message bytes at the first empty line.

    Returns ``(header_block, body, has_separator)``; a message without an empty line is
    all headers and no body (a defect the caller records).
    """
    if raw.startswith(b"\r\n"):
        return b"", raw[2:], True
    if raw.startswith(b"\n"):
        return b"", raw[1:], True
    crlf = raw.find(b"\n\r\n")
    lf = raw.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return raw, b"", False
    if lf < 0 or (0 <= crlf < lf):
        return raw[: crlf + 1], raw[crlf + 3 :], True
    return raw[: lf + 1], raw[lf + 2 :], True


def parse_header_block(block: bytes, defects: set[str]) -> HeaderList:
    """Parse ``Name: value`` lines with folding; garbage lines become a defect, not an error."""
    headers = HeaderList()
    if not block:
        return headers
    text = block.decode("utf-8", "surrogateescape")
    if text.startswith("From "):
        # An mbox separator ("From sender date"), not a header field: messages read from
        # mbox files and spools start with one. It is framing, so it is no defect either.
        text = text.partition("\n")[2]
    # Lines end at LF, one CR before it dropped: the CR LF pairs go in one replace, and
    # only the last line can still end in a CR of its own.
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1].endswith("\r"):
        lines[-1] = lines[-1][:-1]
    append = headers.append
    name: str | None = None
    value = ""
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            if name is None:
                defects.add("bad_header_line")
                continue
            value += "\n" + line
            continue
        if name is not None:
            append(name, value)
            name = None
        colon = line.find(":")
        field = line[:colon].rstrip()
        if colon <= 0 or not _is_field_name(field):
            defects.add("bad_header_line")
            continue
        name = field
        value = line[colon + 1 :]
        if value.startswith(" "):
            value = value[1:]
    if name is not None:
        append(name, value)
    return headers


def _is_field_name(name: str) -> bool:
    # RFC 5322 §3.6.8: printable US-ASCII except colon and space. Three C-level tests (a
    # name never holds the colon it was cut at); a per-character generator cost more than
    # the rest of header parsing, a regex match twice these.
    return name.isascii() and name.isprintable() and " " not in name and name != ""


def decode_rfc2047(value: str, defects: set[str] | None = None) -> str:
    """Decode RFC 2047 encoded words and unfold; never raises.

    Undecodable words are kept as they were and noted in ``defects`` as ``bad_rfc2047``;
    an unknown charset as ``bad_charset``.
    """
    if "\n" in value:
        value = _FOLDING.sub(" ", value)
    if "=?" not in value:
        return value
    value = _BETWEEN_WORDS.sub(r"\1\2", value)  # RFC 2047 §6.2: space between words is dropped

    def decode_word(match: re.Match[str]) -> str:
        charset, encoding, text = match.group(1), match.group(2).upper(), match.group(3)
        charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
        try:
            if encoding == "B":
                data = base64.b64decode(text + "=" * (-len(text) % 4))
            else:
                data = _QP_HEX.sub(
                    lambda m: chr(int(m.group(1), 16)), text.replace("_", " ")
                ).encode("latin-1", "replace")
        except (binascii.Error, ValueError):
            if defects is not None:
                defects.add("bad_rfc2047")
            return match.group(0)
        return decode_text(data, charset, defects)

    return _ENCODED_WORD.sub(decode_word, value)


def decode_text(data: bytes, charset: str | None, defects: set[str] | None = None) -> str:
    """Bytes to text in the declared charset, falling back gracefully; never raises."""
    name = (charset or "us-ascii").strip().strip('"').lower()
    try:
        codec = codecs.lookup(name).name
    # ValueError: a charset name with a NUL or with non-UTF-8 bytes (surrogate escapes)
    # makes codecs.lookup raise that instead of LookupError.
    except (LookupError, ValueError):
        if defects is not None:
            defects.add("bad_charset")
        codec = "utf-8"
    if codec == "ascii":  # 8-bit bytes labelled us-ascii are common; UTF-8 is the best guess
        codec = "utf-8"
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        if defects is not None:
            defects.add("bad_charset_data")
        return data.decode(codec, "replace")
