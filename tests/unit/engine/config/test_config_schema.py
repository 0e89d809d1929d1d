"""Schema validation on its own: types, defaults, choices, checks, nested sections."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from engine.config import Key, Section, TableOf, at_least, between, validate

SCHEMA = Section(
    {
        "ratio": Key((float,), 0.5, check=between(0.0, 1.0)),
        "count": Key((int,), 3, check=at_least(1)),
        "name": Key((str,), "x", choices=("x", "y")),
        "flag": Key((bool,), False),
        "path": Key((PurePosixPath,), PurePosixPath("/")),
        "need": Key((str,), "", required=True),
        "inner": Section({"deep": Key((float, bool), False)}),
        "items": TableOf(Section({"w": Key((float,), 1.0)}), default={"dflt": {}}),
    }
)


def test_defaults_are_filled_in_everywhere() -> None:
    data, problems = validate(SCHEMA, {"need": "yes"})
    assert problems == []
    assert data == {
        "need": "yes",
        "ratio": 0.5,
        "count": 3,
        "name": "x",
        "flag": False,
        "path": PurePosixPath("/"),
        "inner": {"deep": False},
        "items": {"dflt": {"w": 1.0}},
    }


def test_given_values_are_kept_and_ints_widen_to_float() -> None:
    data, problems = validate(
        SCHEMA,
        {
            "need": "y",
            "ratio": 1,
            "count": 7,
            "name": "y",
            "flag": True,
            "inner": {"deep": 2},
            "items": {"a": {"w": 3}},
        },
    )
    assert problems == []
    assert data["ratio"] == 1.0
    assert isinstance(data["ratio"], float)
    assert data["inner"] == {"deep": 2.0}
    assert data["items"] == {"a": {"w": 3.0}}  # the default table is not merged in


@pytest.mark.parametrize(
    ("given", "path", "message"),
    [
        ({"ratio": 1.5}, ("ratio",), "must be between 0.0 and 1.0"),
        ({"count": 0}, ("count",), "must be ≥ 1"),
        ({"count": 2.0}, ("count",), "must be an integer, not float 2.0"),
        ({"count": True}, ("count",), "must be an integer, not true"),
        ({"flag": 0}, ("flag",), "must be true/false, not int 0"),
        ({"path": "/x"}, ("path",), "must be PurePosixPath, not str '/x'"),
        ({"ratio": float("nan")}, ("ratio",), "must be a finite number"),
        (
            {"inner": {"deep": "no"}},
            ("inner", "deep"),
            "must be a number or true/false, not str 'no'",
        ),
        ({"inner": []}, ("inner",), "must be a table, not list"),
        ({"items": {"a": 1}}, ("items", "a"), "must be a table"),
        ({"items": {"a": {"v": 1}}}, ("items", "a", "v"), "unknown key (known here: w)"),
    ],
)
def test_each_problem_names_its_path(
    given: dict[str, object], path: tuple[str, ...], message: str
) -> None:
    data, problems = validate(SCHEMA, {"need": "y", **given})
    assert problems == [(path, message)]
    if len(path) == 1 and isinstance(SCHEMA.keys[path[0]], Key):
        assert data[path[0]] == SCHEMA.keys[path[0]].default  # type: ignore[union-attr]


def test_missing_required_key_and_unknown_key_in_empty_schema() -> None:
    assert validate(SCHEMA, {})[1] == [(("need",), "is required")]
    assert validate(Section({}), {"a": 1})[1] == [(("a",), "unknown key (known here: none)")]


def test_a_section_with_a_problem_is_not_also_reported_missing() -> None:
    data, problems = validate(SCHEMA, {"inner": 5, "need": "y"})
    assert problems == [(("inner",), "must be a table, not int")]
    assert "inner" not in data
