"""What every matcher backend shares: a pattern with its flags, a piece of data, the
interface, and the compilation of a pattern for Python ``re`` (the reference semantics:
every pattern must compile there, whatever backend then runs it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Matcher", "PatternSpec", "Piece", "compile_re"]

# One piece of a scope's data and the pattern ids that may match it (None: all of them).
# A header scope restricts each header value to the patterns written for that header.
Piece = tuple[bytes, "frozenset[int] | None"]


@dataclass(slots=True, frozen=True)
class PatternSpec:
    """A pattern as the rule wrote it. ``flags`` is a subset of ``imsxu`` in that order;
    ``label`` names where it came from, for log lines."""

    id: int
    pattern: str
    flags: str
    label: str = ""

    @property
    def unicode(self) -> bool:
        return "u" in self.flags


class Matcher(Protocol):
    """One scope's compiled patterns."""

    def scan(self, pieces: Sequence[Piece]) -> set[int]:
        """The ids of the patterns that match at least one piece they are allowed on."""
        ...


def compile_re(spec: PatternSpec) -> re.Pattern[str] | re.Pattern[bytes]:
    """The pattern for Python ``re``: bytes without ``u`` (it matches UTF-8 bytes, ``i``
    folds ASCII only), str with ``u`` (matched against the data decoded as UTF-8).

    Raises:
        re.error: the pattern is not valid.
    """
    flags = 0
    if "i" in spec.flags:
        flags |= re.IGNORECASE
    if "m" in spec.flags:
        flags |= re.MULTILINE
    if "s" in spec.flags:
        flags |= re.DOTALL
    if "x" in spec.flags:
        flags |= re.VERBOSE
    if spec.unicode:
        return re.compile(spec.pattern, flags)
    return re.compile(spec.pattern.encode("utf-8", "surrogateescape"), flags)
