"""GTUBE: the test strings force their action as a pre-result, where a reader would see them."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import pytest

from engine import Action, Engine, ScanRequest
from engine.modules.gtube import Gtube

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from engine import ScanResult
    from engine.modules import Module

TAIL = "JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
XJS, YJS, ZJS, AJS = ("X" + TAIL, "Y" + TAIL, "Z" + TAIL, "A" + TAIL)


@pytest.fixture
def gtube_engine(
    build_engine: Callable[..., Engine],
    write_config: Callable[[str, str], Path],
    scorer: type[Module],
) -> Callable[[str], Engine]:
    def build(mode: str) -> Engine:
        write_config("milterd.toml", f'[options]\ngtube_patterns = "{mode}"\n')
        return build_engine(Gtube, scorer)

    return build


async def scan(engine: Engine, raw: bytes) -> ScanResult:
    return await engine.scan(ScanRequest(raw=raw))


def multipart(*parts: tuple[str, bytes]) -> bytes:
    """A multipart/mixed message; each part is (its header block, its body)."""
    out = [
        b"Subject: parts\r\nX-Insert: ONE\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="BOUND"\r\n\r\npreamble\r\n'
    ]
    for headers, body in parts:
        out.append(b"--BOUND\r\n" + headers.encode() + b"\r\n\r\n" + body + b"\r\n")
    out.append(b"--BOUND--\r\n")
    return b"".join(out)


async def test_standard_string_rejects_and_skips_the_filters(
    gtube_engine: Callable[[str], Engine], message: Callable[..., bytes]
) -> None:
    result = await scan(
        gtube_engine("reject"), message(f"Hi\n{XJS}\nbye\n", headers=[("X-Insert", "ONE BIG")])
    )
    assert set(result.symbols) == {"GTUBE"}
    assert result.symbols["GTUBE"].options == ("reject",)
    assert result.action is Action.REJECT
    assert result.score == 0.0
    assert result.messages == {"smtp_message": "Gtube pattern"}


@pytest.mark.parametrize(
    ("text", "action"),
    [
        (XJS, Action.REJECT),
        (YJS, Action.ADD_HEADER),
        (ZJS, Action.REWRITE_SUBJECT),
        (AJS, Action.NO_ACTION),
    ],
)
async def test_all_patterns_force_their_rung(
    gtube_engine: Callable[[str], Engine], message: Callable[..., bytes], text: str, action: Action
) -> None:
    result = await scan(gtube_engine("all"), message(text, headers=[("X-Insert", "BIG=2")]))
    assert set(result.symbols) == {"GTUBE"}
    assert result.symbols["GTUBE"].options == (action.value,)
    assert result.action is action
    assert result.forced is not None
    assert result.forced.module == "gtube"
    assert (result.subject == "*** SPAM *** Test") is (action is Action.REWRITE_SUBJECT)


@pytest.mark.parametrize("text", [YJS, ZJS, AJS])
async def test_other_patterns_are_ignored_in_reject_mode(
    gtube_engine: Callable[[str], Engine], message: Callable[..., bytes], text: str
) -> None:
    result = await scan(gtube_engine("reject"), message(text, headers=[("X-Insert", "ONE")]))
    assert set(result.symbols) == {"ONE"}
    assert result.action is Action.NO_ACTION
    assert result.forced is None


@pytest.mark.parametrize("text", [XJS, YJS])
async def test_disabled_ignores_every_pattern(
    gtube_engine: Callable[[str], Engine], message: Callable[..., bytes], text: str
) -> None:
    result = await scan(gtube_engine("disabled"), message(text, headers=[("X-Insert", "ONE")]))
    assert set(result.symbols) == {"ONE"}
    assert result.forced is None


async def test_unknown_prefix_and_bare_tail_do_not_count_but_a_later_match_does(
    gtube_engine: Callable[[str], Engine], message: Callable[..., bytes]
) -> None:
    engine = gtube_engine("all")
    for text in (TAIL, "Q" + TAIL, f"{TAIL} Q{TAIL}"):
        result = await scan(engine, message(text, headers=[("X-Insert", "ONE")]))
        assert set(result.symbols) == {"ONE"}, text
    result = await scan(engine, message(f"Q{TAIL} and {ZJS}"))
    assert result.action is Action.REWRITE_SUBJECT
    # A bare tail at the very start of the text must not hide a real pattern after it.
    result = await scan(engine, message(f"{TAIL} then {YJS}"))
    assert result.action is Action.ADD_HEADER


async def test_found_in_a_base64_text_part(gtube_engine: Callable[[str], Engine]) -> None:
    encoded = base64.encodebytes(f"Hello\n{XJS}\n".encode())
    raw = multipart(
        ("Content-Type: text/plain", b"nothing here"),
        ("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64", encoded),
    )
    assert XJS.encode() not in raw
    result = await scan(gtube_engine("reject"), raw)
    assert set(result.symbols) == {"GTUBE"}
    assert result.action is Action.REJECT


async def test_found_in_a_single_part_base64_message(gtube_engine: Callable[[str], Engine]) -> None:
    raw = (
        b"Subject: b64\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(YJS.encode())
    )
    result = await scan(gtube_engine("all"), raw)
    assert result.action is Action.ADD_HEADER


async def test_found_in_a_quoted_printable_part_split_by_a_soft_break(
    gtube_engine: Callable[[str], Engine],
) -> None:
    body = f"{XJS[:30]}=\r\n{XJS[30:]}\r\n".encode()
    raw = multipart(
        ("Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable", body)
    )
    assert b"GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL" not in raw
    result = await scan(gtube_engine("reject"), raw)
    assert set(result.symbols) == {"GTUBE"}


async def test_found_in_html_text(gtube_engine: Callable[[str], Engine]) -> None:
    raw = multipart(("Content-Type: text/html", f"<html><body><p>{XJS}</p></body></html>".encode()))
    result = await scan(gtube_engine("reject"), raw)
    assert set(result.symbols) == {"GTUBE"}


@pytest.mark.parametrize(
    "headers",
    [
        "Content-Type: application/octet-stream",
        'Content-Type: application/pdf; name="x.pdf"',
        'Content-Type: text/plain\r\nContent-Disposition: attachment; filename="gtube.txt"',
    ],
)
async def test_not_found_in_an_attachment(
    gtube_engine: Callable[[str], Engine], headers: str
) -> None:
    raw = multipart(("Content-Type: text/plain", b"clean"), (headers, XJS.encode()))
    result = await scan(gtube_engine("reject"), raw)
    assert set(result.symbols) == {"ONE"}
    assert result.action is Action.NO_ACTION


async def test_not_found_in_an_encoded_attachment(gtube_engine: Callable[[str], Engine]) -> None:
    raw = multipart(
        ("Content-Type: text/plain", b"clean"),
        (
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64",
            base64.encodebytes(XJS.encode()),
        ),
    )
    result = await scan(gtube_engine("reject"), raw)
    assert set(result.symbols) == {"ONE"}


async def test_not_found_in_headers(
    gtube_engine: Callable[[str], Engine], message: Callable[..., bytes]
) -> None:
    result = await scan(gtube_engine("reject"), message("clean", subject=XJS))
    assert set(result.symbols) == set()
