"""URLs and e-mail addresses found in a message's text and HTML parts.

Theory of operation: ``parse_url`` turns one candidate string (an ``href``, an ``<img>``
source, a bare ``http://`` or ``www.`` run in text) into an immutable ``Url`` the way a
browser would read it: tabs and newlines dropped, backslashes read as slashes, the last
``@`` ending the user part, the host lower-cased, percent-decoded, IDN labels decoded to
Unicode, and IPv4 hosts in every form ``inet_aton`` accepts (``3232235777``,
``0xc0.0xa8.1.1``, ``0300.0250.1.1``) recognised as IP literals. What was odd on the way
(percent-encoded or numeric-encoded host, backslashes, several ``@``, zero-width
characters) is kept as a fact on the ``Url`` for the rules, never as an error: nothing
here raises. ``str(url)`` is the normalised ``scheme://host[:port]/path?query``.

Only network schemes (http, https, ftp, file) become ``Url`` objects; ``mailto:`` feeds
the e-mail addresses and ``javascript:``/``data:`` are facts of the ``HtmlDocument``.
``MAX_URLS`` and ``MAX_EMAILS`` bound the work a hostile message can ask for.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import functools
import ipaddress
import itertools
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from engine.mime.html import HtmlDocument, HtmlLink

__all__ = [
    "MAX_EMAILS",
    "MAX_URLS",
    "Url",
    "UrlSource",
    "collect",
    "emails_in_text",
    "link_url",
    "mailto_address",
    "parse_ipv4",
    "parse_url",
    "registered_domain",
    "url_spans",
    "urls_in_html",
    "urls_in_text",
]

MAX_URLS: Final = 1000
MAX_EMAILS: Final = 1000
_MAX_CANDIDATES: Final = 10 * MAX_URLS  # bare URLs looked at per text
MAX_URL_LENGTH: Final = 8192  # longer candidates are cut (real tracking links reach ~2 KB)

_NETWORK_SCHEMES = frozenset({"http", "https", "ftp", "file"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ftp": 21}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,30}):")
_STRIP = "".join(map(chr, range(0x21)))  # C0 controls and space, trimmed at both ends
_TAB_NEWLINE = re.compile(r"[\t\r\n]")
_AUTHORITY_END = re.compile(r"[/\\?#]")
_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060\ufeff\u00ad\u202a-\u202e]")
_HOST_CHARS = re.compile(r"^[\w.-]+$")  # \w is Unicode: letters of any script, digits, _
_DOTS = re.compile("[\u3002\uff0e\uff61]")  # ideographic and full-width full stops
# A bare URL in text: a scheme or "www." and then anything a URL may hold; the trailing
# punctuation a sentence adds is trimmed after the match (``_trim``).
_TEXT_URL = re.compile(
    r"(?:\b(?:https?|ftp)://|\bwww\d{0,3}\.)[^\s<>\"'`{}|\\^\[\]\x00-\x1f]{1,8192}", re.I
)
# Where a bare URL can start (see _text_urls); "w" has no case-folding look-alike.
_URL_HINT = re.compile(r"://|[wW][wW][wW]")
_TRAILING = ".,;:!?'\"*_-\u2019\u201d\u00bb\u2026"
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}\b"
)
# Second-level labels under which registrations happen (co.uk, com.au ...): enough of the
# Public Suffix List for comparing the domains of a link's text and target.
_MULTI_LABEL_SUFFIXES = frozenset(
    str.split(
        """co.uk org.uk ac.uk gov.uk me.uk net.uk ltd.uk plc.uk sch.uk nhs.uk com.au net.au org.au
    edu.au gov.au asn.au id.au co.nz net.nz org.nz govt.nz ac.nz co.jp ne.jp or.jp ac.jp go.jp
    co.kr or.kr ne.kr ac.kr com.br net.br org.br gov.br com.cn net.cn org.cn gov.cn edu.cn
    com.tw org.tw net.tw edu.tw com.hk org.hk net.hk co.in net.in org.in firm.in gen.in ind.in
    ac.in gov.in co.za org.za gov.za ac.za com.mx org.mx gob.mx com.ar org.ar com.tr org.tr
    gov.tr co.il org.il ac.il com.sg org.sg edu.sg com.my org.my co.id or.id ac.id com.ph
    com.vn co.th in.th ac.th com.ua org.ua com.pl org.pl net.pl com.es com.co com.pe com.ve
    com.sa com.eg com.pk com.ng co.ke com.bd com.np com.gr com.cy com.mt co.at or.at ac.at
    com.ru spb.ru msk.ru com.de co.ve"""
    )
)


class UrlSource(enum.Enum):
    """Where a URL was found."""

    TEXT = "text"  # a text/plain part
    HTML_TEXT = "html_text"  # the visible text of an HTML part, outside any link
    HREF = "href"  # <a href>
    AREA = "area"  # <area href>
    IMAGE = "img"  # <img src>
    FORM = "form"  # <form action>
    META_REFRESH = "meta_refresh"
    ATTRIBUTE = "attribute"  # iframe/frame/embed/script src, object data, background


@final
@dataclass(slots=True, frozen=True)
class Url:
    """One URL, normalised. ``host`` is lower case (IDN as Unicode; an IPv4 address in
    any notation as its dotted quad); ``port`` is set only when given and not the scheme's
    default; ``ip`` is the address when the host is an IP literal.
    """

    scheme: str
    host: str
    port: int | None = None
    path: str = "/"
    query: str = ""
    userinfo: str = ""
    source: UrlSource = UrlSource.TEXT
    text: str | None = None  # the visible anchor text, for URLs from <a>
    ip: str | None = None
    punycode: bool = False  # the host was written with xn-- labels
    encoded_ip: bool = False  # an IPv4 host written as 3232235777, 0xc0.0xa8.1.1, 127.1 ...
    schemeless: bool = False  # written as www.example.com or //example.com
    obfuscated: bool = False  # percent-encoded host, backslashes, several '@'
    zero_width: bool = False  # zero-width or direction-override characters were in it
    raw: str = ""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}{port}{self.path}{query}"

    @property
    def is_ip(self) -> bool:
        return self.ip is not None

    @property
    def has_port(self) -> bool:
        return self.port is not None

    @property
    def has_userinfo(self) -> bool:
        return bool(self.userinfo)

    @property
    def is_punycode(self) -> bool:
        return self.punycode

    @property
    def tld(self) -> str:
        return "" if self.ip is not None else self.host.rpartition(".")[2]

    @property
    def domain(self) -> str:
        """The registered domain (``www.a.example.co.uk`` → ``example.co.uk``)."""
        return self.host if self.ip is not None else registered_domain(self.host)


def registered_domain(host: str) -> str:
    """The last two labels of ``host``, or three under a known second-level suffix."""
    labels = host.rstrip(".").split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in _MULTI_LABEL_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def parse_ipv4(host: str) -> str | None:
    """``inet_aton`` semantics: 1 to 4 parts, each decimal, ``0x`` hex or ``0`` octal, the
    last filling the remaining bytes. ``"3232235777"`` → ``"192.168.1.1"``; else None.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        try:
            if part[:2].lower() == "0x":
                value = int(part[2:] or "0", 16)
            elif len(part) > 1 and part.startswith("0"):
                value = int(part, 8)
            else:
                value = int(part, 10) if part.isdigit() and part.isascii() else -1
        except ValueError:
            return None
        if value < 0:
            return None
        values.append(value)
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for value in head:
        number = number << 8 | value
    number = number << 8 * (4 - len(head)) | last
    return ".".join(str(number >> shift & 255) for shift in (24, 16, 8, 0))


