"""The expression language that rules and composites share: tokenizer, parser, AST.

Grammar (docs/writing-a-rule.md has the user's version)::

    expr    := or
    or      := and  ( ('|' | '||' | 'or')  and )*
    and     := cmp  ( ('&' | '&&' | 'and') cmp )*
    cmp     := sum  ( ('>=' | '>' | '<=' | '<' | '==' | '!=') sum )?
    sum     := unary ( ('+' | '-') unary )*
    unary   := ('!' | 'not') unary | primary
    primary := '(' expr ')' | NUMBER | REGEXP_ATOM | FUNCTION_CALL | SYMBOL | GROUP_ATOM

Theory of operation: the tokenizer recognises whole atoms (a regexp atom with its flags
and scope, a function call with its arguments) so the parser only sees operators and
operands. Every node keeps the 1-based column where it starts, and every error is an
``ExpressionError`` naming one. The parser accepts every kind of atom; what a rule or a
composite may use is checked by its compiler, which knows the context and can say so.

Values: an atom is 1 when true and 0 when false; a function may return any number. A
non-zero value is true. ``&``/``|`` yield 1 or 0; ``+``/``-`` add values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.rules.atoms import RegexpAtom, parse_regexp_atom
from engine.rules.errors import ExpressionError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "And",
    "Arg",
    "Call",
    "Compare",
    "ExpressionError",
    "GroupRef",
    "Node",
    "Not",
    "Number",
    "Or",
    "Sum",
    "SymbolRef",
    "iter_atoms",
    "parse",
]


@dataclass(slots=True, frozen=True)
class Number:
    value: float
    column: int


@dataclass(slots=True, frozen=True)
class Arg:
    """One function argument as written: ``kind`` is ``word``, ``number`` or ``string``."""

    text: str
    kind: str
    column: int


@dataclass(slots=True, frozen=True)
class Call:
    name: str
    args: tuple[Arg, ...]
    column: int


@dataclass(slots=True, frozen=True)
class SymbolRef:
    name: str
    column: int


@dataclass(slots=True, frozen=True)
class GroupRef:
    name: str
    positive_only: bool
    column: int


@dataclass(slots=True, frozen=True)
class Not:
    operand: Node
    column: int


@dataclass(slots=True, frozen=True)
class And:
    operands: tuple[Node, ...]
    column: int


@dataclass(slots=True, frozen=True)
class Or:
    operands: tuple[Node, ...]
    column: int


@dataclass(slots=True, frozen=True)
class Sum:
    """``a + b - c``: ``signs`` holds +1 or -1 for each operand (the first is always +1)."""

    operands: tuple[Node, ...]
    signs: tuple[int, ...]
    column: int


@dataclass(slots=True, frozen=True)
class Compare:
    op: str
    left: Node
    right: Node
    column: int


Node = Number | Call | SymbolRef | GroupRef | RegexpAtom | Not | And | Or | Sum | Compare

# -- tokens ---------------------------------------------------------------------------------

_WS = re.compile(r"\s*")
# ``Name=/…/`` or ``Name:first=/…/``: a header or selector name in front of a regexp atom.
# ``==`` is a comparison, so an ``=`` followed by another ``=`` is not an atom.
_NAMED_ATOM = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]*)(:[A-Za-z]+)?=(?!=)")
_GROUP = re.compile(r"g(\+?):([A-Za-z0-9_.-]+)")
_BARE_GROUP = re.compile(r"g\+?:")
_CALL = re.compile(r"([a-z_][a-z0-9_]*)\s*\(")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOL = re.compile(r"[A-Z][A-Z0-9_]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_BAD_NUMBER = re.compile(r"\d[A-Za-z0-9_.]*")
_OPERATORS = ("||", "&&", ">=", "<=", "==", "!=", "|", "&", "!", ">", "<", "+", "-", "(", ")")
_KEYWORDS = {"and": "&", "or": "|", "not": "!"}
_ARG_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?=[\s,)])")
_ARG_WORD = re.compile(r"[^\s,()'\"]+")

# Token kinds: "op" (value: the canonical operator), "operand" (value: a Node).
_Token = tuple[str, str | Node, int]


def parse(text: str) -> Node:
    """Parse an expression.

    Args:
        text: the expression as written in the configuration.

    Returns:
        The root node.

    Raises:
        ExpressionError: the expression is malformed; ``column`` says where.
    """
    tokens = list(_tokenize(text))
    parser = _Parser(tokens, len(text) + 1)
    node = parser.expr()
    if parser.pos < len(tokens):
        raise parser.unexpected()
    return node


def iter_atoms(node: Node) -> Iterator[Node]:
    """Every leaf of the tree (numbers included), left to right."""
    if isinstance(node, Not):
        yield from iter_atoms(node.operand)
    elif isinstance(node, And | Or | Sum):
        for child in node.operands:
            yield from iter_atoms(child)
    elif isinstance(node, Compare):
        yield from iter_atoms(node.left)
        yield from iter_atoms(node.right)
    else:
        yield node


def _tokenize(text: str) -> Iterator[_Token]:
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    size = len(text)
    while pos < size:
        column = pos + 1
        token, pos = _next_token(text, pos, column)
        yield token
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]


def _next_token(text: str, pos: int, column: int) -> tuple[_Token, int]:
    char = text[pos]
    if char == "/":
        atom, end = parse_regexp_atom(text, pos, None, first=False, column=column)
        return ("operand", atom, column), end
    named = _NAMED_ATOM.match(text, pos)
    if named:
        return _named_atom(text, named, column)
    group = _GROUP.match(text, pos)
    if group and not _continues_word(text, group.end()):
        node = GroupRef(group.group(2), group.group(1) == "+", column)
        return ("operand", node, column), group.end()
    if _BARE_GROUP.match(text, pos):
        raise ExpressionError(f"unexpected {text[pos : pos + 3].strip()!r}", column)
    call = _CALL.match(text, pos)
    if call:
        args, end = _parse_args(text, call.end(), column)
        return ("operand", Call(call.group(1), args, column), column), end
    word = _WORD.match(text, pos)
    if word:
        value = word.group(0)
        if value in _KEYWORDS:
            return ("op", _KEYWORDS[value], column), word.end()
        if _SYMBOL.fullmatch(value) and not _continues_word(text, word.end()):
            return ("operand", SymbolRef(value, column), column), word.end()
        raise ExpressionError(f"unexpected {_word_at(text, pos)!r}", column)
    number = _NUMBER.match(text, pos)
    if number:
        if _continues_word(text, number.end()):
            raise ExpressionError(f"unexpected {_BAD_NUMBER.match(text, pos).group(0)!r}", column)  # type: ignore[union-attr]
        return ("operand", Number(float(number.group(0)), column), column), number.end()
    for op in _OPERATORS:
        if text.startswith(op, pos):
            canonical = op[0] if op in ("||", "&&") else op
            return ("op", canonical, column), pos + len(op)
    raise ExpressionError(f"unexpected {text[pos : pos + 10]!r}", column)


def _named_atom(text: str, named: re.Match[str], column: int) -> tuple[_Token, int]:
    modifier = named.group(2)
    if modifier is not None and modifier != ":first":
        raise ExpressionError(
            f"unknown modifier {modifier!r} (only ':first' is known)", named.start(2) + 1
        )
    end = named.end()
    if end >= len(text) or text[end] != "/":
        raise ExpressionError(f"expected '/' after {named.group(0)!r}", end + 1)
    atom, after = parse_regexp_atom(
        text, end, named.group(1), first=modifier is not None, column=column
    )
    return ("operand", atom, column), after


def _continues_word(text: str, pos: int) -> bool:
    return pos < len(text) and (text[pos].isalnum() or text[pos] in "_.-:")


def _word_at(text: str, pos: int) -> str:
    match = re.compile(r"[^\s()&|!<>=+,]+").match(text, pos)
    return match.group(0) if match else text[pos]


def _parse_args(text: str, pos: int, column: int) -> tuple[tuple[Arg, ...], int]:
    """The arguments of a call, from just after ``(`` to just after ``)``."""
    args: list[Arg] = []
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if text.startswith(")", pos):
        return (), pos + 1
    while True:
        if pos >= len(text):
            raise ExpressionError("expected ')' to close the call", column)
        arg, pos = _parse_arg(text, pos)
        args.append(arg)
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if text.startswith(")", pos):
            return tuple(args), pos + 1
        if not text.startswith(",", pos):
            raise ExpressionError("expected ',' or ')' in the argument list", pos + 1)
        pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]


def _parse_arg(text: str, pos: int) -> tuple[Arg, int]:
    column = pos + 1
    quote = text[pos]
    if quote in "'\"":
        out: list[str] = []
        i = pos + 1
        while i < len(text):
            char = text[i]
            if char == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if char == quote:
                return Arg("".join(out), "string", column), i + 1
            out.append(char)
            i += 1
        raise ExpressionError("unterminated string", column)
    number = _ARG_NUMBER.match(text, pos)
    if number:
        return Arg(number.group(0), "number", column), number.end()
    word = _ARG_WORD.match(text, pos)
    if word is None:
        raise ExpressionError(f"unexpected {text[pos]!r} in the argument list", column)
    return Arg(word.group(0), "word", column), word.end()


class _Parser:
    """Recursive descent over the token list; ``pos`` is the next token."""

    def __init__(self, tokens: list[_Token], end: int) -> None:
        self.tokens = tokens
        self.end = end
        self.pos = 0

    def _op(self) -> str | None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "op":
            return self.tokens[self.pos][1]  # type: ignore[return-value]
        return None

    def _column(self) -> int:
        return self.tokens[self.pos][2] if self.pos < len(self.tokens) else self.end

    def unexpected(self) -> ExpressionError:
        kind, value, column = self.tokens[self.pos]
        shown = value if kind == "op" else _describe(value)  # type: ignore[arg-type]
        return ExpressionError(f"unexpected {shown!r}", column)

    def expr(self) -> Node:
        return self._chain("|", Or, self._and)

    def _and(self) -> Node:
        return self._chain("&", And, self._cmp)

    def _chain(self, op: str, cls: type[And] | type[Or], operand: Callable[[], Node]) -> Node:
        column = self._column()
        operands = [operand()]
        while self._op() == op:
            self.pos += 1
            operands.append(operand())
        return operands[0] if len(operands) == 1 else cls(tuple(operands), column)

    def _cmp(self) -> Node:
        column = self._column()
        left = self._sum()
        op = self._op()
        if op not in (">=", ">", "<=", "<", "==", "!="):
            return left
        self.pos += 1
        right = self._sum()
        if self._op() in (">=", ">", "<=", "<", "==", "!="):
            raise ExpressionError("comparisons do not chain; use '&'", self._column())
        return Compare(op, left, right, column)

    def _sum(self) -> Node:
        column = self._column()
        operands = [self._unary()]
        signs = [1]
        while (op := self._op()) in ("+", "-"):
            self.pos += 1
            operands.append(self._unary())
            signs.append(1 if op == "+" else -1)
        if len(operands) == 1:
            return operands[0]
        return Sum(tuple(operands), tuple(signs), column)

    def _unary(self) -> Node:
        if self._op() == "!":
            column = self._column()
            self.pos += 1
            return Not(self._unary(), column)
        return self._primary()

    def _primary(self) -> Node:
        if self.pos >= len(self.tokens):
            raise ExpressionError("expression ends too early", self.end)
        kind, value, _ = self.tokens[self.pos]
        if kind == "operand":
            self.pos += 1
            return value  # type: ignore[return-value]
        if value == "(":
            self.pos += 1
            node = self.expr()
            if self._op() != ")":
                raise ExpressionError("expected ')'", self._column())
            self.pos += 1
            return node
        raise self.unexpected()


def _describe(node: Node) -> str:
    if isinstance(node, SymbolRef | Call | GroupRef):
        return node.name
    if isinstance(node, Number):
        return f"{node.value:g}"
    if isinstance(node, RegexpAtom):
        return node.text
    return type(node).__name__
