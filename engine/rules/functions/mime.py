"""Function atoms about MIME structure, attachments, archives and message text.

Used by ``rules/mime.toml``, ``rules/attachments.toml`` and ``rules/body.toml``. Every
function reads the parsed message only (``task.message``), never raises on broken mail
and bounds its work: attachments are sniffed from their first bytes, archives are listed
from their directory (never decompressed), and only the first ``_MAX_ARCHIVE_BYTES`` of an
archive are looked at. Archive listings are shared between the functions of one scan
through the task's stash.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.rules.functions import function
from engine.task.stash import StashKey

if TYPE_CHECKING:
    from engine.mime.parts import MimePart
    from engine.task.task import Task

__all__ = [
    "ArchiveEntry",
    "archive_entries",
    "is_bitcoin_address",
    "sniff_kind",
]

_MAX_ARCHIVE_BYTES = 8 * 1024 * 1024
_MAX_ARCHIVE_ENTRIES = 1000
_SNIFF_BYTES = 1024

# Extensions that run code, open a disk image or carry a OneNote/macro payload when a
# file with that name is opened from an archive (the shipped bad_extensions.map plus the
# container and document formats droppers use).
_RISKY_NAMES = """
    ade adp app appref-ms application bas bat chm cmd com cpl dll exe gadget hlp hta inf ins
    isp jar js jse lnk mde msc msi msp mst pif ps1 ps1xml psc1 psm1 reg scf scr sct shb shs
    sys url vb vbe vbs vxd ws wsc wsf wsh iso img vhd vhdx one onepkg docm xlsm pptm dotm
    xltm xlam ppam ppsm
"""
_RISKY_EXTENSIONS = frozenset(_RISKY_NAMES.split())
# Archives (and disk images, which are archives too) that make a nested archive. The
# compressed tarballs (tar.gz, tgz, xz ...) source bundles travel in are left out.
_ARCHIVE_NAMES = "zip zipx rar r00 r01 001 7z ace arj cab lzh lha iso img vhd vhdx"
_ARCHIVE_EXTENSIONS = frozenset(_ARCHIVE_NAMES.split())
# Hosts of video-conference services whose links every legitimate invitation carries.
_MEETING_HOSTS = re.compile(
    r"(?:^|\.)(?:zoom\.us|zoom\.com|teams\.microsoft\.com|teams\.live\.com|meet\.google\.com"
    r"|webex\.com|gotomeeting\.com|goto\.com|bluejeans\.com|whereby\.com|jit\.si"
    r"|chime\.aws|skype\.com|ringcentral\.com)$"
)
_URL = re.compile(r"https?://([^/\s\"'<>:?#\\]+)", re.I)
_CASED = re.compile(r"[^\W\d_]")
# A line (cut at LF, a CR before it dropped) without an ASCII lower-case letter: the first
# one, and each after a LF. Starting at a literal LF lets the search skip from line to line
# instead of testing every position for the start of one.
_FIRST_LINE_WITHOUT_LOWER = re.compile(r"[^a-z\r\n]*(?=\r?(?:\n|\Z))")
_NEXT_LINE_WITHOUT_LOWER = re.compile(r"\n([^a-z\r\n]*)(?=\r?(?:\n|\Z))")
_ASCII_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123))
_ASCII_UPPER = bytes(range(65, 91))
_ASCII = bytes(range(128))
# Blocks without a single cased letter (Hebrew to Tibetan, CJK, Yi, Hangul): dropped by one
# regex before the per-character table (the claim is checked against the running Python's
# Unicode database by the unit tests).
UNCASED_RANGES = (
    (0x0590, 0x0FFF),
    (0x2E80, 0xA4CF),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
    (0x20000, 0x3134F),
)
_UNCASED_RUNS = re.compile(
    "[" + "".join(rf"\U{lo:08x}-\U{hi:08x}" for lo, hi in UNCASED_RANGES) + "]+"
)
_ASCII_LOWER = re.compile("[a-z]")
_CASE_TABLE_LIMIT = 1 << 16  # distinct characters remembered; a hostile text gets no more


class _CaseTable(dict[int, str | None]):
    """A ``str.translate`` table that reduces text to its cased letters (what
    ``[^\\W\\d_]`` matches): ``U`` for ``isupper()``, ``l`` for ``islower()``, everything
    else goes. Filled on demand, so translating runs at C speed once a character has been
    seen (counting letters one by one in Python made ``text_uppercase_ratio`` a tenth of
    all rule time on non-ASCII mail).
    """

    def __missing__(self, code: int) -> str | None:
        char = chr(code)
        value: str | None = None
        if _CASED.match(char):
            value = "U" if char.isupper() else "l" if char.islower() else None
        if len(self) < _CASE_TABLE_LIMIT:
            self[code] = value
        return value


_CASE_TABLE = _CaseTable()


@dataclass(slots=True, frozen=True)
class ArchiveEntry:
    """One file inside an attached archive: its name and whether it is encrypted."""

    name: str
    encrypted: bool


_ARCHIVES = StashKey[list[tuple[str, list[ArchiveEntry], bool]]]("rules.mime.archives")


# --- helpers -------------------------------------------------------------------------------


def _body_text_parts(task: Task) -> list[MimePart]:
    """Leaves that are the message's own text (text/plain or text/html, not attachments)."""
    return [
        p
        for p in task.message.leaves
        if p.content_type in ("text/plain", "text/html") and not p.is_attachment
    ]


