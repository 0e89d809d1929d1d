"""Engine.from_config validation (symbols, groups, composites, thresholds, modules) and the
score → action path of Engine.scan."""

from __future__ import annotations

import tomllib
from typing import TYPE_CHECKING, ClassVar

import pytest

from engine import Action, ConfigError, ConfigProblem, Engine, ScanRequest
from engine.config import Key, Section
from engine.data import shipped_dir
from engine.modules import BUILTIN_MODULES, Module, check
from engine.modules.gtube import Gtube
from engine.modules.milter_headers import MilterHeaders
from engine.symbols import RegistryError, SymbolSpec

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import TypeAlias

    from engine import ScanResult
    from engine.task import Task

    Build: TypeAlias = Callable[..., Engine]
    Write: TypeAlias = Callable[[str, str], Path]


async def scan_with(engine: Engine, message: Callable[..., bytes], **headers: str) -> ScanResult:
    pairs = [(name.replace("_", "-"), value) for name, value in headers.items()]
    return await engine.scan(ScanRequest(raw=message(headers=pairs)))


def config_problems(build: Callable[[], object]) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        build()
    return info.value.problems


# -- building ------------------------------------------------------------------------------


def test_default_engine_has_the_builtin_modules(tmp_path: Path) -> None:
    config = Engine.load_config(None, environ={"MILTERD_DATA_DIR": str(tmp_path / "d")})
    engine = Engine.from_config(config)
    assert [type(m) for m in engine.modules] == list(BUILTIN_MODULES)
    assert {Gtube, MilterHeaders} <= set(BUILTIN_MODULES)
    assert {"GTUBE", "ENGINE_MODULE_ERROR", "ENGINE_MODULE_TIMEOUT", "ENGINE_SCAN_TIMEOUT"} <= set(
        engine.registry.symbols
    )
    assert (tmp_path / "d").is_dir()
    assert set(Engine.config_schema().keys) >= {"options", "actions", "gtube", "milter_headers"}


def test_shipped_group_caps_are_loaded(tmp_path: Path) -> None:
    shipped = shipped_dir("rules") / "groups.toml"
    expected: dict[str, float] = {}
    if shipped.is_file():
        with shipped.open("rb") as f:
            for name, table in tomllib.load(f).get("groups", {}).items():
                if isinstance(table.get("max_score"), int | float):
                    expected[name] = float(table["max_score"])
    config = Engine.load_config(None, environ={"MILTERD_DATA_DIR": str(tmp_path)}, modules=())
    assert Engine.from_config(config, modules=()).group_max == expected


def test_disabled_module_is_not_loaded(
    build_engine: Build, write_config: Write, scorer: type[Module]
) -> None:
    write_config("milterd.toml", "[gtube]\nenabled = false\n")
    engine = build_engine(Gtube, scorer)
    assert [m.name for m in engine.modules] == ["scorer"]
    assert "GTUBE" not in engine.registry.symbols


