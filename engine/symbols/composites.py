"""Composite symbols: boolean expressions over other symbols and groups.

Grammar (a subset of Rspamd's, extended in later releases of the rules engine)::

    expr  := term ('|' term)*
    term  := unary ('&' unary)*
    unary := '!' unary | '(' expr ')' | atom
    atom  := SYMBOL | 'g:' GROUP | 'g+:' GROUP

``g:`` is true when any symbol of the group matched; ``g+:`` only counts symbols with a
positive score. When a composite matches, its policy decides what happens to the atoms
that made it true (negated atoms are never touched): ``remove_all`` drops them,
``remove_weight`` keeps them at zero weight, ``remove_symbol`` hides them but keeps their
score, ``leave`` keeps them as they were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from engine.symbols.results import SymbolHit

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.symbols.spec import SymbolSpec

__all__ = ["Composite", "CompositeError", "Policy", "evaluate_composites", "parse_expression"]


class CompositeError(ValueError):
    """A composite expression that does not parse or refers to nothing."""


class Policy(Enum):
    REMOVE_ALL = "remove_all"
    REMOVE_WEIGHT = "remove_weight"
    REMOVE_SYMBOL = "remove_symbol"
    LEAVE = "leave"


_TOKEN = re.compile(r"\s*(?:(g\+?:[A-Za-z0-9_.-]+)|([A-Z][A-Z0-9_]*)|([&|!()]))")


@dataclass(slots=True, frozen=True)
class _Atom:
    name: str
    group: bool = False
    positive_only: bool = False


@dataclass(slots=True, frozen=True)
class _Not:
    operand: _Node


@dataclass(slots=True, frozen=True)
class _And:
    operands: tuple[_Node, ...]


@dataclass(slots=True, frozen=True)
class _Or:
    operands: tuple[_Node, ...]


_Node = _Atom | _Not | _And | _Or


@dataclass(slots=True, frozen=True)
class Composite:
    name: str
    expression: str
    tree: _Node
    policy: Policy = Policy.REMOVE_ALL

    @property
    def symbol_refs(self) -> set[str]:
        return {a.name for a in _atoms(self.tree) if not a.group}

    @property
    def group_refs(self) -> set[str]:
        return {a.name for a in _atoms(self.tree) if a.group}


def parse_expression(text: str) -> _Node:
    """Parse ``text``; a ``CompositeError`` names the (1-based) column where it went wrong."""
    tokens: list[str] = []
    columns: list[int] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            rest = text[pos:].lstrip()
            if rest == "":
                break
            at = len(text) - len(rest)
            raise CompositeError(f"unexpected {rest[:10]!r} at column {at + 1}")
        tokens.append(match.group(match.lastindex or 0))
        columns.append(match.start(match.lastindex or 0) + 1)
        pos = match.end()
    parser = _Parser(tokens, columns, len(text) + 1)
    node = parser.expr()
    if parser.pos != len(tokens):
        raise parser.error(f"unexpected {tokens[parser.pos]!r}")
    return node


class _Parser:
    def __init__(self, tokens: list[str], columns: list[int], end: int) -> None:
        self.tokens = tokens
        self.columns = columns
        self.end = end
        self.pos = 0

    def error(self, message: str) -> CompositeError:
        at = self.columns[self.pos] if self.pos < len(self.columns) else self.end
        return CompositeError(f"{message} at column {at}")

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self) -> _Node:
        operands = [self.term()]
        while self._peek() == "|":
            self.pos += 1
            operands.append(self.term())
        return operands[0] if len(operands) == 1 else _Or(tuple(operands))

    def term(self) -> _Node:
        operands = [self.unary()]
        while self._peek() == "&":
            self.pos += 1
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else _And(tuple(operands))

    def unary(self) -> _Node:
        token = self._peek()
        if token is None:
            raise self.error("expression ends too early")
        self.pos += 1
        if token == "!":
            return _Not(self.unary())
        if token == "(":
            node = self.expr()
            if self._peek() != ")":
                raise self.error("missing ')'")
            self.pos += 1
            return node
        if token in ("&", "|", ")"):
            self.pos -= 1
            raise self.error(f"unexpected {token!r}")
        if token.startswith("g+:"):
            return _Atom(token[3:], group=True, positive_only=True)
        if token.startswith("g:"):
            return _Atom(token[2:], group=True)
        return _Atom(token)


def _atoms(node: _Node) -> list[_Atom]:
    if isinstance(node, _Atom):
        return [node]
    if isinstance(node, _Not):
        return _atoms(node.operand)
    return [a for child in node.operands for a in _atoms(child)]


def _eval(
    node: _Node,
    hits: Mapping[str, SymbolHit],
    specs: Mapping[str, SymbolSpec],
    matched: set[str],
) -> bool:
    if isinstance(node, _Atom):
        if not node.group:
            if node.name in hits:
                matched.add(node.name)
                return True
            return False
        found = [
            n
            for n, h in hits.items()
            if specs[n].group == node.name
            and (not node.positive_only or specs[n].score * h.weight > 0)
        ]
        matched.update(found)
        return bool(found)
    if isinstance(node, _Not):
        return not _eval(node.operand, hits, specs, set())
    if isinstance(node, _And):
        local: set[str] = set()
        if all(_eval(child, hits, specs, local) for child in node.operands):
            matched.update(local)
            return True
        return False
    # Every operand is judged (no short cut): with A | B both atoms that are true made the
    # composite true, and the policy applies to both, whichever is written first.
    results = [_eval(child, hits, specs, matched) for child in node.operands]
    return any(results)


def evaluate_composites(
    composites: list[Composite], hits: dict[str, SymbolHit], specs: Mapping[str, SymbolSpec]
) -> None:
    """Insert every composite that matches (in dependency order) and apply its policy.

    Atoms are judged on the symbols as they were before any policy removed them, so two
    composites sharing an atom both fire (Rspamd's behaviour).
    """
    snapshot = dict(hits)
    to_apply: list[tuple[Composite, set[str]]] = []
    for composite in composites:
        matched: set[str] = set()
        if _eval(composite.tree, snapshot, specs, matched):
            hit = SymbolHit(composite.name)
            hits[composite.name] = hit
            snapshot[composite.name] = hit
            to_apply.append((composite, matched))
    for composite, matched in to_apply:
        for name in matched:
            if name not in hits:
                continue
            if composite.policy is Policy.REMOVE_ALL:
                del hits[name]
            elif composite.policy is Policy.REMOVE_WEIGHT:
                hits[name].weight = 0.0
            elif composite.policy is Policy.REMOVE_SYMBOL:
                hits[name].hidden = True