def _descendants(part: MimePart) -> list[MimePart]:
    """A part's descendants in order, not looking inside attached messages."""
    out: list[MimePart] = []
    stack = list(reversed(part.children))
    while stack:
        child = stack.pop()
        out.append(child)
        if child.content_type != "message/rfc822":
            stack.extend(reversed(child.children))
    return out


def _head(part: MimePart, size: int = _SNIFF_BYTES) -> bytes:
    """The first ``size`` decoded bytes of a part, decoding only what it takes."""
    if part.cte == "base64":
        raw = re.sub(rb"[^A-Za-z0-9+/]", b"", part.body[: size * 2])
        raw = raw[: len(raw) - len(raw) % 4]
        try:
            return binascii.a2b_base64(raw)[:size]
        except binascii.Error:
            return b""
    if part.cte == "quoted-printable":
        return binascii.a2b_qp(part.body[: size * 3])[:size]
    return part.body[:size]


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "pdf"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"Rar!\x1a\x07", "rar"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"MSCF", "cab"),
    (b"**ACE**", "ace"),
    (b"\x1f\x8b", "gzip"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (b"{\\rtf", "rtf"),
    (b"MZ", "exe"),
    (b"\x7fELF", "exe"),
)
_HTML_START = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body|script|meta|form"
    rb"|iframe|svg|title|div|table|p)\b",
    re.I | re.S,
)


