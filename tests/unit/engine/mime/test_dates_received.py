"""engine.mime.dates and engine.mime.received."""

from __future__ import annotations

import calendar

import pytest

from engine.mime.dates import parse_date
from engine.mime.received import Hop


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mon, 15 Jan 2024 12:00:00 +0000", (2024, 1, 15, 12, 0, 0)),
        ("Mon, 15 Jan 2024 13:30:00 +0130 (CET)", (2024, 1, 15, 12, 0, 0)),
        ("15 Jan 24 07:00:00 EST", (2024, 1, 15, 12, 0, 0)),  # obsolete year and zone
        ("Mon, 15 Jan 2024\n 12:00:00 -0000", (2024, 1, 15, 12, 0, 0)),  # folded; -0000 = UTC
    ],
)
def test_dates(text: str, expected: tuple[int, ...]) -> None:
    assert parse_date(text) == calendar.timegm((*expected, 0, 0, 0))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "Mon, 31 Feb 2024 10:00:00 +0000",
        "Mon, 15 Jan 2024 25:61:00 +0000",
        "1 Jan 99999 00:00 +0000",
    ],
)
def test_bad_dates(text: str) -> None:
    assert parse_date(text) is None


def test_postfix_received() -> None:
    hop = Hop(
        "from mail.example.org (mail.example.org [198.18.0.10])\n\tby mx.example.net (Postfix) "
        "with ESMTPSA id 4ABC\n\tfor <Bob@example.net>; Mon, 15 Jan 2024 11:00:05 +0000 (UTC)"
    )
    f = hop.fields
    assert (f.helo, f.rdns, f.ip, f.by, f.protocol, f.recipient) == (
        "mail.example.org",
        "mail.example.org",
        "198.18.0.10",
        "mx.example.net",
        "ESMTPSA",
        "bob@example.net",
    )
    assert f.date == "Mon, 15 Jan 2024 11:00:05 +0000 (UTC)"
    assert hop.authenticated
    assert not hop.is_retrieval


@pytest.mark.parametrize(
    ("value", "helo", "rdns", "ip"),
    [
        (
            "from lugh (root@lugh.tuatha.org [194.125.145.45]) by x.example",
            "lugh",
            "lugh.tuatha.org",
            "194.125.145.45",
        ),
        # qmail: "from RDNS (HELO name) (ip)", no HELO comment when it is the RDNS name
        ("from unknown (HELO pc) (1.2.3.4) by x.example with SMTP", "pc", None, "1.2.3.4"),
        (
            "from p4.eircom.net (HELO darkstar) (159.134.1.2) by mx.example with SMTP",
            "darkstar",
            "p4.eircom.net",
            "159.134.1.2",
        ),
        (
            "from mail.example.org (198.51.100.7) by mx.example with SMTP",
            "mail.example.org",
            "mail.example.org",
            "198.51.100.7",
        ),
        (
            "from unknown (HELO there) ([216.212.1.121]) (envelope-sender <a@b.example>) by mx",
            "there",
            None,
            "216.212.1.121",
        ),
        (
            "from unknown (HELO x.example) (u@192.0.2.5) by mx.example with SMTP",
            "x.example",
            None,
            "192.0.2.5",
        ),
        ("from [203.0.113.9] by x.example with local", "[203.0.113.9]", None, "203.0.113.9"),
        (
            "from mx.example.org ([IPv6:2001:db8::1] helo=mx) by a.example with esmtps",
            "mx.example.org",
            None,
            "2001:db8::1",
        ),
        ("(qmail 1234 invoked by uid 500); 15 Jan 2024 12:00:00 -0000", None, None, None),
    ],
)
def test_received_forms(value: str, helo: str | None, rdns: str | None, ip: str | None) -> None:
    f = Hop(value).fields
    assert (f.helo, f.rdns, f.ip) == (helo, rdns, ip)


def test_fetchmail_is_retrieval() -> None:
    hop = Hop(
        "from phobos [127.0.0.1]\n\tby localhost with IMAP (fetchmail-5.9.0)\n\tfor z@localhost (single-drop)"
    )
    assert hop.is_retrieval