def _decode_host(host: str) -> tuple[str, bool] | None:
    """Lower-case, IDN-decoded host and whether it had punycode labels; None if invalid."""
    host = _DOTS.sub(".", host)
    if not host.isascii():
        host = unicodedata.normalize("NFKC", host)
    host = host.lower().rstrip(".")
    if not host or not _HOST_CHARS.match(host) or ".." in host:
        return None
    punycode = False
    if "xn--" in host:
        labels = host.split(".")
        for i, label in enumerate(labels):
            if label.startswith("xn--"):
                punycode = True
                # A broken punycode label stays as written (rules see the xn-- form).
                with contextlib.suppress(UnicodeError, ValueError):
                    labels[i] = label[4:].encode("ascii").decode("punycode").lower()
        host = ".".join(labels)
    return host, punycode


def _split_authority(authority: str) -> tuple[str, str, str, bool]:
    """``user@host:port`` → (userinfo, host, port text, several '@')."""
    userinfo, at, hostport = authority.rpartition("@")
    several_at = at != "" and "@" in userinfo
    if hostport.startswith("["):  # an IPv6 literal keeps its brackets until _host
        host, _, rest = hostport.partition("]")
        return userinfo, host + "]", rest[1:] if rest.startswith(":") else "", several_at
    host, colon, port = hostport.rpartition(":")
    if not colon:
        return userinfo, hostport, "", several_at
    return userinfo, host, port, several_at


