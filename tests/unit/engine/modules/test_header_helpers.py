"""Helpers behind the header and MIME symbols: address, Message-ID and file-name parsing."""

from __future__ import annotations

import pytest

from engine.modules.headers import _msgid_problem, first_mailbox
from engine.modules.mime_types import jaccard_distance, split_filename


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Alice <alice@example.org>", ("Alice", "alice@example.org", 1)),
        ('"Doe, Jane" <jane@example.org>', ("Doe, Jane", "jane@example.org", 1)),
        ('"Jane \\"JD\\" Doe" <jd@example.org>', ('Jane "JD" Doe', "jd@example.org", 1)),
        ("bob@example.org", ("", "bob@example.org", 1)),
        ("bob@example.org (Bob)", ("Bob", "bob@example.org", 1)),
        ("a@example.org, b@example.org", ("", "a@example.org", 2)),
        ("undisclosed-recipients:;", ("", "", 0)),
        ("", ("", "", 0)),
    ],
)
def test_first_mailbox(value: str, expected: tuple[str, str, int]) -> None:
    assert first_mailbox(value) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("<1234.5678@mail.example.org>", None),
        ("<1234@mail.example.org> (added by postmaster)", None),
        ('<"quoted@local"@example.org>', None),
        ("1234@mail.example.org", "brackets"),
        ("<1234.example.org>", "no @"),
        ("<12 34@example.org>", "bad characters"),
        ("<a@b@example.org>", "two @"),
        ("<1234@example.org", "unterminated"),
        ("<1234@example.org> junk", "trailing garbage"),
    ],
)
def test_msgid_problem(value: str, problem: str | None) -> None:
    assert _msgid_problem(value) == problem


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Invoice.PDF.exe", ("exe", "pdf")),
        ("invoice.pdf            .exe", ("exe", "pdf")),
        ("setup.exe", ("exe", "")),
        ("report.final.v2.docx", ("docx", "v2")),
        ("README", ("", "")),
        ("trailing.exe. ", ("exe", "")),
    ],
)
def test_split_filename(name: str, expected: tuple[str, str]) -> None:
    assert split_filename(name) == expected


def test_jaccard_distance() -> None:
    assert jaccard_distance({"a", "b"}, {"a", "b"}) == 0.0
    assert jaccard_distance({"a"}, {"b"}) == 1.0
    assert jaccard_distance({"a", "b", "c"}, {"b", "c", "d"}) == 0.5
    assert jaccard_distance(set(), set()) == 0.0
