"""The ``urls`` and ``emails`` of a ``/checkv2`` result: Rspamd's shapes, and only when the
request asks (the milter's requests do not, and pay nothing for them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine import Action, ScanRequest, ScanResult
from engine.mime.message import ParsedMessage
from engine.result import url_report

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine import Engine
    from engine.modules import Module

TEXT = (
    "Read https://Example.COM/a and http://example.com/b?x=1, then www.other.test/c.\n"
    "Write to Bob.Smith@Example.ORG or bob.smith@example.org.\n"
    "Odd ones: http://3232235777/x http://user@host.test:8080/\n"
)
HTML = (
    '<p><a href="https://shop.example.net/buy">shop</a> <img src="http://img.example.net/p.png">'
    ' <a href="mailto:Sales@Example.NET?subject=hi">mail us</a></p>'
)


def parsed(body: str, content_type: str = "text/plain") -> ParsedMessage:
    raw = f"Subject: x\nContent-Type: {content_type}\n\n{body}".replace("\n", "\r\n")
    return ParsedMessage.from_bytes(raw.encode())


def test_hosts_each_once_in_order_and_addresses() -> None:
    urls, emails = url_report(parsed(TEXT), "hosts")
    assert urls == ("example.com", "www.other.test", "192.168.1.1", "host.test")
    assert emails == ("Bob.Smith@example.org", "bob.smith@example.org")


def test_html_links_images_and_mailto() -> None:
    urls, emails = url_report(parsed(HTML, "text/html"), "hosts")
    assert urls == ("shop.example.net", "img.example.net")
    assert emails == ("Sales@example.net",)


def test_neither_means_none() -> None:
    assert url_report(parsed("No links here.\n"), "hosts") == (None, ())
    assert url_report(parsed("No links here.\n"), "extended") == (None, ())


def test_addresses_alone_give_an_empty_url_list() -> None:
    assert url_report(parsed("Mail alice@example.org\n"), "hosts") == ((), ("alice@example.org",))


def test_extended_one_object_per_url() -> None:
    urls, _ = url_report(parsed(TEXT), "extended")
    assert urls is not None
    by_url = {u["url"]: u for u in urls if isinstance(u, dict)}
    assert len(by_url) == len(urls) == 5
    assert by_url["https://example.com/a"] == {
        "url": "https://example.com/a",
        "tld": "example.com",
        "host": "example.com",
        "flags": ["text"],
    }
    assert by_url["http://www.other.test/c"]["flags"] == ["text", "schemaless"]
    numeric = by_url["http://192.168.1.1/x"]
    assert "tld" not in numeric
    assert numeric["flags"] == ["numeric", "obscured", "text"]
    assert by_url["http://host.test:8080/"]["flags"] == ["text", "has_port", "has_user"]
    html, _ = url_report(parsed(HTML, "text/html"), "extended")
    assert html is not None
    assert [u["flags"] for u in html if isinstance(u, dict)] == [[], ["image"]]


def test_to_json_places_them_after_messages() -> None:
    result = ScanResult(
        action=Action.NO_ACTION,
        score=0.0,
        required_score=15.0,
        thresholds={},
        symbols={},
        urls=("example.com",),
        emails=("a@example.com",),
    )
    out = result.to_json()
    keys = list(out)
    assert keys.index("messages") + 1 == keys.index("urls")
    assert keys.index("urls") + 1 == keys.index("emails") < keys.index("message-id")
    assert (out["urls"], out["emails"]) == (["example.com"], ["a@example.com"])
    bare = ScanResult(Action.NO_ACTION, 0.0, 15.0, {}, {}).to_json()
    assert "urls" not in bare
    assert "emails" not in bare


@pytest.mark.parametrize(("url_format", "present"), [(None, False), ("hosts", True)])
async def test_the_engine_reports_them_only_when_asked(
    build_engine: Callable[..., Engine],
    scorer: type[Module],
    message: Callable[..., bytes],
    url_format: str | None,
    present: bool,
) -> None:
    engine = build_engine(scorer)
    raw = message("See https://example.com/ or write to a@example.org\n")
    result = await engine.scan(ScanRequest(raw=raw, url_format=url_format))  # type: ignore[arg-type]
    out = result.to_json()
    assert ("urls" in out, "emails" in out) == (present, present)
    if present:
        assert (out["urls"], out["emails"]) == (["example.com"], ["a@example.org"])
