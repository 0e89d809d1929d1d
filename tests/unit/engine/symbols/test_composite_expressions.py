"""Composite expressions: the parser, evaluation over symbols and groups, and policies."""

from __future__ import annotations

import pytest

from engine.symbols import (
    Composite,
    CompositeError,
    Policy,
    SymbolHit,
    SymbolSpec,
    evaluate_composites,
    parse_expression,
)

SPECS = {
    s.name: s
    for s in (
        SymbolSpec("A", 1.0, "ga"),
        SymbolSpec("B", 2.0, "ga"),
        SymbolSpec("C", -1.0, "gc"),
        SymbolSpec("D", 4.0, "gd"),
        SymbolSpec("X1", 0.0, "composite"),
        SymbolSpec("X2", 0.0, "composite"),
    )
}


def composite(name: str, expression: str, policy: Policy = Policy.REMOVE_ALL) -> Composite:
    return Composite(name, expression, parse_expression(expression), policy)


def hits(*names: str) -> dict[str, SymbolHit]:
    return {n: SymbolHit(n) for n in names}


def matches(expression: str, *present: str) -> bool:
    h = hits(*present)
    evaluate_composites([composite("X1", expression, Policy.LEAVE)], h, SPECS)
    return "X1" in h


# -- parser --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "present", "expected"),
    [
        ("A", ("A",), True),
        ("A", (), False),
        ("A & B", ("A",), False),
        ("A & B", ("A", "B"), True),
        ("A | B", ("B",), True),
        ("A | B", (), False),
        # & binds tighter than |
        ("A | B & D", ("A",), True),
        ("A | B & D", ("B",), False),
        ("A | B & D", ("B", "D"), True),
        ("B & D | A", ("A",), True),
        # parentheses override
        ("(A | B) & D", ("A",), False),
        ("(A | B) & D", ("A", "D"), True),
        ("((A))", ("A",), True),
        # ! binds tightest, and nests
        ("!A", (), True),
        ("!A", ("A",), False),
        ("!A & B", ("B",), True),
        ("!(A & B)", ("A", "B"), False),
        ("!(A & B)", ("A",), True),
        ("!!A", ("A",), True),
        ("  A&B  ", ("A", "B"), True),
    ],
)
def test_precedence_parentheses_and_negation(
    expression: str, present: tuple[str, ...], expected: bool
) -> None:
    assert matches(expression, *present) is expected


def test_refs_separate_symbols_and_groups() -> None:
    c = composite("X1", "A & !g:ga | (g+:gd & B) | g:my-group.x_1")
    assert c.symbol_refs == {"A", "B"}
    assert c.group_refs == {"ga", "gd", "my-group.x_1"}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "expression ends too early at column 1"),
        ("A &", "expression ends too early at column 4"),
        ("A & & B", "unexpected '&' at column 5"),
        ("| A", "unexpected '|' at column 1"),
        ("(A | B", "expected ')' at column 7"),
        ("A & (B | C D)", "expected ')' at column 12"),
        ("A B", "unexpected 'B' at column 3"),
        ("A )", "unexpected ')' at column 3"),
        ("A & lower", "unexpected 'lower' at column 5"),
        ("A & g:", "unexpected 'g:' at column 5"),
        ("A + ", "expression ends too early at column 5"),
        ("A & 1B", "unexpected '1B' at column 5"),
        ("A + B >= 1 >= 0", "comparisons do not chain; use '&' at column 12"),
        (
            "A & has_html_part()",
            "composites cannot call functions (has_html_part()); use a rule at column 5",
        ),
        ("A & /viagra/i", "composites cannot use regexp atoms; use a rule at column 5"),
        ("A | Subject=/x/", "composites cannot use regexp atoms; use a rule at column 5"),
        ("A # B", "unexpected '# B' at column 3"),
    ],
)
def test_parse_errors_say_where(expression: str, message: str) -> None:
    with pytest.raises(CompositeError) as info:
        parse_expression(expression)
    assert str(info.value) == message


def test_composite_error_is_a_value_error() -> None:
    assert issubclass(CompositeError, ValueError)


# -- groups --------------------------------------------------------------------------------


def test_group_atom_matches_any_symbol_of_the_group() -> None:
    assert matches("g:ga", "B")
    assert not matches("g:ga", "D")
    assert matches("g:gc", "C")


def test_positive_group_atom_counts_only_positive_contributions() -> None:
    assert not matches("g+:gc", "C")  # score -1
    assert matches("g+:ga", "A")
    h = {"A": SymbolHit("A", 0.0)}  # weight 0: contributes nothing
    evaluate_composites([composite("X1", "g+:ga")], h, SPECS)
    assert "X1" not in h


def test_group_atom_consumes_every_matching_symbol() -> None:
    h = hits("A", "B", "D")
    evaluate_composites([composite("X1", "g:ga")], h, SPECS)
    assert set(h) == {"D", "X1"}


# -- policies ------------------------------------------------------------------------------


def test_remove_all_drops_the_atoms() -> None:
    h = hits("A", "B", "D")
    evaluate_composites([composite("X1", "A & B")], h, SPECS)
    assert h == {"D": SymbolHit("D"), "X1": SymbolHit("X1")}


