"""HTML function atoms: what ``ParsedMessage.html_documents`` found in the HTML parts.

Every function reads the per-part ``HtmlDocument`` the parser built once for the message
(``engine/mime/html.py``); none parses again, and all of them are false (or 0) for a
message without HTML. Counts and lengths add up over the message's HTML parts. Image
sizes are the declared width + height, as Rspamd measures them for R_EMPTY_IMAGE and
HTML_SHORT_LINK_IMG_*; an image without declared sizes counts as 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.rules.functions import function

if TYPE_CHECKING:
    from engine.mime.html import HtmlDocument
    from engine.task.task import Task

_TRACKING_PIXEL_MAX = 2  # width and height at most this: a web bug, not a picture


def _docs(task: Task) -> list[HtmlDocument]:
    return task.message.html_documents


@function("has_fake_html", cost=5)
def has_fake_html(task: Task) -> bool:
    """A text/html part with text but not a single HTML tag."""
    return any(not d.tag_counts and d.text.strip() for d in _docs(task))


@function("is_html_balanced", cost=5)
def is_html_balanced(task: Task) -> bool:
    """Every HTML part closes what it opens (true when there is no HTML part)."""
    return all(d.balanced for d in _docs(task))


@function("has_html_tag", args=(str,), cost=5)
def has_html_tag(task: Task, tag: str) -> bool:
    """An HTML part has at least one TAG element (name, case-insensitive)."""
    return any(d.has_tag(tag) for d in _docs(task))


@function("html_tag_count", args=(str,), cost=5)
def html_tag_count(task: Task, tag: str) -> int:
    """How many TAG elements the HTML parts open."""
    return sum(d.tag_counts.get(tag.lower(), 0) for d in _docs(task))


@function("html_tags_total", cost=5)
def html_tags_total(task: Task) -> int:
    """How many start tags the HTML parts have in all."""
    return sum(d.tags_total for d in _docs(task))


@function("html_images", cost=5)
def html_images(task: Task) -> int:
    """How many <img> elements the HTML parts have."""
    return sum(len(d.images) for d in _docs(task))


@function("html_text_length", cost=5)
def html_text_length(task: Task) -> int:
    """Characters of visible text in the HTML parts."""
    return sum(d.text_length for d in _docs(task))


@function("html_text_ratio", cost=5)
def html_text_ratio(task: Task) -> float:
    """Visible text per character of HTML source, 0..1 (0 without HTML)."""
    docs = _docs(task)
    source = sum(d.source_length for d in docs)
    return min(1.0, sum(d.text_length for d in docs) / source) if source else 0.0


@function("html_links", cost=5)
def html_links(task: Task) -> int:
    """How many <a href> and <area href> links the HTML parts have."""
    return sum(len(d.links) for d in _docs(task))


@function("html_has_form", cost=5)
def html_has_form(task: Task) -> bool:
    """An HTML part contains a <form>."""
    return any(d.forms for d in _docs(task))


@function("html_has_post_form", cost=5)
def html_has_post_form(task: Task) -> bool:
    """An HTML part has a <form method=post> (it sends what the reader types)."""
    return any(f.method.strip().lower() == "post" for d in _docs(task) for f in d.forms)


@function("html_has_password_input", cost=5)
def html_has_password_input(task: Task) -> bool:
    """An HTML part asks for a password (<input type=password>)."""
    return any(d.password_inputs for d in _docs(task))


@function("html_invisible_text_length", cost=5)
def html_invisible_text_length(task: Task) -> int:
    """Characters of text a reader cannot see (display:none, visibility:hidden, tiny font,
    text colour on its own background).
    """
    return sum(d.invisible_text_length for d in _docs(task))


@function("html_invisible_text_ratio", cost=5)
def html_invisible_text_ratio(task: Task) -> float:
    """Hidden text as a share of all text in the HTML parts, 0..1."""
    docs = _docs(task)
    hidden = sum(d.invisible_text_length for d in docs)
    total = hidden + sum(d.text_length for d in docs)
    return hidden / total if total else 0.0


@function("html_low_contrast_ratio", cost=5)
def html_low_contrast_ratio(task: Task) -> float:
    """Text in a colour (nearly) equal to its background, as a share of all text, 0..1."""
    docs = _docs(task)
    low = sum(d.low_contrast_text_length for d in docs)
    total = sum(d.text_length + d.invisible_text_length for d in docs)
    return low / total if total else 0.0


@function("html_tiny_text_length", cost=5)
def html_tiny_text_length(task: Task) -> int:
    """Characters of text set in a font too small to read (font-size under 3px, or 0)."""
    return sum(d.tiny_text_length for d in _docs(task))


@function("html_hidden_text_length", cost=5)
def html_hidden_text_length(task: Task) -> int:
    """Characters of text hidden by display:none, visibility:hidden, opacity:0 or the
    hidden attribute (directly or through a class a <style> block hides).
    """
    return sum(d.hidden_text_length for d in _docs(task))


@function("html_invisible_blocks", cost=5)
def html_invisible_blocks(task: Task) -> int:
    """How many separate runs of text a reader cannot see (hidden, tiny or low contrast)."""
    return sum(d.invisible_blocks for d in _docs(task))


@function("html_has_external_images", cost=5)
def html_has_external_images(task: Task) -> bool:
    """An HTML part loads an image from the web (http:, https: or //)."""
    return any(i.is_external for d in _docs(task) for i in d.images)


@function("html_tracking_pixels", cost=5)
def html_tracking_pixels(task: Task) -> int:
    """External images of at most 2x2 pixels (web bugs that report the message was read)."""
    return sum(
        1
        for d in _docs(task)
        for i in d.images
        if i.is_external
        and i.width is not None
        and i.height is not None
        and i.width <= _TRACKING_PIXEL_MAX
        and i.height <= _TRACKING_PIXEL_MAX
    )


@function("html_large_unlinked_images", args=(int,), cost=5)
def html_large_unlinked_images(task: Task, min_size: int) -> int:
    """Images outside any link whose declared width + height is at least MIN_SIZE."""
    return sum(
        1
        for d in _docs(task)
        for i in d.images
        if not i.in_link and (i.width or 0) + (i.height or 0) >= min_size
    )


@function("html_linked_images", args=(int,), cost=5)
def html_linked_images(task: Task, min_size: int) -> int:
    """Images inside a link whose declared width + height is at least MIN_SIZE (0: any)."""
    return sum(
        1
        for d in _docs(task)
        for i in d.images
        if i.in_link and (i.width or 0) + (i.height or 0) >= min_size
    )


@function("html_linked_embedded_images", args=(int,), cost=5)
def html_linked_embedded_images(task: Task, min_size: int) -> int:
    """Images carried in the message (cid:) inside a link, width + height at least MIN_SIZE."""
    return sum(
        1
        for d in _docs(task)
        for i in d.images
        if i.in_link and i.is_embedded and (i.width or 0) + (i.height or 0) >= min_size
    )


@function("html_has_meta_refresh", cost=5)
def html_has_meta_refresh(task: Task) -> bool:
    """An HTML part redirects the reader (<meta http-equiv=refresh content="...;url=...">)."""
    return any(d.meta_refresh for d in _docs(task))


@function("html_event_handlers", cost=5)
def html_event_handlers(task: Task) -> int:
    """How many on...= script attributes (onload, onclick, onmouseover ...) the HTML has."""
    return sum(d.event_handlers for d in _docs(task))


@function("html_has_external_css", cost=5)
def html_has_external_css(task: Task) -> bool:
    """An HTML part loads a style sheet from elsewhere (<link rel=stylesheet>)."""
    return any(d.stylesheets for d in _docs(task))


@function("html_zero_width_chars", cost=5)
def html_zero_width_chars(task: Task) -> int:
    """Zero-width characters and soft hyphens inside the visible text (they split words
    for filters while a reader sees them whole).
    """
    return sum(d.zero_width_chars for d in _docs(task))


@function("html_has_javascript_link", cost=5)
def html_has_javascript_link(task: Task) -> bool:
    """A link's target is javascript: code."""
    return any(
        link.href.strip().lower().replace("\t", "").startswith("javascript:")
        for d in _docs(task)
        for link in d.links
    )
