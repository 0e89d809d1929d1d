"""URL function atoms: what ``ParsedMessage.urls`` and the HTML links reveal.

The URLs are parsed once per message (``engine/mime/urls.py``): hosts lower-cased, IDN
decoded, IPv4 in any notation recognised, oddities kept as facts. The lists these
functions compare against are maps (``url_shorteners.map``, ``suspicious_tlds.map``):
the engine's, found through the task (``engine.maps``), so a site's copy in
``<config_dir>/maps/`` (what the controller's ``/savemap`` writes) wins over the shipped
one and a reload reads it again.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import TYPE_CHECKING

from engine.maps import maps_in
from engine.mime.addresses import domain_of, parse_address_list
from engine.mime.urls import UrlSource, parse_url, registered_domain
from engine.rules.functions import function

if TYPE_CHECKING:
    from engine.mime.html import HtmlLink
    from engine.mime.urls import Url
    from engine.task.task import Task

# Link text that is itself an address: "www.bank.com", "https://bank.com/login".
_SHOWN_URL = re.compile(
    r"^(?:(?:https?|ftp)://)?(?:[\w-]+\.)+[^\W\d_]{2,24}\.?(?::\d{1,5})?(?:[/?#]\S*)?$", re.I
)
# Another URL carried in the path or query: /redirect?to=http://..., %3A%2F%2F, /http:/...
_NESTED_URL = re.compile(r"(?:https?|ftp)(?::|%3a)(?://|%2f%2f)", re.I)
# Letters of other scripts that look like Latin ones (Unicode confusables): a label made
# only of these, under an ASCII top-level domain, is a whole-script homograph ("apple"
# spelt in Cyrillic: xn--80ak6aa92e.com). Escaped, so that the source shows what they are.
_LATIN_LOOKALIKES = frozenset(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458"  # Cyrillic a e o p c y x i j
    "\u0455\u04bb\u0501\u051b\u051d\u04cf\u0475"  # Cyrillic s h d q w l v
    "\u03bf\u03b1\u03c4\u03bd\u03b9\u03ba\u03c1\u03c5"  # Greek o a t v i k p u
)
# RFC 1918, RFC 6598 shared space, loopback, link-local, RFC 4193 unique local. Not the
# documentation ranges, which ipaddress counts as private.
_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
_SPOOFING_SCRIPTS = ("CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE")


def _map(task: Task, name: str) -> frozenset[str]:
    """A map's entries as lower-case domains (read when the engine was built)."""
    return maps_in(task.stash).domains(name)


def _urls(task: Task) -> list[Url]:
    return task.message.urls


def _anchors(task: Task) -> list[tuple[HtmlLink, Url]]:
    """Each <a href> with a network URL, parsed once per message (against the part's
    <base href>), for the three functions that read links and ``urls`` alike."""
    return task.message.anchors


@function("url_count", cost=6)
def url_count(task: Task) -> int:
    """How many distinct URLs the text and HTML parts hold (links, images, bare URLs)."""
    return len({str(u) for u in _urls(task)})


@function("url_host_count", cost=6)
def url_host_count(task: Task) -> int:
    """How many distinct hosts the URLs point to."""
    return len({u.host for u in _urls(task)})


@function("has_ip_url", cost=6)
def has_ip_url(task: Task) -> bool:
    """A URL's host is an IP address instead of a name."""
    return any(u.is_ip for u in _urls(task))


@function("has_private_ip_url", cost=6)
def has_private_ip_url(task: Task) -> bool:
    """A URL points to a private, loopback or link-local IP address."""
    return any(u.ip is not None and _is_private(u.ip) for u in _urls(task))


@function("has_ip_url_with_userinfo", cost=6)
def has_ip_url_with_userinfo(task: Task) -> bool:
    """A URL to an IP address carries a user name (http://bank.com@192.0.2.1/)."""
    return any(u.is_ip and u.has_userinfo for u in _urls(task))


@function("has_encoded_ip_url", cost=6)
def has_encoded_ip_url(task: Task) -> bool:
    """A URL's host is an IPv4 address in disguise: decimal (http://3232235777/), hex,
    octal or shortened (127.1).
    """
    return any(u.encoded_ip for u in _urls(task))


@function("html_link_to_ip", cost=6)
def html_link_to_ip(task: Task) -> bool:
    """An <a href> points to an IP address."""
    return any(u.is_ip for _, u in _anchors(task))


@function("has_shortener_url", cost=6)
def has_shortener_url(task: Task) -> bool:
    """A URL goes through a URL shortener (maps/url_shorteners.map)."""
    shorteners = _map(task, "url_shorteners.map")
    return any(_in_domains(u.host, shorteners) for u in _urls(task) if not u.is_ip)


@function("has_suspicious_tld_url", cost=6)
def has_suspicious_tld_url(task: Task) -> bool:
    """A URL's host is under a much-abused top-level domain (maps/suspicious_tlds.map)."""
    tlds = _map(task, "suspicious_tlds.map")
    return any(u.tld in tlds for u in _urls(task))