def sniff_kind(head: bytes) -> str | None:
    """The file format the first bytes reveal (``"pdf"``, ``"zip"``, ``"html"`` …), if any."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            # "BM" and "MZ" are short: demand a plausible header behind them.
            if kind == "bmp" and (len(head) < 14 or head[6:10] != b"\x00\x00\x00\x00"):
                continue
            return kind
    if _HTML_START.match(head[:512]):
        return "html"
    return None


def _extension(filename: str) -> str:
    """``"Invoice.PDF "`` → ``"pdf"``: the last extension, lower case."""
    name = filename.strip().rstrip(". ").lower()
    return name.rsplit(".", 1)[1].strip() if "." in name else ""


# Which sniffed formats contradict which claimed extensions. Executables are left to
# MIME_BAD_ATTACHMENT (mime_types module), formats that legitimately wrap others (a .doc
# saved as HTML or RTF, a .docx that is a zip) are not listed.
_CONTRADICTS: dict[str, frozenset[str]] = {}
for _exts, _kinds in (
    ("pdf", "html zip rar 7z cab ace ole rtf"),
    ("jpg jpeg png gif bmp tif tiff", "html zip rar 7z cab ace ole pdf"),
    ("docx xlsx pptx", "html rar 7z cab ace pdf"),
    ("zip", "html rar 7z cab ace pdf ole"),
    ("rar", "html zip 7z cab ace pdf ole"),
    ("7z", "html zip rar cab ace pdf ole"),
):
    for _ext in _exts.split():
        _CONTRADICTS[_ext] = frozenset(_kinds.split())


def _decoded_prefix(part: MimePart, limit: int) -> bytes:
    """At most ``limit`` decoded bytes of a part (a huge base64 part is cut before decoding)."""
    if part.cte == "base64" and len(part.body) > limit * 4 // 3 + 4096:
        return _head(part, limit)
    return part.decoded[:limit]


# --- archives ------------------------------------------------------------------------------


def _zip_entries(data: bytes) -> list[ArchiveEntry]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [
                ArchiveEntry(info.filename, bool(info.flag_bits & 0x1))
                for info in archive.infolist()[:_MAX_ARCHIVE_ENTRIES]
            ]
    except Exception:  # zipfile raises a zoo of types on hostile input; all mean "damaged"
        pass
    # No readable central directory (truncated or damaged): walk the local headers.
    entries = []
    for match in re.finditer(rb"PK\x03\x04", data):
        start = match.start()
        header = data[start : start + 30]
        if len(header) < 30:
            break
        flags = struct.unpack_from("<H", header, 6)[0]
        name_len = struct.unpack_from("<H", header, 26)[0]
        name = data[start + 30 : start + 30 + name_len].decode("utf-8", "replace")
        if name:
            entries.append(ArchiveEntry(name, bool(flags & 0x1)))
        if len(entries) >= _MAX_ARCHIVE_ENTRIES:
            break
    return entries


def _vint(data: bytes, pos: int) -> tuple[int, int]:
    """RAR5 variable-length integer at ``pos`` → (value, next position)."""
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated vint")


def _rar5_entries(data: bytes) -> tuple[list[ArchiveEntry], bool]:
    entries: list[ArchiveEntry] = []
    pos = 8
    while pos + 7 < len(data) and len(entries) < _MAX_ARCHIVE_ENTRIES:
        size, body = _vint(data, pos + 4)
        end = body + size
        kind, cur = _vint(data, body)
        flags, cur = _vint(data, cur)
        extra = data_size = 0
        if flags & 0x1:
            extra, cur = _vint(data, cur)
        if flags & 0x2:
            data_size, cur = _vint(data, cur)
        if kind == 4:  # archive encryption header: even the names are encrypted
            return entries, True
        if kind == 2:
            file_flags, cur = _vint(data, cur)
            _, cur = _vint(data, cur)  # unpacked size
            _, cur = _vint(data, cur)  # attributes
            cur += (4 if file_flags & 0x2 else 0) + (4 if file_flags & 0x4 else 0)
            _, cur = _vint(data, cur)  # compression
            _, cur = _vint(data, cur)  # host OS
            name_len, cur = _vint(data, cur)
            name = data[cur : cur + name_len].decode("utf-8", "replace")
            encrypted = False
            epos = end - extra
            while extra and epos < end:
                rec_size, rpos = _vint(data, epos)
                rec_type, _ = _vint(data, rpos)
                if rec_type == 0x01:
                    encrypted = True
                epos = rpos + rec_size if rec_size else end
            entries.append(ArchiveEntry(name, encrypted))
        elif kind == 5:
            break
        if end <= pos:
            break
        pos = end + data_size
    return entries, False


def _rar4_entries(data: bytes) -> tuple[list[ArchiveEntry], bool]:
    entries: list[ArchiveEntry] = []
    pos = 7
    while pos + 7 <= len(data) and len(entries) < _MAX_ARCHIVE_ENTRIES:
        kind = data[pos + 2]
        flags, head_size = struct.unpack_from("<HH", data, pos + 3)
        if head_size < 7:
            break
        add_size = 0
        if kind == 0x73 and flags & 0x80:  # main header: block headers are encrypted
            return entries, True
        if kind == 0x74 and pos + 32 <= len(data):
            add_size = struct.unpack_from("<I", data, pos + 7)[0]
            name_len = struct.unpack_from("<H", data, pos + 26)[0]
            name_at = pos + 32 + (8 if flags & 0x100 else 0)
            raw = data[name_at : name_at + name_len].split(b"\x00", 1)[0]
            entries.append(ArchiveEntry(raw.decode("utf-8", "replace"), bool(flags & 0x04)))
        elif flags & 0x8000 and pos + 11 <= len(data):
            add_size = struct.unpack_from("<I", data, pos + 7)[0]
        if kind == 0x7B:
            break
        pos += head_size + add_size
    return entries, False


def _list_archive(data: bytes) -> tuple[str, list[ArchiveEntry], bool] | None:
    """(format, entries, headers encrypted) for a zip or RAR archive; None for anything else."""
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip", _zip_entries(data), False
    try:
        if data.startswith(b"Rar!\x1a\x07\x01\x00"):
            return ("rar", *_rar5_entries(data))
        if data.startswith(b"Rar!\x1a\x07\x00"):
            return ("rar", *_rar4_entries(data))
    except (ValueError, IndexError, struct.error):
        return "rar", [], False
    if data.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z", [], False
    return None


def archive_entries(task: Task) -> list[tuple[str, list[ArchiveEntry], bool]]:
    """Every attached zip/RAR/7z archive as (format, entries, headers encrypted), once a scan."""
    if _ARCHIVES in task.stash:
        return task.stash[_ARCHIVES]
    found: list[tuple[str, list[ArchiveEntry], bool]] = []
    for part in task.message.leaves:
        if part.is_multipart or (part.is_text and not part.filename):
            continue
        kind = sniff_kind(_head(part, 16))
        if kind not in ("zip", "rar", "7z"):
            continue
        listing = _list_archive(_decoded_prefix(part, _MAX_ARCHIVE_BYTES))
        if listing is not None:
            found.append(listing)
    task.stash[_ARCHIVES] = found
    return found


# --- MIME structure ------------------------------------------------------------------------


@function("text_part_cte", args=(str,), cost=1)
def text_part_cte(task: Task, cte: str) -> int:
    """How many of the message's own text parts (plain or HTML) use transfer encoding CTE."""
    want = cte.strip().lower()
    return sum(1 for p in _body_text_parts(task) if p.cte == want)


