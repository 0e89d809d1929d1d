"""Compiled Hyperscan databases survive a restart: the second build loads, never
compiles; a damaged or foreign cache file is ignored and rebuilt."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import pytest

from engine.rules import build_rules
from engine.rules import hyperscan_db as hsdb
from engine.rules.cache import DatabaseCache
from engine.rules.hyperscan_db import HyperscanMatcher
from engine.rules.patterns import PatternSpec

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from engine.task import Task

RULES = {
    "A": "Subject=/hello/i & /short note/",
    "B": "/foo(?=bar)/ | /^begin$/m{body}",  # a prefiltered pattern too
    "C": "env_from=/^$/{selector}",
}


def forbid_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> object:
        raise AssertionError("compiled although the cache holds the database")

    monkeypatch.setattr(hsdb, "_compile", refuse)


def test_second_build_loads_every_scope_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task_of: Callable[..., Task]
) -> None:
    cache = DatabaseCache(tmp_path)
    first, _ = build_rules(RULES, backend="hyperscan", cache=cache)
    assert not any(first.from_cache.values())
    files = sorted(p.name for p in tmp_path.glob("*.hsdb"))
    assert [f.partition("-")[0] for f in files] == ["body", "header", "mime", "selector"]
    forbid_compiling(monkeypatch)
    second, _ = build_rules(RULES, backend="hyperscan", cache=DatabaseCache(tmp_path))
    assert all(second.from_cache.values())
    task = task_of(mail_from="")
    assert second.evaluate(task).fired == first.evaluate(task).fired == ["A", "C"]


def test_a_changed_rule_misses_only_its_scope(tmp_path: Path) -> None:
    build_rules(RULES, backend="hyperscan", cache=DatabaseCache(tmp_path))
    changed = {**RULES, "A": "Subject=/goodbye/i & /short note/"}
    ruleset, _ = build_rules(changed, backend="hyperscan", cache=DatabaseCache(tmp_path))
    cached = {scope.value: hit for scope, hit in ruleset.from_cache.items()}
    assert cached == {"header": False, "selector": True, "mime": True, "body": True}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"garbage" * 20, id="garbage"),
        pytest.param(lambda data: data[:-40], id="truncated database"),
        pytest.param(lambda data: data[:30], id="truncated metadata"),
        pytest.param(lambda data: data[:-300] + bytes(b ^ 0x5A for b in data[-300:]), id="flipped"),
        pytest.param(lambda data: data.replace(b'"prefilter"', b'"prefixter"'), id="metadata keys"),
    ],
)
def test_a_damaged_cache_file_is_rebuilt(
    tmp_path: Path, damage: Callable[[bytes], bytes], task_of: Callable[..., Task]
) -> None:
    specs = [PatternSpec(0, "short note", ""), PatternSpec(1, "foo(?=bar)", "")]
    HyperscanMatcher(specs, DatabaseCache(tmp_path), "mime")
    (path,) = tmp_path.glob("mime-*.hsdb")
    path.write_bytes(damage(path.read_bytes()))
    rebuilt = HyperscanMatcher(specs, DatabaseCache(tmp_path), "mime")
    assert not rebuilt.from_cache
    assert rebuilt.scan([(b"a short note", None), (b"foobar", None)]) == {0, 1}
    # and the rebuilt file is good again
    assert HyperscanMatcher(specs, DatabaseCache(tmp_path), "mime").from_cache


def test_an_unwritable_cache_directory_is_logged_once_and_scanning_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cache = DatabaseCache(blocker / "hs_cache")
    for n in range(2):
        matcher = HyperscanMatcher([PatternSpec(0, f"x{n}", "")], cache, "mime")
        assert matcher.scan([(b"x0 x1", None)]) == {0}
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1


def test_files_unused_for_two_weeks_are_pruned(tmp_path: Path) -> None:
    old = tmp_path / "mime-0123456789abcdef0123456789abcdef.hsdb"
    old.write_bytes(b"stale")
    month_ago = time.time() - 30 * 86400
    os.utime(old, (month_ago, month_ago))
    other_scope = tmp_path / "body-0123456789abcdef0123456789abcdef.hsdb"
    other_scope.write_bytes(b"stale")
    os.utime(other_scope, (month_ago, month_ago))
    HyperscanMatcher([PatternSpec(0, "x", "")], DatabaseCache(tmp_path), "mime")
    assert not old.exists()
    assert other_scope.exists()  # pruned when its own scope is next rebuilt
    assert len(list(tmp_path.glob("mime-*.hsdb"))) == 1


def test_a_scope_of_re_only_patterns_has_nothing_to_cache(tmp_path: Path) -> None:
    matcher = HyperscanMatcher([PatternSpec(0, "^$", "m")], DatabaseCache(tmp_path), "body")
    assert list(tmp_path.iterdir()) == []
    assert matcher.hyperscan_ids == set()
    assert matcher.scan([(b"a\n", None)]) == {0}  # Python's answer: ^ after a final newline


def test_no_cache_directory_means_no_files(tmp_path: Path) -> None:
    matcher = HyperscanMatcher([PatternSpec(0, "x", "")], DatabaseCache(None), "mime")
    assert not matcher.from_cache
    assert matcher.scan([(b"x", None)]) == {0}
