"""Regexp atoms: ``[NAME[:first]=]/PATTERN/FLAGS[{TYPE}]``.

The tokenizer hands us the position of the opening slash; we find the closing one (a
slash inside ``[...]`` or escaped as ``\\/`` does not close), read the flags and the
optional ``{scope}``, and check that the name and the scope go together. Whether the
pattern compiles, and whether a selector name exists, is the compiler's job: it reports
those with this atom's column.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from engine.rules.errors import ExpressionError

__all__ = ["FLAGS", "RegexpAtom", "Scope", "parse_regexp_atom"]

FLAGS = frozenset("imsxu")


class Scope(Enum):
    """What a regexp atom is matched against (see docs/writing-a-rule.md)."""

    HEADER = "header"
    RAW_HEADER = "raw_header"
    SELECTOR = "selector"
    URL = "url"
    EMAIL = "email"
    MIME = "mime"
    HTML = "html"
    BODY = "body"
    RAW_MESSAGE = "raw_message"

    @property
    def cost(self) -> int:
        """Relative cost of the first atom of this scope: what gathering and scanning its
        data takes (headers are at hand; the raw message is the largest buffer)."""
        return _COSTS[self]

    @property
    def named(self) -> bool:
        """Whether atoms of this scope need ``NAME=`` (a header or a selector)."""
        return self in (Scope.HEADER, Scope.RAW_HEADER, Scope.SELECTOR)


_COSTS = {
    Scope.HEADER: 2,
    Scope.RAW_HEADER: 2,
    Scope.SELECTOR: 3,
    Scope.URL: 6,
    Scope.EMAIL: 6,
    Scope.MIME: 10,
    Scope.HTML: 12,
    Scope.BODY: 15,
    Scope.RAW_MESSAGE: 20,
}


@dataclass(slots=True, frozen=True)
class RegexpAtom:
    """One regexp atom as written.

    ``name`` is the header or selector name (``None`` for unnamed scopes); ``flags`` the
    flag letters in canonical order; ``text`` the atom's source, for messages.
    """

    name: str | None
    first: bool
    pattern: str
    flags: str
    scope: Scope
    column: int
    text: str

    @property
    def key(self) -> tuple[Scope, str, bool, str, str]:
        """Identity for sharing: equal atoms in different rules are matched once."""
        name = self.name.lower() if self.name is not None else ""
        return (self.scope, name, self.first, self.pattern, self.flags)


def parse_regexp_atom(
    text: str, pos: int, name: str | None, *, first: bool, column: int
) -> tuple[RegexpAtom, int]:
    """Parse the atom whose pattern opens with the slash at ``text[pos]``.

    Args:
        text: the whole expression.
        pos: index of the opening slash.
        name: the ``NAME`` written before ``=``, if any.
        first: whether ``:first`` was written.
        column: the atom's column (where ``NAME`` or the slash starts), for messages.

    Returns:
        The atom and the index just after it.

    Raises:
        ExpressionError: unterminated pattern, unknown flag or scope, name and scope that
            do not go together.
    """
    end = _closing_slash(text, pos)
    if end < 0:
        raise ExpressionError("unterminated regular expression (no closing '/')", pos + 1)
    pattern = text[pos + 1 : end]
    i = end + 1
    flags: set[str] = set()
    while i < len(text) and text[i].isalpha():
        if text[i] not in FLAGS:
            raise ExpressionError(f"unknown regexp flag {text[i]!r} (known: i m s x u)", i + 1)
        flags.add(text[i])
        i += 1
    scope = Scope.HEADER if name is not None else Scope.MIME
    if i < len(text) and text[i] == "{":
        close = text.find("}", i)
        if close < 0:
            raise ExpressionError("unterminated '{' (scope)", i + 1)
        word = text[i + 1 : close].strip()
        try:
            scope = Scope(word)
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ExpressionError(f"unknown scope {{{word}}} (known: {known})", i + 1) from None
        i = close + 1
    if name is None and scope.named:
        raise ExpressionError(
            f"{{{scope.value}}} needs a name in front: Name=/.../{{{scope.value}}}", column
        )
    if name is not None and not scope.named:
        raise ExpressionError(
            f"a name ({name}=) only goes with {{header}}, {{raw_header}} or {{selector}}, "
            f"not {{{scope.value}}}",
            column,
        )
    if first and scope is Scope.SELECTOR:
        raise ExpressionError("':first' only goes with {header} and {raw_header}", column)
    canonical = "".join(f for f in "imsxu" if f in flags)
    start = column - 1
    return RegexpAtom(name, first, pattern, canonical, scope, column, text[start:i]), i


def _closing_slash(text: str, pos: int) -> int:
    """Index of the slash that ends the pattern opened at ``pos``, or -1."""
    i = pos + 1
    in_class = False
    size = len(text)
    while i < size:
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            # ``[]...]`` and ``[^]...]``: a ``]`` right at the start is a literal.
            if text.startswith("^", i + 1):
                i += 1
            if text.startswith("]", i + 1):
                i += 1
        elif char == "/":
            return i
        i += 1
    return -1