@function("has_bogus_base64_text", cost=3)
def has_bogus_base64_text(task: Task) -> bool:
    """A base64-encoded text part whose decoded content is plain 7-bit ASCII.

    Base64 only earns its overhead for 8-bit text; bulk senders use it on ASCII to hide
    words from filters that read the raw body (Rspamd's MIME_BASE64_TEXT_BOGUS).
    """
    for part in _body_text_parts(task):
        if part.cte == "base64":
            decoded = part.decoded
            if decoded.strip() and decoded.isascii():
                return True
    return False


@function("mixed_has_only_text", cost=1)
def mixed_has_only_text(task: Task) -> bool:
    """The top-level type is multipart/mixed but there is nothing to mix.

    True when every leaf is body text (no attachment, image or other part) and there are at
    most two of them (Rspamd's CTYPE_MIXED_BOGUS).
    """
    message = task.message
    if message.root.content_type != "multipart/mixed":
        return False
    texts = 0
    for part in message.parts[1:]:
        if part.is_multipart:
            continue
        if part.is_text and not part.is_attachment:
            texts += 1
            if texts > 2:
                return False
        else:
            return False
    return True


@function("has_stub_text_alternative", args=(int,), cost=3)
def has_stub_text_alternative(task: Task, max_chars: int) -> bool:
    """A multipart/alternative whose text/plain part is a placeholder.

    The plain alternative has fewer than MAX_CHARS visible characters while the HTML one
    shows at least 200 (``This is an HTML message``, or nothing at all).
    """
    message = task.message
    for alternative in message.parts:
        if alternative.content_type != "multipart/alternative":
            continue
        inner = _descendants(alternative)
        plain = [c for c in inner if c.content_type == "text/plain" and not c.is_attachment]
        html = [c for c in inner if c.content_type == "text/html" and not c.is_attachment]
        if not plain or not html:
            continue
        plain_len = len(" ".join(plain[0].text.split()))
        if plain_len >= max_chars:
            continue
        visible = next(
            (t.text for t in message.text_parts if t.is_html and t.source == html[0].text), ""
        )
        if len(" ".join(visible.split())) >= 200:
            return True
    return False


@function("longest_text_line", cost=2)
def longest_text_line(task: Task) -> int:
    """Length in characters of the longest line of the message's text/plain parts."""
    longest = 0
    for part in _body_text_parts(task):
        if part.content_type == "text/plain":
            # Lines end at LF with an optional CR before it; dropping exactly those CRs
            # lets the split and the lengths run in C.
            lines = part.text.replace("\r\n", "\n").split("\n")
            longest = max(longest, max(map(len, lines)))
    return longest


