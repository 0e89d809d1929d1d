"""One parsed message: headers at once, the MIME tree and text only when a check asks."""

from __future__ import annotations

import itertools
from functools import cached_property
from typing import TYPE_CHECKING

from engine.mime.headers import HeaderList, decode_rfc2047, parse_header_block, split_message
from engine.mime.html import HtmlDocument, HtmlLink, parse_html
from engine.mime.parts import MimePart, parse_tree
from engine.mime.text import TextPart
from engine.mime.urls import (
    MAX_EMAILS,
    Url,
    collect,
    emails_in_text,
    link_url,
    mailto_address,
    urls_in_html,
    urls_in_text,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["ParsedMessage"]


class ParsedMessage:
    """Headers, body and the lazily built MIME tree of one message.

    ``defects`` collects what was broken (``bad_header_line``, ``missing_boundary``,
    ``bad_base64`` …); reading ``defects`` parses the whole tree first so the set is
    complete.
    """

    def __init__(
        self, headers: HeaderList, body: bytes, defects: set[str], *, truncated: bool = False
    ) -> None:
        self.headers = headers
        self.body = body
        self.truncated = truncated
        self._defects = defects

    @classmethod
    def from_bytes(cls, raw: bytes) -> ParsedMessage:
        defects: set[str] = set()
        block, body, has_separator = split_message(raw)
        if not has_separator and body == b"" and block and b":" not in block.split(b"\n", 1)[0]:
            # Not even a first header line: treat the whole thing as body.
            defects.add("no_headers")
            return cls(HeaderList(), raw, defects)
        if not has_separator:
            defects.add("no_body_separator")
        return cls(parse_header_block(block, defects), body, defects)

    @classmethod
    def from_fields(
        cls, headers: Iterable[tuple[str, str]], body: bytes, *, truncated: bool = False
    ) -> ParsedMessage:
        return cls(HeaderList(headers), body, set(), truncated=truncated)

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers)

    @cached_property
    def raw(self) -> bytes:
        return self.headers.to_bytes() + b"\r\n" + self.body

    @property
    def defects(self) -> set[str]:
        for part in self.parts:
            if part.is_text:
                _ = part.text  # decoding is where charset and CTE defects show
        return self._defects

    @cached_property
    def root(self) -> MimePart:
        return parse_tree(self.headers, self.body, self._defects)

    @cached_property
    def parts(self) -> list[MimePart]:
        """Every part, depth first, the root included."""
        out: list[MimePart] = []
        stack = [self.root]
        while stack:
            part = stack.pop()
            out.append(part)
            stack.extend(reversed(part.children))
        return out

    @cached_property
    def leaves(self) -> list[MimePart]:
        return [p for p in self.parts if not p.children and not p.is_multipart]

    @cached_property
    def attachments(self) -> list[MimePart]:
        return [p for p in self.leaves if p.is_attachment]

    @cached_property
    def text_parts(self) -> list[TextPart]:
        """The text/plain and text/html leaves that are not attachments, in order.

        An HTML part's ``text`` is what a reader sees (``parse_html``): hidden and
        low-contrast text is left out, and its ``html`` holds the rest of the analysis.
        """
        out = []
        for part in self.leaves:
            if part.content_type not in ("text/plain", "text/html") or part.is_attachment:
                continue
            source = part.text
            if part.content_type == "text/html":
                doc = parse_html(source)
                out.append(TextPart(part.content_type, doc.text, source, part.charset, doc))
            else:
                out.append(TextPart(part.content_type, source, source, part.charset))
        return out

    @cached_property
    def html_documents(self) -> list[HtmlDocument]:
        """One ``HtmlDocument`` per text/html part (attachments excluded), in order."""
        return [p.html for p in self.text_parts if p.html is not None]

    @cached_property
    def urls(self) -> list[Url]:
        """URLs in the text and HTML parts, first ``MAX_URLS`` distinct ones, in order.

        ``str(url)`` is the normalised form the ``{url}`` regexp scope matches.
        """
        return collect(self._all_urls())

    def _all_urls(self) -> Iterator[Url]:
        links = iter(self.link_urls)
        for part in self.text_parts:
            if part.html is not None:
                yield from urls_in_html(part.html, next(links))
            else:
                yield from urls_in_text(part.text)

    @cached_property
    def link_urls(self) -> list[list[Url | None]]:
        """For each of ``html_documents``, each of its links' URL (None: no network URL),
        parsed once for ``urls`` and ``anchors`` alike."""
        return [
            [link_url(link, doc.base_href) for link in doc.links] for doc in self.html_documents
        ]

    @cached_property
    def anchors(self) -> list[tuple[HtmlLink, Url]]:
        """Each ``<a href>`` of the HTML parts that holds a network URL, with that URL
        (resolved against its part's ``<base href>``; the anchor text is ``link.text``)."""
        return [
            (link, url)
            for doc, urls in zip(self.html_documents, self.link_urls, strict=True)
            for link, url in zip(doc.links, urls, strict=True)
            if link.tag == "a" and url is not None
        ]

    @cached_property
    def emails(self) -> list[str]:
        """Distinct e-mail addresses in the text parts and their mailto: links (the first
        ``MAX_EMAILS``; at most ten times as many candidates are looked at).
        """
        found: dict[str, None] = {}
        for address in itertools.islice(self._all_emails(), 10 * MAX_EMAILS):
            found.setdefault(address, None)
            if len(found) >= MAX_EMAILS:
                break
        return list(found)

    def _all_emails(self) -> Iterator[str]:
        for part in self.text_parts:
            yield from emails_in_text(part.text)
            for link in part.html.links if part.html is not None else ():
                address = mailto_address(link.href)
                if address is not None:
                    yield address

    @cached_property
    def subject(self) -> str | None:
        value = self.headers.get("subject")
        return None if value is None else decode_rfc2047(value, self._defects).strip()

    def decoded_header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else decode_rfc2047(value, self._defects).strip()