def _absolute(raw: str, base: str | None) -> tuple[str, bool] | None:
    """The candidate with a scheme (and whether it lacked one), or None for a relative link."""
    if _SCHEME.match(raw):
        return raw, False
    if raw.startswith(("//", "\\\\")):
        return "http:" + raw, True
    if raw[:4].lower() == "www.":
        return "http://" + raw, True
    if base and _SCHEME.match(base) and not raw.startswith("#"):
        try:
            return urllib.parse.urljoin(base, raw), False
        except ValueError:
            return None
    return None


def parse_url(
    raw: str, source: UrlSource = UrlSource.TEXT, text: str | None = None, base: str | None = None
) -> Url | None:
    """Read ``raw`` as a browser would; None when it is no network URL (or is broken).

    Args:
        raw: the candidate as found (an attribute value, a run of text).
        source: where it was found.
        text: the anchor text, for links.
        base: the document's ``<base href>``, against which relative links resolve.
    """
    # The same links come back within a message (a logo and a button to one page) and
    # across messages (a list's footer, a tracker): on the development corpus, 55 % of the
    # calls had been made before. A Url is immutable, so equal calls can share one; only
    # short ones are kept, so that the cache stays small whatever the mail.
    if len(raw) + len(text or "") + len(base or "") > _CACHED_URL_CHARS:
        return _parse_url(raw, source, text, base)
    return _parse_url_cached(raw, source, text, base)


_CACHED_URL_CHARS: Final = 512


def _parse_url(raw: str, source: UrlSource, text: str | None, base: str | None) -> Url | None:
    raw = raw[:MAX_URL_LENGTH].strip(_STRIP)
    # Browsers drop tabs and newlines anywhere in a URL (WHATWG URL §4.4 step 3). The
    # zero-width characters are not ASCII, and most URLs are: their tests are skipped.
    cleaned = _TAB_NEWLINE.sub("", raw) if "\t" in raw or "\n" in raw or "\r" in raw else raw
    zero_width = False
    if not raw.isascii():
        zero_width = _ZERO_WIDTH.search(raw) is not None
        cleaned = _ZERO_WIDTH.sub("", cleaned)
    found = _absolute(cleaned, base)
    scheme_match = _SCHEME.match(found[0]) if found else None
    if found is None or scheme_match is None:
        return None
    scheme = scheme_match.group(1).lower()
    if scheme not in _NETWORK_SCHEMES:
        return None
    rest = found[0][scheme_match.end() :]
    slashes = len(rest) - len(rest.lstrip("/\\"))
    odd = "\\" in rest[:slashes] or (slashes != 2 and scheme != "file")
    rest = rest[slashes:]
    if scheme == "file" and slashes != 2:
        rest = "/" + rest  # file:///C:/x has an empty host; the rest is the path
    stop = _AUTHORITY_END.search(rest)
    end = len(rest) if stop is None else stop.start()
    userinfo, host, port_text, several_at = _split_authority(rest[:end])
    if "%" in host:
        host = urllib.parse.unquote(host, errors="replace")
        odd = True
    parsed_host = _host(host, scheme)
    port = _port(port_text, scheme)
    if parsed_host is None or port == -1:
        return None
    host, ip, flag = parsed_host
    path, query, backslash = _path_query(rest[end:])
    return Url(
        scheme,
        host,
        port,
        path,
        query,
        urllib.parse.unquote(userinfo, errors="replace"),
        source=source,
        text=text,
        ip=ip,
        punycode=flag and ip is None,
        encoded_ip=flag and ip is not None,
        schemeless=found[1],
        obfuscated=odd or several_at or backslash,
        zero_width=zero_width,
        raw=raw,
    )


