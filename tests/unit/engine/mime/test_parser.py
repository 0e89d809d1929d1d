"""engine.mime: headers, RFC 2047/2231, the multipart tree, transfer encodings, limits."""

from __future__ import annotations

import pytest

from engine.mime import ParsedMessage, decode_rfc2047
from engine.mime.headers import parse_header_block
from engine.mime.parts import MAX_DEPTH, MAX_PARTS


def parse(text: str | bytes) -> ParsedMessage:
    return ParsedMessage.from_bytes(text.encode() if isinstance(text, str) else text)


def test_folded_header_keeps_lf_and_strips_one_space() -> None:
    msg = parse("Subject: first\r\n  second\r\nX-A:  two spaces\r\n\r\nbody")
    assert msg.headers.get("subject") == "first\n  second"
    assert msg.subject == "first second"
    assert msg.headers.get("x-a") == " two spaces"
    assert msg.body == b"body"


def test_duplicate_headers_keep_order_and_count() -> None:
    msg = parse("Received: a\nReceived: b\nreceived: c\n\n")
    assert msg.headers.get_all("RECEIVED") == ["a", "b", "c"]
    assert msg.headers.count("received") == 3


def test_mbox_from_line_is_framing_not_a_defect() -> None:
    msg = parse("From alice@example.org  Thu Aug 22 12:36:23 2002\nSubject: hi\n\nbody")
    assert msg.subject == "hi"
    assert "bad_header_line" not in msg.defects


def test_garbage_header_line_is_a_defect() -> None:
    msg = parse("Subject: hi\nthis is no header\nTo: b@example.org\n\nbody")
    assert "bad_header_line" in msg.defects
    assert msg.headers.get("to") == "b@example.org"


def test_no_headers_and_no_separator() -> None:
    assert "no_headers" in parse("just some text without any header").defects
    msg = parse("Subject: only headers")
    assert "no_body_separator" in msg.defects
    assert msg.subject == "only headers"


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("=?utf-8?B?Q2Fmw6k=?=", "Café"),
        ("=?iso-8859-1?Q?Caf=E9_cr=E8me?=", "Café crème"),
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # RFC 2047 §6.2: space between words dropped
        ("plain =?utf-8?B?w6k=?= text", "plain é text"),
        ("=?utf-8*en?Q?hello?=", "hello"),  # RFC 2231 §5 language suffix
    ],
)
def test_rfc2047(encoded: str, decoded: str) -> None:
    assert decode_rfc2047(encoded) == decoded


def test_rfc2047_bad_charset_and_bad_base64_are_defects() -> None:
    defects: set[str] = set()
    assert decode_rfc2047("=?x-nonsense?Q?abc?=", defects) == "abc"
    assert "bad_charset" in defects
    defects.clear()
    decode_rfc2047("=?utf-8?B?QUJDR?=", defects)
    assert "bad_rfc2047" in defects


MULTI = (
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="outer"\n\n'
    "preamble\n"
    "--outer\n"
    'Content-Type: multipart/alternative; boundary="inner"\n\n'
    "--inner\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
    "Caf=C3=A9 =\nsoft break\n"
    "--inner\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
    "PHA+SGVsbG8gPGI+d29ybGQ8L2I+PC9wPg==\n"
    "--inner--\n"
    "--outer\n"
    "Content-Type: application/octet-stream\n"
    "Content-Disposition: attachment; filename*0*=utf-8''r%C3%A9sum; filename*1=\"e.pdf\"\n\n"
    "%PDF\n"
    "--outer\n"
    "Content-Type: message/rfc822\n\n"
    "Subject: inner message\nContent-Type: text/plain\n\ninner body\n"
    "--outer--\n"
    "epilogue\n"
)


def test_multipart_tree_decoding_and_rfc2231_filename() -> None:
    msg = parse(MULTI)
    types = [p.content_type for p in msg.parts]
    assert types == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/octet-stream",
        "message/rfc822",
        "text/plain",
    ]
    plain, html = msg.text_parts[0], msg.text_parts[1]
    assert (
        plain.text == "Café soft break"
    )  # the CRLF before a boundary is the boundary's (RFC 2046 §5.1.1)
    assert html.source == "<p>Hello <b>world</b></p>"
    assert html.text == "Hello world"
    (attachment,) = msg.attachments
    assert attachment.filename == "résume.pdf"
    assert msg.parts[-1].text == "inner body"
    assert msg.defects == set()


