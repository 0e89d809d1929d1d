"""Helpers for the rule engine's unit tests: tasks from raw messages, rule sets from
expressions, on either backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine.mime.message import ParsedMessage
from engine.rules import RuleSet, build_rules
from engine.rules.cache import DatabaseCache
from engine.task import ScanRequest, Task
from engine.task.envelope import Envelope

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

BACKENDS = ("hyperscan", "re")

PLAIN = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: Hello there\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"Just a short note.\r\n"
)


def make_task(raw: bytes = PLAIN, **envelope: object) -> Task:
    request = ScanRequest(raw=raw, envelope=Envelope(**envelope))  # type: ignore[arg-type]
    return Task(request, ParsedMessage.from_bytes(raw), {})


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def compile_rules(tmp_path: Path) -> Callable[..., RuleSet]:
    """``compile_rules({"NAME": "expr"}, backend)`` → a rule set; compile errors fail."""

    def build(rules: Mapping[str, str] | str, backend: str = "re") -> RuleSet:
        sources = {"R": rules} if isinstance(rules, str) else rules
        ruleset, problems = build_rules(
            sources, backend=backend, cache=DatabaseCache(tmp_path / "hs_cache")
        )
        assert problems == []
        return ruleset

    return build


@pytest.fixture
def fires(compile_rules: Callable[..., RuleSet], backend: str) -> Callable[..., bool]:
    """``fires(expression, raw=PLAIN, **envelope)`` on the parametrised backend."""

    def run(expression: str, raw: bytes = PLAIN, **envelope: object) -> bool:
        ruleset = compile_rules(expression, backend)
        return ruleset.evaluate(make_task(raw, **envelope)).fired == ["R"]

    return run


@pytest.fixture
def task_of() -> Callable[..., Task]:
    """``task_of(raw=PLAIN, **envelope)`` → a Task with the message parsed."""
    return make_task
