"""Composite symbols: expressions over other symbols and groups, with a policy.

Composites share the rule language's parser (``engine.rules.expression``; grammar in
docs/writing-a-rule.md) and may use symbols (``SYMBOL``), groups (``g:group``, and
``g+:group`` for symbols with a positive score only), numbers and every operator,
``A + B + C >= 2`` included. Regexp and function atoms belong to rules and are refused.

When a composite matches, its policy decides what happens to the atoms that made it
true (negated atoms are never touched): ``remove_all`` drops them, ``remove_weight``
keeps them at zero weight, ``remove_symbol`` hides them but keeps their score, ``leave``
keeps them as they were (Rspamd's policies).

Which atoms "made it true": in ``A & B`` both, when the ``&`` is true; in ``A | B`` every
true operand, whichever is written first (so ``|`` is judged in full here: it would cost
the same and change what the policy removes); in a comparison such as ``A + B >= 1``
every true atom of the sum, when the comparison holds.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from engine.rules.errors import ExpressionError
from engine.rules.expression import (
    And,
    Call,
    Compare,
    GroupRef,
    Node,
    Not,
    Number,
    Or,
    Sum,
    SymbolRef,
    iter_atoms,
    parse,
)
from engine.symbols.results import SymbolHit

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.symbols.spec import SymbolSpec

__all__ = ["Composite", "CompositeError", "Policy", "evaluate_composites", "parse_expression"]


class CompositeError(ExpressionError):
    """A composite expression that does not parse or uses what composites cannot."""


class Policy(Enum):
    REMOVE_ALL = "remove_all"
    REMOVE_WEIGHT = "remove_weight"
    REMOVE_SYMBOL = "remove_symbol"
    LEAVE = "leave"


@dataclass(slots=True, frozen=True)
class Composite:
    name: str
    expression: str
    tree: Node
    policy: Policy = Policy.REMOVE_ALL

    @property
    def symbol_refs(self) -> set[str]:
        return {a.name for a in iter_atoms(self.tree) if isinstance(a, SymbolRef)}

    @property
    def group_refs(self) -> set[str]:
        return {a.name for a in iter_atoms(self.tree) if isinstance(a, GroupRef)}


def parse_expression(text: str) -> Node:
    """Parse a composite expression.

    Raises:
        CompositeError: it does not parse, or uses regexp or function atoms; the message
            ends with the (1-based) column.
    """
    try:
        tree = parse(text)
    except ExpressionError as exc:
        raise CompositeError(exc.message, exc.column) from None
    for atom in iter_atoms(tree):
        if isinstance(atom, Call):
            raise CompositeError(
                f"composites cannot call functions ({atom.name}()); use a rule", atom.column
            )
        if not isinstance(atom, SymbolRef | GroupRef | Number):
            raise CompositeError("composites cannot use regexp atoms; use a rule", atom.column)
    return tree


def _group_members(
    node: GroupRef, hits: Mapping[str, SymbolHit], specs: Mapping[str, SymbolSpec]
) -> list[str]:
    return [
        n
        for n, h in hits.items()
        if specs[n].group == node.name and (not node.positive_only or specs[n].score * h.weight > 0)
    ]


def _eval(
    node: Node,
    hits: Mapping[str, SymbolHit],
    specs: Mapping[str, SymbolSpec],
    matched: set[str],
) -> float:
    """``node``'s value; the atoms that made it true are added to ``matched``."""
    if isinstance(node, SymbolRef):
        if node.name in hits:
            matched.add(node.name)
            return 1
        return 0
    if isinstance(node, GroupRef):
        found = _group_members(node, hits, specs)
        matched.update(found)
        return 1 if found else 0
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Not):
        return 0 if _eval(node.operand, hits, specs, set()) else 1
    if isinstance(node, And):
        local: set[str] = set()
        if all(_eval(child, hits, specs, local) for child in node.operands):
            matched.update(local)
            return 1
        return 0
    if isinstance(node, Or):
        results = [_eval(child, hits, specs, matched) for child in node.operands]
        return 1 if any(results) else 0
    if isinstance(node, Sum):
        local = set()
        total = sum(
            s * _eval(c, hits, specs, local) for c, s in zip(node.operands, node.signs, strict=True)
        )
        matched.update(local)
        return total
    assert isinstance(node, Compare)  # parse_expression refused everything else
    local = set()
    left = _eval(node.left, hits, specs, local)
    right = _eval(node.right, hits, specs, local)
    if _COMPARE[node.op](left, right):
        matched.update(local)
        return 1
    return 0


_COMPARE = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


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
