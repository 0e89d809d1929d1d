"""HTML parts as a reader and a filter see them: visible text, tags, links, images, forms.

Theory of operation: ``parse_html`` makes one left-to-right pass of a single compiled
tokenizer (``_TOKEN``: comments, tags, declarations) over the source; the text between
tokens is data. A stack of open elements carries what a reader's client would inherit:
hidden (``display:none``, ``visibility:hidden``, a font too small to read, the ``hidden``
attribute, a CSS class a ``<style>`` block hides), text colour and background colour. Data
under a hidden or low-contrast element counts as invisible text and stays out of ``text``.

Why not ``html.parser``: it raises ``AssertionError`` on marked sections such as
``<![foo]>``, and on the development corpus's 431 HTML parts (5.4 MB) its tokenizer alone,
with empty handlers, took 0.69 s where ``_TOKEN`` takes 0.19 s (the whole analysis here
about 0.75 s; the regex-only ``text.html_to_text`` 0.13 s, but the HTML rules need this
analysis for every HTML part anyway, so ``ParsedMessage.text_parts`` takes its text from
here). The patterns are linear (a tag never spans a ``<``), so hostile input costs time
proportional to its size; ``MAX_SOURCE`` and ``MAX_TAGS`` bound that size, and past them
``truncated`` is set.

Invariants: ``parse_html`` never raises; every tuple is capped at ``MAX_ITEMS``; the
stack never exceeds ``MAX_DEPTH`` (deeper elements are counted, not pushed).
"""

from __future__ import annotations

import functools
import html
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "MAX_SOURCE",
    "MAX_TAGS",
    "HtmlDocument",
    "HtmlForm",
    "HtmlImage",
    "HtmlLink",
    "parse_color",
    "parse_html",
]

MAX_SOURCE: Final = 1024 * 1024  # characters of source read; the rest is ignored
MAX_TAGS: Final = 50_000  # tokens handled; a real newsletter has a few thousand
MAX_CSS: Final = 64 * 1024  # characters of each <style> block searched for hiding rules
MAX_DEPTH: Final = 512
MAX_ITEMS: Final = 1000  # links, images, forms, data URIs kept per document

