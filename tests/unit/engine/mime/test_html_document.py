"""``parse_html``: visible and hidden text, links, images, forms, and hostile input."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.mime import ParsedMessage
from engine.mime import html as html_module
from engine.mime.html import MAX_ITEMS, MAX_SOURCE, parse_color, parse_html
from engine.mime.text import html_to_text


def test_visible_text_joins_inline_tags_and_breaks_blocks() -> None:
    doc = parse_html("<p>Hello <b>wor</b>ld</p><p>second</p>line<br>next")
    assert doc.text == "Hello world\n\nsecond\nline\nnext"
    assert doc.text_length == len(doc.text)
    assert doc.source_length == len("<p>Hello <b>wor</b>ld</p><p>second</p>line<br>next")


def test_scripts_styles_comments_and_title_are_not_text() -> None:
    doc = parse_html(
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<!-- a comment --><script>var x = '<b>';</script>seen&amp;read</body></html>"
    )
    assert doc.text == "seen&read"
    assert doc.has_tag("script")
    assert doc.tag_counts["style"] == 1


@pytest.mark.parametrize(
    "source",
    [
        '<span style="display:none">secret</span>',
        '<span style="visibility: hidden">secret</span>',
        "<div hidden>secret</div>",
        '<span style="opacity:0">secret</span>',
        '<div style="max-height:0;overflow:hidden">secret</div>',
        "<style>.x { display: none }</style><p class='a x'>secret</p>",
    ],
)
def test_hidden_text(source: str) -> None:
    doc = parse_html(f"<p>shown</p>{source}")
    assert doc.text == "shown"
    assert doc.hidden_text_length == len("secret")
    assert doc.invisible_text_length == len("secret")
    assert doc.invisible_blocks == 1


def test_hiding_inside_media_queries_is_not_hiding() -> None:
    doc = parse_html(
        "<style>@media (max-width:600px) { .m { display:none } }</style><p class=m>x</p>"
    )
    assert doc.text == "x"
    assert doc.invisible_text_length == 0


@pytest.mark.parametrize(
    ("source", "tiny", "contrast"),
    [
        ('<span style="font-size:0">abc</span>', 3, 0),
        ('<span style="font-size:1px">abc</span>', 3, 0),
        ('<span style="font-size:2pt">abc</span>', 3, 0),
        ('<font color="#ffffff">abc</font>', 0, 3),
        ('<font color="#FEFEFE">abc</font>', 0, 3),
        ('<body bgcolor="black"><font color="#000">abc</font></body>', 0, 3),
        ('<span style="color: rgb(255,255,255)">abc</span>', 0, 3),
    ],
)
def test_tiny_and_low_contrast_text(source: str, tiny: int, contrast: int) -> None:
    doc = parse_html(source)
    assert (doc.tiny_text_length, doc.low_contrast_text_length) == (tiny, contrast)
    assert doc.text == ""


@pytest.mark.parametrize(
    "source",
    [
        '<table bgcolor="#000000"><tr><td><font color="#ffffff">abc</font></td></tr></table>',
        '<td background="bg.jpg"><font color="white">abc</font></td>',
        '<span style="font-size:12px;color:#333">abc</span>',
        '<font color="#cccccc">abc</font>',
    ],
)
def test_readable_text_stays_visible(source: str) -> None:
    doc = parse_html(source)
    assert doc.text == "abc"
    assert doc.invisible_text_length == 0


def test_links_images_forms_and_references() -> None:
    doc = parse_html(
        '<html><head><base href="https://example.com/"><meta http-equiv="Refresh" '
        'content="5; URL=\'https://go.example.net/x\'"><link rel="stylesheet" href="s.css">'
        '</head><body onload="x()"><a href="https://a.example.org/p?q=1&amp;r=2">Click <b>here'
        '</b><img src="cid:img1" width="300" height="200"></a><a href="/rel">rel</a>'
        '<img src="https://t.example.com/p.gif" width=1 height="1px">'
        '<area href="https://map.example.org/" alt="Map">'
        '<form action="https://f.example.org/post" method="POST"><input type="password"></form>'
        '<iframe src="https://frame.example.net/"></iframe>'
        '<img src="data:image/png;base64,AAAA"></body></html>'
    )
    first, second, area = doc.links
    assert (first.href, first.text, first.has_image) == (
        "https://a.example.org/p?q=1&r=2",
        "Click here",
        True,
    )
    assert (second.href, second.text) == ("/rel", "rel")
    assert (area.tag, area.text) == ("area", "Map")
    linked, pixel, data = doc.images
    assert (linked.width, linked.height, linked.in_link, linked.is_embedded) == (
        300,
        200,
        True,
        True,
    )
    assert (pixel.width, pixel.height, pixel.is_external, pixel.in_link) == (1, 1, True, False)
    assert data.is_data
    assert doc.forms[0].action == "https://f.example.org/post"
    assert doc.forms[0].method == "POST"
    assert doc.password_inputs == 1
    assert doc.base_href == "https://example.com/"
    assert doc.meta_refresh == "https://go.example.net/x"
    assert doc.stylesheets == ("s.css",)
    assert doc.event_handlers == 1
    assert doc.data_uris == ("image/png",)
    assert ("iframe.src", "https://frame.example.net/") in doc.urls_in_attributes


def test_a_new_link_closes_an_open_one() -> None:
    doc = parse_html('<a href="x">one<a href="y">two</a>')
    assert [(link.href, link.text) for link in doc.links] == [("x", "one"), ("y", "two")]
    assert doc.balanced


@pytest.mark.parametrize(
    ("source", "balanced"),
    [
        ("<html><body><div><p>a<p>b</div><ul><li>x<li>y</ul></body></html>", True),
        ("<table><tr><td>a<td>b<tr><td>c</table>", True),
        ("<div><b>x</div>", False),  # </div> had to close <b>
        ("<div>x", False),  # left open
        ("x</span>", False),  # closes nothing
        ("<br/><img src=x><hr></br>", True),  # void elements
    ],
)
def test_balance(source: str, balanced: bool) -> None:
    assert parse_html(source).balanced is balanced


def test_zero_width_characters_are_removed_and_counted() -> None:
    doc = parse_html("<p>v\u200bi\u200ba\u00adgra</p><p>\u200cjoiner stays</p>")
    assert doc.text == "viagra\n\n\u200cjoiner stays"
    assert doc.zero_width_chars == 3


def test_fake_html_has_no_tags() -> None:
    doc = parse_html("just text, no markup")
    assert doc.tag_counts == {}
    assert doc.text == "just text, no markup"


def test_text_ratio() -> None:
    assert parse_html("").text_ratio == 0.0
    assert 0 < parse_html("<p>abc</p>").text_ratio < 1


@pytest.mark.parametrize(
    ("value", "rgb"),
    [
        ("#fff", (255, 255, 255)),
        ("FFFFFF", (255, 255, 255)),
        ("rgb(1, 2, 300)", (1, 2, 255)),
        ("White", (255, 255, 255)),
        ("transparent", None),
        ("#12", None),
    ],
)
def test_parse_color(value: str, rgb: tuple[int, int, int] | None) -> None:
    assert parse_color(value) == rgb


def test_html_to_text_is_kept_for_its_callers() -> None:
    assert html_to_text("<p>Hello <b>world</b></p>") == "Hello world"


def test_parsed_message_uses_the_document_for_html_parts() -> None:
    raw = b'Content-Type: text/html\r\n\r\n<p>Hi <span style="display:none">hidden</span>there</p>'
    msg = ParsedMessage.from_bytes(raw)
    (part,) = msg.text_parts
    assert part.text == "Hi there"
    assert part.html is not None
    assert msg.html_documents == [part.html]


# -- Hostile input: never raises, bounded time ------------------------------------------

HOSTILE = {
    "deep nesting": "<div>" * 200_000 + "x" + "</div>" * 200_000,
    "10 MB of tags": "<b>" * (10 * 1024 * 1024 // 3),
    "unclosed tags": "<a href='x" * 100_000,
    "tag without end": "<a " * 300_000,
    "lone angle brackets": "<" * 1_000_000,
    "invalid entities": "&#xffffffffff;&#0;&#55296;&bogus;&amp" * 20_000,
    "unterminated comment": "<!--" + "x" * 1_000_000,
    "unterminated script": "<script>" + "<b>" * 300_000,
    "marked sections": "<![if !supportLists]>x<![endif]><![foo bar]><!x" * 10_000,
    "huge style": "<style>" + ".a{display:none}" * 100_000 + "</style>",
    "stray end tags": "</div>" * 500_000,
    "nul and controls": "<p>\x00\x01\x1b</p>\x00" * 100_000,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_is_bounded(name: str) -> None:
    source = HOSTILE[name]
    started = time.perf_counter()
    doc = parse_html(source)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"{name}: {elapsed:.1f}s"
    assert doc.source_length == len(source)
    assert len(doc.links) <= MAX_ITEMS
    assert len(doc.images) <= MAX_ITEMS
    assert len(doc.text) <= MAX_SOURCE
    if len(source) > MAX_SOURCE:
        assert doc.truncated


def test_many_links_are_capped() -> None:
    doc = parse_html('<a href="https://example.com/">x</a>' * (MAX_ITEMS + 50))
    assert len(doc.links) == MAX_ITEMS


TOKENS = st.sampled_from(
    [
        "<",
        ">",
        "</",
        "/>",
        "<!--",
        "-->",
        "<![",
        "]]>",
        '"',
        "'",
        "=",
        "&",
        "&#",
        ";",
        "<a href=",
        "<img src=",
        "<style>",
        "</style>",
        "<script>",
        "<font color=#fff>",
        '<span style="display:none">',
        "</span>",
        "<table bgcolor=",
        "<form action=",
        "<meta http-equiv=refresh content=",
        "data:",
        "\x00",
        "\u200b",
        " ",
        "x",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(TOKENS, st.text(max_size=6)), max_size=60))
def test_token_soup_never_raises(pieces: list[str]) -> None:
    doc = parse_html("".join(pieces))
    assert doc.invisible_text_length >= 0
    assert "\x00" not in doc.text


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("a \t\n\r\x0b\x1c\u00a0\u2003\u3000\x00é"), max_size=20))
def test_white_space_collapses_as_the_regex_did(text: str) -> None:
    # _collapse splits and joins in C; the regex it replaced is the reference.
    assert html_module._collapse(text) == re.sub(r"[\s\u00a0]+", " ", text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "<p>", "</p>", "<br>", "<div> ", " </td>", "<td>"])))
def test_block_breaks_read_as_before(pieces: list[str]) -> None:
    # One NUL between words is a line break, two or more a paragraph break, spaces
    # around them go (the single substitution with a callback these two replaced).
    doc = parse_html("".join(pieces))
    parser = html_module._Parser()
    parser.feed("".join(pieces))
    joined = re.sub(r"[\s\u00a0]+", " ", "".join(parser.pieces))
    expected = re.sub(
        r" ?\x00[\x00 ]*", lambda m: "\n\n" if m.group().count("\x00") > 1 else "\n", joined
    ).strip()
    assert doc.text == expected
