"""``milterd.verdict``: scan result → the exact milter replies, rung by rung.

Results are built by hand (no engine), so each test pins one mapping rule.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine import Action, ScanResult
from milterd.protocol import (
    Accept,
    ActionFlag,
    AddHeader,
    ChangeHeader,
    Discard,
    Quarantine,
    ReplyCode,
)
from milterd.settings import MilterSettings
from milterd.verdict import fallback_actions, verdict_actions

DEFAULTS = MilterSettings.defaults()
RESULT_HEADER = ("X-Spamd-Result", "default: False [0.00 / 15.00]")


def result(action: Action, **kw: object) -> ScanResult:
    fields: dict[str, object] = {
        "score": 0.0,
        "required_score": 15.0,
        "thresholds": {},
        "symbols": {},
        "add_headers": (RESULT_HEADER,),
    }
    fields.update(kw)
    return ScanResult(action=action, **fields)  # type: ignore[arg-type]


# -- the ladder, rung by rung ----------------------------------------------------------


def test_no_action_adds_result_headers_and_accepts() -> None:
    assert verdict_actions(result(Action.NO_ACTION), DEFAULTS, {}) == [
        AddHeader(*RESULT_HEADER),
        Accept(),
    ]


def test_no_action_removes_upstream_spam_headers_highest_index_first() -> None:
    assert verdict_actions(result(Action.NO_ACTION), DEFAULTS, {"x-spam": 2}) == [
        AddHeader(*RESULT_HEADER),
        ChangeHeader(2, "X-Spam", ""),
        ChangeHeader(1, "X-Spam", ""),
        Accept(),
    ]


def test_greylist_is_451_with_the_configured_text_and_no_edits() -> None:
    assert verdict_actions(result(Action.GREYLIST), DEFAULTS, {"x-spam": 1}) == [
        ReplyCode(451, "4.7.1 Greylisted, please try again later")
    ]


def test_add_header_replaces_existing_spam_headers_with_ours() -> None:
    assert verdict_actions(result(Action.ADD_HEADER), DEFAULTS, {"x-spam": 3}) == [
        AddHeader(*RESULT_HEADER),
        ChangeHeader(3, "X-Spam", ""),
        ChangeHeader(2, "X-Spam", ""),
        ChangeHeader(1, "X-Spam", ""),
        AddHeader("X-Spam", "Yes"),
        Accept(),
    ]


def test_rewrite_subject_changes_the_first_subject() -> None:
    res = result(Action.REWRITE_SUBJECT, subject="*** SPAM *** Hello")
    assert verdict_actions(res, DEFAULTS, {"subject": 1}) == [
        AddHeader(*RESULT_HEADER),
        AddHeader("X-Spam", "Yes"),
        ChangeHeader(1, "Subject", "*** SPAM *** Hello"),
        Accept(),
    ]


def test_rewrite_subject_without_a_subject_only_marks_the_message() -> None:
    assert verdict_actions(result(Action.REWRITE_SUBJECT), DEFAULTS, {}) == [
        AddHeader(*RESULT_HEADER),
        AddHeader("X-Spam", "Yes"),
        Accept(),
    ]


def test_rewritten_subject_is_made_one_printable_line() -> None:
    res = result(Action.REWRITE_SUBJECT, subject="*** SPAM *** a\r\n\tb\x00", add_headers=())
    assert verdict_actions(res, DEFAULTS, {})[1] == ChangeHeader(1, "Subject", "*** SPAM *** a   b")


def test_soft_reject_is_450() -> None:
    assert verdict_actions(result(Action.SOFT_REJECT), DEFAULTS, {}) == [
        ReplyCode(450, "4.7.1 Try again later")
    ]


def test_reject_is_554() -> None:
    assert verdict_actions(result(Action.REJECT), DEFAULTS, {"x-spam": 1}) == [
        ReplyCode(554, "5.7.1 Spam message rejected")
    ]


def test_reject_as_discard() -> None:
    settings = replace(DEFAULTS, reject_action="discard")
    assert verdict_actions(result(Action.REJECT), settings, {"x-spam": 1}) == [Discard()]


def test_reject_as_quarantine_marks_holds_and_accepts() -> None:
    settings = replace(DEFAULTS, reject_action="quarantine")
    assert verdict_actions(result(Action.REJECT), settings, {"x-spam": 1}) == [
        AddHeader(*RESULT_HEADER),
        ChangeHeader(1, "X-Spam", ""),
        AddHeader("X-Spam", "Yes"),
        Quarantine("Spam message quarantined"),
        Accept(),
    ]


def test_configured_texts_are_used() -> None:
    settings = replace(
        DEFAULTS,
        reject_message="Go away",
        greylist_message="Later",
        soft_reject_message="Busy",
        quarantine_reason="Held",
        spam_header_value="YES (15.0)",
    )
    assert verdict_actions(result(Action.REJECT), settings, {}) == [ReplyCode(554, "5.7.1 Go away")]
    assert verdict_actions(result(Action.GREYLIST), settings, {}) == [ReplyCode(451, "4.7.1 Later")]
    assert verdict_actions(result(Action.SOFT_REJECT), settings, {}) == [
        ReplyCode(450, "4.7.1 Busy")
    ]
    quarantine = verdict_actions(
        result(Action.REJECT), replace(settings, reject_action="quarantine"), {}
    )
    assert quarantine[-3:] == [AddHeader("X-Spam", "YES (15.0)"), Quarantine("Held"), Accept()]


# -- smtp_message from a module ----------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "code", "status"),
    [
        (Action.REJECT, 554, "5.7.1"),
        (Action.GREYLIST, 451, "4.7.1"),
        (Action.SOFT_REJECT, 450, "4.7.1"),
    ],
)
def test_smtp_message_replaces_the_configured_text(action: Action, code: int, status: str) -> None:
    res = result(action, messages={"smtp_message": "Gtube pattern"})
    assert verdict_actions(res, DEFAULTS, {}) == [ReplyCode(code, f"{status} Gtube pattern")]


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ("rate\r\nlimited\x00now", "5.7.1 rate  limited now"),
        ("  \n\t  ", "5.7.1 -"),
        ("x" * 1000, "5.7.1 " + "x" * 400),
        ("100% spam", "5.7.1 100% spam"),
    ],
)
def test_smtp_message_is_sanitised_to_one_bounded_line(message: str, text: str) -> None:
    res = result(Action.REJECT, messages={"smtp_message": message})
    assert verdict_actions(res, DEFAULTS, {}) == [ReplyCode(554, text)]


def test_empty_smtp_message_falls_back_to_the_configured_text() -> None:
    res = result(Action.REJECT, messages={"smtp_message": ""})
    assert verdict_actions(res, DEFAULTS, {}) == [ReplyCode(554, "5.7.1 Spam message rejected")]


# -- remove_headers from the result --------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, [3, 2, 1]),  # every instance, highest first
        (1, [1]),
        (3, [3]),
        (4, []),  # past the last one: nothing to remove
        (-1, [3]),  # counted from the end
        (-3, [1]),
        (-4, []),
    ],
)
def test_remove_headers_indices(index: int, expected: list[int]) -> None:
    res = result(Action.NO_ACTION, add_headers=(), remove_headers={"X-Upstream": index})
    assert verdict_actions(res, DEFAULTS, {"x-upstream": 3}) == [
        *(ChangeHeader(i, "X-Upstream", "") for i in expected),
        Accept(),
    ]


def test_remove_headers_of_an_absent_header_is_nothing() -> None:
    res = result(Action.NO_ACTION, add_headers=(), remove_headers={"X-Absent": 0, "X-Other": -1})
    assert verdict_actions(res, DEFAULTS, {}) == [Accept()]


def test_removals_come_before_additions_of_the_same_header() -> None:
    res = result(Action.NO_ACTION, remove_headers={"X-Spamd-Result": 0})
    assert verdict_actions(res, DEFAULTS, {"x-spamd-result": 2}) == [
        ChangeHeader(2, "X-Spamd-Result", ""),
        ChangeHeader(1, "X-Spamd-Result", ""),
        AddHeader(*RESULT_HEADER),
        Accept(),
    ]


def test_several_result_headers_keep_their_order() -> None:
    headers = (("X-A", "1"), ("X-B", "2"), ("X-A", "3"))
    res = result(Action.NO_ACTION, add_headers=headers)
    assert verdict_actions(res, DEFAULTS, {}) == [
        AddHeader("X-A", "1"),
        AddHeader("X-B", "2"),
        AddHeader("X-A", "3"),
        Accept(),
    ]


# -- the spam header switches ----------------------------------------------------------------


def test_empty_spam_header_means_no_spam_header_at_all() -> None:
    settings = replace(DEFAULTS, spam_header="")
    assert verdict_actions(result(Action.ADD_HEADER), settings, {"x-spam": 1}) == [
        AddHeader(*RESULT_HEADER),
        Accept(),
    ]
    quarantine = replace(settings, reject_action="quarantine")
    assert verdict_actions(result(Action.REJECT), quarantine, {"x-spam": 1}) == [
        AddHeader(*RESULT_HEADER),
        Quarantine("Spam message quarantined"),
        Accept(),
    ]


def test_custom_spam_header_name_is_matched_case_insensitively() -> None:
    settings = replace(DEFAULTS, spam_header="X-Spam-Flag", spam_header_value="YES")
    assert verdict_actions(
        result(Action.ADD_HEADER, add_headers=()), settings, {"x-spam-flag": 1}
    ) == [
        ChangeHeader(1, "X-Spam-Flag", ""),
        AddHeader("X-Spam-Flag", "YES"),
        Accept(),
    ]


def test_upstream_spam_header_kept_when_asked_and_message_is_ham() -> None:
    settings = replace(DEFAULTS, remove_upstream_spam_header=False)
    assert verdict_actions(result(Action.NO_ACTION), settings, {"x-spam": 2}) == [
        AddHeader(*RESULT_HEADER),
        Accept(),
    ]


def test_upstream_spam_header_still_replaced_when_we_say_spam() -> None:
    settings = replace(DEFAULTS, remove_upstream_spam_header=False)
    assert verdict_actions(result(Action.ADD_HEADER), settings, {"x-spam": 1}) == [
        AddHeader(*RESULT_HEADER),
        ChangeHeader(1, "X-Spam", ""),
        AddHeader("X-Spam", "Yes"),
        Accept(),
    ]


# -- no verdict ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["error", "timeout", "partial"])
def test_fallback_accept_adds_the_incomplete_header(reason: str) -> None:
    assert fallback_actions(DEFAULTS, reason) == [
        AddHeader("X-Milterd-Scan", f"incomplete ({reason})"),
        Accept(),
    ]


def test_fallback_accept_with_no_incomplete_header() -> None:
    assert fallback_actions(replace(DEFAULTS, incomplete_header=""), "error") == [Accept()]


def test_fallback_accept_with_a_custom_incomplete_header() -> None:
    settings = replace(DEFAULTS, incomplete_header="X-Scan-Status")
    assert fallback_actions(settings, "timeout") == [
        AddHeader("X-Scan-Status", "incomplete (timeout)"),
        Accept(),
    ]


def test_fallback_tempfail_is_451() -> None:
    settings = replace(DEFAULTS, on_error="tempfail")
    assert fallback_actions(settings, "error") == [
        ReplyCode(451, "4.7.1 Scanner unavailable, try again later")
    ]
    assert fallback_actions(replace(settings, tempfail_message="Down"), "timeout") == [
        ReplyCode(451, "4.7.1 Down")
    ]


# -- what the MTA granted at negotiation ------------------------------------------------

ADD_ONLY = ActionFlag.ADDHDRS


def test_edits_the_mta_did_not_grant_are_left_out() -> None:
    assert verdict_actions(result(Action.ADD_HEADER), DEFAULTS, {"x-spam": 1}, ADD_ONLY) == [
        AddHeader(*RESULT_HEADER),
        AddHeader("X-Spam", "Yes"),
        Accept(),
    ]


def test_quarantine_without_the_grant_is_the_reject_reply() -> None:
    quarantine = replace(DEFAULTS, reject_action="quarantine")
    granted = ActionFlag.ADDHDRS | ActionFlag.CHGHDRS
    assert verdict_actions(result(Action.REJECT), quarantine, {}, granted) == [
        ReplyCode(554, "5.7.1 Spam message rejected")
    ]


def test_fallback_header_needs_the_grant() -> None:
    assert fallback_actions(DEFAULTS, "error", ActionFlag.NONE) == [Accept()]


# -- partial results ------------------------------------------------------------------


def test_partial_result_let_through_says_so() -> None:
    assert verdict_actions(result(Action.NO_ACTION, partial=True), DEFAULTS, {}) == [
        AddHeader(*RESULT_HEADER),
        AddHeader("X-Milterd-Scan", "incomplete (partial)"),
        Accept(),
    ]


@pytest.mark.parametrize("reject_action", ["reject", "discard"])
def test_partial_result_refused_carries_no_note(reject_action: str) -> None:
    settings = replace(DEFAULTS, reject_action=reject_action)
    actions = verdict_actions(result(Action.REJECT, partial=True), settings, {})
    assert not any(isinstance(a, AddHeader) for a in actions)
