"""Rules from the ``[rules]`` section → a compiled ``RuleSet`` that judges one message.

Theory of operation:

* Load: every expression is parsed and checked (no symbols or groups in rules; known
  functions with well-typed arguments; patterns that compile with Python ``re``; known
  selectors). Identical regexp atoms share one pattern id; the patterns of each scope go
  into one matcher (Hyperscan database or ``re`` list). Each rule becomes one generated
  Python function (``codegen``) in which ``&`` and ``|`` operands are ordered cheapest
  first.
* Scan: ``RuleSet.evaluate`` walks the rules once. A regexp atom asks its scope for the
  set of matched pattern ids; the first ask gathers the scope's data and scans it in one
  pass (lazy: a scope no evaluated atom needs is never gathered), later asks are set
  lookups. So a message costs one scan per scope used, plus one call per rule.
* Never raising: a function that raises, a scope that fails to gather, a rule that
  fails to evaluate are each false, logged once per rule set (the first traceback says
  it all; a flood of identical lines does not).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import ConfigError
from engine.rules.atoms import RegexpAtom, Scope
from engine.rules.cache import DatabaseCache
from engine.rules.codegen import Generator, combine, generate
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
from engine.rules.functions import RuleFunction, registry
from engine.rules.patterns import Matcher, PatternSpec, compile_re
from engine.rules.re_backend import ReMatcher
from engine.rules.scopes import SELECTORS, NameIds, ScopeIndex, gather

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from engine.config.loader import Config
    from engine.errors import ConfigProblem
    from engine.rules.codegen import EvaluateAll, RuleCode
    from engine.task.task import Task

__all__ = [
    "BACKENDS",
    "MessageScan",
    "Rule",
    "RuleSet",
    "build_rules",
    "compile_rules",
    "resolve_call",
]

log = logging.getLogger(__name__)

BACKENDS = ("hyperscan", "re")
_RULE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(slots=True, frozen=True)
class Rule:
    """One rule as configured, with its parsed expression."""

    name: str
    expression: str
    tree: Node
    score: float = 0.0
    group: str = "rules"
    description: str = ""


class MessageScan:
    """One message's evaluation: which scopes were scanned and what matched.

    ``fired`` lists the rules that matched, in rule order; ``scanned`` the scopes in the
    order they were scanned (each at most once).
    """

    __slots__ = ("fired", "matched", "ruleset", "scanned", "task", "values")

    def __init__(self, ruleset: RuleSet, task: Task) -> None:
        self.ruleset = ruleset
        self.task = task
        self.matched: list[set[int] | None] = [None] * len(ruleset.scopes)
        # One slot per distinct function call: address_count(To) in five rules runs once.
        self.values: list[float | None] = [None] * ruleset.call_slots
        self.scanned: list[Scope] = []
        self.fired: list[str] = []

    def scope_matches(self, index: int) -> set[int]:
        """Scan scope ``index`` (its first time) and return the matched pattern ids."""
        matched = self.matched[index]
        if matched is not None:
            return matched
        scope = self.ruleset.scopes[index]
        try:
            matched = scope.matcher.scan(gather(scope, self.task))
        except Exception:
            self.ruleset.log_once(f"scanning the {scope.scope.value} scope")
            matched = set()
        self.matched[index] = matched
        self.scanned.append(scope.scope)
        return matched

    def call(self, slot: int) -> float:
        """The value of distinct function call ``slot``, computed the first time only; a
        call that raises is 0 (false)."""
        value = self.values[slot]
        if value is not None:
            return value
        fn, args = self.ruleset.calls[slot]
        try:
            value = fn.call(self.task, *args)
        except Exception:
            self.ruleset.log_once(f"function {fn.name}()")
            value = 0
        self.values[slot] = value
        return value


class RuleSet:
    """Compiled rules; ``evaluate`` judges one message."""

    def __init__(
        self,
        rules: Sequence[tuple[Rule, RuleCode]],
        scopes: Sequence[ScopeIndex],
        backend: str,
        calls: Sequence[tuple[RuleFunction, tuple[str | int | float, ...]]] = (),
        every_rule: EvaluateAll | None = None,
    ) -> None:
        self.rules = tuple(rule for rule, _ in rules)
        # All rules in one generated function (codegen.combine), for the messages whose
        # settings switch none of them off.
        self._every_rule = every_rule
        # Per value slot, the function and its arguments (see codegen: ``C(slot)``).
        self.calls = tuple(calls)
        self.call_slots = len(self.calls)
        self.scopes = tuple(scopes)
        self.backend = backend
        self._run = tuple((rule.name, run) for rule, run in rules)
        self._names = tuple(rule.name for rule in self.rules)
        self._logged: set[str] = set()

    @property
    def from_cache(self) -> dict[Scope, bool]:
        """Per scope, whether its Hyperscan database came from the disk cache."""
        return {s.scope: bool(getattr(s.matcher, "from_cache", False)) for s in self.scopes}

    def evaluate(self, task: Task) -> MessageScan:
        """Evaluate every rule on ``task``; never raises for broken mail."""
        scan = MessageScan(self, task)
        fired = scan.fired
        matched, values, scope_matches, call = (
            scan.matched,
            scan.values,
            scan.scope_matches,
            scan.call,
        )
        disabled = task.disabled
        if not disabled and self._every_rule is not None:
            names = self._names
            self._every_rule(
                matched,
                values,
                scope_matches,
                call,
                lambda index: fired.append(names[index]),
                lambda index: self.log_once(f"rule {names[index]}"),
            )
            return scan
        for name, run in self._run:
            # A rule the message's settings switched off costs nothing: its scopes are
            # never scanned unless another rule needs them.
            if disabled and name in disabled:
                continue
            try:
                if run(matched, values, scope_matches, call):
                    fired.append(name)
            except Exception:
                self.log_once(f"rule {name}")
        return scan

    def log_once(self, what: str) -> None:
        """Log the current exception, the first time for ``what`` only."""
        if what not in self._logged:
            self._logged.add(what)
            log.exception("%s failed; treated as false (logged once)", what)


# -- building -------------------------------------------------------------------------------


def compile_rules(
    config: Config, *, backend: str = "hyperscan", cache_dir: Path | None = None
) -> RuleSet:
    """The enabled rules of ``config``'s ``[rules]`` section, compiled.

    Args:
        config: the loaded configuration.
        backend: ``hyperscan`` or ``re`` (hyperscan falls back to re, with one warning,
            when it cannot be imported).
        cache_dir: where compiled Hyperscan databases are kept; None disables the cache.

    Raises:
        ConfigError: naming the file, line and key of every bad rule.
    """
    sources: dict[str, Rule | str] = {}
    problems: list[ConfigProblem] = []
    for name, table in config.section("rules").items():
        assert isinstance(table, dict)
        if not table["enabled"]:
            continue
        if not _RULE_NAME.match(name):
            problems.append(config.problem(("rules", name), "rule names are UPPER_SNAKE_CASE"))
            continue
        sources[name] = Rule(
            name,
            str(table["expression"]),
            Number(0.0, 1),  # replaced once parsed
            float(table["score"]),
            str(table["group"]),
            str(table["description"]),
        )
    ruleset, found = build_rules(sources, backend=backend, cache=DatabaseCache(cache_dir))
    problems.extend(config.problem(("rules", name, "expression"), msg) for name, msg in found)
    if problems:
        raise ConfigError(problems)
    return ruleset


def build_rules(
    sources: Mapping[str, Rule | str],
    *,
    backend: str = "hyperscan",
    cache: DatabaseCache | None = None,
) -> tuple[RuleSet, list[tuple[str, str]]]:
    """Compile rules given as ``Rule``s or bare expressions.

    Returns:
        The rule set (of the rules that compiled) and ``(rule name, message)`` for every
        one that did not.
    """
    problems: list[tuple[str, str]] = []
    builder = _Builder()
    parsed: list[Rule] = []
    for name, source in sources.items():
        rule = source if isinstance(source, Rule) else Rule(name, source, Number(0.0, 1))
        try:
            tree = parse(rule.expression)
            builder.check(tree, name)
        except ExpressionError as exc:
            problems.append((name, str(exc)))
            continue
        parsed.append(Rule(name, rule.expression, tree, rule.score, rule.group, rule.description))
    scopes = builder.matchers(_backend(backend), cache or DatabaseCache(None))
    generator = builder.generator()
    functions, expressions = generate(generator, [rule.tree for rule in parsed])
    every_rule = combine(generator, functions, expressions)
    compiled = list(zip(parsed, functions, strict=True))
    ruleset = RuleSet(compiled, scopes, _backend(backend), builder.call_specs(), every_rule)
    return ruleset, problems


def resolve_call(call: Call) -> tuple[RuleFunction, tuple[str | int | float, ...]]:
    """The function a call names and its arguments converted to the declared types.

    Raises:
        ExpressionError: unknown function, wrong number or type of arguments.
    """
    fn = registry().get(call.name)
    if fn is None:
        raise ExpressionError(f"unknown function {call.name}()", call.column)
    given = len(call.args)
    if not fn.required <= given <= len(fn.args):
        wanted = (
            str(fn.required) if fn.required == len(fn.args) else f"{fn.required}-{len(fn.args)}"
        )
        raise ExpressionError(
            f"{fn.signature} takes {wanted} argument(s), {given} given", call.column
        )
    values: list[str | int | float] = []
    for n, (arg, kind) in enumerate(zip(call.args, fn.args, strict=False), 1):
        try:
            if kind is str:
                values.append(arg.text)
            elif arg.kind != "number":
                raise ValueError
            else:
                values.append(int(arg.text) if kind is int else float(arg.text))
        except ValueError:
            raise ExpressionError(
                f"argument {n} of {call.name}() must be {'an integer' if kind is int else 'a number'}"
                f", not {arg.text!r}",
                arg.column,
            ) from None
    return fn, tuple(values)


_HYPERSCAN_MISSING_WARNED: list[bool] = []


def _backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown regexp backend {name!r}")
    if name == "hyperscan":
        try:
            import hyperscan  # noqa: F401
        except ImportError:
            if not _HYPERSCAN_MISSING_WARNED:
                _HYPERSCAN_MISSING_WARNED.append(True)
                log.warning("hyperscan is not installed; regexp rules run on Python re")
            return "re"
    return name


class _Builder:
    """Collects patterns and calls across rules, then builds matchers and code."""

    def __init__(self) -> None:
        self.ids: dict[tuple[Scope, str, bool, str, str], int] = {}
        self.specs: dict[Scope, list[PatternSpec]] = {}
        self.names: dict[Scope, dict[str, tuple[set[int], set[int]]]] = {}
        self.calls: dict[Call, tuple[RuleFunction, tuple[str | int | float, ...]]] = {}
        self.scope_index: dict[Scope, int] = {}
        self.slots: dict[tuple[str, tuple[str | int | float, ...]], int] = {}

    def check(self, tree: Node, rule: str) -> None:
        """Refuse what rules may not use; register the atoms of an accepted tree."""
        atoms = list(iter_atoms(tree))
        for atom in atoms:
            if isinstance(atom, SymbolRef | GroupRef):
                what = "symbol" if isinstance(atom, SymbolRef) else "group"
                raise ExpressionError(
                    f"rules cannot use the {what} {atom.name} (use a composite)", atom.column
                )
            if isinstance(atom, Call) and atom not in self.calls:
                self.calls[atom] = resolve_call(atom)
            if isinstance(atom, RegexpAtom):
                self._check_pattern(atom)
        for atom in atoms:
            if isinstance(atom, RegexpAtom):
                self._register(atom, rule)

    def _check_pattern(self, atom: RegexpAtom) -> None:
        if atom.scope is Scope.SELECTOR and (atom.name or "").lower() not in SELECTORS:
            known = ", ".join(SELECTORS)
            raise ExpressionError(f"unknown selector {atom.name!r} (known: {known})", atom.column)
        try:
            compile_re(PatternSpec(0, atom.pattern, atom.flags))
        except re.error as exc:
            raise ExpressionError(
                f"bad regular expression {atom.text}: {exc}", atom.column
            ) from None

    def _register(self, atom: RegexpAtom, rule: str) -> None:
        if atom.key in self.ids:
            return
        pid = len(self.ids)
        self.ids[atom.key] = pid
        label = f"rule {rule}: {atom.text}"
        self.specs.setdefault(atom.scope, []).append(
            PatternSpec(pid, atom.pattern, atom.flags, label)
        )
        if atom.scope.named:
            assert atom.name is not None
            first, rest = self.names.setdefault(atom.scope, {}).setdefault(
                atom.name.lower(), (set(), set())
            )
            first.add(pid)
            if not atom.first:
                rest.add(pid)

    def matchers(self, backend: str, cache: DatabaseCache) -> list[ScopeIndex]:
        out: list[ScopeIndex] = []
        for scope in Scope:  # cheapest first: also the order of the index
            specs = self.specs.get(scope)
            if not specs:
                continue
            matcher: Matcher
            if backend == "hyperscan":
                from engine.rules.hyperscan_db import HyperscanMatcher

                matcher = HyperscanMatcher(specs, cache, scope.value)
            else:
                matcher = ReMatcher(specs)
            names = {
                name: NameIds(frozenset(first), frozenset(rest))
                for name, (first, rest) in self.names.get(scope, {}).items()
            }
            self.scope_index[scope] = len(out)
            out.append(ScopeIndex(scope, matcher, names))
        return out

    # -- code -------------------------------------------------------------------------------

    def generator(self) -> Generator:
        """The code generator over this builder's pattern ids, scopes and call slots."""
        return Generator(self._atom, self._slot, _cost)

    def _atom(self, atom: RegexpAtom) -> tuple[int, int]:
        return self.scope_index[atom.scope], self.ids[atom.key]

    def _slot(self, call: Call) -> int:
        fn, args = self.calls[call]
        return self.slots.setdefault((fn.name, args), len(self.slots))

    def call_specs(self) -> list[tuple[RuleFunction, tuple[str | int | float, ...]]]:
        """Per value slot (in slot order), the function and its converted arguments."""
        by_key = {(fn.name, args): (fn, args) for fn, args in self.calls.values()}
        return [by_key[key] for key in self.slots]


def _cost(node: Node) -> int:
    if isinstance(node, RegexpAtom):
        return node.scope.cost
    if isinstance(node, Call):
        fn = registry().get(node.name)
        return fn.cost if fn is not None else 1
    if isinstance(node, Not):
        return _cost(node.operand)
    if isinstance(node, And | Or | Sum):
        return sum(_cost(c) for c in node.operands)
    if isinstance(node, Compare):
        return _cost(node.left) + _cost(node.right)
    return 0