def test_missing_boundary_parameter() -> None:
    msg = parse("Content-Type: multipart/mixed\n\n--x\n\nhello\n--x--\n")
    assert "missing_boundary" in msg.defects
    assert msg.root.children == []


def test_boundary_never_found_and_unterminated() -> None:
    assert (
        "missing_mime_parts"
        in parse('Content-Type: multipart/mixed; boundary="b"\n\nno parts\n').defects
    )
    msg = parse(
        'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nfirst\n--b\n\nsecond, cut off'
    )
    assert "unterminated_multipart" in msg.defects
    assert [p.body for p in msg.root.children] == [b"first", b"second, cut off"]


def test_bad_content_type_falls_back_to_text_plain() -> None:
    msg = parse("Content-Type: garbage\n\nhello")
    assert msg.root.content_type == "text/plain"
    assert "bad_content_type" in msg.defects


def test_bad_base64_is_decoded_best_effort() -> None:
    msg = parse(
        "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQ=!!!x\n"
    )
    assert msg.text_parts[0].text.startswith("hello world")


def test_unknown_cte_and_bad_charset_data() -> None:
    msg = parse(
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: x-weird\n\n\xff\xfe ok"
    )
    assert msg.text_parts[0].text.endswith(" ok")
    assert {"bad_cte", "bad_charset_data"} <= msg.defects


def test_unknown_charset_is_read_as_utf8() -> None:
    msg = parse(b"Content-Type: text/plain; charset=x-klingon\n\nhello")
    assert msg.text_parts[0].text == "hello"
    assert "bad_charset" in msg.defects


def test_nesting_limit() -> None:
    depth = MAX_DEPTH + 4
    head = "".join(
        f'--b{i}\nContent-Type: multipart/mixed; boundary="b{i + 1}"\n\n' for i in range(depth)
    )
    raw = f'Content-Type: multipart/mixed; boundary="b0"\n\n{head}--b{depth}\n\nleaf\n'
    msg = parse(raw)
    assert "nesting_too_deep" in msg.defects
    assert len(msg.parts) <= MAX_DEPTH + 1


def test_part_count_limit() -> None:
    raw = (
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        + "--b\n\nx\n" * (MAX_PARTS + 50)
        + "--b--\n"
    )
    msg = parse(raw)
    assert "too_many_parts" in msg.defects
    assert len(msg.parts) <= MAX_PARTS


def test_part_without_headers() -> None:
    msg = parse('Content-Type: multipart/mixed; boundary="b"\n\n--b\nno header here\n--b--\n')
    assert "part_without_headers" in msg.defects
    assert msg.root.children[0].body == b"no header here"


@pytest.mark.parametrize("charset", [b"utf\x00-8", b"\xff\xfe", b"x" * 300])
def test_garbage_charset_names_are_a_defect_not_an_error(charset: bytes) -> None:
    msg = parse(b"Content-Type: text/plain; charset=" + charset + b"\n\nhello")
    assert msg.text_parts[0].text == "hello"
    assert "bad_charset" in msg.defects


@pytest.mark.parametrize(
    ("block", "fields", "defects"),
    [
        (b"A: 1\r\nB: 2\r\n", [("A", "1"), ("B", "2")], set()),
        (b"A: 1\r\r\nB: 2\r", [("A", "1\r"), ("B", "2")], set()),  # one CR per line goes
        (b"A: 1\r\n\tmore\r\n x\r\n", [("A", "1\n\tmore\n x")], set()),
        (b" lead\r\nA:b\r\n", [("A", "b")], {"bad_header_line"}),
        (b"Bad Name: 1\r\nA B:2\r\n:x\r\nGood:3", [("Good", "3")], {"bad_header_line"}),
        (b"X-\x7f: 1\r\nX-\xc3\xa9: 2\r\nX-A : 3\r\n", [("X-A", "3")], {"bad_header_line"}),
    ],
)
def test_header_lines_cr_folding_and_bad_names(
    block: bytes, fields: list[tuple[str, str]], defects: set[str]
) -> None:
    found: set[str] = set()
    assert list(parse_header_block(block, found)) == fields
    assert found == defects
