"""ScanResult.to_json(): exactly Rspamd's /checkv2 keys and value shapes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from engine import Action, Engine, ScanRequest, ScanResult
from engine.modules import check
from engine.modules.gtube import Gtube
from engine.modules.milter_headers import MilterHeaders
from engine.pipeline.actions import ForcedAction
from engine.pipeline.stages import Stage
from engine.symbols import ScoredSymbol

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from engine.modules import Module
    from engine.task import Task

ALWAYS = {
    "is_skipped",
    "score",
    "required_score",
    "action",
    "thresholds",
    "symbols",
    "messages",
    "message-id",
    "time_real",
    "milter",
}
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def test_to_json_of_a_hand_built_result() -> None:
    result = ScanResult(
        action=Action.ADD_HEADER,
        score=7.5,
        required_score=15.0,
        thresholds={"greylist": 4.0, "add header": 6.0, "reject": 15.0},
        symbols={
            "ONE": ScoredSymbol("ONE", 1.5, 1.0, "One point", "alpha", ("x", "y")),
            "BARE": ScoredSymbol("BARE", 6.0, 6.0, "", "misc", ()),
        },
        message_id="id@example.org",
        add_headers=(("X-A", "1"), ("X-B", "2"), ("X-A", "3"), ("X-A", "4")),
        remove_headers={"X-Old": 0},
        time_real=0.12345678,
    )
    assert result.to_json() == {
        "is_skipped": False,
        "score": 7.5,
        "required_score": 15.0,
        "action": "add header",
        "thresholds": {"greylist": 4.0, "add header": 6.0, "reject": 15.0},
        "symbols": {
            "ONE": {
                "name": "ONE",
                "score": 1.5,
                "metric_score": 1.0,
                "description": "One point",
                "options": ["x", "y"],
            },
            "BARE": {"name": "BARE", "score": 6.0, "metric_score": 6.0},
        },
        "messages": {},
        "message-id": "id@example.org",
        "time_real": 0.123457,
        "milter": {
            "add_headers": {
                "X-A": [
                    {"value": "1", "order": 0},
                    {"value": "3", "order": 0},
                    {"value": "4", "order": 0},
                ],
                "X-B": {"value": "2", "order": 0},
            },
            "remove_headers": {"X-Old": 0},
        },
    }


def test_optional_keys_appear_only_when_they_apply() -> None:
    result = ScanResult(
        action=Action.REWRITE_SUBJECT,
        score=9.0,
        required_score=15.0,
        thresholds={},
        symbols={},
        subject="*** SPAM *** hi",
        forced=ForcedAction(Action.REWRITE_SUBJECT, "mod", None),
        partial=True,
    )
    out = result.to_json()
    assert set(out) == ALWAYS | {"subject", "passthrough_module", "partial"}
    assert (out["subject"], out["passthrough_module"], out["partial"]) == (
        "*** SPAM *** hi",
        "mod",
        True,
    )


async def test_scanned_result_has_exactly_the_checkv2_keys(
    build_engine: Callable[..., Engine], scorer: type[Module], message: Callable[..., bytes]
) -> None:
    engine = build_engine(scorer, MilterHeaders)
    raw = message(headers=[("X-Insert", "OPT=2 ONE")])
    out = (await engine.scan(ScanRequest(raw=raw))).to_json()
    assert set(out) == ALWAYS
    assert out["action"] == "no action"
    assert out["score"] == 2.0
    assert out["required_score"] == 15.0
    assert out["thresholds"] == {"greylist": 4.0, "add header": 6.0, "reject": 15.0}
    assert out["symbols"] == {
        "OPT": {"name": "OPT", "score": 1.0, "metric_score": 0.5, "options": ["a", "b"]},
        "ONE": {"name": "ONE", "score": 1.0, "metric_score": 1.0, "description": "One point"},
    }
    assert out["message-id"] == "test-1@example.org"
    assert isinstance(out["time_real"], float)
    assert out["milter"] == {
        "add_headers": {
            "X-Spamd-Result": {
                "value": "default: False [2.00 / 15.00];\n\tONE(1.00);\n\tOPT(1.00)[a,b]",
                "order": 0,
            },
            "X-Spam-Status": {"value": "No, score=2.00", "order": 0},
        },
        "remove_headers": {},
    }
    assert json.loads(json.dumps(out)) == out


async def test_forced_result_carries_smtp_message_and_passthrough_module(
    build_engine: Callable[..., Engine], message: Callable[..., bytes]
) -> None:
    engine = build_engine(Gtube)
    out = (await engine.scan(ScanRequest(raw=message(GTUBE + "\n")))).to_json()
    assert set(out) == ALWAYS | {"passthrough_module"}
    assert out["action"] == "reject"
    assert out["messages"] == {"smtp_message": "Gtube pattern"}
    assert out["passthrough_module"] == "gtube"
    assert out["symbols"] == {
        "GTUBE": {
            "name": "GTUBE",
            "score": 0.0,
            "metric_score": 0.0,
            "description": "GTUBE test string found",
            "options": ["reject"],
        },
    }


async def test_rewrite_subject_result_carries_the_subject(
    build_engine: Callable[..., Engine],
    write_config: Callable[[str, str], Path],
    scorer: type[Module],
    message: Callable[..., bytes],
) -> None:
    write_config("milterd.toml", "[actions]\nrewrite_subject = 2.0\n")
    engine = build_engine(scorer)
    out = (await engine.scan(ScanRequest(raw=message(headers=[("X-Insert", "TWO")])))).to_json()
    assert set(out) == ALWAYS | {"subject"}
    assert out["action"] == "rewrite subject"
    assert out["subject"] == "*** SPAM *** Test"
    assert out["thresholds"] == {
        "greylist": 4.0,
        "add header": 6.0,
        "rewrite subject": 2.0,
        "reject": 15.0,
    }
    # No Subject header at all: the template gets an empty string.
    raw = b"X-Insert: TWO\r\n\r\nbody\r\n"
    result = await engine.scan(ScanRequest(raw=raw))
    assert (result.subject, result.message_id) == ("*** SPAM *** ", "")


async def test_module_message_is_not_overwritten_by_the_forced_one(
    build_engine: Callable[..., Engine], message: Callable[..., bytes]
) -> None:
    class Talker(Gtube):
        name = "talker"

        @check(produces=(), stage=Stage.PRE, priority=200)
        def talk(self, task: Task) -> None:
            task.messages["smtp_message"] = "said first"

    engine = build_engine(Talker)
    out = (await engine.scan(ScanRequest(raw=message(GTUBE)))).to_json()
    assert out["messages"] == {"smtp_message": "said first"}
    assert out["passthrough_module"] == "talker"
