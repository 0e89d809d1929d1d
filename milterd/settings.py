"""The ``[milter]`` section: how milterd listens and how verdicts become milter replies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.config import Key, Section, at_least, validate

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MILTER_SECTION", "MilterSettings"]

DEFAULT_LISTEN = "127.0.0.1:11332"


def _listen(value: object) -> str | None:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not item:
            return "must be an address string or a list of them"
        if item.startswith("unix:"):
            if not item[5:].startswith("/"):
                return (
                    f"{item!r}: unix sockets need an absolute path (unix:/run/milterd/milter.sock)"
                )
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            return f"{item!r}: expected HOST:PORT, [IPv6]:PORT or unix:/path"
    return None


def _reply_text(value: object) -> str | None:
    if isinstance(value, str) and ("\r" in value or "\n" in value or "\0" in value):
        return "must be one line"
    return None


def _reason(value: object) -> str | None:
    """The milter QUARANTINE reason: the protocol refuses an empty one."""
    return "must not be empty" if value == "" else _reply_text(value)


def _header_name(value: object) -> str | None:
    """'' (no header) or an RFC 5322 §2.2 field name, which the codec would refuse otherwise."""
    if isinstance(value, str) and any(not "!" <= ch <= "~" or ch == ":" for ch in value):
        return "must be a header name (printable ASCII, no space or colon), or '' for none"
    return None


MILTER_SECTION = Section(
    {
        "listen": Key(
            (str, list),
            DEFAULT_LISTEN,
            "Where Postfix/Sendmail connect: HOST:PORT, [IPv6]:PORT or unix:/path; or a list.",
            check=_listen,
        ),
        "socket_mode": Key(
            (int,), 0o660, "Permissions of a unix socket (the MTA's user must write it)."
        ),
        "max_message_size": Key(
            (int,),
            50 * 1024 * 1024,
            "Bytes of a message kept for scanning; the rest is passed, unscanned.",
            check=at_least(1024),
        ),
        "max_frame_size": Key(
            (int,), 1 << 20, "Largest milter packet accepted.", check=at_least(65536 + 5)
        ),
        "scan_timeout": Key(
            (float,),
            20.0,
            "Seconds milterd waits for a verdict before the safe action "
            "(keep it under Postfix's milter_content_timeout).",
            check=at_least(0.01),
        ),
        "progress_interval": Key(
            (float,),
            10.0,
            "Seconds between keep-alive progress replies during a long scan.",
            check=at_least(0.1),
        ),
        "on_error": Key(
            (str,),
            "accept",
            "Safe action when a scan fails or times out: 'accept' (with the "
            "incomplete-scan header) or 'tempfail'.",
            choices=("accept", "tempfail"),
        ),
        "incomplete_header": Key(
            (str,), "X-Milterd-Scan", "Header saying a scan was incomplete.", check=_header_name
        ),
        "reject_action": Key(
            (str,),
            "reject",
            "How the reject rung is carried out.",
            choices=("reject", "discard", "quarantine"),
        ),
        "reject_message": Key(
            (str,), "Spam message rejected", "Text of the 554 5.7.1 reply.", check=_reply_text
        ),
        "greylist_message": Key(
            (str,),
            "Greylisted, please try again later",
            "Text of the 451 4.7.1 reply.",
            check=_reply_text,
        ),
        "soft_reject_message": Key(
            (str,), "Try again later", "Text of the 450 4.7.1 reply.", check=_reply_text
        ),
        "tempfail_message": Key(
            (str,),
            "Scanner unavailable, try again later",
            "Text of the 451 4.7.1 reply for on_error = 'tempfail'.",
            check=_reply_text,
        ),
        "quarantine_reason": Key(
            (str,), "Spam message quarantined", "Reason shown in the hold queue.", check=_reason
        ),
        "spam_header": Key(
            (str,),
            "X-Spam",
            "Header added from the add-header rung up ('' for none).",
            check=_header_name,
        ),
        "spam_header_value": Key((str,), "Yes", check=_reply_text),
        "remove_upstream_spam_header": Key(
            (bool,), True, "Delete spam headers that arrive with the mail."
        ),
    },
    "The milter listener and how verdicts map onto milter replies.",
)


@dataclass(slots=True, frozen=True)
class MilterSettings:
    """``[milter]`` as typed values. Defaults live in ``MILTER_SECTION`` only: use
    ``MilterSettings.defaults()`` rather than repeating them here."""

    listen: tuple[str, ...]
    socket_mode: int
    max_message_size: int
    max_frame_size: int
    scan_timeout: float
    progress_interval: float
    on_error: str
    incomplete_header: str
    reject_action: str
    reject_message: str
    greylist_message: str
    soft_reject_message: str
    tempfail_message: str
    quarantine_reason: str
    spam_header: str
    spam_header_value: str
    remove_upstream_spam_header: bool

    @classmethod
    def defaults(cls) -> MilterSettings:
        section, problems = validate(MILTER_SECTION, {})
        assert not problems, problems
        return cls.from_section(section)

    @classmethod
    def from_section(cls, section: Mapping[str, object]) -> MilterSettings:
        values = dict(section)
        listen = values.pop("listen")
        return cls(listen=tuple(listen) if isinstance(listen, list) else (str(listen),), **values)  # type: ignore[arg-type]
