"""What the MTA (or HTTP client) tells us about a message besides its bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.result import UrlFormat
    from engine.settings import InlineSettings

__all__ = ["Envelope", "ScanRequest"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True, frozen=True)
class Envelope:
    """The SMTP envelope and connection facts of one message.

    Addresses are bare (no angle brackets); the null sender is ``""``; ``None`` means
    unknown. ``macros`` keeps every milter macro by its unbraced name (``i``,
    ``auth_authen``, ``daemon_name``).
    """

    client_addr: str | None = None
    client_name: str | None = None
    client_port: int | None = None
    helo: str | None = None
    mail_from: str | None = None
    mail_args: tuple[str, ...] = ()
    rcpts: tuple[str, ...] = ()
    queue_id: str | None = None
    auth_user: str | None = None
    mta_name: str | None = None
    macros: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(slots=True, frozen=True)
class ScanRequest:
    """One message to scan: the only type (with ScanResult) that crosses into the engine.

    Give either ``raw`` (the whole RFC 5322 message) or ``headers`` and ``body`` (as a
    milter receives them: header values without the leading space, folds as LF, body
    with CRLF line ends). ``settings_id`` names a ``[settings.NAME]`` table to apply
    instead of choosing one by the envelope (Rspamd's ``Settings-ID``); ``settings``, an
    inline block (Rspamd's ``Settings``), wins over both (``Engine.scan`` raises
    ``InvalidSettings`` before anything runs when it names what the engine lacks).
    ``url_format`` asks for the message's URL hosts and e-mail addresses in the result
    (``"hosts"``, or ``"extended"`` for one object per URL); ``None``, the milter's
    choice, spends nothing on them.
    """

    envelope: Envelope = field(default_factory=Envelope)
    raw: bytes | None = None
    headers: tuple[tuple[str, str], ...] | None = None
    body: bytes = b""
    body_truncated: bool = False
    log_tag: str | None = None
    settings_id: str | None = None
    settings: InlineSettings | None = None
    url_format: UrlFormat | None = None
    # When the MTA received the message (Unix time); None means now. A replay of stored
    # mail (corpustest, re-scans) passes the original time so date checks judge it as of
    # its arrival, not as of today.
    received_at: float | None = None

    def __post_init__(self) -> None:
        if (self.raw is None) == (self.headers is None):
            raise ValueError("ScanRequest takes raw bytes or headers+body, exactly one of them")
