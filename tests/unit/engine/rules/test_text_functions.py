"""The text-scanning function atoms against plain reference implementations: counting at
C speed (translate tables, byte counts, regexes tried only where they can match) must
give the answers the obvious character-by-character code gives."""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.mime.message import ParsedMessage
from engine.rules.functions import mime
from engine.task import ScanRequest, Task

_CASED = re.compile(r"[^\W\d_]")
_ASCII_LINE = re.compile(r"^[^a-z\r\n]*(?=\r?$)", re.M)


def reference_case_counts(text: str) -> tuple[int, int]:
    upper = cased = 0
    for char in _CASED.findall(text):
        if char.isupper():
            upper += 1
            cased += 1
        elif char.islower():
            cased += 1
    return upper, cased


def reference_shouting(text: str, min_letters: int) -> int:
    lines = _ASCII_LINE.findall(text) if text.isascii() else text.splitlines()
    count = 0
    for line in lines:
        upper, cased = reference_case_counts(line)
        if len(line) >= min_letters and cased >= min_letters and upper == cased:
            count += 1
    return count


def task_with_text(text: str) -> Task:
    raw = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode(
        "utf-8", "surrogateescape"
    )
    return Task(ScanRequest(raw=raw), ParsedMessage.from_bytes(raw), {})


TRICKY = (
    "aBcD éÉ ß ǅ Ⅻ ⓐ Ⓐ ΣσςЖж İ\u0131\u017fK 中文한국 עבר \U00020001 \uff21\uff5a ² _1 "
    "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029 \udc80 ABC DEF GHI"
)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from(TRICKY), max_size=60))
def test_case_counts_match_the_reference(text: str) -> None:
    assert mime._case_counts(text) == reference_case_counts(text)


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(TRICKY), max_size=60)
    | st.text(alphabet=st.sampled_from("aBCDZ \r\n\x0b1"), max_size=40),
    st.sampled_from([0, 1, 3, 20]),
)
def test_shouting_lines_match_the_reference(text: str, min_letters: int) -> None:
    task = task_with_text(text)
    (part,) = task.message.text_parts
    assert mime.shouting_lines(task, min_letters) == reference_shouting(part.text, min_letters)


def test_blocks_said_to_have_no_cased_letters_have_none() -> None:
    for low, high in mime.UNCASED_RANGES:
        for code in range(low, min(high, sys.maxunicode) + 1):
            char = chr(code)
            assert not (_CASED.match(char) and (char.isupper() or char.islower())), hex(code)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("send to 1BoatSLRHtKNngkdXEeobR76b53LETtpyT now", True),
        ("(3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy)", True),
        ("x1BoatSLRHtKNngkdXEeobR76b53LETtpyT", False),  # glued to a letter
        ("1BoatSLRHtKNngkdXEeobR76b53LETtpyU", False),  # bad checksum
        ("wallet: bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq.", True),
        ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", True),
        ("abc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", False),
        ("no address here", False),
    ],
)
def test_bitcoin_addresses(text: str, found: bool) -> None:
    assert mime.has_bitcoin_address(task_with_text(text)) is found
