"""The registry refuses inconsistent declarations and orders each stage's checks."""

from __future__ import annotations

import pytest

from engine.pipeline.stages import Stage
from engine.symbols import CheckSpec, RegistryError, SymbolRegistry, SymbolSpec, SymbolType


def _noop(task: object) -> None:
    return None


def check(
    name: str,
    stage: Stage = Stage.FILTER,
    produces: tuple[str, ...] = (),
    depends_on: tuple[str, ...] = (),
    priority: int = 0,
) -> CheckSpec:
    return CheckSpec(name, stage, _noop, produces, name.split(".")[0], depends_on, priority)


def registry(*checks: CheckSpec, symbols: tuple[str, ...] = ("A", "B")) -> SymbolRegistry:
    reg = SymbolRegistry()
    for name in symbols:
        reg.add_symbol(SymbolSpec(name))
    for c in checks:
        reg.add_check(c)
    return reg


def names(checks: list[CheckSpec]) -> list[str]:
    return [c.name for c in checks]


def test_symbol_spec_defaults_and_name_rule() -> None:
    spec = SymbolSpec("R_OK")
    assert (spec.score, spec.group, spec.description, spec.type, spec.one_shot) == (
        0.0,
        "misc",
        "",
        SymbolType.NORMAL,
        True,
    )
    for bad in ("lower", "1ABC", "A-B", ""):
        with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):
            SymbolSpec(bad)


def test_duplicate_symbol_is_refused() -> None:
    reg = registry()
    with pytest.raises(RegistryError, match=r"^symbol A is declared twice$"):
        reg.add_symbol(SymbolSpec("A", 5.0))
    assert reg.symbols["A"].score == 0.0


def test_duplicate_check_is_refused() -> None:
    reg = registry(check("m.one"))
    with pytest.raises(RegistryError, match=r"^check m\.one is declared twice$"):
        reg.add_check(check("m.one", Stage.PRE))
    assert reg.checks["m.one"].stage is Stage.FILTER


def test_check_inserting_undeclared_symbol_is_refused() -> None:
    reg = registry(check("m.one", produces=("A", "NOPE")))
    with pytest.raises(RegistryError, match=r"^check m\.one inserts undeclared symbol NOPE$"):
        reg.validate()


def test_unknown_dependency_is_refused() -> None:
    reg = registry(check("m.one", depends_on=("m.ghost",)))
    with pytest.raises(RegistryError, match=r"^check m\.one depends on unknown check m\.ghost$"):
        reg.validate()


def test_cross_stage_dependency_is_refused() -> None:
    reg = registry(check("m.pre", Stage.PRE), check("m.one", depends_on=("m.pre",)))
    with pytest.raises(
        RegistryError,
        match=r"^check m\.one \(filter\) depends on m\.pre of another stage \(prefilter\)",
    ):
        reg.validate()


@pytest.mark.parametrize("stage", [Stage.FILTER, Stage.POST])
def test_dependency_cycle_is_refused(stage: Stage) -> None:
    reg = registry(
        check("m.a", stage, depends_on=("m.b",)),
        check("m.b", stage, depends_on=("m.c",)),
        check("m.c", stage, depends_on=("m.a",)),
    )
    with pytest.raises(RegistryError, match=r"^dependency cycle: m\.a -> m\.b -> m\.c -> m\.a$"):
        reg.validate()


def test_self_dependency_is_a_cycle() -> None:
    reg = registry(check("m.a", depends_on=("m.a",)))
    with pytest.raises(RegistryError, match=r"^dependency cycle: m\.a -> m\.a$"):
        reg.validate()


def test_before_validate_no_stage_has_checks() -> None:
    reg = registry(check("m.a"))
    assert reg.checks_for(Stage.FILTER) == []


def test_filter_order_is_declaration_order_with_dependencies_first() -> None:
    reg = registry(
        check("m.c", depends_on=("m.d", "m.b")),
        check("m.a", priority=-5),
        check("m.b", priority=100),  # priority does not order FILTER checks
        check("m.d", depends_on=("m.a",)),
        check("m.pre", Stage.PRE),
    )
    reg.validate()
    assert names(reg.checks_for(Stage.FILTER)) == [
        "m.a",
        "m.d",
        "m.b",
        "m.c",
    ]
    assert names(reg.checks_for(Stage.PRE)) == ["m.pre"]
    assert reg.checks_for(Stage.CLASSIFY) == []
    assert reg.checks_for(Stage.COMPOSITE) == []


@pytest.mark.parametrize("stage", [Stage.PRE, Stage.POST, Stage.IDEMPOTENT])
def test_sequential_stages_run_by_priority_then_dependencies(stage: Stage) -> None:
    reg = registry(
        check("m.low", stage, priority=1),
        check("m.high", stage, priority=50),
        check("m.mid", stage, priority=10),
        check("m.also_mid", stage, priority=10),  # ties keep declaration order
        check("m.needs_low", stage, priority=99, depends_on=("m.low",)),
    )
    reg.validate()
    assert names(reg.checks_for(stage)) == [
        "m.low",
        "m.needs_low",
        "m.high",
        "m.mid",
        "m.also_mid",
    ]


def test_replace_symbol_applies_policy_over_the_declared_default() -> None:
    reg = SymbolRegistry()
    reg.add_symbol(SymbolSpec("A", 1.0, "g1", "first"))
    reg.replace_symbol("A", score=2.5, group="g2")
    assert reg.symbols["A"] == SymbolSpec("A", 2.5, "g2", "first")


def test_checks_in_the_composite_stage_are_refused() -> None:
    from engine.pipeline.stages import Stage
    from engine.symbols import CheckSpec, RegistryError, SymbolRegistry

    registry = SymbolRegistry()
    registry.add_check(CheckSpec("m.c", Stage.COMPOSITE, lambda task: None, (), "m"))
    with pytest.raises(RegistryError, match="composite stage"):
        registry.validate()
