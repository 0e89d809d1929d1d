"""The Authentication-Results header (RFC 8601), built with ``authres`` from the stash.

``build_value`` turns what the SPF, DKIM, DMARC and ARC checks stored under their stash
keys into the header's value; a check that did not run adds no clause, and a header with
no clause at all says ``none`` (RFC 8601 §2.2). The ``auth_results`` module adds it to the
message; the ``arc`` module puts the same value into the ARC-Authentication-Results of a
seal it adds (RFC 8617 §4.1.1), so both say the same thing.

``authserv_id_of`` reads the authserv-id of a header that came with the message, so the
forged ones (those that claim to be ours, RFC 8601 §5) can be removed.
"""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING, TypeVar

import authres  # type: ignore[import-untyped]
import authres.arc  # type: ignore[import-untyped]
import authres.dmarc  # type: ignore[import-untyped]

from engine.auth.results import ARC_RESULT, DKIM_RESULTS, DMARC_RESULT, SPF_RESULT

if TYPE_CHECKING:
    from engine.task.stash import Stash, StashKey
    from engine.task.task import Task

T = TypeVar("T")

__all__ = ["authserv_id_for", "authserv_id_of", "build_value", "system_hostname"]

_COMMENT_UNSAFE = re.compile(r"[();\\\x00-\x1f\x7f-\uffff]")
_COMMENT_MAX = 60
# RFC 8601 §2.2: authserv-id is a "value" (token or quoted-string), after optional CFWS.
_LEADING_COMMENTS = re.compile(r"^\s*(?:\([^()]*\)\s*)*")
_AUTHSERV_ID = re.compile(r'^(?:"((?:[^"\\]|\\.)*)"|([^\s;()"]+))')


def system_hostname() -> str:
    """This host's name (no DNS lookup: ``gethostname`` reads the kernel's)."""
    return socket.gethostname().lower() or "localhost"


def authserv_id_for(task: Task, configured: str, fallback: str) -> str:
    """The authserv-id: the configured one, else the MTA's name (macro ``j``), else
    ``fallback`` (the system's host name)."""
    return (configured or task.envelope.macros.get("j") or fallback).strip().lower()


def authserv_id_of(value: str) -> str | None:
    """The authserv-id an Authentication-Results value starts with (lower case), or None
    when it does not parse."""
    text = _LEADING_COMMENTS.sub("", value.replace("\n", " "), count=1)
    match = _AUTHSERV_ID.match(text)
    if match is None:
        return None
    quoted, token = match.groups()
    found = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token
    return found.strip().lower() or None


def _comment(text: str) -> str | None:
    cleaned = " ".join(_COMMENT_UNSAFE.sub(" ", text).split())[:_COMMENT_MAX]
    return cleaned or None


def _found(stash: Stash, key: StashKey[T]) -> T | None:
    """The fact under ``key``, None when its check did not run (``Stash.get`` wants a
    default of the fact's own type)."""
    return stash[key] if key in stash else None  # noqa: SIM401


def _results(task: Task) -> list[authres.core.BaseAuthenticationResult]:
    stash = task.stash
    out: list[authres.core.BaseAuthenticationResult] = []
    spf = _found(stash, SPF_RESULT)
    if spf is not None and not spf.skipped:
        identity = (
            {"smtp_helo": spf.domain} if spf.identity == "helo" else {"smtp_mailfrom": spf.sender}
        )
        out.append(authres.SPFAuthenticationResult(result=spf.result, **identity))
    for sig in _found(stash, DKIM_RESULTS) or []:
        result = authres.DKIMAuthenticationResult(
            result=sig.result,
            result_comment=None if sig.result == "pass" else _comment(sig.reason),
            header_d=sig.domain or None,
            header_i=sig.identity or None,
            header_s=sig.selector or None,
            header_a=sig.algorithm or None,
        )
        if sig.header_b:  # RFC 6008 §4: which of several signatures by one domain
            result.properties.append(
                authres.core.AuthenticationResultProperty("header", "b", sig.header_b)
            )
        out.append(result)
    dmarc = _found(stash, DMARC_RESULT)
    if dmarc is not None:
        comment = f"p={dmarc.policy} dis={dmarc.disposition}" if dmarc.policy else None
        out.append(
            authres.dmarc.DMARCAuthenticationResult(
                result=dmarc.result,
                result_comment=comment,
                header_from=dmarc.from_domain or None,
            )
        )
    arc = _found(stash, ARC_RESULT)
    if arc is not None:
        comment = f"i={arc.instances}" if arc.instances else None
        out.append(authres.arc.ARCAuthenticationResult(result=arc.result, result_comment=comment))
    return out


def build_value(task: Task, authserv_id: str) -> str:
    """The header value (no field name), one result per line, folded with LF as a milter
    sends it; ``none`` when no check left a result (RFC 8601 §2.2)."""
    results = _results(task)
    if not results:
        return f"{authserv_id}; none"
    # authres formats each result (quoting values as needed); the folding is ours, between
    # results only, never inside a quoted value.
    return authserv_id + "".join(f";\n\t{result}" for result in results)
