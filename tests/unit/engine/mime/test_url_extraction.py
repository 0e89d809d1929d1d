"""URLs and addresses: parsing as a browser would, extraction from text and HTML, limits."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.mime import ParsedMessage
from engine.mime import urls as urls_module
from engine.mime.html import parse_html
from engine.mime.urls import (
    MAX_EMAILS,
    MAX_URLS,
    UrlSource,
    emails_in_text,
    mailto_address,
    parse_ipv4,
    parse_url,
    registered_domain,
    urls_in_html,
    urls_in_text,
)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("http://Example.COM/a?b=1#frag", "http://example.com/a?b=1"),
        ("HTTPS://example.com", "https://example.com/"),
        ("https://example.com:443/x", "https://example.com/x"),
        ("http://example.com:8080", "http://example.com:8080/"),
        ("www.example.org/path", "http://www.example.org/path"),
        ("//cdn.example.net/a.png", "http://cdn.example.net/a.png"),
        ("http:\\\\example.com\\a\\b", "http://example.com/a/b"),
        ("  http://exa\tmple.com/a\nb  ", "http://example.com/ab"),
        ("http://example.com./", "http://example.com/"),
        ("ftp://files.example.org/pub", "ftp://files.example.org/pub"),
        ("file:///C:/Users/x.exe", "file:///C:/Users/x.exe"),
        ("file://server.example/share/a", "file://server.example/share/a"),
        ("http://[2001:DB8::1]:8080/", "http://[2001:db8::1]:8080/"),
        ("http://xn--mller-kva.de/", "http://müller.de/"),
        (
            "http://\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25\u3002com/",
            "http://example.com/",
        ),  # full-width
    ],
)
def test_normalised_form(raw: str, normalised: str) -> None:
    url = parse_url(raw)
    assert url is not None
    assert str(url) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "javascript:alert(1)",
        "mailto:a@example.com",
        "data:text/html,hi",
        "/relative/path",
        "#top",
        "http://",
        "http://exa mple.com/",
        "http://example.com:99999/",
        "http://example.com:80a/",
        "http://999.1.1.1/",
        "http://1.2.3.4.5/",
        "http://[not-ipv6]/",
        "http://a..b/",
    ],
)
def test_not_a_network_url(raw: str) -> None:
    assert parse_url(raw) is None


def test_components_and_facts() -> None:
    url = parse_url("https://user:pw@bank.example@evil.example:8443/x?y=1", UrlSource.HREF, "t")
    assert url is not None
    assert (url.scheme, url.userinfo, url.host, url.port, url.path, url.query) == (
        "https",
        "user:pw@bank.example",
        "evil.example",
        8443,
        "/x",
        "y=1",
    )
    assert url.has_userinfo
    assert url.has_port
    assert url.obfuscated  # several '@'
    assert (url.source, url.text) == (UrlSource.HREF, "t")
    assert url.tld == "example"


@pytest.mark.parametrize(
    ("raw", "ip", "encoded"),
    [
        ("http://192.168.1.1/", "192.168.1.1", False),
        ("http://3232235777/", "192.168.1.1", True),
        ("http://0xC0A80101/", "192.168.1.1", True),
        ("http://0xc0.0xa8.1.1/", "192.168.1.1", True),
        ("http://0300.0250.01.01/", "192.168.1.1", True),
        ("http://127.1/", "127.0.0.1", True),
        ("http://[::1]/", "::1", False),
    ],
)
def test_ip_literals_in_every_notation(raw: str, ip: str, encoded: bool) -> None:
    url = parse_url(raw)
    assert url is not None
    assert url.is_ip
    assert url.ip == ip
    assert url.encoded_ip is encoded
    assert url.tld == ""


@pytest.mark.parametrize(
    ("host", "dotted"),
    [("1", "0.0.0.1"), ("4294967295", "255.255.255.255"), ("4294967296", None), ("08", None)],
)
def test_parse_ipv4_edges(host: str, dotted: str | None) -> None:
    assert parse_ipv4(host) == dotted


def test_obfuscations_are_facts() -> None:
    encoded = parse_url("http://%77ww.example.com/")
    backslash = parse_url("http://example.com\\path")
    zero_width = parse_url("http://exa\u200bmple.com/")
    assert encoded is not None
    assert encoded.host == "www.example.com"
    assert encoded.obfuscated
    assert backslash is not None
    assert backslash.obfuscated
    assert zero_width is not None
    assert zero_width.zero_width
    assert zero_width.host == "example.com"


def test_idn() -> None:
    puny = parse_url("https://xn--80ak6aa92e.com/")
    unicode = parse_url("https://пример.рф/")
    assert puny is not None
    assert puny.punycode
    assert puny.host == "\u0430\u0440\u0440\u04cf\u0435.com"  # "apple" in Cyrillic
    assert unicode is not None
    assert not unicode.punycode
    assert unicode.host == "пример.рф"
    broken = parse_url("http://xn--zz-!.example/")
    assert broken is None  # '!' is no host character


def test_registered_domain() -> None:
    assert registered_domain("www.a.example.co.uk") == "example.co.uk"
    assert registered_domain("mail.example.com") == "example.com"
    assert registered_domain("localhost") == "localhost"


def test_relative_links_resolve_against_base_href() -> None:
    url = parse_url("offer/1", UrlSource.HREF, base="https://example.com/shop/")
    assert url is not None
    assert str(url) == "https://example.com/shop/offer/1"


def test_urls_in_plain_text_trim_punctuation() -> None:
    text = (
        "See http://a.example.com/x. Or (www.b.example.org/y), and http://c.example.net/(z)! "
        "Also <https://d.example.com/>, “https://e.example.com/q?a=1”."
    )
    assert [str(u) for u in urls_in_text(text)] == [
        "http://a.example.com/x",
        "http://www.b.example.org/y",
        "http://c.example.net/(z)",
        "https://d.example.com/",
        "https://e.example.com/q?a=1",
    ]


def test_emails_in_text_skip_urls() -> None:
    text = "Mail joe@Example.COM or http://u@d.example.com/?e=x@y.example.com, jane+tag@a.example.co.uk."
    assert list(emails_in_text(text)) == ["joe@example.com", "jane+tag@a.example.co.uk"]
    assert mailto_address("mailto:Bob%40Example.ORG?subject=hi") == "Bob@example.org"
    assert mailto_address("https://example.org/") is None


def test_urls_in_html_sources_and_displayed_links() -> None:
    doc = parse_html(
        '<base href="https://example.com/"><a href="/a">Shop</a>'
        '<a href="https://track.example.net/c">www.example.org</a>'
        '<img src="https://img.example.com/i.png"><form action="https://f.example.com/p"></form>'
        '<meta http-equiv="refresh" content="0;url=https://r.example.com/">'
        '<iframe src="https://frame.example.com/"></iframe>'
        "<p>Visit www.example.org or http://text.example.com/ today</p>"  # outside links
    )
    found = [(str(u), u.source, u.text) for u in urls_in_html(doc)]
    assert found == [
        ("https://example.com/a", UrlSource.HREF, "Shop"),
        ("https://track.example.net/c", UrlSource.HREF, "www.example.org"),
        ("https://img.example.com/i.png", UrlSource.IMAGE, None),
        ("https://f.example.com/p", UrlSource.FORM, None),
        ("https://r.example.com/", UrlSource.META_REFRESH, None),
        ("https://frame.example.com/", UrlSource.ATTRIBUTE, None),
        ("http://www.example.org/", UrlSource.HTML_TEXT, None),
        ("http://text.example.com/", UrlSource.HTML_TEXT, None),
    ]


def test_parsed_message_urls_and_emails() -> None:
    raw = (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhttps://shop.example.com/a write ann@example.org\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n"
        b'<a href="https://shop.example.com/a">https://shop.example.com/a</a>'
        b'<a href="mailto:ann@example.org">mail</a><a href="mailto:bo@example.org">b</a>\r\n'
        b"--b--\r\n"
    )
    msg = ParsedMessage.from_bytes(raw)
    assert [(str(u), u.source) for u in msg.urls] == [
        ("https://shop.example.com/a", UrlSource.TEXT),
        ("https://shop.example.com/a", UrlSource.HREF),
    ]
    assert msg.emails == ["ann@example.org", "bo@example.org"]


def test_limits_per_message() -> None:
    many = " ".join(f"http://h{i}.example.com/" for i in range(MAX_URLS + 200))
    mails = " ".join(f"u{i}@example.com" for i in range(MAX_EMAILS + 200))
    msg = ParsedMessage.from_bytes(f"Content-Type: text/plain\r\n\r\n{many}\n{mails}".encode())
    assert len(msg.urls) == MAX_URLS
    assert len(msg.emails) == MAX_EMAILS


HOSTILE = {
    "one URL a million times": "http://a.example.com/x " * 300_000,
    "www soup": "www." * 500_000,
    "at soup": "@" * 2_000_000,
    "address soup": "a." * 1_000_000 + "@",
    "endless URL": "http://x.example.com/" + "a" * 5_000_000,
    "scheme soup": "http://" * 300_000,
    "percent host": "http://" + "%41" * 1_000_000,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_text_is_bounded(name: str) -> None:
    raw = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + HOSTILE[name].encode()
    started = time.perf_counter()
    msg = ParsedMessage.from_bytes(raw)
    assert len(msg.urls) <= MAX_URLS
    assert len(msg.emails) <= MAX_EMAILS
    elapsed = time.perf_counter() - started
    assert elapsed < 10.0, f"{name}: {elapsed:.1f}s"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                ["http://", "https:", "www.", "//", "\\", "@", ":", "%", "xn--", ".", "[", "]"]
            ),
            st.sampled_from(["0x", "0", "255", "4294967296", "?", "#", "\t", "\u200b", "é"]),
            st.text(max_size=5),
        ),
        max_size=30,
    )
)
def test_parse_url_never_raises(pieces: list[str]) -> None:
    candidate = "".join(pieces)
    url = parse_url(candidate, base="https://example.com/")
    if url is not None:
        assert str(url).startswith(f"{url.scheme}://")
    list(urls_in_text(candidate))
    list(emails_in_text(candidate))


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "http://",
                "HTTPS://",
                "ftp://",
                "http\u017f://",
                "://",
                "www.",
                "WwW2.",
                "wwww.",
                "x",
                "é",
                " ",
                ".",
                "/",
                "_",
                "-",
                "(",
                ")",
                "a.b",
                "1",
            ]
        ),
        max_size=16,
    )
)
def test_bare_urls_are_found_where_the_pattern_finds_them(pieces: list[str]) -> None:
    # url_spans tries the pattern only near "://" and "www"; it must find exactly what
    # trying every position finds.
    text = "".join(pieces)
    expected = [(m.start(), m.group()) for m in urls_module._TEXT_URL.finditer(text)]
    assert [(m.start(), m.group()) for m in urls_module._text_urls(text)] == expected


def test_parse_url_shares_results_of_equal_calls() -> None:
    first = parse_url("http://Example.com/a", UrlSource.HREF, "click")
    assert first is parse_url("http://Example.com/a", UrlSource.HREF, "click")
    assert parse_url("http://example.com/a", UrlSource.IMAGE) != first  # the source differs
    long_text = "x" * 1000  # too long to keep: parsed anew, equal all the same
    assert parse_url("http://e.com/", UrlSource.HREF, long_text) == parse_url(
        "http://e.com/", UrlSource.HREF, long_text
    )
