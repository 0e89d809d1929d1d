"""Maps: lists of entries kept as data (one entry a line, ``#`` comments)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["read_map_entries"]


def read_map_entries(path: Path) -> list[str]:
    """The entries of a map file: stripped lines, comments and blank lines dropped."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries.append(entry)
    return entries
