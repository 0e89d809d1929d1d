"""Inline settings (Rspamd's ``Settings`` header): the keys a ``[settings.NAME]`` table
applies, checked by the same schema and compiled into the same ``Profile``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine import Action, Engine, ScanRequest
from engine.modules import Module, check
from engine.settings import INLINE_KEYS, SETTINGS, InlineSettings, InvalidSettings
from engine.symbols import SymbolSpec

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from engine.task import Task

MESSAGE = b"Subject: x\r\n\r\nbody\r\n"


class Pair(Module):
    """Two checks: ``pair.low`` inserts LOW (1 point, group low), ``pair.high`` HIGH (10
    points, group high). Each records that it ran."""

    name = "pair"
    symbols = (SymbolSpec("LOW", 1.0, "low"), SymbolSpec("HIGH", 10.0, "high"))

    def setup(self) -> None:
        self.ran: list[str] = []

    @check(produces=("LOW",))
    def low(self, task: Task) -> None:
        self.ran.append("low")
        task.insert_result("LOW")

    @check(produces=("HIGH",))
    def high(self, task: Task) -> None:
        self.ran.append("high")
        task.insert_result("HIGH")


def inline(block: dict[str, object], settings_id: str | None = None) -> ScanRequest:
    return ScanRequest(raw=MESSAGE, settings=InlineSettings.parse(block), settings_id=settings_id)


def problems(block: dict[str, object]) -> dict[str, str]:
    with pytest.raises(InvalidSettings) as info:
        InlineSettings.parse(block)
    return dict(info.value.problems)


@pytest.fixture
def engine(build_engine: Callable[..., Engine], write_config: Callable[[str, str], Path]) -> Engine:
    write_config(
        "milterd.toml",
        "[actions]\ngreylist = false\nadd_header = 5.0\nreject = 15.0\n"
        '[settings.quiet]\nsymbols_disabled = ["HIGH"]\n',
    )
    return build_engine(Pair)


def ran(engine: Engine) -> list[str]:
    module = next(m for m in engine.modules if isinstance(m, Pair))
    return module.ran


# -- the shape, without an engine -------------------------------------------------------------


def test_the_keys_are_what_a_table_applies() -> None:
    # Every key of a [settings.NAME] table is inline except those that say when the table
    # applies: a block that comes with the message applies to it, always.
    when = {"priority", "ip", "from", "rcpt", "user", "authenticated"}
    assert set(INLINE_KEYS) == set(SETTINGS.item.keys) - when


def test_parse_fills_the_tables_defaults() -> None:
    settings = InlineSettings.parse({"symbols_disabled": ["HIGH"]})
    assert dict(settings.table) == {
        "symbols_enabled": [],
        "symbols_disabled": ["HIGH"],
        "groups_enabled": [],
        "groups_disabled": [],
        "actions": {},
        "scores": {},
    }


def test_equal_blocks_share_a_key() -> None:
    one = InlineSettings.parse({"actions": {"reject": 20, "greylist": None}, "scores": {}})
    two = InlineSettings.parse({"actions": {"greylist": None, "reject": 20}})
    assert one.key == two.key
    assert one.key != InlineSettings.parse({"actions": {"reject": 21}}).key


def test_json_null_switches_a_rung_off_like_false() -> None:
    settings = InlineSettings.parse({"actions": {"greylist": None, "reject": 20}})
    assert settings.table["actions"] == {"greylist": False, "reject": 20}


@pytest.mark.parametrize(
    "key", ["ip", "from", "rcpt", "user", "authenticated", "priority", "symbols", "subject"]
)
def test_a_key_a_table_applies_nothing_with_is_refused(key: str) -> None:
    found = problems({key: "x", "symbols_disabled": ["HIGH"]})
    assert list(found) == [key]
    assert found[key].startswith("unknown key (known here: actions, groups_disabled")


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"symbols_enabled": 5}, "symbols_enabled"),
        ({"symbols_disabled": [""]}, "symbols_disabled"),
        ({"groups_enabled": [1]}, "groups_enabled"),
        ({"groups_disabled": True}, "groups_disabled"),
        ({"actions": [15]}, "actions"),
        ({"scores": "HIGH=1"}, "scores"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(block: dict[str, object], key: str) -> None:
    assert list(problems(block)) == [key]


def test_every_problem_is_named_at_once() -> None:
    found = problems({"ip": "x", "actions": 3, "scores": []})
    assert set(found) == {"ip", "actions", "scores"}
    with pytest.raises(InvalidSettings, match=r"^actions: must be a table"):
        InlineSettings.parse({"actions": 3})


# -- applied by the engine --------------------------------------------------------------------


async def test_disabled_symbols_and_their_checks_do_not_run(engine: Engine) -> None:
    result = await engine.scan(inline({"symbols_disabled": ["HIGH"]}))
    assert set(result.symbols) == {"LOW"}
    assert ran(engine) == ["low"]
    assert result.settings_id is None  # no table applied


async def test_enabled_groups(engine: Engine) -> None:
    result = await engine.scan(inline({"groups_enabled": ["high"]}))
    assert set(result.symbols) == {"HIGH"}
    assert ran(engine) == ["high"]


async def test_thresholds_and_scores(engine: Engine) -> None:
    result = await engine.scan(inline({"actions": {"reject": 11, "add_header": None}}))
    assert result.score == 11.0
    assert result.action is Action.REJECT
    assert result.required_score == 11.0
    assert result.thresholds == {"reject": 11.0}
    result = await engine.scan(inline({"scores": {"HIGH": 0.5}}))
    assert result.score == 1.5
    assert result.action is Action.NO_ACTION


async def test_inline_settings_win_over_settings_id(engine: Engine) -> None:
    named = await engine.scan(ScanRequest(raw=MESSAGE, settings_id="quiet"))
    assert (named.settings_id, set(named.symbols)) == ("quiet", {"LOW"})
    both = await engine.scan(inline({"scores": {"LOW": 2.0}}, settings_id="quiet"))
    assert both.settings_id is None
    assert set(both.symbols) == {"LOW", "HIGH"}  # quiet's symbols_disabled did not apply
    assert both.score == 12.0
    empty = await engine.scan(inline({}, settings_id="quiet"))  # an empty block too
    assert set(empty.symbols) == {"LOW", "HIGH"}


@pytest.mark.parametrize(
    ("block", "key", "why"),
    [
        ({"symbols_disabled": ["NOPE"]}, "symbols_disabled", "unknown symbol NOPE"),
        ({"symbols_enabled": ["LOW", "NOPE"]}, "symbols_enabled", "unknown symbol NOPE"),
        ({"groups_enabled": ["nope"]}, "groups_enabled", "unknown group nope"),
        ({"groups_disabled": ["nope"]}, "groups_disabled", "unknown group nope"),
        ({"actions": {"rejectt": 5}}, "actions.rejectt", "not a rung"),
        ({"actions": {"no_action": 5}}, "actions.no_action", "not a rung"),
        ({"actions": {"reject": "high"}}, "actions.reject", "must be a score"),
        ({"scores": {"NOPE": 1}}, "scores.NOPE", "unknown symbol"),
        ({"scores": {"LOW": "1"}}, "scores.LOW", "must be a number"),
    ],
)
async def test_names_the_engine_lacks_are_refused_before_anything_runs(
    engine: Engine, block: dict[str, object], key: str, why: str
) -> None:
    with pytest.raises(InvalidSettings) as info:
        await engine.scan(inline(block))
    assert [k for k, _ in info.value.problems] == [key]
    assert why in info.value.problems[0][1]
    assert ran(engine) == []


async def test_a_block_is_compiled_once(engine: Engine) -> None:
    first = engine.settings.select(inline({"actions": {"reject": 3}, "scores": {"LOW": 1}}))
    again = engine.settings.select(inline({"scores": {"LOW": 1}, "actions": {"reject": 3}}))
    assert again is first
    other = engine.settings.select(inline({"actions": {"reject": 4}}))
    assert other is not first
    assert other.thresholds.levels[Action.REJECT] == 4.0
