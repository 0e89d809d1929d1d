"""Generated rule code and the tree interpreter it falls back on mean the same."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine.mime.message import ParsedMessage
from engine.rules import codegen
from engine.task import ScanRequest, Task

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.rules import RuleSet

EXPRESSIONS = [
    "Subject=/hello/i",
    "!Subject=/hello/i & From=/alice/",
    "Subject=/nope/ | Subject=/hello/i | From=/nope/",  # one set test for the header atoms
    "Subject=/hello/i & Subject=/there/ & From=/alice/",
    "Subject=/hello/i & Subject=/nope/",
    "Subject=/hello/i + From=/alice/ + To=/carol/ >= 2",
    "Subject=/hello/i + From=/alice/ - To=/bob/ == 1",
    "(Subject=/hello/i | To=/x/) + 1 == 2",  # an | worth 1 in a sum
    "(Subject=/hello/i & To=/x/) + 1 == 1",
    "header_count(Subject) + header_count(To) + 1 >= 3",
    "header_count(Received) - 1 < 0 & !has_html_part()",
    "0.5",
    "0",
    "2 > 1 | /never/{body}",
    "/short/ & header_exists(From)",
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_interpreter_agrees_with_the_generated_code(
    expression: str,
    monkeypatch: pytest.MonkeyPatch,
    compile_rules: Callable[..., RuleSet],
    task_of: Callable[..., Task],
    backend: str,
) -> None:
    generated = compile_rules(expression, backend).evaluate(task_of())

    def refuse(*args: object, **kwargs: object) -> object:
        raise SyntaxError("too many nested parentheses")

    # What happens to a rule nested deeper than Python's parser allows.
    monkeypatch.setattr(codegen, "compile", refuse, raising=False)
    interpreted = compile_rules(expression, backend).evaluate(task_of())
    assert interpreted.fired == generated.fired
    assert interpreted.scanned == generated.scanned


def test_generated_code_names_only_numbers_and_our_constants(
    monkeypatch: pytest.MonkeyPatch, compile_rules: Callable[..., RuleSet]
) -> None:
    # The source comes from the tree; nothing a rule author wrote reaches it as code.
    sources: list[str] = []
    original = codegen.Generator.source

    def spy(self: codegen.Generator, node: object, *, value: bool = False) -> str:
        text = original(self, node, value=value)  # type: ignore[arg-type]
        sources.append(text)
        return text

    monkeypatch.setattr(codegen.Generator, "source", spy)
    compile_rules({"R": r"Subject=/a'\); import os; \('/ & header_exists('X; y')"})
    assert sources
    assert not any("import" in s or "'" in s for s in sources)


def test_all_rules_in_one_function_agree_with_one_function_per_rule(
    compile_rules: Callable[..., RuleSet], backend: str
) -> None:
    rules = compile_rules(
        {f"R{n}": expression for n, expression in enumerate(EXPRESSIONS)}, backend
    )
    raw = b"From: Alice <alice@example.org>\r\nSubject: Hello there\r\n\r\nJust a short note.\r\n"
    together = rules.evaluate(Task(ScanRequest(raw=raw), ParsedMessage.from_bytes(raw), {}))
    # A message whose settings switch a rule off goes rule by rule.
    one_by_one = rules.evaluate(
        Task(ScanRequest(raw=raw), ParsedMessage.from_bytes(raw), {}, disabled=frozenset({"X"}))
    )
    assert together.fired == one_by_one.fired
    assert together.fired  # the expressions are not all false
    assert together.scanned == one_by_one.scanned
