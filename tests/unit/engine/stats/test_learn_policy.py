"""The learn cache's name for a message, and autolearn's guards (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.stats.learn import (
    AutolearnPolicy,
    LearnResult,
    Verdict,
    autolearn_class,
    message_digest,
)

POLICY = AutolearnPolicy(spam_threshold=12.0, ham_threshold=-0.5)
CLEAN = Verdict(
    score_without_bayes=0.0,
    is_spam_action=False,
    is_no_action=True,
    decided=False,
    partial=False,
    engine_symbols=False,
    bayes_probability=None,
)


def verdict(**changes: object) -> Verdict:
    return replace(CLEAN, **changes)  # type: ignore[arg-type]


SPAM = verdict(score_without_bayes=14.0, is_spam_action=True, is_no_action=False)
HAM = verdict(score_without_bayes=-2.0)


def test_a_learn_result_is_true_when_it_learned() -> None:
    assert LearnResult(True, "learned as spam")
    assert not LearnResult(False, "already learned as spam")


def test_the_digest_ignores_line_ends_trailing_space_and_headers() -> None:
    body = b"Hello,\r\n\r\nsee you at noon.\r\n"
    digest = message_digest(body, "<1@example.org>", None)
    assert digest == message_digest(body.replace(b"\r\n", b"\n") + b"\n\n", "<1@example.org>", None)
    assert len(digest) == 32
    assert digest != message_digest(body, "<2@example.org>", None)
    assert digest != message_digest(body + b"PS", "<1@example.org>", None)
    assert digest != message_digest(body, "<1@example.org>", "alice@example.org")


def test_clear_verdicts_are_learned() -> None:
    assert autolearn_class(SPAM, POLICY, (0, 0)) == (True, "autolearn")
    assert autolearn_class(HAM, POLICY, (0, 0)) == (False, "autolearn")


@pytest.mark.parametrize(
    ("case", "why"),
    [
        (verdict(score_without_bayes=11.9, is_spam_action=True, is_no_action=False), "clear"),
        (verdict(score_without_bayes=20.0, is_spam_action=False, is_no_action=False), "clear"),
        (verdict(score_without_bayes=-0.4), "clear"),
        (verdict(score_without_bayes=-3.0, is_no_action=False), "clear"),
        (verdict(score_without_bayes=20.0, is_spam_action=True, decided=True), "forced"),
        (verdict(score_without_bayes=20.0, is_spam_action=True, partial=True), "incomplete"),
        (verdict(score_without_bayes=-9.0, engine_symbols=True), "incomplete"),
    ],
)
def test_unclear_forced_or_incomplete_verdicts_are_not_learned(case: Verdict, why: str) -> None:
    is_spam, reason = autolearn_class(case, POLICY, (0, 0))
    assert is_spam is None
    assert why in reason


def test_bayes_vetoes_a_verdict_it_strongly_disagrees_with() -> None:
    assert autolearn_class(replace(SPAM, bayes_probability=0.05), POLICY, (9, 9))[0] is None
    assert autolearn_class(replace(HAM, bayes_probability=0.95), POLICY, (9, 9))[0] is None
    # A weak disagreement does not veto.
    assert autolearn_class(replace(SPAM, bayes_probability=0.2), POLICY, (9, 9))[0] is True


def test_nothing_to_learn_when_bayes_is_already_sure() -> None:
    sure = replace(SPAM, bayes_probability=0.999)
    is_spam, why = autolearn_class(sure, POLICY, (9, 9))
    assert is_spam is None
    assert "already sure" in why


def test_the_balance_guard_lets_each_class_reach_min_learns_first() -> None:
    assert autolearn_class(SPAM, POLICY, (199, 0), min_learns=200)[0] is True
    is_spam, why = autolearn_class(SPAM, POLICY, (200, 0), min_learns=200)
    assert is_spam is None
    assert "200 learns to 0" in why
    assert autolearn_class(SPAM, POLICY, (499, 100), min_learns=200)[0] is True
    assert autolearn_class(SPAM, POLICY, (500, 100), min_learns=200)[0] is None
    assert autolearn_class(HAM, POLICY, (500, 100), min_learns=200)[0] is False
