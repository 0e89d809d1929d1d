"""The parser's promise: any bytes parse, and every lazy view can be read, without raising."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.mime import ParsedMessage
from engine.mime.dates import parse_date
from engine.mime.received import Hop

FIXTURES = sorted((Path(__file__).parents[3] / "rules" / "fixtures").glob("*.eml"))
SEEDS = [p.read_bytes() for p in FIXTURES]
# Bytes that steer random input towards the parser's interesting paths.
TOKENS = [
    b"\r\n",
    b"\n",
    b"\n\n",
    b": ",
    b" ",
    b"\t",
    b"--b",
    b"--b--",
    b"=?utf-8?B?",
    b"?=",
    b"Content-Type: multipart/mixed; boundary=b\n",
    b"Content-Type: message/rfc822\n",
    b"Content-Transfer-Encoding: base64\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b"charset=",
    b"filename*0*=",
    b"%",
    b"'",
    b'"',
    b";",
    b"=",
    b"\xff",
    b"\x00",
    b"<",
    b">",
]


def touch(raw: bytes) -> None:
    msg = ParsedMessage.from_bytes(raw)
    _ = msg.parts, msg.leaves, msg.attachments, msg.text_parts, msg.subject
    _ = msg.defects, msg.raw, msg.size
    for part in msg.parts:
        _ = part.filename, part.is_attachment, part.decoded, part.charset
    for value in msg.headers.get_all("received"):
        _ = Hop(value).fields, Hop(value).is_retrieval, Hop(value).authenticated
    parse_date(msg.headers.get("date") or "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes(raw: bytes) -> None:
    touch(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=8)), max_size=80))
def test_token_soup(pieces: list[bytes]) -> None:
    touch(b"".join(pieces))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.integers(min_value=0, max_value=40),
            st.sampled_from([*TOKENS, b""]),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_real_messages(seed: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    raw = seed
    for at, cut, insert in edits:
        at %= len(raw) + 1
        raw = raw[:at] + insert + raw[at + cut :]
    touch(raw)


@given(st.text(max_size=200))
def test_dates_and_received_never_raise(text: str) -> None:
    parse_date(text)
    _ = Hop(text).fields, Hop(text).is_retrieval, Hop(text).authenticated
