"""milter_headers: the verdict headers' exact text, and upstream copies removed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine import Action, ConfigError, Engine, ScanRequest
from engine.modules.gtube import Gtube
from engine.modules.milter_headers import MilterHeaders

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from engine import ScanResult
    from engine.modules import Module

ALL = '[milter_headers]\nuse = ["x-spamd-result", "x-spam-status", "x-spamd-bar", "x-spam-level"]\n'


@pytest.fixture
def headers_engine(
    build_engine: Callable[..., Engine],
    write_config: Callable[[str, str], Path],
    scorer: type[Module],
) -> Callable[..., Engine]:
    def build(config: str = "") -> Engine:
        write_config("milterd.toml", config)
        return build_engine(Gtube, scorer, MilterHeaders)

    return build


async def scan(
    engine: Engine,
    message: Callable[..., bytes],
    inserted: str,
    *extra: tuple[str, str],
    body: str = "x",
) -> ScanResult:
    raw = message(body, headers=[("X-Insert", inserted), *extra])
    return await engine.scan(ScanRequest(raw=raw))


async def test_x_spamd_result_is_sorted_and_folded_with_lf_tab(
    headers_engine: Callable[..., Engine], message: Callable[..., bytes]
) -> None:
    result = await scan(headers_engine(), message, "OPT=2 ONE TWO NEG BIG")
    assert result.action is Action.ADD_HEADER
    assert result.add_headers == (
        (
            "X-Spamd-Result",
            "default: False [11.00 / 15.00];\n"
            "\tBIG(10.00);\n"
            "\tNEG(-3.00);\n"
            "\tTWO(2.00);\n"
            "\tONE(1.00);\n"
            "\tOPT(1.00)[a,b]",
        ),
        ("X-Spam-Status", "Yes, score=11.00"),
    )
    assert result.remove_headers == {}
    assert "\r" not in "".join(value for _, value in result.add_headers)


async def test_default_true_only_for_reject(
    headers_engine: Callable[..., Engine], message: Callable[..., bytes]
) -> None:
    engine = headers_engine()
    result = await scan(engine, message, "BIG=2")
    assert result.action is Action.REJECT
    assert (
        dict(result.add_headers)["X-Spamd-Result"] == "default: True [20.00 / 15.00];\n\tBIG(20.00)"
    )
    result = await scan(engine, message, "BIG=2", ("X-Force", "soft reject"))
    assert result.action is Action.SOFT_REJECT
    assert dict(result.add_headers)["X-Spamd-Result"].startswith("default: False [20.00 / 15.00]")
    result = await scan(engine, message, "", ("X-Force", "reject"))
    assert dict(result.add_headers) == {
        "X-Spamd-Result": "default: True [0.00 / 15.00]",
        "X-Spam-Status": "Yes, score=0.00",
    }


@pytest.mark.parametrize(
    ("inserted", "status"),
    [
        ("", "No, score=0.00"),
        ("NEG", "No, score=-3.00"),
        ("TWO=2.5", "No, score=5.00"),  # greylist is not spam
        ("TWO=3", "Yes, score=6.00"),
        ("BIG=2", "Yes, score=20.00"),
    ],
)
async def test_x_spam_status(
    headers_engine: Callable[..., Engine], message: Callable[..., bytes], inserted: str, status: str
) -> None:
    result = await scan(headers_engine(), message, inserted)
    assert dict(result.add_headers)["X-Spam-Status"] == status


@pytest.mark.parametrize(
    ("inserted", "bar", "level"),
    [
        ("", "/", None),
        ("ONE=0.99", "/", None),
        ("ONE", "+", "*"),
        ("TWO=1.5 ONE=0.5", "+++", "***"),
        ("NEG=0.3", "/", None),
        ("NEG=0.4", "-", None),
        ("NEG", "---", None),
        ("BIG=9", "+" * 50, "*" * 50),
        ("NEG=-30", "+" * 50, "*" * 50),
        ("NEG=30", "-" * 50, None),
    ],
)
async def test_bar_and_level(
    headers_engine: Callable[..., Engine],
    message: Callable[..., bytes],
    inserted: str,
    bar: str,
    level: str | None,
) -> None:
    result = await scan(headers_engine(ALL), message, inserted)
    added = dict(result.add_headers)
    assert added["X-Spamd-Bar"] == bar
    assert added.get("X-Spam-Level") == level
    assert [name for name, _ in result.add_headers] == [
        "X-Spamd-Result",
        "X-Spam-Status",
        "X-Spamd-Bar",
        *(["X-Spam-Level"] if level else []),
    ]


async def test_upstream_headers_are_removed(
    headers_engine: Callable[..., Engine], message: Callable[..., bytes]
) -> None:
    result = await scan(
        headers_engine(ALL),
        message,
        "",
        ("x-spam-status", "No, score=-100"),
        ("X-Spamd-Result", "default: False [-100 / 15]"),
        ("X-Spam-Level", "forged"),
        ("X-Spam-Flag", "NO"),
    )
    assert result.remove_headers == {"X-Spamd-Result": 0, "X-Spam-Status": 0, "X-Spam-Level": 0}
    # Removed even though we add no X-Spam-Level of our own (score below 1).
    assert "X-Spam-Level" not in dict(result.add_headers)


async def test_upstream_headers_kept_when_asked(
    headers_engine: Callable[..., Engine], message: Callable[..., bytes]
) -> None:
    result = await scan(
        headers_engine("[milter_headers]\nremove_upstream = false\n"),
        message,
        "",
        ("X-Spam-Status", "Yes"),
    )
    assert result.remove_headers == {}
    assert dict(result.add_headers)["X-Spam-Status"] == "No, score=0.00"


async def test_use_selects_and_orders_the_headers(
    headers_engine: Callable[..., Engine], message: Callable[..., bytes]
) -> None:
    engine = headers_engine('[milter_headers]\nuse = ["x-spam-status"]\n')
    result = await scan(engine, message, "ONE", ("X-Spamd-Result", "forged"))
    assert result.add_headers == (("X-Spam-Status", "No, score=1.00"),)
    assert result.remove_headers == {}  # only the headers in use are ours to police
    engine = headers_engine("[milter_headers]\nuse = []\n")
    assert (await scan(engine, message, "ONE")).add_headers == ()


async def test_headers_are_added_after_a_pre_result(
    headers_engine: Callable[..., Engine], message: Callable[..., bytes]
) -> None:
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    result = await scan(headers_engine(), message, "BIG", body=gtube)
    assert dict(result.add_headers) == {
        "X-Spamd-Result": "default: True [0.00 / 15.00];\n\tGTUBE(0.00)[reject]",
        "X-Spam-Status": "Yes, score=0.00",
    }


def test_use_must_name_known_routines(
    headers_engine: Callable[..., Engine], config_dir: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        headers_engine('\n[milter_headers]\nuse = ["x-spam-status", "X-Spam-Bar"]\n')
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.key) == (
        str(config_dir / "milterd.toml"),
        3,
        "milter_headers.use",
    )
    assert problem.message == (
        "unknown routines ['X-Spam-Bar']; known: x-spamd-result, x-spam-status, x-spamd-bar, x-spam-level"
    )
