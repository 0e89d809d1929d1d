"""Sum of score * weight with group caps, and how a task records repeated inserts."""

from __future__ import annotations

import math

import pytest

from engine.mime.message import ParsedMessage
from engine.pipeline.actions import Action, ForcedAction
from engine.symbols import ScoredSymbol, SymbolHit, SymbolSpec, score_symbols
from engine.task import ScanRequest, Task, UnknownSymbolError

SPECS = {
    s.name: s
    for s in (
        SymbolSpec("A", 2.0, "ga", "a"),
        SymbolSpec("B", 3.0, "ga", "b"),
        SymbolSpec("C", 4.0, "ga"),
        SymbolSpec("NEG", -5.0, "ga"),
        SymbolSpec("FREE", 1.5, "other"),
        SymbolSpec("MANY", 1.0, "other", one_shot=False),
    )
}


def hits(*items: str | tuple[str, float]) -> dict[str, SymbolHit]:
    out = {}
    for item in items:
        name, weight = (item, 1.0) if isinstance(item, str) else item
        out[name] = SymbolHit(name, weight)
    return out


def contributions(scored: dict[str, ScoredSymbol]) -> dict[str, float]:
    return {name: s.score for name, s in scored.items()}


def test_sum_of_score_times_weight() -> None:
    total, scored = score_symbols(hits("A", ("B", 0.5), ("FREE", -2.0)), SPECS, {})
    assert total == 2.0 + 1.5 - 3.0
    assert contributions(scored) == {"A": 2.0, "B": 1.5, "FREE": -3.0}
    assert scored["B"] == ScoredSymbol("B", 1.5, 3.0, "b", "ga", ())


def test_group_cap_trims_the_contributions_that_came_last() -> None:
    total, scored = score_symbols(hits("A", "B", "C", "FREE"), SPECS, {"ga": 4.0})
    assert contributions(scored) == {"A": 2.0, "B": 2.0, "C": 0.0, "FREE": 1.5}
    assert total == 5.5
    assert scored["C"].metric_score == 4.0  # the configured weight is still shown


def test_negative_scores_are_never_capped_and_do_not_use_the_cap() -> None:
    total, scored = score_symbols(hits("NEG", "A", "B", "C"), SPECS, {"ga": 4.0})
    assert contributions(scored) == {"NEG": -5.0, "A": 2.0, "B": 2.0, "C": 0.0}
    assert total == -1.0
    total, _ = score_symbols(hits(("NEG", 3.0)), SPECS, {"ga": 1.0})
    assert total == -15.0


def test_cap_of_zero_silences_a_group() -> None:
    total, scored = score_symbols(hits("A", "FREE"), SPECS, {"ga": 0.0})
    assert (total, contributions(scored)) == (1.5, {"A": 0.0, "FREE": 1.5})


def test_non_finite_contribution_counts_as_zero() -> None:
    total, scored = score_symbols(hits(("A", math.inf), ("B", math.nan), "FREE"), SPECS, {})
    assert (total, contributions(scored)) == (1.5, {"A": 0.0, "B": 0.0, "FREE": 1.5})


def test_hidden_symbol_counts_but_is_not_listed() -> None:
    h = hits("A", "FREE")
    h["A"].hidden = True
    total, scored = score_symbols(h, SPECS, {})
    assert (total, list(scored)) == (3.5, ["FREE"])


def test_scores_are_rounded_to_six_places() -> None:
    total, scored = score_symbols(hits(("A", 1 / 3)), SPECS, {})
    assert (total, scored["A"].score) == (0.666667, 0.666667)


# -- Task.insert_result -------------------------------------------------------------------


@pytest.fixture
def task() -> Task:
    raw = b"Subject: x\r\n\r\nbody\r\n"
    return Task(ScanRequest(raw=raw), ParsedMessage.from_bytes(raw), SPECS)


def test_repeated_insert_keeps_the_strongest_weight_and_merges_options(task: Task) -> None:
    task.insert_result("A", 0.5, ["x"])
    task.insert_result("A", -0.8, ["y", "x"])
    task.insert_result("A", 0.2, [3])  # type: ignore[list-item]
    assert task.hits == {"A": SymbolHit("A", -0.8, ["x", "y", "3"])}
    assert task.has("A")
    assert not task.has("B")


def test_repeated_insert_adds_up_when_not_one_shot(task: Task) -> None:
    task.insert_result("MANY")
    task.insert_result("MANY", 2.0, ["b"])
    task.insert_result("MANY", 0.5)
    assert task.hits["MANY"] == SymbolHit("MANY", 3.5, ["b"])


def test_insert_of_undeclared_symbol_raises(task: Task) -> None:
    with pytest.raises(UnknownSymbolError):
        task.insert_result("NOPE")
    assert task.hits == {}


def test_remove_result(task: Task) -> None:
    task.insert_result("A")
    task.remove_result("A")
    task.remove_result("NEVER_THERE")
    assert task.hits == {}


def test_first_pre_result_and_strongest_forced_action_win(task: Task) -> None:
    task.set_pre_result(Action.GREYLIST, "one", "later")
    task.set_pre_result(Action.REJECT, "two")
    assert task.pre_result == ForcedAction(Action.GREYLIST, "one", "later")
    task.force_action(Action.ADD_HEADER, "a")
    task.force_action(Action.REJECT, "b", "no")
    task.force_action(Action.GREYLIST, "c")
    assert task.forced == ForcedAction(Action.REJECT, "b", "no")
