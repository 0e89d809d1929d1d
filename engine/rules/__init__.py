"""The rule language: expressions over regexp and function atoms, compiled per scope.

``compile_rules(config)`` turns the ``[rules]`` section into a ``RuleSet`` (the regexp
module runs it); ``parse`` is the expression parser that composites share. See
docs/writing-a-rule.md for the language.
"""

from engine.rules.atoms import RegexpAtom, Scope
from engine.rules.compiler import (
    BACKENDS,
    MessageScan,
    Rule,
    RuleSet,
    build_rules,
    compile_rules,
)
from engine.rules.errors import ExpressionError
from engine.rules.expression import (
    And,
    Arg,
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
from engine.rules.functions import RuleFunction, function, function_table, registry

__all__ = [
    "BACKENDS",
    "And",
    "Arg",
    "Call",
    "Compare",
    "ExpressionError",
    "GroupRef",
    "MessageScan",
    "Node",
    "Not",
    "Number",
    "Or",
    "RegexpAtom",
    "Rule",
    "RuleFunction",
    "RuleSet",
    "Scope",
    "Sum",
    "SymbolRef",
    "build_rules",
    "compile_rules",
    "function",
    "function_table",
    "iter_atoms",
    "parse",
    "registry",
]
