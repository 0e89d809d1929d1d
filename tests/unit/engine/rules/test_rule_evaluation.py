"""Rule evaluation: values, numbers and comparisons, short-circuit and cheapest-first
order (observed through which scopes get scanned), and never raising."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from engine.mime.message import ParsedMessage
from engine.rules import Scope, build_rules, registry
from engine.rules.functions import RuleFunction
from engine.task import ScanRequest, Task

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.rules import RuleSet

HTML = (
    b"From: a@example.org\r\nSubject: Offer\r\nContent-Type: text/html\r\n\r\n"
    b"<html><body><p>Buy <b>now</b></p><img src='https://img.example.com/x.png'></body></html>\r\n"
)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Subject=/hello/i", True),
        ("!Subject=/hello/i", False),
        ("Subject=/hello/i & From=/alice/", True),
        ("Subject=/hello/i & From=/mallory/", False),
        ("Subject=/nope/ | From=/alice/", True),
        ("Subject=/hello/i + From=/alice/ + To=/carol/ >= 2", True),
        ("Subject=/hello/i + From=/alice/ + To=/carol/ >= 3", False),
        ("Subject=/hello/i + From=/alice/ - To=/bob/ == 1", True),
        ("header_count(Subject) == 1", True),
        ("header_count(Received) > 0", False),
        ("header_count(Subject) + header_count(To) + 1 >= 3", True),
        ("2 > 1", True),
        ("0", False),
        ("0.5", True),
        ("header_count(Received)", False),  # a zero count is false
        ("header_count(To)", True),  # a non-zero one is true
        ("!header_count(To)", False),
        ("(Subject=/hello/i | To=/x/) & !(From=/bob/)", True),
    ],
)
def test_values(fires: Callable[..., bool], expression: str, expected: bool) -> None:
    assert fires(expression) is expected


def test_false_and_skips_the_costly_operand(
    compile_rules: Callable[..., RuleSet], task_of: Callable[..., Task], backend: str
) -> None:
    # The body atom is written first but costs more: the header lookup runs first and,
    # being false, the body is never gathered or scanned.
    rules = compile_rules("/Just/{raw_message} & header_exists(X-Nope)", backend)
    scan = rules.evaluate(task_of())
    assert scan.fired == []
    assert scan.scanned == []


def test_true_or_skips_the_costly_operand(
    compile_rules: Callable[..., RuleSet], task_of: Callable[..., Task], backend: str
) -> None:
    rules = compile_rules("/Just/{body} | Subject=/Hello/", backend)
    scan = rules.evaluate(task_of())
    assert scan.fired == ["R"]
    assert scan.scanned == [Scope.HEADER]


def test_each_scope_is_scanned_once_and_lazily(
    compile_rules: Callable[..., RuleSet], task_of: Callable[..., Task], backend: str
) -> None:
    rules = {f"R{i}": f"Subject=/{i}/ | /word{i}/ | /x{i}/{{body}}" for i in range(30)}
    rules["H"] = "has_html_part() & /never/{html}"
    ruleset = compile_rules(rules, backend)
    calls: dict[Scope, int] = {}
    for index in ruleset.scopes:
        original = index.matcher.scan

        def counting(
            pieces: object, scope: Scope = index.scope, original: object = original
        ) -> set[int]:
            calls[scope] = calls.get(scope, 0) + 1
            return original(pieces)  # type: ignore[operator,no-any-return]

        index.matcher.scan = counting  # type: ignore[method-assign]
    scan = ruleset.evaluate(task_of())
    assert scan.fired == []
    # 30 rules, three scopes each scanned once; {html} is never needed (no HTML part).
    assert calls == {Scope.HEADER: 1, Scope.MIME: 1, Scope.BODY: 1}
    assert sorted(s.value for s in scan.scanned) == ["body", "header", "mime"]


def test_a_true_guard_lets_the_costly_operand_run(
    compile_rules: Callable[..., RuleSet], task_of: Callable[..., Task], backend: str
) -> None:
    scan = compile_rules("has_html_part() & /<b>now/{html}", backend).evaluate(task_of(HTML))
    assert scan.fired == ["R"]
    assert scan.scanned == [Scope.HTML]


def test_rules_fire_in_rule_order(
    compile_rules: Callable[..., RuleSet], task_of: Callable[..., Task], backend: str
) -> None:
    rules = compile_rules({"B": "/short/", "A": "Subject=/Hello/", "C": "/nothing/"}, backend)
    assert rules.evaluate(task_of()).fired == ["B", "A"]


def test_identical_atoms_share_one_pattern(compile_rules: Callable[..., RuleSet]) -> None:
    rules = compile_rules({"A": "/x/i & Subject=/y/", "B": "/x/i | Subject=/y/ | From=/y/"})
    by_scope = {s.scope: s for s in rules.scopes}
    assert by_scope[Scope.MIME].matcher.ids == {0}  # type: ignore[attr-defined]
    assert len(by_scope[Scope.HEADER].matcher.ids) == 2  # type: ignore[attr-defined]


def test_a_raising_function_is_false_and_logged_once(
    monkeypatch: pytest.MonkeyPatch,
    compile_rules: Callable[..., RuleSet],
    task_of: Callable[..., Task],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(task: Task, name: str) -> bool:
        raise RuntimeError("boom")

    functions = registry()
    monkeypatch.setitem(
        functions,
        "header_exists",
        dataclasses.replace(functions["header_exists"], call=broken),
    )
    rules = compile_rules({"A": "header_exists(From)", "B": "!header_exists(From)"})
    for _ in range(3):
        assert rules.evaluate(task_of()).fired == ["B"]
    assert [r.getMessage() for r in caplog.records] == [
        "function header_exists() failed; treated as false (logged once)"
    ]


def test_a_function_call_runs_once_per_message_however_many_rules_use_it(
    monkeypatch: pytest.MonkeyPatch,
    compile_rules: Callable[..., RuleSet],
    task_of: Callable[..., Task],
) -> None:
    calls: list[str] = []
    functions = registry()
    original = functions["header_count"].call

    def counting(task: Task, name: str) -> int:
        calls.append(name)
        return int(original(task, name))

    monkeypatch.setitem(
        functions, "header_count", dataclasses.replace(functions["header_count"], call=counting)
    )
    rules = compile_rules(
        {
            "A": "header_count(To) == 1",
            "B": "header_count(To) > 0 & header_count('To') < 5",
            "C": "header_count(Cc) + header_count(To) >= 1",
        }
    )
    assert rules.evaluate(task_of()).fired == ["A", "B", "C"]
    assert sorted(calls) == ["Cc", "To"]


def test_a_rule_whose_evaluation_raises_is_false(
    monkeypatch: pytest.MonkeyPatch,
    compile_rules: Callable[..., RuleSet],
    task_of: Callable[..., Task],
    caplog: pytest.LogCaptureFixture,
) -> None:
    functions = registry()
    monkeypatch.setitem(
        functions,
        "header_count",
        dataclasses.replace(functions["header_count"], call=lambda task, name: "text"),  # type: ignore[arg-type,return-value]
    )
    rules = compile_rules({"A": "header_count(From) + 1 > 0", "B": "Subject=/Hello/"})
    assert rules.evaluate(task_of()).fired == ["B"]
    assert "rule A failed" in caplog.text


def test_broken_mail_never_raises(
    compile_rules: Callable[..., RuleSet], task_of: Callable[..., Task], backend: str
) -> None:
    rules = compile_rules(
        {
            "A": "/x/{url} | /x/{email} | /x/{html} | /x/ | /x/{body} | /x/{raw_message}",
            "B": "Subject=/x/ | Subject=/x/{raw_header} | from_name=/x/{selector}",
            "C": "has_html_part() | attachment_count() > 0 | has_defect(bad_base64)",
        },
        backend,
    )
    garbage = [
        b"",
        b"\xff\xfe\x00\x00",
        b"Subject: =?utf-8?B?////?=\r\nContent-Type: multipart/mixed\r\n\r\n--\r\n",
        b"Content-Type: text/html; charset=bogus\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!",
        b"From: \xff\xfe <\x80@\x81>\r\n\r\n" + b"\xc3" * 1000,
    ]
    for raw in garbage:
        rules.evaluate(task_of(raw))


def test_rules_cannot_use_symbols_or_groups() -> None:
    _, problems = build_rules({"A": "/x/ & OTHER_RULE", "B": "g:headers | /y/"}, backend="re")
    assert problems == [
        ("A", "rules cannot use the symbol OTHER_RULE (use a composite) at column 7"),
        ("B", "rules cannot use the group headers (use a composite) at column 1"),
    ]


def test_bad_rules_are_reported_and_good_ones_kept() -> None:
    ruleset, problems = build_rules(
        {
            "GOOD": "/fine/",
            "BAD_RE": "Subject=/a(b/",
            "BAD_SELECTOR": "sender=/x/{selector}",
            "BAD_PARSE": "/x/ &",
        },
        backend="re",
    )
    assert [r.name for r in ruleset.rules] == ["GOOD"]
    assert dict(problems) == {
        "BAD_RE": "bad regular expression Subject=/a(b/: missing ), unterminated subpattern "
        "at position 1 at column 1",
        "BAD_SELECTOR": "unknown selector 'sender' (known: env_from, env_rcpt, helo, hostname, "
        "ip, user, from_addr, from_name, from_domain, reply_to_addr, attachment_name, "
        "content_type, charset, url_host, subject, message_id) at column 1",
        "BAD_PARSE": "expression ends too early at column 6",
    }


def test_registry_function_is_frozen() -> None:
    fn = registry()["header_exists"]
    assert isinstance(fn, RuleFunction)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fn.cost = 3  # type: ignore[misc]


def test_a_rule_switched_off_by_settings_costs_nothing(
    compile_rules: Callable[..., RuleSet], backend: str
) -> None:
    rules = compile_rules({"R": "/Just/{raw_message}", "S": "Subject=/Hello/"}, backend)
    raw = b"Subject: Hello\r\n\r\nJust a note.\r\n"
    disabled = frozenset({"R"})
    task = Task(ScanRequest(raw=raw), ParsedMessage.from_bytes(raw), {}, disabled=disabled)
    scan = rules.evaluate(task)
    assert scan.fired == ["S"]
    assert scan.scanned == [Scope.HEADER]