# Comments (unterminated ones run to the end, as in browsers), tags whose attributes honour
# quotes but never contain "<" (which keeps the scan linear), declarations and PIs.
_ATTRS = r"""((?>[^<>"']+|"[^"<]*"|'[^'<]*'|["'])*)"""
_TOKEN = re.compile(
    r"<!--.*?(?:--!?>|\Z)"
    rf"|<(script|style|title|xmp|template|textarea)\b{_ATTRS}>(.*?)(?:</\1\s*>|\Z)"
    rf"|<(/?)([A-Za-z][^\s/<>]*){_ATTRS}>"
    r"|<[!?][^<>]*>",
    re.S | re.I,
)
_ATTR = re.compile(r"""([^\s"'<>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


# A block boundary ("\x00", see _Parser.pieces) with the spaces around it: a run of two or
# more is a paragraph break, one a line break. Two substitutions, not one with a Python
# callback per boundary (a newsletter has thousands).
_PARAGRAPH_BREAKS = re.compile(r" ?\x00 *\x00[\x00 ]*")
_LINE_BREAKS = re.compile(r" ?\x00 *")
_VOID = _names(
    "area base basefont bgsound br col embed frame hr image img input isindex keygen link "
    "meta param source spacer track wbr"
)
# End tags that may be left out (WHATWG §13.1.2.4): leaving them open is not "unbalanced".
_OPTIONAL_END = _names(
    "html head body p li dt dd tr td th thead tbody tfoot option optgroup colgroup caption rt rp"
)
# Starting one of these closes an open element of the same family first.
_SELF_CLOSING_FAMILY = {
    "p": ("p",),
    "li": ("li",),
    "dt": ("dt", "dd"),
    "dd": ("dt", "dd"),
    "td": ("td", "th"),
    "th": ("td", "th"),
    "tr": ("tr", "td", "th"),
    "option": ("option",),
    "a": ("a",),
}
_BLOCK = _names(
    "address article aside blockquote br center dd div dl dt fieldset figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table tr ul title body html"
)
_CELL = frozenset({"td", "th"})
_NO_ATTRS: dict[str, str] = {}
_STYLED = _names(
    "body table tr td th div span font p a b i u strong em center small big h1 h2 h3 h4 "
    "h5 h6 li ul ol blockquote label section header footer article"
)
# Tags whose attributes are read: presentation, and everything that points somewhere.
_ATTR_TAGS = _STYLED | _names("img area form input base meta link iframe frame embed script object")
_POINTING = _names(
    "a img area form input base meta link iframe frame embed script object body table td"
)
_PRESENTATION = _names("style color bgcolor background hidden text class id")
_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.S)
# An at-rule block with one level of nested rules (``@media x { .a {..} .b {..} }``).
_CSS_AT_BLOCK = re.compile(r"@[^{};]*\{(?>[^{}]*\{[^{}]*\})*+[^{}]*+\}")
_CSS_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_CSS_SIMPLE_SELECTOR = re.compile(r"[.#][\w-]+")
_CSS_DECL = re.compile(r"([a-zA-Z-]+)\s*:\s*([^;]+)")
_SIZE = re.compile(r"^\s*(-?\d*\.?\d+)\s*(px|pt|em|rem|%|)?", re.I)
_REFRESH_URL = re.compile(r"url\s*=\s*['\"]?([^'\"]+)", re.I)
_HEX = re.compile(r"^#?([0-9a-f]{3}|[0-9a-f]{6})$", re.I)
_RGB = re.compile(r"^rgba?\(\s*(\d+)%?\s*,\s*(\d+)%?\s*,\s*(\d+)%?", re.I)
_NAMED_COLORS: Final = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "silver": (192, 192, 192),
    "navy": (0, 0, 128),
    "maroon": (128, 0, 0),
    "purple": (128, 0, 128),
    "orange": (255, 165, 0),
    "snow": (255, 250, 250),
    "ivory": (255, 255, 240),
    "whitesmoke": (245, 245, 245),
    "ghostwhite": (248, 248, 255),
    "floralwhite": (255, 250, 240),
    "seashell": (255, 245, 238),
    "mintcream": (245, 255, 250),
    "azure": (240, 255, 255),
    "aliceblue": (240, 248, 255),
    "honeydew": (240, 255, 240),
    "linen": (250, 240, 230),
    "lightgray": (211, 211, 211),
    "lightgrey": (211, 211, 211),
}
_WHITE: Final = (255, 255, 255)
_BLACK: Final = (0, 0, 0)
# WCAG contrast ratio below which text is unreadable on its background: #f0f0f0 on white
# is 1.14, the palest footer grey seen in the corpus (#cccccc) is 1.6.
_MIN_CONTRAST: Final = 1.15
_MIN_FONT_PX: Final = 3.0
# Why text is invisible, weakest first (a stronger reason wins when several apply).
_VISIBLE, _CONTRAST, _TINY, _HIDDEN = 0, 1, 2, 3

Rgb = tuple[int, int, int]


def parse_color(value: str) -> Rgb | None:
    """``#fff``, ``ffffff``, ``rgb(1,2,3)`` or a common colour name → RGB; else None."""
    value = value.strip().lower()
    named = _NAMED_COLORS.get(value)
    if named is not None:
        return named
    match = _HEX.match(value)
    if match:
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    match = _RGB.match(value)
    if match:
        r, g, b = (min(int(x), 255) for x in match.groups())
        return r, g, b
    return None


def _collapse(text: str) -> str:
    """Each run of white space (``str.isspace()``, which is what ``\\s`` matches) as one
    space, ends included, split and joined in C: a regex substitution run by run cost a
    sixth of the whole HTML analysis."""
    words = text.split()
    if not words:
        return " " if text else ""
    joined = " ".join(words)
    if text[0].isspace():
        joined = " " + joined
    if text[-1].isspace():
        joined += " "
    return joined


@functools.lru_cache(maxsize=1024)
def _luminance(rgb: Rgb) -> float:
    """WCAG 2.1 relative luminance."""
    out = 0.0
    for weight, channel in zip((0.2126, 0.7152, 0.0722), rgb, strict=True):
        c = channel / 255
        out += weight * (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
    return out


def _low_contrast(fg: Rgb, bg: Rgb) -> bool:
    a, b = _luminance(fg), _luminance(bg)
    hi, lo = max(a, b), min(a, b)
    return (hi + 0.05) / (lo + 0.05) < _MIN_CONTRAST


def _font_px(value: str) -> float | None:
    """A CSS font-size in pixels (pt * 4/3, em * 16); None when relative or unknown."""
    match = _SIZE.match(value)
    if match is None:
        return None
    number, unit = float(match.group(1)), (match.group(2) or "px").lower()
    scale = {"px": 1.0, "pt": 4 / 3, "em": 16.0, "rem": 16.0}.get(unit)
    if scale is None:
        return 0.0 if number == 0 else None
    return number * scale


def _dimension(value: str | None) -> int | None:
    if not value:
        return None
    match = _SIZE.match(value)
    if match is None or (match.group(2) or "").lower() in ("%", "em", "rem"):
        return None
    return max(0, int(float(match.group(1))))


@final
@dataclass(slots=True, frozen=True)
class HtmlImage:
    """An ``<img>``: where it loads from, its declared size, and whether a link wraps it."""

    src: str
    width: int | None = None
    height: int | None = None
    in_link: bool = False

    @property
    def is_external(self) -> bool:
        return self.src.lower().startswith(("http:", "https:", "//"))

    @property
    def is_embedded(self) -> bool:
        """Carried inside the message (``cid:``), as Rspamd's ``embedded`` images."""
        return self.src.lower().startswith("cid:")

    @property
    def is_data(self) -> bool:
        return self.src.lower().startswith("data:")


@final
@dataclass(slots=True, frozen=True)
class HtmlLink:
    """An ``<a href>`` (or ``<area href>``) with the text a reader sees for it."""

    href: str
    text: str
    tag: str = "a"
    has_image: bool = False


@final
@dataclass(slots=True, frozen=True)
class HtmlForm:
    action: str
    method: str


@final
@dataclass(slots=True, frozen=True)
class HtmlDocument:
    """What one pass over an HTML part found. Lengths are in characters.

    ``text`` is the visible text (blocks end in newlines, runs of white space collapsed);
    ``invisible_text_length`` counts the non-space characters a reader would not see:
    ``hidden_text_length`` (display:none, visibility:hidden, the hidden attribute, a class
    a <style> hides), ``tiny_text_length`` (font-size under 3px) and
    ``low_contrast_text_length`` (text colour on a background too close to it);
    ``invisible_blocks`` counts the runs of text they are in.
    ``balanced`` is false when an end tag closed nothing, or closed other elements that
    require an end tag, or such elements were left open at the end.
    """

    text: str
    source_length: int
    tag_counts: Mapping[str, int]
    balanced: bool
    images: tuple[HtmlImage, ...]
    links: tuple[HtmlLink, ...]
    forms: tuple[HtmlForm, ...]
    invisible_text_length: int
    hidden_text_length: int
    tiny_text_length: int
    low_contrast_text_length: int
    invisible_blocks: int
    base_href: str | None
    meta_refresh: str | None
    data_uris: tuple[str, ...]
    stylesheets: tuple[str, ...]
    password_inputs: int
    event_handlers: int
    zero_width_chars: int = 0
    truncated: bool = False
    urls_in_attributes: tuple[tuple[str, str], ...] = field(default=())
    unlinked_text: str = ""  # visible text outside <a> links, white space collapsed

    @property
    def text_length(self) -> int:
        return len(self.text)

    @property
    def tags_total(self) -> int:
        return sum(self.tag_counts.values())

    def has_tag(self, name: str) -> bool:
        return self.tag_counts.get(name.lower(), 0) > 0

    @property
    def text_ratio(self) -> float:
        """Visible text per character of source (0 for an empty source)."""
        return min(1.0, self.text_length / self.source_length) if self.source_length else 0.0


@dataclass(slots=True, frozen=True)
class _Style:
    """What an open element's content inherits (``bg`` None: an image, colour unknown)."""

    hidden: int  # _TINY or _HIDDEN when this element or an ancestor hides its content
    fg: Rgb
    bg: Rgb | None
    why: int  # why its text is invisible: hidden, or the colour on the background


@dataclass(slots=True)
class _OpenLink:
    href: str
    start: int  # index into the visible pieces where its text begins
    tag: str
    has_image: bool = False


def _attributes(text: str) -> tuple[dict[str, str], bool]:
    """The attributes (first of each name wins) and whether a name starts with ``on``."""
    attrs: dict[str, str] = {}
    handlers = False
    for name, double, single, bare in _ATTR.findall(text):
        value = double or single or bare
        if "&" in value:
            value = html.unescape(value)
        key = name.lower()
        if key[:2] == "on":
            handlers = True
        attrs.setdefault(key, value)
    return attrs, handlers


def _hiding_declarations(style: str) -> tuple[int, Rgb | None, Rgb | None]:
    """(how it hides its content, text colour, background colour) from CSS declarations."""
    hidden = zero_box = clipped = tiny = False
    fg = bg = None
    for match in _CSS_DECL.finditer(style):
        prop = match.group(1).lower()
        value = match.group(2).lower().replace("!important", "").strip()
        if prop == "display":
            hidden = hidden or value == "none"
        elif prop == "visibility":
            hidden = hidden or value in ("hidden", "collapse")
        elif prop == "opacity":
            hidden = hidden or value in ("0", "0.0", "0%")
        elif prop == "font-size":
            px = _font_px(value)
            tiny = tiny or (px is not None and px < _MIN_FONT_PX)
        elif prop in ("height", "max-height", "width", "max-width"):
            zero_box = zero_box or _font_px(value) == 0
        elif prop == "overflow":
            clipped = value == "hidden"
        elif prop == "color":
            hidden = hidden or value == "transparent"
            fg = parse_color(value)
        elif prop in ("background-color", "background"):
            bg = next((c for c in map(parse_color, value.split()) if c is not None), bg)
    level = _HIDDEN if hidden or (zero_box and clipped) else _TINY if tiny else _VISIBLE
    return level, fg, bg


def _hidden_classes(css: str) -> frozenset[str]:
    """Class and id names a ``<style>`` block hides with a simple top-level rule.

    Rules inside ``@media`` blocks are skipped: newsletters hide desktop or mobile
    variants that way, and that is not hiding text from the reader.
    """
    names: set[str] = set()
    css = _CSS_AT_BLOCK.sub(" ", _CSS_COMMENT.sub(" ", css))
    for match in _CSS_RULE.finditer(css):
        selectors, body = match.group(1), match.group(2)
        if "@" in selectors or _hiding_declarations(body)[0] != _HIDDEN:
            continue
        for selector in selectors.split(","):
            selector = selector.strip()
            if _CSS_SIMPLE_SELECTOR.fullmatch(selector):
                names.add(selector.lower())
    return frozenset(names)


# Zero-width space, word joiner, BOM and soft hyphen: invisible, yet they split a word for
# a filter. ZWJ and ZWNJ stay: scripts (Persian, Indic) and emoji sequences need them.
_ZERO_WIDTH = re.compile("[\u200b\u2060\ufeff\u00ad]")
_URL_ATTRS = {
    "iframe": "src",
    "frame": "src",
    "embed": "src",
    "script": "src",
    "object": "data",
    "input": "src",
    "body": "background",
    "table": "background",
    "td": "background",
}


class _Parser:
    """The state of one pass; ``feed`` once, then ``document``."""

    def __init__(self) -> None:
        self.pieces: list[str] = []  # visible data, "\x00" for a block boundary
        self.unlinked: list[str] = []  # visible data outside links, for bare URLs in text
        self.unlinked_size = 0
        # The open elements, and (in step) the style their content inherits; an element
        # that changes nothing shares its parent's _Style object.
        self.tags = ["#root"]
        self.styles = [_Style(_VISIBLE, _BLACK, _WHITE, _VISIBLE)]
        self.why_top = _VISIBLE
        self.open_counts: dict[str, int] = {}
        self.tag_counts: dict[str, int] = {}
        self.balanced = True
        self.images: list[HtmlImage] = []
        self.links: list[HtmlLink] = []
        self.forms: list[HtmlForm] = []
        self.data_uris: list[str] = []
        self.stylesheets: list[str] = []
        self.attr_urls: list[tuple[str, str]] = []
        self.invisible = [0, 0, 0, 0]  # non-space characters by _CONTRAST, _TINY, _HIDDEN
        self.invisible_blocks = 0
        self.base_href: str | None = None
        self.meta_refresh: str | None = None
        self.password_inputs = 0
        self.event_handlers = 0
        self.hidden_classes: frozenset[str] = frozenset()
        self.link: _OpenLink | None = None
        # Attribute text → (attributes, whether special_attributes must look at them).
        self.parsed_attrs: dict[str, tuple[dict[str, str], bool]] = {}

    def feed(self, source: str) -> bool:
        """Tokenize ``source``; True when ``MAX_TAGS`` stopped the pass early."""
        # Bound methods and spans in locals: this loop runs once per token, and a
        # newsletter has thousands of them.
        data, start_tag, end_tag = self.data, self.start_tag, self.end_tag
        last = 0
        for tokens, match in enumerate(_TOKEN.finditer(source)):
            if tokens >= MAX_TAGS:
                return True
            start, end = match.span()
            if start > last:
                data(source[last:start])
            last = end
            raw, slash, name, attrs = match.group(1, 4, 5, 6)
            if name is not None:
                if slash:
                    end_tag(name.lower())
                else:
                    start_tag(name.lower(), attrs)
            elif raw is not None:
                self.raw_text(raw.lower(), match.group(2), match.group(3))
            # else: a comment, doctype, marked section or processing instruction
        if last < len(source):
            data(source[last:])
        return False

    def raw_text(self, name: str, attrs: str, content: str) -> None:
        """A script/style/title element: its content is code or metadata, not text."""
        self.start_tag(name, attrs)
        if name == "style" and len(self.hidden_classes) < MAX_ITEMS:
            self.hidden_classes |= _hidden_classes(content[:MAX_CSS])
        elif name == "textarea":
            self.data(content)
        self.end_tag(name)

    def data(self, text: str) -> None:
        if "&" in text:
            text = html.unescape(text)
        if "\x00" in text:
            text = text.replace("\x00", "")
        if self.why_top:
            length = sum(map(len, text.split()))  # characters that are not white space
            self.invisible[self.why_top] += length
            self.invisible_blocks += length > 0
        else:
            self.pieces.append(text)
            if self.link is None and self.unlinked_size < MAX_SOURCE:
                self.unlinked.append(text)
                self.unlinked_size += len(text)

    def start_tag(self, name: str, raw_attrs: str) -> None:
        counts = self.tag_counts
        counts[name] = counts.get(name, 0) + 1
        family = _SELF_CLOSING_FAMILY.get(name)
        if family is not None:
            tags = self.tags
            while tags[-1] in family:
                self.pop()
        attrs = _NO_ATTRS
        if raw_attrs and name in _ATTR_TAGS:
            # Newsletters repeat the same attribute text on tag after tag: parsed once
            # (the dicts are never changed, so tags can share one).
            parsed = self.parsed_attrs.get(raw_attrs)
            if parsed is None:
                attrs, handlers = _attributes(raw_attrs)
                parsed = attrs, handlers or "data:" in raw_attrs.lower()
                self.parsed_attrs[raw_attrs] = parsed
            attrs, special = parsed
            if special:
                self.special_attributes(attrs)
            if name in _POINTING:
                self.inspect_attributes(name, attrs)
        if name in _BLOCK:
            self.pieces.append("\x00")
        elif name in _CELL:
            self.pieces.append(" ")
        if name in _VOID or raw_attrs.endswith("/"):
            return
        if len(self.tags) < MAX_DEPTH:
            self.push(name, attrs)

    def special_attributes(self, attrs: dict[str, str]) -> None:
        """Event handlers (scripts) and data: URIs, on whatever element they sit."""
        for key, value in attrs.items():
            if key.startswith("on") and len(key) > 2:
                self.event_handlers += 1
            elif value[:5].lower() == "data:" and len(self.data_uris) < MAX_ITEMS:
                self.data_uris.append(value[5:].split(";", 1)[0].split(",", 1)[0].lower())

    def inspect_attributes(self, name: str, attrs: dict[str, str]) -> None:
        """Collect what the tag points at: links, images, forms, refreshes."""
        if name == "a":
            self.close_link()
            if "href" in attrs:
                self.link = _OpenLink(attrs["href"], len(self.pieces), "a")
                self.unlinked.append(" ")
        elif name == "img":
            style = attrs.get("style", "")
            width = _dimension(attrs.get("width")) or _style_dimension(style, "width")
            height = _dimension(attrs.get("height")) or _style_dimension(style, "height")
            if self.link is not None:
                self.link.has_image = True
            if len(self.images) < MAX_ITEMS:
                image = HtmlImage(attrs.get("src", ""), width, height, self.link is not None)
                self.images.append(image)
        elif name == "area" and "href" in attrs and len(self.links) < MAX_ITEMS:
            self.links.append(HtmlLink(attrs["href"], attrs.get("alt", ""), "area"))
        elif name == "form" and len(self.forms) < MAX_ITEMS:
            self.forms.append(HtmlForm(attrs.get("action", ""), attrs.get("method", "get")))
        elif name == "input" and attrs.get("type", "").lower() == "password":
            self.password_inputs += 1
        elif name == "base" and self.base_href is None and "href" in attrs:
            self.base_href = attrs["href"]
        elif name == "meta" and attrs.get("http-equiv", "").lower() == "refresh":
            found = _REFRESH_URL.search(attrs.get("content", ""))
            if found and self.meta_refresh is None:
                self.meta_refresh = found.group(1).strip()
        elif name == "link" and "stylesheet" in attrs.get("rel", "").lower():
            self.stylesheets.append(attrs.get("href", ""))
        key = _URL_ATTRS.get(name)
        if key is not None and attrs.get(key) and len(self.attr_urls) < MAX_ITEMS:
            self.attr_urls.append((f"{name}.{key}", attrs[key]))

    def push(self, name: str, attrs: dict[str, str]) -> None:
        parent = self.styles[-1]
        style = parent
        if attrs and name in _STYLED and not _PRESENTATION.isdisjoint(attrs):
            hidden, fg, bg = self.presentation(name, attrs, parent)
            if (hidden, fg, bg) != (parent.hidden, parent.fg, parent.bg):
                same_colours = (fg, bg) == (parent.fg, parent.bg)
                if hidden or same_colours:
                    why = hidden or parent.why
                else:
                    why = _CONTRAST if bg is not None and _low_contrast(fg, bg) else _VISIBLE
                style = _Style(hidden, fg, bg, why)
        self.tags.append(name)
        self.styles.append(style)
        open_counts = self.open_counts
        open_counts[name] = open_counts.get(name, 0) + 1
        self.why_top = style.why

    def pop(self) -> str:
        name = self.tags.pop()
        self.styles.pop()
        self.open_counts[name] -= 1
        self.why_top = self.styles[-1].why
        if name == "a":
            self.close_link()
        return name

    def presentation(
        self, name: str, attrs: dict[str, str], parent: _Style
    ) -> tuple[int, Rgb, Rgb | None]:
        """Apply an element's own hiding and colours over what it inherits."""
        hidden = _HIDDEN if "hidden" in attrs else parent.hidden
        fg, bg = parent.fg, parent.bg
        color = (
            attrs.get("color") if name == "font" else attrs.get("text") if name == "body" else None
        )
        if color:
            fg = parse_color(color) or fg
        if attrs.get("bgcolor"):
            bg = parse_color(attrs["bgcolor"]) or bg
        if attrs.get("background"):
            bg = None
        style = attrs.get("style")
        if style:
            style_hidden, style_fg, style_bg = _hiding_declarations(style)
            hidden = max(hidden, style_hidden)
            fg = style_fg or fg
            bg = None if "url(" in style.lower() else style_bg or bg
        if self.hidden_classes:
            names = {f".{c}" for c in attrs.get("class", "").lower().split()}
            if attrs.get("id"):
                names.add(f"#{attrs['id'].lower()}")
            if not names.isdisjoint(self.hidden_classes):
                hidden = _HIDDEN
        return hidden, fg, bg

    def end_tag(self, name: str) -> None:
        if name in _VOID:
            if name == "br":
                self.pieces.append("\x00")  # browsers read </br> as <br>
            return
        if name in _BLOCK:
            self.pieces.append("\x00")
        elif name in _CELL:
            self.pieces.append(" ")
        if name == "a":
            self.close_link()
        if not self.open_counts.get(name):
            self.balanced = False  # an end tag that closes nothing
            return
        while True:
            popped = self.pop()
            if popped == name:
                return
            if popped not in _OPTIONAL_END:
                self.balanced = False  # closed an element that needed its own end tag

    def close_link(self) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        self.unlinked.append(" ")
        if len(self.links) >= MAX_ITEMS:
            return
        text = "".join(self.pieces[link.start :]).replace("\x00", " ")
        text = " ".join(text[:4096].split())
        self.links.append(HtmlLink(link.href, text, link.tag, link.has_image))

    def document(self, source_length: int, truncated: bool) -> HtmlDocument:
        self.close_link()
        if any(tag not in _OPTIONAL_END for tag in self.tags[1:]):
            self.balanced = False
        text = "".join(self.pieces)
        zero_width = len(_ZERO_WIDTH.findall(text))
        if zero_width:
            text = _ZERO_WIDTH.sub("", text)  # they split words for filters, not for readers
        text = _collapse(text)
        if "\x00" in text:
            text = _LINE_BREAKS.sub("\n", _PARAGRAPH_BREAKS.sub("\n\n", text))
        return HtmlDocument(
            text=text.strip(),
            source_length=source_length,
            tag_counts=self.tag_counts,
            balanced=self.balanced,
            images=tuple(self.images),
            links=tuple(self.links),
            forms=tuple(self.forms),
            invisible_text_length=sum(self.invisible),
            hidden_text_length=self.invisible[_HIDDEN],
            tiny_text_length=self.invisible[_TINY],
            low_contrast_text_length=self.invisible[_CONTRAST],
            invisible_blocks=self.invisible_blocks,
            base_href=self.base_href,
            meta_refresh=self.meta_refresh,
            data_uris=tuple(self.data_uris),
            stylesheets=tuple(self.stylesheets),
            password_inputs=self.password_inputs,
            event_handlers=self.event_handlers,
            zero_width_chars=zero_width,
            truncated=truncated,
            urls_in_attributes=tuple(self.attr_urls),
            unlinked_text=_collapse("".join(self.unlinked)),
        )


def _style_dimension(style: str, prop: str) -> int | None:
    if prop not in style.lower():
        return None
    for match in _CSS_DECL.finditer(style):
        if match.group(1).lower() == prop:
            return _dimension(match.group(2))
    return None


def parse_html(source: str) -> HtmlDocument:
    """Parse an HTML part's decoded source. Never raises; cost is linear in the input."""
    parser = _Parser()
    truncated = parser.feed(source[:MAX_SOURCE])
    return parser.document(len(source), truncated or len(source) > MAX_SOURCE)
