"""What each scope matches: decoded and raw headers, :first, text, HTML, body, raw
message, URLs, e-mail addresses and every selector."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.rules import RuleSet
    from engine.task import Task

MESSAGE = (
    b"Received: from top.example.net (top.example.net [198.51.100.7])\r\n"
    b"\tby mx.example.org; Mon, 15 Jan 2024 11:00:01 +0000\r\n"
    b"Received: from inner.example.com (inner.example.com [203.0.113.9])\r\n"
    b"\tby top.example.net; Mon, 15 Jan 2024 11:00:00 +0000\r\n"
    b"From: =?utf-8?B?Q2Fmw6kgUm95YWw=?= <news@Cafe.Example.com>\r\n"
    b"Reply-To: Replies <replies@example.net>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: =?iso-8859-1?Q?Caf=E9_offer?=   \r\n"
    b"Message-ID: <abc.123@mail.example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="alt"\r\n'
    b"\r\n"
    b"--alt\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Visit https://Shop.Example.COM/deal?id=7 or write to sales@example.com =\r\n"
    b"for the caf=C3=A9 deal.\r\n"
    b"--alt\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b'<html><body><p>Visit <a href="http://xn--caf-dma.example/promo">our caf\xc3\xa9</a>'
    b"</p></body></html>\r\n"
    b"--alt--\r\n"
    b"--outer\r\n"
    b'Content-Type: application/octet-stream; name="Invoice.pdf.exe"\r\n'
    b"Content-Disposition: attachment\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
    b"--outer--\r\n"
)
ENVELOPE = {
    "client_addr": "192.0.2.10",
    "client_name": "mail.example.com",
    "helo": "helo.example.com",
    "mail_from": "bounce@example.com",
    "rcpts": ("<bob@example.org>", "carol@example.org"),
    "auth_user": "alice",
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # {header}: decoded (RFC 2047), unfolded, stripped; every occurrence
        ("Subject=/^Café offer$/", True),
        ("Subject=/^Caf\\xc3\\xa9 offer$/", True),  # without u: UTF-8 bytes
        ("Subject=/^caf. offer$/iu", True),  # with u: é is one character
        ("Subject=/^caf. offer$/i", False),  # without u: é is two bytes
        ("SUBJECT=/offer/", True),  # header names are case-insensitive
        ("From=/^Café Royal </", True),
        ("Received=/inner\\.example\\.com/", True),
        ("Received:first=/inner\\.example\\.com/", False),  # not the topmost
        ("Received:first=/top\\.example\\.net/", True),
        ("Received=/\\n/", False),  # folding removed
        ("X-Missing=/.*/", False),  # no such header: no piece to match
        # {raw_header}: as received, encoded words and folding (CRLF + WSP) kept
        ("Subject=/=\\?iso-8859-1\\?Q\\?Caf=E9/{raw_header}", True),
        ("Subject=/\\?=   $/{raw_header}", True),  # not stripped
        ("Received:first=/\\)\\r\\n\\tby mx/{raw_header}", True),
        ("Received:first=/inner/{raw_header}", False),
        # {mime}: the decoded text of text parts, HTML as visible text
        ("/café deal/", True),
        ("/our café/", True),
        ("/<a href/", False),  # tags are not text
        ("/Café offer/", False),  # the Subject is not a part
        ("/TVqQ/", False),  # attachments are not text
        # {html}: the HTML source
        ('/<a href="http:/i{html}', True),
        ("/write to sales/{html}", False),
        # {body}: the raw body, nothing decoded
        ("/caf=C3=A9 deal/{body}", True),
        ("/café deal/{body}", False),
        ("/^TVqQAAMA/m{body}", True),
        ("/^Subject:/m{body}", False),
        # {raw_message}: headers and body
        ("/^Subject: =\\?iso/m{raw_message}", True),
        ("/^TVqQAAMA/m{raw_message}", True),
        # {url}: normalised (scheme://host/path?query, host lower-cased, IDN as Unicode)
        ("/^https:\\/\\/shop\\.example\\.com\\/deal\\?id=7$/{url}", True),
        ("/Shop\\.Example/{url}", False),
        ("/^http:\\/\\/café\\.example\\/promo$/u{url}", True),
        # {email}: addresses in the text parts
        ("/^sales@example\\.com$/{email}", True),
        ("/bob@/{email}", False),  # a header address is not in the text
    ],
)
def test_scopes(fires: Callable[..., bool], expression: str, expected: bool) -> None:
    assert fires(expression, MESSAGE, **ENVELOPE) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("env_from=/^bounce@example\\.com$/{selector}", True),
        ("env_rcpt=/^bob@example\\.org$/{selector}", True),  # brackets removed
        ("env_rcpt=/^carol@/{selector}", True),  # every recipient
        ("helo=/^helo\\.example\\.com$/{selector}", True),
        ("hostname=/^mail\\.example\\.com$/{selector}", True),
        ("ip=/^192\\.0\\.2\\.10$/{selector}", True),
        ("user=/^alice$/{selector}", True),
        ("from_addr=/^news@Cafe\\.Example\\.com$/{selector}", True),
        ("from_name=/^Café Royal$/{selector}", True),
        ("from_domain=/^cafe\\.example\\.com$/{selector}", True),
        ("reply_to_addr=/^replies@example\\.net$/{selector}", True),
        ("attachment_name=/\\.pdf\\.exe$/i{selector}", True),
        ("content_type=/^multipart\\/alternative$/{selector}", True),
        ("content_type=/^application\\/octet-stream$/{selector}", True),
        ("charset=/^utf-8$/{selector}", True),
        ("url_host=/^shop\\.example\\.com$/{selector}", True),
        ("url_host=/^café\\.example$/u{selector}", True),
        ("subject=/^Café offer$/{selector}", True),
        ("message_id=/^abc\\.123@mail\\.example\\.com$/{selector}", True),
        ("ENV_FROM=/^bounce/{selector}", True),  # selector names are case-insensitive
    ],
)
def test_selectors(fires: Callable[..., bool], expression: str, expected: bool) -> None:
    assert fires(expression, MESSAGE, **ENVELOPE) is expected


@pytest.mark.parametrize(
    ("envelope", "expression", "expected"),
    [
        ({"mail_from": ""}, "env_from=/^$/{selector}", True),  # the null sender
        ({"mail_from": "a@b.c"}, "env_from=/^$/{selector}", False),
        ({}, "env_from=/^$/{selector}", False),  # unknown sender: no value at all
        ({"client_addr": "192.0.2.1"}, "hostname=/^unknown$/{selector}", True),
        ({}, "hostname=/^unknown$/{selector}", False),  # a content-only scan
        ({}, "user=/./{selector}", False),
    ],
)
def test_selector_edges(
    fires: Callable[..., bool], envelope: dict[str, object], expression: str, expected: bool
) -> None:
    assert fires(expression, MESSAGE, **envelope) is expected


def test_first_and_every_occurrence_share_a_header(
    compile_rules: Callable[..., RuleSet], task_of: Callable[..., Task], backend: str
) -> None:
    rules = compile_rules(
        {
            "ANY": "Received=/inner/",
            "FIRST": "Received:first=/inner/",
            "TOP": "Received:first=/top\\.example\\.net \\(/",
        },
        backend,
    )
    assert rules.evaluate(task_of(MESSAGE)).fired == ["ANY", "TOP"]