def test_remove_weight_keeps_the_atoms_at_zero_weight() -> None:
    h = hits("A", "B", "D")
    evaluate_composites([composite("X1", "A & B", Policy.REMOVE_WEIGHT)], h, SPECS)
    assert h == {
        "A": SymbolHit("A", 0.0),
        "B": SymbolHit("B", 0.0),
        "D": SymbolHit("D"),
        "X1": SymbolHit("X1"),
    }


def test_remove_symbol_hides_the_atoms_but_keeps_their_weight() -> None:
    h = hits("A", "B")
    evaluate_composites([composite("X1", "A & B", Policy.REMOVE_SYMBOL)], h, SPECS)
    assert h == {
        "A": SymbolHit("A", hidden=True),
        "B": SymbolHit("B", hidden=True),
        "X1": SymbolHit("X1"),
    }


def test_leave_keeps_the_atoms() -> None:
    h = hits("A", "B")
    evaluate_composites([composite("X1", "A & B", Policy.LEAVE)], h, SPECS)
    assert h == hits("A", "B", "X1")


def test_negated_atoms_are_never_touched() -> None:
    h = hits("A", "D")
    evaluate_composites([composite("X1", "A & !B & !!D")], h, SPECS)
    assert h == hits("D", "X1")


def test_every_true_operand_of_an_or_is_consumed() -> None:
    # Whichever is written first, both A and B made the composite true.
    for expression in ("A | B", "B | A", "C | A | B"):
        h = hits("A", "B", "D")
        evaluate_composites([composite("X1", expression)], h, SPECS)
        assert h == hits("D", "X1"), expression


def test_failed_and_branch_consumes_nothing() -> None:
    h = hits("A", "D")
    evaluate_composites([composite("X1", "(A & B) | D")], h, SPECS)
    assert h == hits("A", "X1")


def test_no_match_changes_nothing() -> None:
    h = hits("A")
    evaluate_composites([composite("X1", "A & B")], h, SPECS)
    assert h == hits("A")


def test_two_composites_sharing_an_atom_both_fire() -> None:
    h = hits("A", "B", "D")
    evaluate_composites([composite("X1", "A & B"), composite("X2", "A & D")], h, SPECS)
    assert h == hits("X1", "X2")


def test_removal_then_weight_policy_on_a_shared_atom() -> None:
    h = hits("A", "B", "D")
    evaluate_composites(
        [composite("X1", "A & B"), composite("X2", "A & D", Policy.REMOVE_WEIGHT)], h, SPECS
    )
    assert h == {"X1": SymbolHit("X1"), "D": SymbolHit("D", 0.0), "X2": SymbolHit("X2")}


def test_composite_of_composites_sees_the_earlier_one() -> None:
    # Given in dependency order (the engine orders them): X2 uses X1.
    h = hits("A", "B", "D")
    evaluate_composites([composite("X1", "A & B"), composite("X2", "X1 & D")], h, SPECS)
    assert h == hits("X2")
    # In the wrong order X2 cannot see X1: ordering is the caller's job.
    h = hits("A", "B", "D")
    evaluate_composites([composite("X2", "X1 & D"), composite("X1", "A & B")], h, SPECS)
    assert h == hits("D", "X1")


# -- the shared language: keywords, numbers, sums, comparisons ---------------------------------


@pytest.mark.parametrize(
    ("expression", "present", "expected"),
    [
        ("A and B", ("A", "B"), True),
        ("A && B", ("A",), False),
        ("A or B", ("B",), True),
        ("A || B", (), False),
        ("not A", (), True),
        ("A + B + D >= 2", ("A", "D"), True),
        ("A + B + D >= 2", ("D",), False),
        ("A + B + D == 3", ("A", "B", "D"), True),
        ("A + B - D > 0", ("A", "D"), False),
        ("A + B - D > 0", ("A", "B", "D"), True),
        ("(A + B) * 1", (), None),
        ("A + B != 1", ("A",), False),
        ("A + B < 1", (), True),
        ("A + B <= 1", ("B",), True),
        ("!A + !B >= 2", (), True),
        ("g:ga + g:gd >= 2", ("B", "D"), True),
        ("1", (), True),
        ("0 | A", (), False),
    ],
)
def test_numbers_sums_and_comparisons(
    expression: str, present: tuple[str, ...], expected: bool | None
) -> None:
    if expected is None:
        with pytest.raises(CompositeError):
            parse_expression(expression)
        return
    assert matches(expression, *present) is expected


def test_a_true_comparison_consumes_the_true_atoms_of_its_sum() -> None:
    h = hits("A", "B", "D")
    evaluate_composites([composite("X1", "A + B + C >= 2")], h, SPECS)
    assert h == hits("D", "X1")


def test_a_false_comparison_consumes_nothing() -> None:
    h = hits("A", "D")
    evaluate_composites([composite("X1", "(A + B >= 2) | D")], h, SPECS)
    assert h == hits("A", "X1")


def test_composite_error_is_an_expression_error_with_a_column() -> None:
    from engine.rules import ExpressionError

    with pytest.raises(ExpressionError) as info:
        parse_expression("A & (B")
    assert info.value.column == 7
    assert info.value.message == "expected ')'"
