"""The shared expression parser: precedence, associativity, atoms, and errors with columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine.rules import (
    And,
    Call,
    Compare,
    ExpressionError,
    GroupRef,
    Not,
    Number,
    Or,
    RegexpAtom,
    Scope,
    Sum,
    SymbolRef,
    parse,
)

if TYPE_CHECKING:
    from engine.rules.expression import Node


def shape(node: Node) -> str:
    """A compact, fully parenthesised rendering of the tree."""
    if isinstance(node, SymbolRef):
        return node.name
    if isinstance(node, GroupRef):
        return f"g{'+' if node.positive_only else ''}:{node.name}"
    if isinstance(node, Number):
        return f"{node.value:g}"
    if isinstance(node, RegexpAtom):
        return node.text
    if isinstance(node, Call):
        return f"{node.name}({','.join(a.text for a in node.args)})"
    if isinstance(node, Not):
        return f"!{shape(node.operand)}"
    if isinstance(node, And | Or):
        op = " & " if isinstance(node, And) else " | "
        return "(" + op.join(shape(c) for c in node.operands) + ")"
    if isinstance(node, Sum):
        out = shape(node.operands[0])
        for child, sign in zip(node.operands[1:], node.signs[1:], strict=True):
            out += (" + " if sign > 0 else " - ") + shape(child)
        return f"({out})"
    assert isinstance(node, Compare)
    return f"({shape(node.left)} {node.op} {shape(node.right)})"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A", "A"),
        ("A | B & C", "(A | (B & C))"),
        ("A & B | C", "((A & B) | C)"),
        ("A | B | C", "(A | B | C)"),  # flat: | is associative
        ("A & B & C", "(A & B & C)"),
        ("(A | B) & C", "((A | B) & C)"),
        ("!A & B", "(!A & B)"),
        ("!(A & B)", "!(A & B)"),
        ("!!A", "!!A"),
        ("not A and B or C", "((!A & B) | C)"),
        ("A && B || C", "((A & B) | C)"),
        ("A + B + C >= 2", "((A + B + C) >= 2)"),
        ("A - B + C", "(A - B + C)"),  # left to right, signs kept per operand
        ("!A + B", "(!A + B)"),  # ! binds tighter than +
        ("A + B >= 2 & C", "(((A + B) >= 2) & C)"),
        ("A & B >= 1", "(A & (B >= 1))"),  # comparison binds tighter than &
        ("1.5 < A", "(1.5 < A)"),
        ("A == 0 | B != 1", "((A == 0) | (B != 1))"),
        ("g:headers & !g+:url", "(g:headers & !g+:url)"),
        ("  A&B  ", "(A & B)"),
        ("((A))", "A"),
    ],
)
def test_precedence_and_associativity(text: str, expected: str) -> None:
    assert shape(parse(text)) == expected


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("", "expression ends too early", 1),
        ("A &", "expression ends too early", 4),
        ("(A | B", "expected ')'", 7),
        ("A & (B | C D)", "expected ')'", 12),
        ("A B", "unexpected 'B'", 3),
        ("A )", "unexpected ')'", 3),
        ("& A", "unexpected '&'", 1),
        ("A > B > C", "comparisons do not chain; use '&'", 7),
        ("A & lower", "unexpected 'lower'", 5),
        ("A & 1B", "unexpected '1B'", 5),
        ("A & g:", "unexpected 'g:'", 5),
        ("A ; B", "unexpected '; B'", 3),
        ("/abc", "unterminated regular expression (no closing '/')", 1),
        ("A & /abc/g", "unknown regexp flag 'g' (known: i m s x u)", 10),
        ("/abc/{body", "unterminated '{' (scope)", 6),
        (
            "/abc/i{bogus}",
            "unknown scope {bogus} (known: header, raw_header, selector, url, "
            "email, mime, html, body, raw_message)",
            7,
        ),
        ("/abc/{header}", "{header} needs a name in front: Name=/.../{header}", 1),
        ("A & /abc/{selector}", "{selector} needs a name in front: Name=/.../{selector}", 5),
        (
            "Subject=/x/{body}",
            "a name (Subject=) only goes with {header}, {raw_header} or {selector}, not {body}",
            1,
        ),
        ("Received:last=/x/", "unknown modifier ':last' (only ':first' is known)", 9),
        ("Subject= /x/", "expected '/' after 'Subject='", 9),
        ("env_from:first=/x/{selector}", "':first' only goes with {header} and {raw_header}", 1),
        ("f(a b)", "expected ',' or ')' in the argument list", 5),
        ("f('abc)", "unterminated string", 3),
        ("f(a,", "expected ')' to close the call", 1),
    ],
)
def test_errors_name_the_column(text: str, message: str, column: int) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert (info.value.message, info.value.column) == (message, column)
    assert str(info.value) == f"{message} at column {column}"


def atom(text: str) -> RegexpAtom:
    node = parse(text)
    assert isinstance(node, RegexpAtom)
    return node


@pytest.mark.parametrize(
    ("text", "name", "first", "pattern", "flags", "scope"),
    [
        ("/viagra/i", None, False, "viagra", "i", Scope.MIME),
        ("/a/umsxi", None, False, "a", "imsxu", Scope.MIME),
        ("/a/{mime}", None, False, "a", "", Scope.MIME),
        ("/<form\\b/i{html}", None, False, "<form\\b", "i", Scope.HTML),
        ("/^TVqQ/m{body}", None, False, "^TVqQ", "m", Scope.BODY),
        ("/X-Foo:/{raw_message}", None, False, "X-Foo:", "", Scope.RAW_MESSAGE),
        ("/^https?:\\/\\/\\d+/{url}", None, False, "^https?:\\/\\/\\d+", "", Scope.URL),
        ("/@example\\.com$/{email}", None, False, "@example\\.com$", "", Scope.EMAIL),
        ("Subject=/^re:/i", "Subject", False, "^re:", "i", Scope.HEADER),
        ("X-Mailer=/Outlook/{header}", "X-Mailer", False, "Outlook", "", Scope.HEADER),
        ("Received:first=/x/{raw_header}", "Received", True, "x", "", Scope.RAW_HEADER),
        ("Received:first=/x/", "Received", True, "x", "", Scope.HEADER),
        ("env_from=/^$/{selector}", "env_from", False, "^$", "", Scope.SELECTOR),
        # a slash inside a character class or escaped does not end the pattern
        ("/[/]x/", None, False, "[/]x", "", Scope.MIME),
        ("/[]/]/", None, False, "[]/]", "", Scope.MIME),
        ("/[^]/]/", None, False, "[^]/]", "", Scope.MIME),
        ("/a\\/b/", None, False, "a\\/b", "", Scope.MIME),
        ("/a\\\\/", None, False, "a\\\\", "", Scope.MIME),
    ],
)
def test_regexp_atom_forms(
    text: str, name: str | None, first: bool, pattern: str, flags: str, scope: Scope
) -> None:
    parsed = atom(text)
    assert (parsed.name, parsed.first, parsed.pattern, parsed.flags, parsed.scope) == (
        name,
        first,
        pattern,
        flags,
        scope,
    )
    assert parsed.text == text


def test_atoms_inside_expressions_keep_their_text_and_column() -> None:
    tree = parse("Subject=/a b/i & ( /x/{body} | !From=/y/ )")
    assert shape(tree) == "(Subject=/a b/i & (/x/{body} | !From=/y/))"
    assert isinstance(tree, And)
    second = tree.operands[1]
    assert isinstance(second, Or)
    assert [getattr(n, "column", None) for n in second.operands] == [20, 32]


def test_header_atom_and_comparison_are_told_apart() -> None:
    tree = parse("header_count(X)==2")
    assert shape(tree) == "(header_count(X) == 2)"


def test_function_arguments() -> None:
    call = parse("has_content_part_len(text/html, 20)")
    assert isinstance(call, Call)
    assert [(a.text, a.kind, a.column) for a in call.args] == [
        ("text/html", "word", 22),
        ("20", "number", 33),
    ]
    call = parse("""f('a, b', "c\\"d", -1.5, X-Mailer)""")
    assert isinstance(call, Call)
    assert [(a.text, a.kind) for a in call.args] == [
        ("a, b", "string"),
        ('c"d', "string"),
        ("-1.5", "number"),
        ("X-Mailer", "word"),
    ]
    assert parse("f ( )") == Call("f", (), 1)


def test_keywords_are_whole_words() -> None:
    with pytest.raises(ExpressionError, match="unexpected 'android'"):
        parse("A & android")