@function("has_url_with_userinfo", cost=6)
def has_url_with_userinfo(task: Task) -> bool:
    """A URL carries a user name before its host (http://paypal.com@evil.example/)."""
    return any(u.has_userinfo for u in _urls(task))


@function("has_url_with_port", cost=6)
def has_url_with_port(task: Task) -> bool:
    """A web URL names a port other than its scheme's default (http://host:8080/)."""
    return any(u.has_port for u in _urls(task))


@function("has_punycode_url", cost=6)
def has_punycode_url(task: Task) -> bool:
    """A URL's host is written in punycode (xn--...)."""
    return any(u.punycode for u in _urls(task))


@function("has_homograph_url", cost=8)
def has_homograph_url(task: Task) -> bool:
    """A URL's host label mixes Latin with look-alike letters of another script, or is
    made only of Cyrillic/Greek look-alikes of Latin letters under a Latin TLD.
    """
    return any(_is_homograph(u.host) for u in _urls(task) if not u.host.isascii())


@function("has_obfuscated_url", cost=6)
def has_obfuscated_url(task: Task) -> bool:
    """A URL hides its host: percent-encoded host, backslashes, several '@' or a
    numeric-encoded IP address.
    """
    return any(u.obfuscated or u.encoded_ip for u in _urls(task))


@function("has_zero_width_url", cost=6)
def has_zero_width_url(task: Task) -> bool:
    """A URL contains zero-width or text-direction characters."""
    return any(u.zero_width for u in _urls(task))


@function("has_redirector_url", cost=6)
def has_redirector_url(task: Task) -> bool:
    """A URL carries another URL in its path or query (an open redirect or a tracker)."""
    return any(_NESTED_URL.search(u.path) or _NESTED_URL.search(u.query) for u in _urls(task))


@function("has_data_uri", cost=5)
def has_data_uri(task: Task) -> bool:
    """An HTML attribute holds a data: URI (content inlined to dodge URL checks)."""
    return any(d.data_uris for d in task.message.html_documents)


@function("has_data_uri_text", cost=5)
def has_data_uri_text(task: Task) -> bool:
    """A data: URI carries text or HTML (a page hidden inside the message)."""
    return any(
        m.startswith("text/") or m == "application/xhtml+xml"
        for d in task.message.html_documents
        for m in d.data_uris
    )


@function("has_phishing_mismatch", cost=8)
def has_phishing_mismatch(task: Task) -> bool:
    """A link's visible text is an address on another domain than the link's target.

    As Rspamd's phishing check: the registrable labels are compared (brand.co.uk and
    brand.com are the same brand), and a target on the sender's own domain (a newsletter's
    click tracker) is no mismatch.
    """
    anchors = _anchors(task)
    if not anchors:
        return False
    sender = _from_domain(task)
    for link, url in anchors:
        shown = _shown_url(link.text)
        if shown is None or shown.domain == url.domain or url.domain == sender:
            continue
        if url.is_ip or shown.is_ip or _label(shown.domain) != _label(url.domain):
            return True
    return False


@function("has_http_to_https_mismatch", cost=8)
def has_http_to_https_mismatch(task: Task) -> bool:
    """A link's text shows an https:// address while the link itself is plain http."""
    return any(
        link.text.lower().startswith("https://") and url.scheme == "http"
        for link, url in _anchors(task)
    )


def _is_private(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in _PRIVATE_NETS if net.version == ip.version)


def _from_domain(task: Task) -> str:
    value = task.message.decoded_header("from") or ""
    addresses = parse_address_list(value)
    return registered_domain(domain_of(addresses[0][1])) if addresses else ""


def _label(domain: str) -> str:
    """The registrable label: ``example`` of ``example.co.uk``."""
    return domain.partition(".")[0]


def _in_domains(host: str, domains: frozenset[str]) -> bool:
    labels = host.split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels) - 1))


def _shown_url(text: str) -> Url | None:
    """The address a link's text shows, when the whole text is one."""
    text = text.strip().rstrip(".,;:!?)")
    if not text or len(text) > 2048 or not _SHOWN_URL.match(text):
        return None
    return parse_url(text, UrlSource.HTML_TEXT)


def _is_homograph(host: str) -> bool:
    labels = host.split(".")
    tld_is_latin = labels[-1].isascii()
    for label in labels[:-1]:
        if label.isascii():
            continue
        letters = [c for c in label if c.isalpha()]
        scripts = {_script(c) for c in letters}
        if "LATIN" in scripts and not scripts.isdisjoint(_SPOOFING_SCRIPTS):
            return True
        if tld_is_latin and letters and all(c in _LATIN_LOOKALIKES for c in letters):
            return True
    return False


def _script(char: str) -> str:
    return unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]
