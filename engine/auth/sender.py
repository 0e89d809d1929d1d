"""Who is exempt from sender authentication: authenticated users and local clients.

Mail a user submitted after SMTP AUTH, or that a host of our own relays, is outbound or
internal: judging it by the sender domain's SPF or DMARC policy would only produce false
failures (the client is not one of the domain's public servers). Rspamd skips it in the
same places, with the same ``check_authed`` and ``check_local`` switches.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from engine.config.schema import Key
from engine.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from engine.config.loader import Config
    from engine.task.envelope import Envelope

__all__ = ["LOCAL_NETWORKS", "SKIP_KEYS", "Network", "parse_networks", "skip_reason"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Rspamd's default local_addrs, plus loopback (which it always treats as local).
LOCAL_NETWORKS: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fd00::/8",
    "fe80::/10",
)

# The settings every sender-authentication check (SPF, DMARC) takes to leave our own
# senders alone: one definition, so the modules cannot drift apart.
SKIP_KEYS: dict[str, Key] = {
    "check_authed": Key((bool,), False, "Also check senders that authenticated (SMTP AUTH)."),
    "check_local": Key((bool,), False, "Also check clients in local_networks (and loopback)."),
    "local_networks": Key(
        (list,),
        list(LOCAL_NETWORKS),
        "Client networks treated as local (not checked unless check_local).",
        extend=True,
    ),
}


def parse_networks(
    config: Config, path: tuple[str, ...], settings: Mapping[str, object]
) -> tuple[Network, ...]:
    """The ``local_networks`` setting as networks.

    Raises:
        ConfigError: an entry is not an address or network (file, line and key named).
    """
    raw = settings[path[-1]]
    entries: Sequence[object] = raw if isinstance(raw, list) else [raw]
    networks: list[Network] = []
    problems = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError as exc:
            problems.append(config.problem(path, f"{entry!r} is not a network: {exc}"))
    if problems:
        raise ConfigError(problems)
    return tuple(networks)


def skip_reason(
    envelope: Envelope, local: Sequence[Network], settings: Mapping[str, object]
) -> str:
    """Why the message is exempt ("authenticated sender", "local client"), or ``""``.

    ``settings`` holds the module's ``check_authed`` and ``check_local`` switches.
    """
    if envelope.auth_user and not settings.get("check_authed", False):
        return "authenticated sender"
    if settings.get("check_local", False) or not envelope.client_addr:
        return ""
    try:
        address = ipaddress.ip_address(envelope.client_addr.strip().strip("[]"))
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or any(address in net for net in local):
        return "local client"
    return ""
