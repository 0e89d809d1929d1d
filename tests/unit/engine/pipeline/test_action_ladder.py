"""The six-rung ladder: thresholds → action, and the names actions go by."""

from __future__ import annotations

import pytest

from engine import Action
from engine.pipeline.actions import Thresholds

DEFAULT = Thresholds(
    {
        Action.GREYLIST: 4.0,
        Action.ADD_HEADER: 6.0,
        Action.REWRITE_SUBJECT: None,
        Action.SOFT_REJECT: None,
        Action.REJECT: 15.0,
    }
)
EVERY_RUNG = Thresholds(
    {
        Action.GREYLIST: 4.0,
        Action.ADD_HEADER: 6.0,
        Action.REWRITE_SUBJECT: 8.0,
        Action.SOFT_REJECT: 10.0,
        Action.REJECT: 15.0,
    }
)


@pytest.mark.parametrize(
    ("score", "action"),
    [
        (-100.0, Action.NO_ACTION),
        (0.0, Action.NO_ACTION),
        (3.99, Action.NO_ACTION),
        (4.0, Action.GREYLIST),
        (5.99, Action.GREYLIST),
        (6.0, Action.ADD_HEADER),
        (9.0, Action.ADD_HEADER),  # rewrite subject is off by default
        (14.99, Action.ADD_HEADER),
        (15.0, Action.REJECT),
        (1e9, Action.REJECT),
    ],
)
def test_default_ladder(score: float, action: Action) -> None:
    assert DEFAULT.action_for(score) is action


@pytest.mark.parametrize(
    ("score", "action"),
    [
        (4.0, Action.GREYLIST),
        (6.0, Action.ADD_HEADER),
        (8.0, Action.REWRITE_SUBJECT),
        (10.0, Action.SOFT_REJECT),
        (15.0, Action.REJECT),
    ],
)
def test_every_rung_is_reachable(score: float, action: Action) -> None:
    assert EVERY_RUNG.action_for(score) is action
    assert EVERY_RUNG.action_for(score - 0.01) is not action


def test_highest_threshold_reached_wins_not_the_strongest_rung() -> None:
    # Rspamd's rule: greylist set above add header still wins once its threshold is reached.
    odd = Thresholds({Action.GREYLIST: 10.0, Action.ADD_HEADER: 6.0, Action.REJECT: 15.0})
    assert odd.action_for(7.0) is Action.ADD_HEADER
    assert odd.action_for(11.0) is Action.GREYLIST
    assert odd.action_for(15.0) is Action.REJECT


def test_equal_thresholds_pick_the_stronger_rung() -> None:
    tie = Thresholds({Action.REJECT: 5.0, Action.GREYLIST: 5.0, Action.ADD_HEADER: 5.0})
    assert tie.action_for(5.0) is Action.REJECT


def test_everything_off_means_no_action() -> None:
    off = Thresholds({a: None for a in Action if a is not Action.NO_ACTION})
    assert off.action_for(1000.0) is Action.NO_ACTION
    assert off.required_score == 0.0
    assert off.as_dict() == {}


def test_negative_threshold_is_reached_by_a_zero_score() -> None:
    assert Thresholds({Action.GREYLIST: -1.0}).action_for(0.0) is Action.GREYLIST


def test_required_score_is_reject_or_the_highest_rung() -> None:
    assert DEFAULT.required_score == 15.0
    no_reject = Thresholds({Action.GREYLIST: 4.0, Action.SOFT_REJECT: 12.0, Action.REJECT: None})
    assert no_reject.required_score == 12.0


def test_thresholds_as_dict_uses_wire_names_and_skips_off_rungs() -> None:
    assert DEFAULT.as_dict() == {"greylist": 4.0, "add header": 6.0, "reject": 15.0}
    assert EVERY_RUNG.as_dict() == {
        "greylist": 4.0,
        "add header": 6.0,
        "rewrite subject": 8.0,
        "soft reject": 10.0,
        "reject": 15.0,
    }


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("no action", Action.NO_ACTION),
        ("no_action", Action.NO_ACTION),
        ("accept", Action.NO_ACTION),
        ("Accept", Action.NO_ACTION),
        ("greylist", Action.GREYLIST),
        ("add header", Action.ADD_HEADER),
        ("add_header", Action.ADD_HEADER),
        ("  ADD_HEADER ", Action.ADD_HEADER),
        ("rewrite_subject", Action.REWRITE_SUBJECT),
        ("soft reject", Action.SOFT_REJECT),
        ("soft_reject", Action.SOFT_REJECT),
        ("reject", Action.REJECT),
    ],
)
def test_parse_accepts_wire_names_config_keys_and_aliases(text: str, action: Action) -> None:
    assert Action.parse(text) is action


@pytest.mark.parametrize("text", ["discard", "", "add-header", "rejected"])
def test_parse_refuses_unknown_names(text: str) -> None:
    with pytest.raises(ValueError, match="is not a valid Action"):
        Action.parse(text)


def test_rank_and_config_key() -> None:
    assert [a.rank for a in Action] == [0, 1, 2, 3, 4, 5]
    assert [a.config_key for a in Action] == [
        "no_action",
        "greylist",
        "add_header",
        "rewrite_subject",
        "soft_reject",
        "reject",
    ]
