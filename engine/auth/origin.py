"""Where a message comes from, as the authentication modules decide what to do with it:
from one of our networks, from an SMTP-authenticated user, or from the outside."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from engine.config.schema import Key

if TYPE_CHECKING:
    from engine.task.envelope import Envelope

__all__ = ["LOOPBACK", "Networks", "networks_key"]

LOOPBACK = ["127.0.0.0/8", "::1/128"]
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _check_networks(value: object) -> str | None:
    if not isinstance(value, list):
        return "must be a list of networks"
    for item in value:
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            return f"{item!r} is not an IP address or network (CIDR)"
    return None


def networks_key(default: list[str], doc: str) -> Key:
    """A config key holding a list of networks, checked at load."""
    return Key((list,), default, doc, check=_check_networks)


class Networks:
    """A set of IP networks; ``contains`` takes the envelope's client address as text."""

    __slots__ = ("_networks",)

    def __init__(self, networks: object) -> None:
        items = networks if isinstance(networks, list) else []
        self._networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(str(n), strict=False) for n in items
        )

    def __bool__(self) -> bool:
        return bool(self._networks)

    def contains(self, address: str | None) -> bool:
        if not address or not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # dual-stack sockets report IPv4 clients so
        return any(ip.version == n.version and ip in n for n in self._networks)

    def holds_client(self, envelope: Envelope) -> bool:
        return self.contains(envelope.client_addr)
