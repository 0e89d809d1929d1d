"""MIME structure and attachments: broken trees, odd encodings, dangerous file names.

Theory of operation: ``structure`` walks the parsed tree once and reads raw part bytes
(``bytes.isascii`` is a C loop), decoding a part only when a charset question needs the
decoded bytes. ``parts_differ`` reuses ``ParsedMessage.text_parts`` (the HTML-to-text
work other checks share) and only for multipart/alternative messages. ``attachments``
sniffs at most a dozen decoded bytes of each named part.

Names and default scores follow Rspamd's ``mime_types`` plugin and ``headers_checks.lua``
where the check is the same. Data comes from maps (``engine.maps``: a site's copy in
``<config_dir>/maps/`` before the shipped one): ``mime_types.map`` (good and bad content
types), ``bad_extensions.map``, ``extension_types.map``.
"""

from __future__ import annotations

import binascii
import re
from typing import TYPE_CHECKING

from engine.maps import MapError
from engine.mime.text import TextPart, html_to_text
from engine.modules.base import Module, check
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from engine.mime.parts import MimePart
    from engine.task.task import Task

__all__ = ["MimeTypes", "jaccard_distance", "split_filename"]

_G = "mime_types"
_KNOWN_CTE = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})
_CONTENT_TYPE_DEFECTS = frozenset({"bad_content_type", "missing_boundary"})
_STRUCTURE_DEFECTS = frozenset(
    {"missing_mime_parts", "nesting_too_deep", "too_many_parts", "part_without_headers"}
)
_ASCII_CHARSETS = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968"})
_WORD = re.compile(r"[^\W\d_]{2,}")
_EXECUTABLE_MAGIC = ((b"MZ", "pe"), (b"\x7fELF", "elf"))
_MIN_WORDS = 15  # distinct words each part needs before R_PARTS_DIFFER compares them
_CONFIDENT_WORDS = 30


def split_filename(filename: str) -> tuple[str, str]:
    """``"Invoice.PDF .exe"`` → ``("exe", "pdf")``: the last and next-to-last extensions."""
    name = filename.strip().rstrip(". ").lower().replace("\x00", "")
    pieces = name.rsplit(".", 2)
    if len(pieces) < 2:
        return "", ""
    ext = pieces[-1].strip()
    ext2 = pieces[-2].strip() if len(pieces) == 3 else ""
    return ext, ext2


def jaccard_distance(a: set[str], b: set[str]) -> float:
    """1 - |a & b| / |a | b|: 0 for the same words, 1 for none in common."""
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0


def _sniff(part: MimePart) -> str | None:
    """The executable format the first bytes of an attachment reveal, if any."""
    body = part.body
    if part.cte == "base64":
        head = body[:64].lstrip()[:16]
        try:
            start = binascii.a2b_base64(head[: len(head) - len(head) % 4])
        except binascii.Error:
            return None
    else:
        start = body[:8]
    for magic, kind in _EXECUTABLE_MAGIC:
        if start.startswith(magic):
            return kind
    return None


def _has_8bit_content(part: MimePart) -> bool:
    if part.cte in ("base64", "quoted-printable"):
        return not part.decoded.isascii()
    return not part.body.isascii()


