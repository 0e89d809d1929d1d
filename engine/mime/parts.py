"""The MIME tree: content types, multipart splitting, transfer decoding.

Theory of operation: a part is parsed only as far as somebody asks (the tree on first
access to ``ParsedMessage.root``, a part's decoded bytes on first access to
``decoded``). Nothing here raises on broken input; every oddity is recorded in the
shared ``defects`` set, which checks turn into symbols (``BROKEN_CONTENT_TYPE``,
``MIME_BAD`` ...). Depth and part-count limits keep a hostile message from costing more
than a normal one.
"""

from __future__ import annotations

import binascii
import re
import urllib.parse
from functools import cached_property

from engine.mime.headers import (
    HeaderList,
    decode_rfc2047,
    decode_text,
    parse_header_block,
    split_message,
)

__all__ = ["MAX_DEPTH", "MAX_PARTS", "MimePart", "parse_content_type", "parse_tree"]

MAX_DEPTH = 16
MAX_PARTS = 512

_TOKEN_TYPE = re.compile(
    r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*/\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*"
)
_PARAM = re.compile(r'\s*;?\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')
_KNOWN_CTE = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})


def parse_content_type(
    value: str | None, default: str, defects: set[str]
) -> tuple[str, dict[str, str]]:
    """``text/html; charset="utf-8"`` → ``("text/html", {"charset": "utf-8"})``."""
    if value is None:
        return default, {}
    value = value.replace("\n", " ")
    match = _TOKEN_TYPE.match(value)
    if match is None:
        defects.add("bad_content_type")
        return default, _parse_params(value[value.find(";") :] if ";" in value else "")
    ctype = f"{match.group(1)}/{match.group(2)}".lower()
    return ctype, _parse_params(value[match.end() :])


def _parse_params(text: str) -> dict[str, str]:
    raw: dict[str, str] = {}
    for match in _PARAM.finditer(text):
        key, val = match.group(1).lower(), match.group(2).strip()
        if val.startswith('"'):
            val = val[1:-1] if val.endswith('"') and len(val) > 1 else val[1:]
            val = re.sub(r"\\(.)", r"\1", val)
        raw.setdefault(key, val)
    if not any("*" in k for k in raw):
        return raw
    return _join_rfc2231(raw)


def _join_rfc2231(raw: dict[str, str]) -> dict[str, str]:
    """RFC 2231 §3-4: ``name*0*=utf-8''a%20b; name*1=c`` → ``name="a bc"``."""
    params: dict[str, str] = {}
    pieces: dict[str, list[tuple[int, str, bool]]] = {}
    for key, val in raw.items():
        if "*" not in key:
            params.setdefault(key, val)
            continue
        base, _, rest = key.partition("*")
        encoded = key.endswith("*")
        index = rest.rstrip("*")
        pieces.setdefault(base, []).append((int(index) if index.isdigit() else 0, val, encoded))
    for base, chunks in pieces.items():
        chunks.sort()
        charset = "utf-8"
        out = []
        for i, (_, val, encoded) in enumerate(chunks):
            if encoded:
                if i == 0 and val.count("'") >= 2:
                    charset, _, val = val.split("'", 2)
                val = urllib.parse.unquote(val, encoding=charset or "utf-8", errors="replace")
            out.append(val)
        params[base] = "".join(out)
    return params


