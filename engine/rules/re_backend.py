"""The matcher on Python ``re``: the fallback when Hyperscan is missing or refuses a
pattern, and the reference the Hyperscan backend is tested against.

A pattern already matched is not tried again on later pieces, and a piece restricted to
some patterns (a header value) tries only those, so the cost is one ``search`` per
pattern per piece it is allowed on, at worst.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.rules.patterns import PatternSpec, Piece, compile_re

if TYPE_CHECKING:
    import re
    from collections.abc import Iterable, Sequence

__all__ = ["ReMatcher"]


class ReMatcher:
    """Patterns compiled with ``re``; ``scan`` as in ``Matcher``."""

    def __init__(self, specs: Sequence[PatternSpec]) -> None:
        # bytes patterns search the piece itself, str (``u``) ones its UTF-8 decoding
        self._bytes: dict[int, re.Pattern[bytes]] = {}
        self._text: dict[int, re.Pattern[str]] = {}
        for spec in specs:
            rx = compile_re(spec)
            if isinstance(rx.pattern, str):
                self._text[spec.id] = rx
            else:
                self._bytes[spec.id] = rx
        self.ids = frozenset(self._bytes) | frozenset(self._text)

    def scan(self, pieces: Sequence[Piece]) -> set[int]:
        found: set[int] = set()
        by_bytes, by_text = self._bytes, self._text
        for data, allowed in pieces:
            text: str | None = None
            ids = self.ids if allowed is None else allowed & self.ids
            for pid in ids - found:
                rx = by_bytes.get(pid)
                if rx is not None:
                    hit = rx.search(data) is not None
                else:
                    if text is None:
                        text = data.decode("utf-8", "surrogateescape")
                    hit = by_text[pid].search(text) is not None
                if hit:
                    found.add(pid)
        return found

    def confirm_at(self, pid: int, data: bytes, starts: Iterable[range]) -> bool:
        """Whether pattern ``pid`` matches ``data`` starting at one of ``starts`` (offsets
        into the data as the pattern sees it: bytes, or characters for ``u`` patterns).
        Look-behind still sees what comes before a start, look-ahead what follows."""
        rx_bytes = self._bytes.get(pid)
        if rx_bytes is not None:
            return any(rx_bytes.match(data, at) is not None for span in starts for at in span)
        rx_text, text = self._text[pid], data.decode("utf-8", "surrogateescape")
        return any(rx_text.match(text, at) is not None for span in starts for at in span)

    def confirm(self, pid: int, data: bytes) -> bool:
        """Whether pattern ``pid`` really matches ``data`` (Hyperscan's prefilter check)."""
        rx = self._bytes.get(pid)
        if rx is not None:
            return rx.search(data) is not None
        return self._text[pid].search(data.decode("utf-8", "surrogateescape")) is not None
