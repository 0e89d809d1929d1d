"""Text parts as words: HTML reduced to the text a reader would see."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.mime.html import HtmlDocument

__all__ = ["TextPart", "html_to_text"]

_INVISIBLE_BLOCKS = re.compile(r"<(script|style|head|title)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_COMMENTS = re.compile(r"<!--.*?(?:-->|$)", re.S)
_BREAKS = re.compile(r"<(?:br|/p|/div|/tr|/li|/h[1-6]|p|div|tr|li|h[1-6])\b[^>]*>", re.I)
_TAGS = re.compile(r"<[^>]*>", re.S)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def html_to_text(source: str) -> str:
    """Visible text of an HTML document: scripts, styles and comments dropped, entities decoded.

    A quick approximation: ``ParsedMessage.text_parts`` uses ``parse_html``, which also
    drops hidden text and joins words split by inline tags, when it parses the part anyway.
    """
    text = _INVISIBLE_BLOCKS.sub(" ", source)
    text = _COMMENTS.sub(" ", text)
    text = _BREAKS.sub("\n", text)
    text = _TAGS.sub(" ", text)
    text = html.unescape(text)
    text = _SPACES.sub(" ", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


@dataclass(slots=True, frozen=True)
class TextPart:
    """A text/plain or text/html leaf: ``text`` is what a reader sees, ``source`` what was sent.

    ``html`` is the analysis of an HTML part (``engine.mime.html.parse_html``), else None.
    """

    content_type: str
    text: str
    source: str
    charset: str | None
    html: HtmlDocument | None = None

    @property
    def is_html(self) -> bool:
        return self.content_type == "text/html"