@function("attached_message_only", cost=2)
def attached_message_only(task: Task) -> bool:
    """The message carries an attached message (message/rfc822) and almost no text of its own.

    Delivery reports (multipart/report) and digests (multipart/digest) are not counted.
    """
    root = task.message.root
    if root.content_type in ("multipart/report", "multipart/digest"):
        return False
    found = False
    own_text = 0
    stack = [root]
    while stack:
        part = stack.pop()
        if part.content_type == "message/rfc822":
            found = True
            continue  # the attached message's text is not the sender's
        if part.content_type in ("multipart/report", "multipart/digest"):
            return False
        if part.content_type in ("text/plain", "text/html") and not part.is_attachment:
            own_text += len(part.text.strip())
        stack.extend(part.children)
    return found and own_text < 20


@function("calendar_link_count", cost=3)
def calendar_link_count(task: Task) -> int:
    """Web links in text/calendar parts (or .ics files), not counting video-meeting links."""
    count = 0
    for part in task.message.leaves:
        name = (part.filename or "").lower()
        if part.content_type != "text/calendar" and not name.endswith(".ics"):
            continue
        for match in _URL.finditer(part.text[:200_000]):
            host = match.group(1).lower().rstrip(".")
            if not _MEETING_HOSTS.search(host):
                count += 1
    return count


# --- attachments ---------------------------------------------------------------------------


@function("has_fake_extension", cost=5)
def has_fake_extension(task: Task) -> bool:
    """An attachment's content contradicts its name: an ``invoice.pdf`` that is really HTML,
    an archive, or an Office document, a ``photo.jpg`` that is a web page, a ``.zip`` that
    is a RAR. Executables in disguise are MIME_BAD_ATTACHMENT's business.
    """
    for part in task.message.attachments:
        filename = part.filename
        if not filename:
            continue
        contradicting = _CONTRADICTS.get(_extension(filename))
        if contradicting is None:
            continue
        kind = sniff_kind(_head(part))
        if kind is not None and kind in contradicting:
            return True
    return False


@function("has_encrypted_archive", cost=8)
def has_encrypted_archive(task: Task) -> bool:
    """An attached zip or RAR archive with password-protected members or encrypted headers."""
    return any(
        headers or any(e.encrypted for e in entries)
        for _, entries, headers in archive_entries(task)
    )


@function("archive_has_risky_file", cost=8)
def archive_has_risky_file(task: Task) -> bool:
    """An attached zip or RAR archive holds a program, script, shortcut, disk image, OneNote
    or macro document (by the member's extension)."""
    for _, entries, _ in archive_entries(task):
        for entry in entries:
            base = entry.name.replace("\\", "/").rsplit("/", 1)[-1]
            if _extension(base) in _RISKY_EXTENSIONS:
                return True
    return False


@function("has_archive_in_archive", cost=8)
def has_archive_in_archive(task: Task) -> bool:
    """An attached zip or RAR archive contains another archive or a disk image."""
    for _, entries, _ in archive_entries(task):
        for entry in entries:
            if _extension(entry.name.rstrip("/")) in _ARCHIVE_EXTENSIONS:
                return True
    return False


# --- text ----------------------------------------------------------------------------------

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {c: i for i, c in enumerate(_BASE58)}
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {c: i for i, c in enumerate(_BECH32)}
# Candidates not preceded by a letter or digit. The look-behind comes after the first
# character, not before it: tried at every position of the text, it made the search three
# times slower than one character test that fails almost everywhere.
_LEGACY_CANDIDATE = re.compile(
    r"[13](?<![0-9A-Za-z][13])[1-9A-HJ-NP-Za-km-z]{25,34}(?![0-9A-Za-z])"
)
_BECH32_CANDIDATE = re.compile(
    r"b(?<![0-9A-Za-z]b)c1[02-9ac-hj-np-z]{11,71}(?![0-9A-Za-z])"
    r"|B(?<![0-9A-Za-z]B)C1[02-9AC-HJ-NP-Z]{11,71}(?![0-9A-Za-z])"
)


def _base58check(word: str) -> bool:
    number = 0
    for char in word:
        number = number * 58 + _BASE58_INDEX[char]
    try:
        raw = number.to_bytes(25, "big")
    except OverflowError:
        return False
    payload, checksum = raw[:21], raw[21:]
    if payload[0] not in (0x00, 0x05):
        return False
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == checksum