class MimePart:
    """One node of the MIME tree: its headers, type, raw and decoded content, children."""

    def __init__(
        self, headers: HeaderList, body: bytes, defects: set[str], default_type: str = "text/plain"
    ) -> None:
        self.headers = headers
        self.body = body
        self.defects = defects
        self.content_type, self.params = parse_content_type(
            headers.get("content-type"), default_type, defects
        )
        self.cte = (headers.get("content-transfer-encoding") or "7bit").strip().lower()
        self.children: list[MimePart] = []

    def __repr__(self) -> str:
        return f"<MimePart {self.content_type} {len(self.body)}B children={len(self.children)}>"

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")

    @property
    def is_text(self) -> bool:
        return self.content_type.startswith("text/")

    @property
    def charset(self) -> str | None:
        return self.params.get("charset")

    @cached_property
    def disposition(self) -> tuple[str, dict[str, str]]:
        value = self.headers.get("content-disposition")
        if not value:
            return "", {}
        kind, _, rest = value.replace("\n", " ").partition(";")
        return kind.strip().lower(), _parse_params(rest)

    @cached_property
    def filename(self) -> str | None:
        name = self.disposition[1].get("filename") or self.params.get("name")
        return decode_rfc2047(name, self.defects).strip() if name else None

    @property
    def is_attachment(self) -> bool:
        if self.is_multipart:
            return False
        return self.disposition[0] == "attachment" or (
            self.filename is not None and not self.is_text
        )

    @cached_property
    def decoded(self) -> bytes:
        """The content with its transfer encoding undone (best effort on broken input)."""
        cte = self.cte
        if cte == "base64":
            return self._decode_base64()
        if cte == "quoted-printable":
            return binascii.a2b_qp(self.body)
        if cte not in _KNOWN_CTE:
            self.defects.add("bad_cte")
        return self.body

    def _decode_base64(self) -> bytes:
        data = self.body
        try:
            return binascii.a2b_base64(data)
        except binascii.Error:
            self.defects.add("bad_base64")
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
        try:
            return binascii.a2b_base64(cleaned)
        except binascii.Error:  # pragma: no cover - cleaned input is always decodable
            return b""

    @cached_property
    def text(self) -> str:
        """The decoded content as text in its declared charset (CRLF folded to LF)."""
        return decode_text(self.decoded, self.charset, self.defects).replace("\r\n", "\n")


class _Budget:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts = 0


def parse_tree(headers: HeaderList, body: bytes, defects: set[str]) -> MimePart:
    """Build the MIME tree of a message whose top-level headers are already parsed."""
    root = MimePart(headers, body, defects)
    _expand(root, 0, _Budget())
    return root


def _expand(part: MimePart, depth: int, budget: _Budget) -> None:
    budget.parts += 1
    if part.is_multipart:
        if depth >= MAX_DEPTH:
            part.defects.add("nesting_too_deep")
            return
        boundary = part.params.get("boundary")
        if not boundary:
            part.defects.add("missing_boundary")
            return
        default = "message/rfc822" if part.content_type == "multipart/digest" else "text/plain"
        for chunk in _split_multipart(
            part.body, boundary.encode("utf-8", "surrogateescape"), part.defects
        ):
            if budget.parts >= MAX_PARTS:
                part.defects.add("too_many_parts")
                return
            block, content, has_sep = split_message(chunk)
            if not has_sep and block.strip():
                part.defects.add("part_without_headers")
                block, content = b"", chunk
            child = MimePart(
                parse_header_block(block, part.defects), content, part.defects, default
            )
            part.children.append(child)
            _expand(child, depth + 1, budget)
    elif part.content_type == "message/rfc822" and depth < MAX_DEPTH:
        block, content, _ = split_message(part.decoded)
        child = MimePart(parse_header_block(block, part.defects), content, part.defects)
        part.children.append(child)
        _expand(child, depth + 1, budget)


def _split_multipart(body: bytes, boundary: bytes, defects: set[str]) -> list[bytes]:
    """RFC 2046 §5.1.1: the bodies between ``--boundary`` lines; preamble and epilogue dropped."""
    delimiter = b"--" + boundary
    chunks: list[bytes] = []
    start: int | None = None
    pos = 0
    closed = False
    size = len(body)
    while True:
        at = body.find(delimiter, pos)
        if at < 0:
            break
        end = at + len(delimiter)
        at_line_start = at == 0 or body[at - 1] == 0x0A
        follows = body[end : end + 1]
        if not at_line_start or follows not in (b"", b"\r", b"\n", b"-", b" ", b"\t"):
            pos = end
            continue
        if start is not None:
            stop = at - 1 if at > 0 and body[at - 1] == 0x0A else at
            if stop > start and body[stop - 1] == 0x0D:
                stop -= 1
            chunks.append(body[start:stop])
        if body.startswith(b"--", end):
            closed = True
            break
        eol = body.find(b"\n", end)
        start = size if eol < 0 else eol + 1
        pos = start
    if start is None:
        defects.add("missing_mime_parts")
    elif not closed:
        defects.add("unterminated_multipart")
        if start < size:
            chunks.append(body[start:])
    return chunks