_parse_url_cached = functools.lru_cache(maxsize=4096)(_parse_url)


def _host(host: str, scheme: str) -> tuple[str, str | None, bool] | None:
    """(host, IP address or None, flag) or None when no browser would accept it.

    The flag is "had punycode labels" for names, "was not a dotted quad" for IPv4.
    """
    if host.startswith("["):
        try:
            address = str(ipaddress.IPv6Address(host[1:-1].split("%", 1)[0]))
        except ValueError:
            return None
        return address, address, False
    if not host:
        return ("", None, False) if scheme == "file" else None
    decoded = _decode_host(host)
    if decoded is None:
        return None
    host, punycode = decoded
    last = host.rpartition(".")[2]
    if not (last.isdigit() or last[:2] == "0x"):
        return host, None, punycode
    # A numeric last label makes the host an IPv4 address or invalid (WHATWG URL §3.5);
    # browsers show and connect to the dotted form, so that is the host.
    dotted = parse_ipv4(host)
    return None if dotted is None else (dotted, dotted, host != dotted)


def _port(text: str, scheme: str) -> int | None:
    """The explicit port, None when absent or the default, -1 when invalid."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        return -1
    port = int(text)
    return None if port == _DEFAULT_PORTS.get(scheme) else port


def _path_query(tail: str) -> tuple[str, str, bool]:
    """(path, query, the path had backslashes): the fragment is dropped."""
    tail = tail.partition("#")[0]
    path, _, query = tail.partition("?")
    backslash = "\\" in path
    if backslash:
        path = path.replace("\\", "/")
    return (path if path.startswith("/") else "/" + path), query, backslash


def _trim(candidate: str) -> str:
    """Drop what a sentence put after a URL: final punctuation, an unmatched ')'."""
    while candidate:
        last = candidate[-1]
        if last in _TRAILING or (last == ")" and candidate.count("(") < candidate.count(")")):
            candidate = candidate[:-1]
        else:
            break
    return candidate


def url_spans(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, candidate) of each bare URL in ``text``, trailing punctuation trimmed."""
    for match in _text_urls(text):
        candidate = _trim(match.group())
        yield match.start(), match.start() + len(candidate), candidate


def _text_urls(text: str) -> Iterator[re.Match[str]]:
    """What ``_TEXT_URL.finditer(text)`` finds, found faster.

    Every match starts 3 to 5 characters before a ``://`` (ftp, http, https) or at a
    ``www``, so the pattern is tried only there, in order, each start after the previous
    match: the same matches as trying every position, which cost several times more.
    (A match at a ``www`` follows no letter or digit, so no earlier hint can overlap it;
    extra starts are harmless, the pattern itself decides.)
    """
    starts: set[int] = set()
    if text.isascii():  # str.find runs faster than a regex, and lower() keeps positions
        at = text.find("://")
        while at >= 0:
            starts.update(s for s in (at - 5, at - 4, at - 3) if s >= 0)
            at = text.find("://", at + 3)
        low = text.lower()
        at = low.find("www")
        while at >= 0:
            starts.add(at)
            at = low.find("www", at + 3)
    else:
        for hint in _URL_HINT.finditer(text):
            at = hint.start()
            if hint.group() == "://":
                starts.update(s for s in (at - 5, at - 4, at - 3) if s >= 0)
            else:
                starts.add(at)
    end = 0
    for start in sorted(starts):
        if start < end:
            continue
        match = _TEXT_URL.match(text, start)
        if match is not None:
            end = match.end()
            yield match


