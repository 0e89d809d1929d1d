"""The matcher on Hyperscan: every pattern of one scope in one database, one pass per piece.

Theory of operation:

* Python ``re`` syntax is the reference. A pattern is translated where the dialects
  differ (``\\Z``, ``{,n}``, the ``x`` flag) and compiled with ``SINGLEMATCH`` (we only
  ask *whether* it matches) and ``ALLOWEMPTY`` (``/^$/`` must work as in ``re``).
* A pattern Hyperscan refuses (lookaround, backreferences …) is retried with
  ``PREFILTER``: Hyperscan then matches a superset, and a hit is confirmed with ``re`` on
  that piece only. Measured on a 4 KB body, that costs a fraction of running ``re`` over
  every piece. A pattern even the prefilter refuses runs on ``re`` alone. Both are
  logged once, when the database is built or loaded.
* ``u`` patterns are compiled for UTF-8, widened to ASCII classes plus every non-ASCII
  character (``_widen``) and confirmed with ``re`` where that can be written, with
  Hyperscan's Unicode properties (UCP) otherwise. Widened patterns of bounded width also
  go into a second database that reports every match end (no ``SINGLEMATCH``), scanned
  over a piece only when one of them is a candidate there: ``re`` then confirms it by
  trying only the starts within that width before an end (``_confirmed_near``). Hyperscan's behaviour on invalid UTF-8 is
  undefined, so a piece that is not valid UTF-8 is scanned a second time, with invalid
  bytes replaced, for the ``u`` patterns only (rare: decoded text is valid UTF-8).
* Compiled databases are cached on disk (``cache.py``), keyed by a hash of the
  translated patterns, their flags and the Hyperscan build; ``from_cache`` says which.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
from typing import TYPE_CHECKING

import hyperscan as hs

from engine.rules.patterns import compile_re
from engine.rules.re_backend import ReMatcher

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.rules.cache import DatabaseCache
    from engine.rules.patterns import PatternSpec, Piece

__all__ = ["HyperscanMatcher", "to_hyperscan"]

log = logging.getLogger(__name__)

_BASE_FLAGS = hs.HS_FLAG_SINGLEMATCH | hs.HS_FLAG_ALLOWEMPTY
_FLAG_BITS = {
    "i": hs.HS_FLAG_CASELESS,
    "m": hs.HS_FLAG_MULTILINE,
    "s": hs.HS_FLAG_DOTALL,
    "x": 0,  # written into the expression as (?x)
}


def to_hyperscan(pattern: str, flags: str) -> tuple[bytes, int, bool]:
    """A Python ``re`` pattern and flag letters → Hyperscan expression, flag bits, and
    whether the expression only approximates the pattern (a superset: hits need ``re``
    to confirm them)."""
    bits = _BASE_FLAGS
    approximate = False
    text = _translate(pattern)
    if "u" in flags:
        widened = _widen(text, flags)
        if widened is None:
            bits |= hs.HS_FLAG_UTF8 | hs.HS_FLAG_UCP
        else:
            text, approximate = widened, True
            bits |= hs.HS_FLAG_UTF8
    for letter in flags.replace("u", ""):
        bits |= _FLAG_BITS[letter]
    if "x" in flags:
        # Hyperscan knows (?x) but wants a comment closed by a newline.
        text = f"(?x){text}\n"
    return text.encode("utf-8", "surrogateescape"), bits, approximate


# Everything outside ASCII: what an ASCII class gains to cover its Unicode counterpart.
_NON_ASCII = "\\x{80}-\\x{10FFFF}"
_ANY_NON_ASCII = "[^\\x00-\\x7f]"
_WIDER = {"w": "\\w" + _NON_ASCII, "d": "\\d" + _NON_ASCII, "s": "\\s\\x1c-\\x1f" + _NON_ASCII}
# Python's Unicode case folding ties these ASCII letters to non-ASCII ones (the Kelvin
# sign, the long s, the Turkish dotted and dotless i); Hyperscan's ASCII folding does not.
_ASCII_FOLDS = {"i": "[iI\\x{130}\\x{131}]", "k": "[kK\\x{212A}]", "s": "[sS\\x{17F}]"}
_FOLDS_TO_ASCII = frozenset("\u0130\u0131\u017f\u212a")


def _widen(pattern: str, flags: str) -> str | None:
    """A ``u`` pattern as a UTF-8 pattern without Unicode properties that matches at
    least what Python matches, or None when that cannot be written.

    Why: Hyperscan's Unicode mode (UCP) refuses ``\\b`` and takes seconds to compile
    repeated negated classes (``[_\\W]{0,2}`` twenty times took 16 s). Without UCP,
    ``\\w``/``\\d``/``\\s`` gain every non-ASCII character, ``\\W``/``\\D``/``\\S``
    and negated classes already include them, and ``\\b``/``\\B`` are dropped. With
    ``i``, a non-ASCII letter becomes any non-ASCII character and a class gains them all
    (Hyperscan folds ASCII only). ``re`` confirms every hit. Given up (None): verbose
    patterns, ``(?`` groups other than ``(?:`` under ``i``, ``\\W`` and friends inside
    a negated class, Python-only escapes.
    """
    caseless = "i" in flags
    if "x" in flags or (caseless and not _FOLDS_TO_ASCII.isdisjoint(pattern)):
        return None
    if caseless and pattern.replace("(?:", "").count("(?"):
        return None  # group names and inline flags hold letters we must not rewrite
    out: list[str] = []
    i = 0
    size = len(pattern)
    in_class = negated = False
    while i < size:
        char = pattern[i]
        if char == "\\" and i + 1 < size:
            escaped = _widen_escape(
                pattern, i, in_class=in_class, negated=negated, caseless=caseless
            )
            if escaped is None:
                return None
            text, i = escaped
            out.append(text)
            continue
        if in_class:
            if char == "]":
                in_class = False
                if caseless and not negated:
                    out.append(_NON_ASCII)
            out.append(char)
            i += 1
            continue
        if char == "[":
            in_class = True
            negated = pattern.startswith("^", i + 1)
            opening = "[^" if negated else "["
            i += len(opening)
            if pattern.startswith("]", i):  # a leading ] is a literal
                opening += "]"
                i += 1
            out.append(opening)
            continue
        if char == "(" and pattern.startswith("(?:", i):
            out.append("(?:")
            i += 3
            continue
        if caseless and char.lower() in _ASCII_FOLDS:
            out.append(_ASCII_FOLDS[char.lower()])
        elif caseless and not char.isascii():
            out.append(_ANY_NON_ASCII)
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _widen_escape(
    pattern: str, i: int, *, in_class: bool, negated: bool, caseless: bool
) -> tuple[str, int] | None:
    """The escape at ``pattern[i]`` (a backslash) widened, and the index after it."""
    letter = pattern[i + 1]
    if letter in "uUx":  # \xhh, \uXXXX: Hyperscan spells every one \x{...}
        digits = {"x": 2, "u": 4, "U": 8}[letter]
        code = pattern[i + 2 : i + 2 + digits]
        if caseless and not in_class and int(code, 16) >= 0x80:
            return _ANY_NON_ASCII, i + 2 + digits
        return "\\x{" + code + "}", i + 2 + digits
    if letter == "N" or letter.isdigit():
        return None  # \N{NAME} and octal or group references: leave them to UCP
    if in_class and negated and letter in "WDS":
        return None
    if letter in _WIDER and not negated:  # [^\\w] is already wider without UCP
        return (_WIDER[letter] if in_class else f"[{_WIDER[letter]}]"), i + 2
    if letter in "bB" and not in_class:
        return "(?:)", i + 2
    return "\\" + letter, i + 2


def _translate(pattern: str) -> str:
    """Where PCRE reads Python syntax differently: ``\\Z`` is PCRE's ``\\z``, and PCRE
    takes ``{,n}`` literally where Python means ``{0,n}``."""
    if "\\Z" not in pattern and "{," not in pattern:
        return pattern
    out: list[str] = []
    i = 0
    in_class = False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            pair = pattern[i : i + 2]
            out.append("\\z" if pair == "\\Z" and not in_class else pair)
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "{" and pattern.startswith("{,", i):
            close = pattern.find("}", i)
            if close > 0 and pattern[i + 2 : close].isdigit():
                out.append("{0," + pattern[i + 2 : close] + "}")
                i = close + 1
                continue
        out.append(char)
        i += 1
    return "".join(out)


_EMPTY_MULTILINE = (
    "matches the empty string in multiline mode, where PCRE and Python differ after a final newline"
)


def _differs_from_re(spec: PatternSpec) -> bool:
    """In multiline mode Python lets ``^`` match after a final newline and PCRE does not:
    a pattern that can match the empty string there (``^$``, ``^\\s*$``) stays on re."""
    if "m" not in spec.flags:
        return False
    try:
        rx = compile_re(spec)
    except re.error:
        return False
    sample: str | bytes = "x\n" if spec.unicode else b"x\n"
    return any(m.start() == 2 for m in rx.finditer(sample))  # type: ignore[arg-type]


def _collect(pid: int, start: int, end: int, flags: int, found: object) -> None:
    found.add(pid)  # type: ignore[attr-defined]  # the context is always our set


def _collect_ends(pid: int, start: int, end: int, flags: int, ends: object) -> None:
    ends.setdefault(pid, []).append(end)  # type: ignore[attr-defined]  # always our dict


def _compile(exprs: Sequence[bytes], ids: Sequence[int], flags: Sequence[int]) -> hs.Database:
    db = hs.Database(mode=hs.HS_MODE_BLOCK)
    db.compile(expressions=list(exprs), ids=list(ids), elements=len(exprs), flags=list(flags))
    return db


def _is_valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class HyperscanMatcher:
    """One scope's patterns in one Hyperscan database; ``scan`` as in ``Matcher``."""

    def __init__(self, specs: Sequence[PatternSpec], cache: DatabaseCache, scope: str) -> None:
        by_id = {s.id: s for s in specs}
        unsafe = {s.id: _EMPTY_MULTILINE for s in specs if _differs_from_re(s)}
        translated: dict[int, tuple[bytes, int]] = {}
        approximate: set[int] = set()
        for spec in specs:
            if spec.id not in unsafe:
                expr, bits, approx = to_hyperscan(spec.pattern, spec.flags)
                translated[spec.id] = (expr, bits)
                if approx:
                    approximate.add(spec.id)
        db, prefilter, refused, self.from_cache = self._database(cache, scope, translated)
        refused = unsafe | refused
        for pid, reason in sorted(prefilter.items()):
            log.info(
                "%s: Hyperscan runs it as a prefilter, confirmed by Python re (%s)",
                by_id[pid].label,
                reason,
            )
        for pid, reason in sorted(refused.items()):
            log.warning(
                "%s: runs on Python re alone (Hyperscan: %s); prefer a simpler pattern",
                by_id[pid].label,
                reason,
            )
        self._db = db
        self._utf8 = frozenset(s.id for s in specs if s.unicode)
        # Hits of these are only candidates: re says whether they really match.
        self._prefilter = frozenset(prefilter) | frozenset(approximate)
        self._confirm = ReMatcher([by_id[i] for i in self._prefilter])
        self._fallback = ReMatcher([by_id[i] for i in refused]) if refused else None
        self.hyperscan_ids = frozenset(by_id) - frozenset(refused)
        # Widened patterns of bounded width (and not prefiltered on top: a prefilter
        # promises nothing about where matches end) in a second database that reports
        # every match end, scanned only over a piece where one of them is a candidate.
        widths = {pid: _max_width(by_id[pid]) for pid in approximate if pid not in prefilter}
        ends = {
            pid: (translated[pid][0], translated[pid][1] & ~hs.HS_FLAG_SINGLEMATCH)
            for pid, width in widths.items()
            if width is not None
        }
        self._ends_db: hs.Database | None = None
        self._windowed: dict[int, int] = {}
        if ends:
            self._ends_db, ends_prefilter, ends_refused, _ = self._database(
                cache, f"{scope}.ends", ends
            )
            self._windowed = {
                pid: width
                for pid, width in widths.items()
                if pid in ends and width is not None
                if pid not in ends_prefilter and pid not in ends_refused
            }

    @classmethod
    def _database(
        cls, cache: DatabaseCache, name: str, translated: dict[int, tuple[bytes, int]]
    ) -> tuple[hs.Database | None, dict[int, str], dict[int, str], bool]:
        """(database, prefiltered ids, refused ids, whether it came from the cache)."""
        key = f"{name}-{_cache_key(translated)}"
        loaded = cls._load(cache, key)
        if loaded is not None:
            return (*loaded, True)
        db, prefilter, refused = _build(translated)
        if db is not None or refused:
            meta: dict[str, object] = {"prefilter": prefilter, "refused": refused}
            cache.save(key, meta, hs.dumpb(db) if db is not None else b"")
        return db, prefilter, refused, False

    @staticmethod
    def _load(
        cache: DatabaseCache, key: str
    ) -> tuple[hs.Database | None, dict[int, str], dict[int, str]] | None:
        stored = cache.load(key)
        if stored is None:
            return None
        meta, blob = stored
        try:
            prefilter = {int(k): str(v) for k, v in meta["prefilter"].items()}  # type: ignore[attr-defined]
            refused = {int(k): str(v) for k, v in meta["refused"].items()}  # type: ignore[attr-defined]
            db = None
            if blob:
                db = hs.loadb(blob, hs.HS_MODE_BLOCK)
                db.scratch = hs.Scratch(db)
        except (KeyError, TypeError, ValueError, AttributeError, hs.error) as exc:
            log.warning("ignoring an unusable Hyperscan cache entry %s: %s", key, exc)
            return None
        return db, prefilter, refused

    def scan(self, pieces: Sequence[Piece]) -> set[int]:
        found: set[int] = set()
        db = self._db
        if db is not None:
            utf8 = self._utf8
            prefilter = self._prefilter
            for data, allowed in pieces:
                hits: set[int] = set()
                # Positional arguments: keywords cost the binding a fifth of a short scan.
                db.scan(data, _collect, 0, hits)
                valid = True
                if utf8 and not data.isascii() and not _is_valid_utf8(data):
                    valid = False
                    hits -= utf8
                    more: set[int] = set()
                    clean = data.decode("utf-8", "replace").encode()
                    db.scan(clean, _collect, 0, more)
                    hits |= more & utf8
                if allowed is not None:
                    hits &= allowed
                if not prefilter.isdisjoint(hits):
                    ends: dict[int, list[int]] | None = None
                    for pid in hits & prefilter:
                        if pid in found:
                            hits.discard(pid)
                            continue
                        if valid and pid in self._windowed:
                            if ends is None:
                                ends = self._match_ends(data)
                            confirmed = self._confirmed_near(pid, data, ends.get(pid))
                        else:
                            confirmed = self._confirm.confirm(pid, data)
                        if not confirmed:
                            hits.discard(pid)
                found |= hits
        if self._fallback is not None:
            found |= self._fallback.scan(pieces)
        return found

    def _match_ends(self, data: bytes) -> dict[int, list[int]]:
        """Every match end of each windowed pattern in ``data``."""
        ends: dict[int, list[int]] = {}
        if self._ends_db is not None:
            self._ends_db.scan(data, _collect_ends, 0, ends)
        return ends

    def _confirmed_near(self, pid: int, data: bytes, ends: list[int] | None) -> bool:
        """Whether candidate ``pid`` (a windowed pattern) really matches ``data``.

        A widened pattern's real match ending at ``e`` is one of its Hyperscan matches
        (they cover the same characters), so it starts within the pattern's longest width
        before some reported end: ``re`` tries those starts only (anchored, seeing the
        whole piece around them). Measured on the pharmacy patterns, that is a few dozen
        tries instead of a search of the whole text, which took 0.8 ms a candidate; where
        the windows would cover much of the piece, the plain search is the cheaper one.
        """
        if not ends:
            return self._confirm.confirm(pid, data)
        at = ends if pid not in self._utf8 or data.isascii() else _char_offsets(data, ends)
        limit = len(data) // 8
        starts = None if at is None else _window_starts(at, self._windowed[pid], limit)
        if starts is None:
            return self._confirm.confirm(pid, data)
        return self._confirm.confirm_at(pid, data, starts)


def _char_offsets(data: bytes, ends: list[int]) -> list[int] | None:
    """The character offsets of byte offsets ``ends`` into valid UTF-8 ``data`` (Hyperscan's
    UTF-8 matches end on character boundaries); None if one does not."""
    out: list[int] = []
    position = chars = 0
    try:
        for end in sorted(set(ends)):
            chars += len(data[position:end].decode("utf-8"))
            position = end
            out.append(chars)
    except UnicodeDecodeError:
        return None
    return out


def _window_starts(ends: list[int], width: int, limit: int) -> list[range] | None:
    """The start offsets ``[e - width, e]`` of each end ``e``, merged; None past ``limit``."""
    spans: list[range] = []
    total = 0
    for end in sorted(set(ends)):
        low = max(0, end - width)
        if spans and low <= spans[-1].stop:
            total -= len(spans[-1])
            spans[-1] = range(spans[-1].start, end + 1)
        else:
            spans.append(range(low, end + 1))
        total += len(spans[-1])
        if total > limit:
            return None
    return spans


def _max_width(spec: PatternSpec) -> int | None:
    """The most characters (bytes without ``u``) a match of ``spec`` can span, when that
    is at most _MAX_WINDOW; None when unbounded or unknown."""
    try:
        rx = compile_re(spec)
        parser = re._parser  # type: ignore[attr-defined]  # the stdlib's own pattern parser
        widest = int(parser.parse(rx.pattern, rx.flags).getwidth()[1])
    except Exception:  # a private module: any surprise just means "search the whole piece"
        return None
    return widest if widest <= _MAX_WINDOW else None


_MAX_WINDOW = 1024


def _cache_key(translated: dict[int, tuple[bytes, int]]) -> str:
    material = {
        "hyperscan": hs.__version__,  # type: ignore[attr-defined]
        "machine": platform.machine(),
        "patterns": [(pid, expr.hex(), bits) for pid, (expr, bits) in sorted(translated.items())],
    }
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:32]


def _build(
    translated: dict[int, tuple[bytes, int]],
) -> tuple[hs.Database | None, dict[int, str], dict[int, str]]:
    """Compile; find the refused patterns one by one only when the whole set fails."""
    ids = sorted(translated)
    if not ids:
        return None, {}, {}
    exprs = [translated[i][0] for i in ids]
    flags = [translated[i][1] for i in ids]
    try:
        return _compile(exprs, ids, flags), {}, {}
    except hs.error:
        pass
    prefilter: dict[int, str] = {}
    refused: dict[int, str] = {}
    for n, pid in enumerate(ids):
        try:
            _compile([exprs[n]], [pid], [flags[n]])
            continue
        except hs.error as exc:
            reason = str(exc)
        try:
            _compile([exprs[n]], [pid], [flags[n] | hs.HS_FLAG_PREFILTER])
            prefilter[pid] = reason
            flags[n] |= hs.HS_FLAG_PREFILTER
        except hs.error:
            refused[pid] = reason
    keep = [n for n, pid in enumerate(ids) if pid not in refused]
    if not keep:
        return None, prefilter, refused
    try:
        db = _compile([exprs[n] for n in keep], [ids[n] for n in keep], [flags[n] for n in keep])
    except hs.error as exc:  # each compiles alone but not together (size limits): all on re
        log.warning("Hyperscan cannot build the combined database (%s); using Python re", exc)
        return None, {}, {ids[n]: str(exc) for n in keep} | refused
    return db, prefilter, refused