def test_unwritable_data_dir_is_a_config_problem(tmp_path: Path, scorer: type[Module]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = Engine.load_config(None, environ={"MILTERD_DATA_DIR": str(blocker / "sub")})
    assert config_problems(lambda: Engine.from_config(config, modules=(scorer,))) == [
        ConfigProblem(
            "$MILTERD_DATA_DIR", None, "options.data_dir", f"{blocker / 'sub'} is not writable"
        )
    ]


class Picky(Module):
    name = "picky"
    settings_schema = Section({"level": Key((int,), 1)})

    def setup(self) -> None:
        if self.settings["level"] > 3:  # type: ignore[operator]
            raise ConfigError([self.ctx.config.problem(("picky", "level"), "too high")])


def test_module_setup_problems_are_collected_with_the_others(
    build_engine: Build, write_config: Write, config_dir: Path
) -> None:
    path = write_config("milterd.toml", "[picky]\nlevel = 5\n\n[symbols.NOPE]\nscore = 1.0\n")
    assert config_problems(lambda: build_engine(Picky)) == [
        ConfigProblem(str(path), 2, "picky.level", "too high"),
        ConfigProblem(str(path), 4, "symbols.NOPE", "no module declares this symbol"),
    ]


class Inconsistent(Module):
    name = "inconsistent"

    @check(produces=("NOT_DECLARED",))
    def run(self, task: Task) -> None:
        return None


def test_inconsistent_module_is_a_registry_error(build_engine: Build) -> None:
    with pytest.raises(RegistryError, match="inserts undeclared symbol NOT_DECLARED"):
        build_engine(Inconsistent)


# -- [symbols] policy ----------------------------------------------------------------------


def test_symbol_policy_replaces_declared_defaults(
    build_engine: Build, write_config: Write, scorer: type[Module]
) -> None:
    write_config(
        "milterd.toml",
        '[symbols.ONE]\nscore = 4.5\n\n[symbols.TWO]\ndescription = "Changed"\ngroup = "new"\n'
        "\n[symbols.BIG]\nscore = 0\n",
    )
    symbols = build_engine(scorer).registry.symbols
    assert symbols["ONE"] == SymbolSpec("ONE", 4.5, "alpha", "One point")
    assert symbols["TWO"] == SymbolSpec("TWO", 2.0, "new", "Changed")
    assert symbols["BIG"] == SymbolSpec("BIG", 0.0, "beta", "Ten points")
    assert symbols["NEG"] == SymbolSpec("NEG", -3.0, "beta", "Minus three")


def test_symbol_policy_for_an_unknown_symbol_is_refused(
    build_engine: Build, write_config: Write, scorer: type[Module]
) -> None:
    path = write_config("milterd.toml", "[actions]\nreject = 20.0\n\n[symbols.ONE_]\nscore = 1.0\n")
    assert config_problems(lambda: build_engine(scorer)) == [
        ConfigProblem(str(path), 4, "symbols.ONE_", "no module declares this symbol")
    ]


async def test_symbol_policy_applies_to_scans(
    build_engine: Build, write_config: Write, scorer: type[Module], message: Callable[..., bytes]
) -> None:
    write_config("local.d/scores.toml", "[symbols.ONE]\nscore = 7.0\n")
    result = await scan_with(build_engine(scorer), message, x_insert="ONE TWO=0.5")
    assert result.score == 8.0
    assert result.symbols["ONE"].metric_score == 7.0
    assert result.action is Action.ADD_HEADER


# -- groups --------------------------------------------------------------------------------


def test_group_caps_come_from_rules_then_config(
    build_engine: Build, write_config: Write, rules_dir: Path, scorer: type[Module]
) -> None:
    (rules_dir / "groups.toml").write_text(
        "[groups.alpha]\nmax_score = 2.5\n\n[groups.beta]\nmax_score = 12\n\n"
        "[groups.gamma]\nmax_score = 1.0\n\n[groups.none]\n"
    )
    write_config(
        "milterd.toml",
        '[groups.alpha]\ndescription = "keeps the shipped cap"\n\n'
        "[groups.beta]\nmax_score = 5.0\n\n[groups.gamma]\nmax_score = false\n\n"
        "[groups.delta]\nmax_score = 3\n\n[groups.epsilon]\nmax_score = false\n",
    )
    assert build_engine(scorer).group_max == {"alpha": 2.5, "beta": 5.0, "delta": 3.0}


async def test_group_cap_in_a_scan(
    build_engine: Build, write_config: Write, scorer: type[Module], message: Callable[..., bytes]
) -> None:
    write_config("milterd.toml", "[groups.alpha]\nmax_score = 2.5\n")
    result = await scan_with(build_engine(scorer), message, x_insert="ONE TWO NEG=-1 BIG")
    assert {n: s.score for n, s in result.symbols.items()} == {
        "ONE": 1.0,
        "TWO": 1.5,
        "NEG": 3.0,
        "BIG": 10.0,
    }
    assert result.score == 15.5
    assert result.action is Action.REJECT


def test_without_any_group_config_there_are_no_caps(
    build_engine: Build, scorer: type[Module]
) -> None:
    assert build_engine(scorer).group_max == {}


# -- composites from the config ------------------------------------------------------------


async def test_composites_from_config_score_and_apply_their_policy(
    build_engine: Build, write_config: Write, scorer: type[Module], message: Callable[..., bytes]
) -> None:
    # OUTER is written first but uses INNER: the engine orders them.
    write_config(
        "milterd.toml",
        '[composites.OUTER]\nexpression = "INNER & g:beta"\nscore = 1.0\npolicy = "leave"\n\n'
        '[composites.INNER]\nexpression = "ONE & TWO"\nscore = 5.0\ndescription = "both"\n'
        'policy = "remove_weight"\n\n'
        '[composites.OFF]\nexpression = "ONE"\nscore = 100.0\nenabled = false\n',
    )
    engine = build_engine(scorer)
    assert [c.name for c in engine.composites] == ["INNER", "OUTER"]
    assert "OFF" not in engine.registry.symbols
    assert engine.registry.symbols["INNER"].group == "composite"
    result = await scan_with(engine, message, x_insert="ONE TWO BIG")
    assert {n: s.score for n, s in result.symbols.items()} == {
        "ONE": 0.0,
        "TWO": 0.0,
        "BIG": 10.0,
        "INNER": 5.0,
        "OUTER": 1.0,
    }
    assert result.symbols["INNER"].description == "both"
    assert result.score == 16.0
    result = await scan_with(engine, message, x_insert="ONE BIG")
    assert set(result.symbols) == {"ONE", "BIG"}


def test_composite_problems_are_located(
    build_engine: Build, write_config: Write, scorer: type[Module]
) -> None:
    path = write_config(
        "milterd.toml",
        '[composites.BAD_SYNTAX]\nscore = 1.0\nexpression = "ONE &"\n\n'
        '[composites.UNKNOWN_SYMBOL]\nexpression = "ONE & NOPE"\n\n'
        '[composites.UNKNOWN_GROUP]\nexpression = "g:nope | g+:alpha"\n\n'
        '[composites.ONE]\nexpression = "TWO"\n\n'
        '[composites.lower]\nexpression = "TWO"\n\n'
        '[composites.CYCLE_A]\nexpression = "CYCLE_B & ONE"\n\n'
        '[composites.CYCLE_B]\nexpression = "CYCLE_A"\n\n'
        '[composites.SELF]\nexpression = "SELF | ONE"\n',
    )
    assert config_problems(lambda: build_engine(scorer)) == [
        ConfigProblem(
            str(path),
            3,
            "composites.BAD_SYNTAX.expression",
            "expression ends too early at column 6",
        ),
        ConfigProblem(str(path), 11, "composites.ONE", "a module already declares this symbol"),
        ConfigProblem(
            str(path), 14, "composites.lower", "symbol name 'lower' must be UPPER_SNAKE_CASE"
        ),
        ConfigProblem(
            str(path), 6, "composites.UNKNOWN_SYMBOL.expression", "refers to unknown symbol NOPE"
        ),
        ConfigProblem(
            str(path), 9, "composites.UNKNOWN_GROUP.expression", "refers to unknown group nope"
        ),
        ConfigProblem(str(path), 17, "composites.CYCLE_A", "composite refers to itself in a cycle"),
        ConfigProblem(str(path), 23, "composites.SELF", "composite refers to itself in a cycle"),
    ]


def test_composite_may_use_a_group_only_composites_have(
    build_engine: Build, write_config: Write, scorer: type[Module]
) -> None:
    write_config(
        "milterd.toml",
        '[composites.A_C]\nexpression = "ONE"\n\n[composites.B_C]\nexpression = "g:composite & TWO"\n',
    )
    assert [c.name for c in build_engine(scorer).composites] == ["A_C", "B_C"]


# -- thresholds and actions through the config ---------------------------------------------


def test_default_thresholds(build_engine: Build, scorer: type[Module]) -> None:
    engine = build_engine(scorer)
    assert engine.thresholds.as_dict() == {"greylist": 4.0, "add header": 6.0, "reject": 15.0}
    assert engine.thresholds.required_score == 15.0


@pytest.mark.parametrize(
    ("inserted", "action"),
    [
        ("", Action.NO_ACTION),
        ("ONE TWO", Action.NO_ACTION),
        ("TWO=2", Action.GREYLIST),
        ("TWO=3", Action.ADD_HEADER),
        ("TWO=4", Action.REWRITE_SUBJECT),
        ("BIG", Action.SOFT_REJECT),
        ("BIG ONE=5", Action.REJECT),
        ("BIG ONE=5 NEG=1", Action.SOFT_REJECT),
    ],
)
async def test_every_rung_through_the_config(
    build_engine: Build,
    write_config: Write,
    scorer: type[Module],
    message: Callable[..., bytes],
    inserted: str,
    action: Action,
) -> None:
    write_config(
        "milterd.toml",
        "[actions]\ngreylist = 4\nadd_header = 6\nrewrite_subject = 8\nsoft_reject = 10\nreject = 15\n",
    )
    result = await scan_with(build_engine(scorer), message, x_insert=inserted)
    assert result.action is action
    assert (result.subject is not None) is (action is Action.REWRITE_SUBJECT)


async def test_rewrite_subject_uses_the_template(
    build_engine: Build, write_config: Write, scorer: type[Module], message: Callable[..., bytes]
) -> None:
    write_config("milterd.toml", '[actions]\nrewrite_subject = 1.0\nsubject = "[SPAM %s] %s"\n')
    result = await scan_with(build_engine(scorer), message, x_insert="ONE")
    assert result.action is Action.REWRITE_SUBJECT
    assert result.subject == "[SPAM Test] Test"


async def test_rungs_switched_off_with_false(
    build_engine: Build, write_config: Write, scorer: type[Module], message: Callable[..., bytes]
) -> None:
    write_config("milterd.toml", "[actions]\ngreylist = false\nreject = false\n")
    engine = build_engine(scorer)
    assert engine.thresholds.as_dict() == {"add header": 6.0}
    assert engine.thresholds.required_score == 6.0
    assert (await scan_with(engine, message, x_insert="TWO=2")).action is Action.NO_ACTION
    assert (await scan_with(engine, message, x_insert="BIG=9")).action is Action.ADD_HEADER


async def test_forced_action_from_a_post_filter_overrides_the_score(
    build_engine: Build, scorer: type[Module], message: Callable[..., bytes]
) -> None:
    engine = build_engine(scorer)
    result = await scan_with(engine, message, x_insert="BIG=2", x_force="no action")
    assert result.score == 20.0
    assert result.action is Action.NO_ACTION
    assert result.messages == {"smtp_message": "forced no action"}
    result = await scan_with(engine, message, x_insert="", x_force="soft_reject")
    assert (result.score, result.action) == (0.0, Action.SOFT_REJECT)
    assert result.forced is not None
    assert result.forced.module == "scorer"
    assert result.to_json()["passthrough_module"] == "scorer"


async def test_message_id_and_subject_from_header_fields(
    build_engine: Build, scorer: type[Module]
) -> None:
    engine = build_engine(scorer)
    request = ScanRequest(
        headers=(("Subject", "Hi"), ("Message-ID", " <abc@example.org> "), ("X-Insert", "ONE")),
        body=b"body\r\n",
    )
    result = await engine.scan(request)
    assert result.message_id == "abc@example.org"
    assert set(result.symbols) == {"ONE"}


def test_symbol_policy_with_only_an_empty_description_changes_nothing(
    build_engine: Build, write_config: Write, scorer: type[Module]
) -> None:
    write_config("milterd.toml", '[symbols.ONE]\ndescription = ""\n')
    assert build_engine(scorer).registry.symbols["ONE"] == SymbolSpec(
        "ONE", 1.0, "alpha", "One point"
    )


class Closing(Module):
    name = "closing"
    closed: ClassVar[list[str]] = []

    async def aclose(self) -> None:
        self.closed.append(self.name)


async def test_closing_the_engine_closes_its_modules(build_engine: Build) -> None:
    Closing.closed.clear()
    async with build_engine(Closing) as engine:
        assert Closing.closed == []
    assert Closing.closed == ["closing"]
    assert engine.modules[0].name == "closing"


def test_composite_may_use_a_group_given_in_symbols_config(
    build_engine: Build, write_config: Write, scorer: type[Module]
) -> None:
    write_config(
        "milterd.toml",
        '[symbols.ONE]\ngroup = "regrouped"\n\n[composites.USES_IT]\nexpression = "g:regrouped"\n',
    )
    engine = build_engine(scorer)
    assert [c.name for c in engine.composites] == ["USES_IT"]
    assert engine.registry.symbols["ONE"].group == "regrouped"
