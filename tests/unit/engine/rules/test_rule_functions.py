"""Function atoms: the registry, argument checking at load, and the core functions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine.rules import build_rules, function, function_table, registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.task import Task

CORE = {
    "header_exists",
    "header_count",
    "has_html_part",
    "has_only_html_part",
    "has_text_part",
    "has_content_part",
    "has_content_part_len",
    "has_attachment",
    "attachment_count",
    "compare_parts_distance",
    "is_recipients_sorted",
    "recipients_count",
    "is_empty_body",
    "part_count",
    "text_length",
    "message_size",
    "is_authenticated",
    "has_defect",
    "envelope_from_is_null",
}


def test_the_core_functions_are_registered_with_docs() -> None:
    functions = registry()
    assert set(functions) >= CORE
    for name in CORE:
        assert functions[name].doc, name
        assert functions[name].module == "engine.rules.functions.message"


def test_function_table_lists_every_function() -> None:
    table = function_table()
    assert table.startswith("| function | returns | what it tells |\n")
    for name in registry():
        assert f"`{name}(" in table
    assert "| `has_content_part_len(str, int)` | true/false |" in table
    assert "| `header_count(str)` | number |" in table


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("no_such_function()", "unknown function no_such_function() at column 1"),
        ("header_exists()", "header_exists(str) takes 1 argument(s), 0 given at column 1"),
        ("/x/ & has_html_part(1)", "has_html_part() takes 0 argument(s), 1 given at column 7"),
        (
            "compare_parts_distance(many)",
            "argument 1 of compare_parts_distance() must be an integer, not 'many' at column 24",
        ),
        (
            "compare_parts_distance(1.5)",
            "argument 1 of compare_parts_distance() must be an integer, not '1.5' at column 24",
        ),
        (
            "has_content_part_len(text/html, '20')",
            "argument 2 of has_content_part_len() must be an integer, not '20' at column 33",
        ),
    ],
)
def test_arguments_are_checked_at_load(expression: str, message: str) -> None:
    _, problems = build_rules({"R": expression}, backend="re")
    assert problems == [("R", message)]


def test_strings_may_be_quoted_or_bare_and_numbers_are_strings_too() -> None:
    _, problems = build_rules(
        {"A": "header_exists('X-Mailer')", "B": 'header_exists("X Odd")', "C": "has_defect(7)"},
        backend="re",
    )
    assert problems == []


def test_the_decorator_refuses_bad_declarations() -> None:
    with pytest.raises(ValueError, match="lower_snake_case"):
        function("BadName")
    with pytest.raises(ValueError, match="str, int or float"):
        function("list_arg", args=(list,))
    with pytest.raises(ValueError, match="required must be"):
        function("too_many", args=(str,), required=2)
    with pytest.raises(ValueError, match="defined twice"):
        function("header_exists")(lambda task: True)


ALTERNATIVE = (
    b"From: a@example.org\r\nTo: d@x.org, c@x.org\r\nCc: b@x.org\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nHello there friend, the meeting is at noon.\r\n"
    b"--b\r\nContent-Type: text/html\r\n\r\n<p>Cheap pills online, order today</p>\r\n"
    b"--b--\r\n"
)
HTML_ONLY = b"From: a@example.org\r\nContent-Type: text/html\r\n\r\n<p>Hi</p>\r\n"
ATTACHED = (
    b'From: a@example.org\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
    b'--b\r\nContent-Type: application/pdf; name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
    b"\r\nJVBERi0xLjQK\r\n"
    b'--b\r\nContent-Type: image/png; name="b.png"\r\n\r\nPNG\r\n'
    b"--b--\r\n"
)
SORTED = (
    b"From: a@example.org\r\nTo: "
    + b", ".join(f"user{n}@example.org".encode() for n in range(7))
    + b"\r\n\r\nHi\r\n"
)
EMPTY = b"From: a@example.org\r\nSubject: x\r\n\r\n \r\n\r\n"
BROKEN = b"From: a@example.org\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64\r\n"


@pytest.mark.parametrize(
    ("raw", "expression", "envelope", "expected"),
    [
        (ALTERNATIVE, "header_exists(cc)", {}, True),
        (ALTERNATIVE, "header_exists(Bcc)", {}, False),
        (ALTERNATIVE, "header_count(To) == 1", {}, True),
        (ALTERNATIVE, "has_html_part() & has_text_part() & !has_only_html_part()", {}, True),
        (HTML_ONLY, "has_only_html_part() & !has_text_part()", {}, True),
        (ALTERNATIVE, "has_content_part(text/html) & has_content_part(TEXT/*)", {}, True),
        (ALTERNATIVE, "has_content_part(image/*)", {}, False),
        (ATTACHED, "has_content_part_len(application/pdf, 9)", {}, True),
        (ATTACHED, "has_content_part_len(application/pdf, 10)", {}, False),
        (ATTACHED, "has_attachment() & attachment_count() == 2", {}, True),
        (ALTERNATIVE, "has_attachment()", {}, False),
        (ATTACHED, "part_count() == 3", {}, True),
        (HTML_ONLY, "part_count() == 1", {}, True),
        (HTML_ONLY, "text_length() == 2", {}, True),
        (ALTERNATIVE, "compare_parts_distance(50)", {}, True),
        (ALTERNATIVE, "compare_parts_distance(100)", {}, False),
        (HTML_ONLY, "compare_parts_distance(0)", {}, False),
        (ALTERNATIVE, "recipients_count() == 3", {}, True),
        (ALTERNATIVE, "is_recipients_sorted()", {}, False),
        (SORTED, "is_recipients_sorted() & recipients_count() == 7", {}, True),
        (EMPTY, "is_empty_body()", {}, True),
        (HTML_ONLY, "is_empty_body()", {}, False),
        (HTML_ONLY, "message_size() > 50 & message_size() < 100", {}, True),
        (HTML_ONLY, "is_authenticated()", {"auth_user": "alice"}, True),
        (HTML_ONLY, "is_authenticated()", {}, False),
        (BROKEN, "has_defect(bad_base64)", {}, True),
        (HTML_ONLY, "has_defect(bad_base64)", {}, False),
        (HTML_ONLY, "envelope_from_is_null()", {"mail_from": ""}, True),
        (HTML_ONLY, "envelope_from_is_null()", {"mail_from": "a@b.c"}, False),
        (HTML_ONLY, "envelope_from_is_null()", {}, False),  # unknown is not null
    ],
)
def test_core_functions(
    raw: bytes,
    expression: str,
    envelope: dict[str, object],
    expected: bool,
    task_of: Callable[..., Task],
) -> None:
    ruleset, problems = build_rules({"R": expression}, backend="re")
    assert problems == []
    assert (ruleset.evaluate(task_of(raw, **envelope)).fired == ["R"]) is expected
