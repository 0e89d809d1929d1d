"""The result of a scan, in the shape of Rspamd's ``/checkv2`` answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from engine.mime.urls import UrlSource

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.mime.message import ParsedMessage
    from engine.mime.urls import Url
    from engine.pipeline.actions import Action, ForcedAction
    from engine.symbols.results import ScoredSymbol

__all__ = ["ScanResult", "UrlFormat", "url_report"]

# How a result reports the message's URLs (``ScanRequest.url_format``): each host once,
# or Rspamd's extended form (``URL-Format: extended``, flag ``ext_urls``), an object per URL.
UrlFormat = Literal["hosts", "extended"]
UrlEntry = str | dict[str, object]


@dataclass(slots=True, frozen=True)
class ScanResult:
    """What the engine decided about one message.

    ``partial`` is true when the scan's deadline passed or a stage could not finish; the
    result then holds what did finish. ``subject`` is the rewritten Subject when the
    action is rewrite subject. ``settings_id`` names the ``[settings.NAME]`` table that
    applied (``None``: the global configuration); the JSON carries it only when set, so
    the answer stays Rspamd's shape for clients that know nothing of it. ``urls`` and
    ``emails`` are there (the JSON's ``urls`` and ``emails``) only when the request asked
    for them and the message has a URL or an address (``url_report``).
    """

    action: Action
    score: float
    required_score: float
    thresholds: Mapping[str, float]
    symbols: Mapping[str, ScoredSymbol]
    message_id: str = ""
    messages: Mapping[str, str] = field(default_factory=dict)
    subject: str | None = None
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: Mapping[str, int] = field(default_factory=dict)
    forced: ForcedAction | None = None
    partial: bool = False
    time_real: float = 0.0
    settings_id: str | None = None
    urls: tuple[UrlEntry, ...] | None = None
    emails: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The ``/checkv2`` JSON object (Rspamd's field names and value shapes)."""
        out: dict[str, object] = {
            "is_skipped": False,
            "score": self.score,
            "required_score": self.required_score,
            "action": self.action.value,
            "thresholds": dict(self.thresholds),
            "symbols": {name: _symbol_json(sym) for name, sym in self.symbols.items()},
            "messages": dict(self.messages),
        }
        if self.urls is not None:  # Rspamd's order: after messages, before message-id
            out["urls"] = list(self.urls)
            out["emails"] = list(self.emails)
        out |= {
            "message-id": self.message_id,
            "time_real": round(self.time_real, 6),
            "milter": self._milter_json(),
        }
        if self.subject is not None:
            out["subject"] = self.subject
        if self.forced is not None:
            out["passthrough_module"] = self.forced.module
        if self.partial:
            out["partial"] = True
        if self.settings_id is not None:
            out["settings_id"] = self.settings_id
        return out

    def _milter_json(self) -> dict[str, object]:
        add: dict[str, object] = {}
        for name, value in self.add_headers:
            entry = {"value": value, "order": 0}
            previous = add.get(name)
            if previous is None:
                add[name] = entry
            elif isinstance(previous, list):
                previous.append(entry)
            else:
                add[name] = [previous, entry]
        return {"add_headers": add, "remove_headers": dict(self.remove_headers)}


def _symbol_json(sym: ScoredSymbol) -> dict[str, object]:
    out: dict[str, object] = {
        "name": sym.name,
        "score": sym.score,
        "metric_score": sym.metric_score,
    }
    if sym.description:
        out["description"] = sym.description
    if sym.options:
        out["options"] = list(sym.options)
    return out


def url_report(
    message: ParsedMessage, url_format: UrlFormat
) -> tuple[tuple[UrlEntry, ...] | None, tuple[str, ...]]:
    """The message's URLs and e-mail addresses as Rspamd's ``/checkv2`` reports them:
    ``(None, ())`` when it has neither (Rspamd then leaves both keys out)."""
    # "hosts": the host of each URL once, in the order found. "extended": one object per
    # distinct URL, {"url", "tld", "host", "flags"}, tld being the registered domain (as
    # Rspamd's eSLD) and flags the Rspamd URL flags a Url keeps facts for. Addresses are
    # those of the text and of mailto: links, each once.
    urls, emails = message.urls, message.emails
    if not urls and not emails:
        return None, ()
    entries: tuple[UrlEntry, ...]
    if url_format == "extended":
        seen: dict[str, Url] = {}
        for url in urls:
            seen.setdefault(str(url), url)
        entries = tuple(_extended(text, url) for text, url in seen.items())
    else:
        entries = tuple(dict.fromkeys(u.host for u in urls if u.host))
    return entries, tuple(emails)


def _extended(text: str, url: Url) -> dict[str, object]:
    out: dict[str, object] = {"url": text}
    if url.ip is None and url.domain:
        out["tld"] = url.domain
    out["host"] = url.host
    out["flags"] = _url_flags(url)
    return out


def _url_flags(url: Url) -> list[str]:
    """Rspamd's names (url.c ``url_flag_names``) for the facts a ``Url`` keeps."""
    flags = []
    if url.ip is not None:
        flags.append("numeric")
    if url.obfuscated or url.encoded_ip:
        flags.append("obscured")
    if url.source in (UrlSource.TEXT, UrlSource.HTML_TEXT):
        flags.append("text")
    if url.punycode or not url.host.isascii():
        flags.append("idn")
    if url.has_port:
        flags.append("has_port")
    if url.has_userinfo:
        flags.append("has_user")
    if url.schemeless:
        flags.append("schemaless")
    if url.zero_width:
        flags.append("zw_spaces")
    if url.source is UrlSource.IMAGE:
        flags.append("image")
    return flags