def _bech32_valid(word: str) -> bool:
    word = word.lower()
    hrp, _, data = word.rpartition("1")
    if hrp != "bc" or len(data) < 7:
        return False
    values = [_BECH32_INDEX[c] for c in data]
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    check = 1
    for value in [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(generator):
            if (top >> i) & 1:
                check ^= gen
    # bech32 (witness v0) or bech32m (v1+, taproot)
    return check == 1 if values[0] == 0 else check == 0x2BC830A3


def is_bitcoin_address(word: str) -> bool:
    """A legacy (base58check, P2PKH/P2SH) or segwit (bech32/bech32m) mainnet address."""
    if word[:3].lower() == "bc1":
        return _bech32_valid(word)
    return _base58check(word)


@function("has_bitcoin_address", cost=4)
def has_bitcoin_address(task: Task) -> bool:
    """The text shows a valid Bitcoin address (checksum verified, so random tokens fail)."""
    for part in task.message.text_parts:
        text = part.text[:500_000]
        # A segwit address starts bc1 or BC1: without either, one regex pass is spared.
        bech32 = "bc1" in text or "BC1" in text
        for pattern in (_LEGACY_CANDIDATE, _BECH32_CANDIDATE) if bech32 else (_LEGACY_CANDIDATE,):
            for match in pattern.finditer(text):
                if is_bitcoin_address(match.group(0)):
                    return True
    return False


@function("text_uppercase_ratio", args=(int,), cost=2)
def text_uppercase_ratio(task: Task, min_letters: int) -> float:
    """Share (0..1) of capital letters among the cased letters of the text parts.

    0 when the text has fewer than MIN_LETTERS cased letters (too short to judge).
    """
    upper = cased = 0
    for part in task.message.text_parts:
        part_upper, part_cased = _case_counts(part.text[:200_000])
        upper += part_upper
        cased += part_cased
    return upper / cased if cased >= min_letters else 0.0


@function("shouting_lines", args=(int,), cost=2)
def shouting_lines(task: Task, min_letters: int) -> int:
    """Lines of text written in capitals only, each with at least MIN_LETTERS letters."""
    count = 0
    for part in task.message.text_parts:
        text = part.text[:200_000]
        # Only lines without a lowercase letter can shout; a regex finds them without
        # looking at every character in Python (most lines of most mail are out). ASCII
        # text is cut at LF (CR LF), other text as splitlines() cuts it.
        if text.isascii():
            first = _FIRST_LINE_WITHOUT_LOWER.match(text)
            lines = _NEXT_LINE_WITHOUT_LOWER.findall(text)
            if first is not None:
                lines.append(first.group())
        elif min_letters > 0:
            # Characters of blocks without cased letters cannot make a line shout: with
            # them gone, a CJK line is too short to look at.
            lines = [
                line
                for line in text.splitlines()
                if len(line) >= min_letters and _ASCII_LOWER.search(line) is None
            ]
            lines = [_UNCASED_RUNS.sub("", line) for line in lines]
        else:  # empty lines count too (they have at least 0 letters)
            lines = text.splitlines()
        for line in lines:
            if len(line) < min_letters:
                continue  # blank and short lines cannot hold enough letters
            upper, cased = _case_counts(line)
            if cased >= min_letters and upper == cased:
                count += 1
    return count


def _case_counts(text: str) -> tuple[int, int]:
    """(upper-case letters, cased letters) of ``text``, counted at C speed: ASCII letters
    in the UTF-8 bytes, the other characters (the bytes left when the ASCII ones are
    deleted, decoded again) through ``_CaseTable``, less the blocks without cased letters."""
    data = text.encode("utf-8", "surrogatepass")
    size = len(data)
    upper = size - len(data.translate(None, _ASCII_UPPER))
    cased = size - len(data.translate(None, _ASCII_LETTERS))
    if not text.isascii():
        rest = data.translate(None, _ASCII).decode("utf-8", "surrogatepass")
        marks = _UNCASED_RUNS.sub("", rest).translate(_CASE_TABLE)
        more = marks.count("U")
        upper += more
        cased += more + marks.count("l")
    return upper, cased