def urls_in_text(text: str, source: UrlSource = UrlSource.TEXT) -> Iterator[Url]:
    """Bare ``http(s)://``, ``ftp://`` and ``www.`` URLs in plain text, each once."""
    seen: set[str] = set()
    for _, _, candidate in itertools.islice(url_spans(text), _MAX_CANDIDATES):
        if candidate in seen:
            continue
        seen.add(candidate)
        url = parse_url(candidate, source)
        if url is not None:
            yield url


def emails_in_text(text: str) -> Iterator[str]:
    """Addresses in ``text`` (domain lower-cased), skipping those inside URLs."""
    starts: list[int] = []
    ends: list[int] = []
    if "://" in text:
        for start, end, _ in itertools.islice(url_spans(text), _MAX_CANDIDATES):
            starts.append(start)
            ends.append(end)
    for match in _EMAIL.finditer(text):
        at = bisect.bisect_right(starts, match.start()) - 1
        if at >= 0 and match.start() < ends[at]:
            continue  # user@host of a URL, or an address in its query
        local, _, domain = match.group().rpartition("@")
        yield f"{local}@{domain.lower()}"


def mailto_address(href: str) -> str | None:
    """The first address of a ``mailto:`` link, or None."""
    if href[:7].lower() != "mailto:":
        return None
    target = urllib.parse.unquote(href[7:].partition("?")[0]).split(",")[0].strip()
    found = _EMAIL.search(target)
    if found is None:
        return None
    local, _, domain = found.group().rpartition("@")
    return f"{local}@{domain.lower()}"


def link_url(link: HtmlLink, base: str | None) -> Url | None:
    """The URL of an ``<a href>`` (with its anchor text) or ``<area href>``, or None."""
    if link.tag == "a":
        return parse_url(link.href, UrlSource.HREF, link.text, base)
    return parse_url(link.href, UrlSource.AREA, None, base)


def urls_in_html(doc: HtmlDocument, link_urls: Sequence[Url | None] | None = None) -> Iterator[Url]:
    """Every network URL an HTML part holds, links first (with their anchor text).

    Bare URLs in the visible text are taken only from outside the links: a link that
    shows its own address is one URL, not two. ``link_urls``: the links' URLs when the
    caller has parsed them already (``link_url`` of each of ``doc.links``).
    """
    base = doc.base_href
    links = link_urls if link_urls is not None else (link_url(k, base) for k in doc.links)
    for url in links:
        if url is not None:
            yield url
    for image in doc.images:
        url = parse_url(image.src, UrlSource.IMAGE, base=base)
        if url is not None:
            yield url
    for form in doc.forms:
        url = parse_url(form.action, UrlSource.FORM, base=base)
        if url is not None:
            yield url
    for candidate, source in _more_candidates(doc):
        url = parse_url(candidate, source, base=base)
        if url is not None:
            yield url
    yield from urls_in_text(doc.unlinked_text, UrlSource.HTML_TEXT)


def _more_candidates(doc: HtmlDocument) -> Iterator[tuple[str, UrlSource]]:
    if doc.meta_refresh:
        yield doc.meta_refresh, UrlSource.META_REFRESH
    for _, value in doc.urls_in_attributes:
        yield value, UrlSource.ATTRIBUTE


def collect(urls: Iterable[Url], limit: int = MAX_URLS) -> list[Url]:
    """The first ``limit`` distinct URLs (same address, source and anchor text = same).

    At most ``10 * limit`` candidates are looked at, so that a message repeating a few
    URLs a million times costs no more than one with ``limit`` different ones.
    """
    seen: set[tuple[str, UrlSource, str | None]] = set()
    out: list[Url] = []
    for url in itertools.islice(urls, 10 * limit):
        key = (str(url), url.source, url.text)
        if key in seen:
            continue
        seen.add(key)
        out.append(url)
        if len(out) >= limit:
            break
    return out