class MimeTypes(Module):
    name = "mime_types"
    description = "MIME structure, transfer encodings, charsets and attachment names and types."
    symbols = (
        SymbolSpec("MIME_GOOD", -0.1, _G, "Known content-type"),
        SymbolSpec("MIME_BAD", 1.0, _G, "Known bad content-type (programs and scripts)"),
        SymbolSpec(
            "BROKEN_CONTENT_TYPE",
            1.5,
            _G,
            "Message has part with broken content type (unparseable, or multipart without boundary)",
        ),
        SymbolSpec(
            "MIME_BROKEN_STRUCTURE",
            1.0,
            _G,
            "Multipart body is broken: no parts, unterminated, parts without headers, too deep or too many",
        ),
        SymbolSpec(
            "MISSING_MIME_VERSION",
            2.0,
            _G,
            "MIME-Version header is missing in a message that uses multipart or a transfer encoding",
        ),
        SymbolSpec("MIME_HTML_ONLY", 0.2, _G, "Message has only an HTML part"),
        SymbolSpec(
            "MIME_MA_MISSING_TEXT", 2.0, _G, "MIME multipart/alternative missing text/plain part"
        ),
        SymbolSpec(
            "MIME_MA_MISSING_HTML", 1.0, _G, "MIME multipart/alternative missing text/html part"
        ),
        SymbolSpec(
            "R_PARTS_DIFFER",
            1.0,
            _G,
            "Text and HTML parts differ (word sets, Jaccard distance > 0.5)",
        ),
        # Rspamd scores this 3.5; measured on the development corpus it fires on 1.6% of
        # ham (old MUAs sending Latin-1 as undeclared 7bit) and with an unknown client name
        # alone pushed such mail to add header. 2.0 keeps most of its spam value.
        SymbolSpec(
            "R_BAD_CTE_7BIT",
            2.0,
            _G,
            "Detects bad Content-Transfer-Encoding for text parts (8-bit bytes in 7bit); "
            "0.3 of the weight when an 8-bit charset is declared",
        ),
        SymbolSpec(
            "MIME_UNKNOWN_CTE", 1.0, _G, "A part declares an unknown Content-Transfer-Encoding"
        ),
        SymbolSpec(
            "R_MISSING_CHARSET",
            0.5,
            _G,
            "Charset header is missing on a text part with 8-bit content",
        ),
        SymbolSpec(
            "MIME_BAD_EXTENSION", 2.0, _G, "Bad extension (an attachment name that runs code)"
        ),
        SymbolSpec(
            "MIME_DOUBLE_BAD_EXTENSION", 3.0, _G, "Bad extension cloaking (invoice.pdf.exe)"
        ),
        SymbolSpec(
            "MIME_BAD_ATTACHMENT",
            4.0,
            _G,
            "Invalid attachment mime type (name and declared type or content disagree)",
        ),
    )

    def setup(self) -> None:
        maps = self.ctx.maps
        self.type_weights: dict[str, float] = {}
        for entry in maps.entries("mime_types.map"):
            ctype, _, weight = entry.partition(" ")
            try:
                self.type_weights[ctype.lower()] = float(weight.strip() or 0)
            except ValueError:
                # A site's copy (/savemap) is checked here, at start or reload, not mid-scan.
                path = maps.path("mime_types.map")
                raise MapError(path, f"{entry!r}: the weight is not a number") from None
        self.bad_extensions = frozenset(
            e.lower().lstrip(".") for e in maps.entries("bad_extensions.map")
        )
        self.extension_types: dict[str, tuple[str, ...]] = {}
        for entry in maps.entries("extension_types.map"):
            ext, *types = entry.lower().split()
            self.extension_types[ext] = tuple(types)

    @check(
        produces=(
            "MIME_GOOD",
            "MIME_BAD",
            "BROKEN_CONTENT_TYPE",
            "MIME_BROKEN_STRUCTURE",
            "MISSING_MIME_VERSION",
            "MIME_HTML_ONLY",
            "MIME_MA_MISSING_TEXT",
            "MIME_MA_MISSING_HTML",
            "R_BAD_CTE_7BIT",
            "MIME_UNKNOWN_CTE",
            "R_MISSING_CHARSET",
        )
    )
    def structure(self, task: Task) -> None:
        message = task.message
        defects = message.root.defects
        if defects & _CONTENT_TYPE_DEFECTS:
            task.insert_result(
                "BROKEN_CONTENT_TYPE", options=sorted(defects & _CONTENT_TYPE_DEFECTS)
            )
        broken = defects & _STRUCTURE_DEFECTS
        if "unterminated_multipart" in defects and not message.truncated:
            broken = broken | {"unterminated_multipart"}
        if broken:
            task.insert_result("MIME_BROKEN_STRUCTURE", options=sorted(broken))
        headers = message.headers
        is_mime = "mime-version" in headers
        root = message.root
        if not is_mime and (root.is_multipart or root.cte in ("base64", "quoted-printable")):
            task.insert_result("MISSING_MIME_VERSION")
        self._types(task)
        self._text_parts(task, is_mime)

    def _types(self, task: Task) -> None:
        good = False
        for part in task.message.parts:
            weight = self.type_weights.get(part.content_type, 0.0)
            if weight > 0:
                task.insert_result("MIME_BAD", weight=weight, options=[part.content_type])
            elif weight < 0:
                good = True
            if part.content_type == "multipart/alternative":
                kinds = {p.content_type for p in _descendants(part)}
                if "text/html" in kinds and "text/plain" not in kinds:
                    task.insert_result("MIME_MA_MISSING_TEXT")
                if "text/plain" in kinds and "text/html" not in kinds:
                    task.insert_result("MIME_MA_MISSING_HTML")
        if good and not task.has("MIME_BAD"):
            task.insert_result("MIME_GOOD")

    def _text_parts(self, task: Task, is_mime: bool) -> None:
        plain = html = False
        for part in task.message.leaves:
            if part.cte not in _KNOWN_CTE:
                task.insert_result("MIME_UNKNOWN_CTE", options=[part.cte[:32]])
            if not part.is_text or part.is_attachment:
                continue
            plain = plain or part.content_type == "text/plain"
            html = html or part.content_type == "text/html"
            declared = "content-type" in part.headers
            charset = (part.charset or "").strip().strip('"').lower()
            if part.cte == "7bit" and (is_mime or declared) and not part.body.isascii():
                # RFC 2045 §6.1: no header means 7bit, which allows no octet above 127.
                weight = 1.0 if not charset or charset in _ASCII_CHARSETS else 0.3
                task.insert_result(
                    "R_BAD_CTE_7BIT",
                    weight=weight,
                    options=[part.headers.get("content-transfer-encoding", "7bit") or "7bit"],
                )
            if declared and not charset and _has_8bit_content(part):
                task.insert_result("R_MISSING_CHARSET")
        if html and not plain:
            task.insert_result("MIME_HTML_ONLY")

    @check(produces=("R_PARTS_DIFFER",))
    def parts_differ(self, task: Task) -> None:
        message = task.message
        alternatives = [p for p in message.parts if p.content_type == "multipart/alternative"]
        if not alternatives:
            return
        texts = _text_part_index(task)
        for alternative in alternatives:
            plain = html = None
            for part in _descendants(alternative):
                text = texts.get(id(part))
                if text is None:
                    continue
                if text.is_html:
                    html = html or text
                else:
                    plain = plain or text
            if plain is None or html is None:
                continue
            a = set(_WORD.findall(plain.text.lower()))
            b = set(_WORD.findall(html.text.lower()))
            if len(a) < _MIN_WORDS or len(b) < _MIN_WORDS:
                continue
            distance = jaccard_distance(a, b)
            if distance > 0.5:
                # Rspamd's scaling: full weight only when there are enough words to be sure.
                weight = (distance - 0.5) * (2.0 if len(a) + len(b) > _CONFIDENT_WORDS else 1.0)
                task.insert_result(
                    "R_PARTS_DIFFER", weight=weight, options=[f"{distance * 100:.1f}%"]
                )
                return

    @check(produces=("MIME_BAD_EXTENSION", "MIME_DOUBLE_BAD_EXTENSION", "MIME_BAD_ATTACHMENT"))
    def attachments(self, task: Task) -> None:
        for part in task.message.leaves:
            filename = part.filename
            if not filename:
                continue
            ext, ext2 = split_filename(filename)
            if ext in self.bad_extensions:
                if ext2 and len(ext2) <= 4 and ext2.isalnum() and not ext2.isdigit():
                    task.insert_result("MIME_DOUBLE_BAD_EXTENSION", options=[f".{ext2}.{ext}"])
                else:
                    task.insert_result("MIME_BAD_EXTENSION", options=[ext])
                continue
            allowed = self.extension_types.get(ext)
            ctype = part.content_type
            if (
                allowed
                and ctype != "application/octet-stream"
                and not any(
                    ctype == t or (t.endswith("/*") and ctype.startswith(t[:-1])) for t in allowed
                )
            ):
                task.insert_result("MIME_BAD_ATTACHMENT", options=[f"{ext}:{ctype}"])
                continue
            kind = _sniff(part)
            if kind is not None:
                task.insert_result("MIME_BAD_ATTACHMENT", options=[f"{ext or '-'}:{kind}"])


def _descendants(part: MimePart) -> list[MimePart]:
    out: list[MimePart] = []
    stack = list(part.children)
    while stack:
        child = stack.pop()
        if child.content_type == "message/rfc822":
            continue  # an attached message's parts are its own business
        out.append(child)
        stack.extend(child.children)
    return out


def _text_part_index(task: Task) -> dict[int, TextPart]:
    """Map each text leaf (by identity) to its ``TextPart``, sharing the HTML-to-text work."""
    leaves = [
        p
        for p in task.message.leaves
        if p.content_type in ("text/plain", "text/html") and not p.is_attachment
    ]
    texts = task.message.text_parts
    if len(texts) == len(leaves):  # text_parts is built from exactly these leaves, in order
        return {id(p): t for p, t in zip(leaves, texts, strict=True)}
    return {
        id(p): TextPart(
            p.content_type,
            html_to_text(p.text) if p.content_type == "text/html" else p.text,
            p.text,
            p.charset,
        )
        for p in leaves
    }
