"""Connection hygiene from the SMTP envelope: what the client called itself, and its name.

Only what needs no DNS: a HELO that is an address instead of a name, a HELO that is no
fully-qualified name (RFC 5321 §4.1.1.1 asks for the FQDN), and a client the MTA could
not name (no PTR, or a PTR that does not resolve back: Postfix then says ``unknown``).
Loopback and private clients (local submission, internal relays) and authenticated
senders are skipped: their HELO says nothing about spam. A content-only scan (no client
address) skips the module too.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from engine.modules.base import Module, check
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from engine.task.task import Task

__all__ = ["Hfilter"]

_G = "hfilter"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Hfilter(Module):
    name = "hfilter"
    description = "HELO and client hostname hygiene from the SMTP envelope (no DNS)."
    symbols = (
        SymbolSpec("HFILTER_HELO_BAREIP", 3.0, _G, "Helo host is bare ip (or an address literal)"),
        SymbolSpec("HFILTER_HELO_NOT_FQDN", 2.0, _G, "Helo not FQDN"),
        SymbolSpec(
            "HFILTER_HOSTNAME_UNKNOWN",
            2.5,
            _G,
            "Unknown client hostname (PTR or FCrDNS verification failed)",
        ),
    )

    @check(produces=("HFILTER_HELO_BAREIP", "HFILTER_HELO_NOT_FQDN", "HFILTER_HOSTNAME_UNKNOWN"))
    def connection(self, task: Task) -> None:
        env = task.envelope
        if not env.client_addr or env.auth_user or env.macros.get("auth_authen"):
            return
        try:
            client = ipaddress.ip_address(env.client_addr.removeprefix("IPv6:"))
        except ValueError:
            return
        if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
            client = client.ipv4_mapped
        if client.is_loopback or client.is_private or client.is_link_local:
            return
        helo = (env.helo or "").strip().rstrip(".")
        if helo:
            literal = (
                helo[1:-1].removeprefix("IPv6:")
                if helo.startswith("[") and helo.endswith("]")
                else helo
            )
            if _is_ip(literal):
                task.insert_result("HFILTER_HELO_BAREIP", options=[helo[:64]])
            elif "." not in helo:
                task.insert_result("HFILTER_HELO_NOT_FQDN", options=[helo[:64]])
        name = env.client_name
        if not name or name == "unknown" or name.startswith("["):
            task.insert_result("HFILTER_HOSTNAME_UNKNOWN")
