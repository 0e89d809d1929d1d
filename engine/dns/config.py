"""The ``[dns]`` section: which recursive servers to ask, how long to wait, what to cache.

```toml
[dns]
nameservers = ["127.0.0.1:53", "[::1]:53"]   # empty: the nameserver lines of /etc/resolv.conf
timeout = 1.0          # seconds to wait for one server's answer before trying the next
attempts = 2           # rounds over the list of servers
lifetime = 4.0         # seconds one lookup may take in all, retries included
```
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config.schema import Key, Section, at_least, between
from engine.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.config.loader import Config

__all__ = [
    "DNS_SECTION",
    "RESOLV_CONF",
    "DnsSettings",
    "Nameserver",
    "parse_nameserver",
    "system_nameservers",
]

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
DEFAULT_PORT = 53


@dataclass(frozen=True, slots=True)
class Nameserver:
    """A recursive server, by address (a resolver cannot look up its own servers)."""

    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_nameserver(text: str) -> Nameserver:
    """Parse ``"192.0.2.1"``, ``"192.0.2.1:5301"``, ``"[2001:db8::1]:53"`` or ``"::1"``.

    Raises:
        ValueError: with a message fit for an administrator.
    """
    spec = text.strip()
    port = str(DEFAULT_PORT)
    if spec.startswith("["):
        host, bracket, rest = spec[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: write an IPv6 server as [address]:port")
        port = rest[1:] or port
    elif spec.count(":") == 1:
        host, _, port = spec.partition(":")
    else:
        host = spec  # a bare IPv4 address, or a bare IPv6 address without a port
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{text!r}: {host!r} is not an IP address (nameservers are given by address, "
            "optionally with :port; IPv6 as [address]:port)"
        ) from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return Nameserver(str(address), int(port))


def system_nameservers(path: Path = RESOLV_CONF) -> tuple[Nameserver, ...]:
    """The ``nameserver`` lines of resolv.conf; 127.0.0.1 when there are none, as libc does."""
    found: list[Nameserver] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        log.warning("dns: cannot read %s (%s); using 127.0.0.1:53", path, exc)
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                found.append(parse_nameserver(fields[1]))
            except ValueError:
                log.warning("dns: %s: ignoring %r", path, line.strip())
    return tuple(found) or (Nameserver("127.0.0.1"),)


def _check_nameservers(value: object) -> str | None:
    assert isinstance(value, list)
    for item in value:
        if not isinstance(item, str):
            return f'must be a list of strings such as "127.0.0.1:53", not {item!r}'
        try:
            parse_nameserver(item)
        except ValueError as exc:
            return str(exc)
    return None


def _check_edns(value: object) -> str | None:
    ok = isinstance(value, int) and (value == 0 or 512 <= value <= 65535)
    return None if ok else "must be 0 (no EDNS) or from 512 to 65535"


DNS_SECTION = Section(
    {
        "nameservers": Key(
            (list,),
            [],
            "Recursive servers to ask, as address:port (IPv6 as [address]:port), tried in "
            "order. Empty: the nameserver lines of /etc/resolv.conf. Point this at a local "
            "caching resolver (Unbound): DNS blocklists refuse public and ISP resolvers.",
            check=_check_nameservers,
        ),
        "timeout": Key(
            (float,),
            1.0,
            "Seconds to wait for one server's answer before asking the next one again.",
            check=between(0.01, 30),
        ),
        "attempts": Key(
            (int,), 2, "Rounds over the list of servers before giving up.", check=between(1, 10)
        ),
        "lifetime": Key(
            (float,),
            4.0,
            "Seconds one lookup may take in all, retries included; keep it below "
            "[options] check_timeout so a slow DNS becomes a *_TEMPFAIL symbol, not a timeout.",
            check=between(0.01, 60),
        ),
        "rotate": Key(
            (bool,),
            False,
            "Spread lookups over the servers round-robin instead of asking the first one first.",
        ),
        "edns_buffer_size": Key(
            (int,),
            1232,
            "EDNS0 UDP payload size announced (0: no EDNS, 512-byte replies). 1232 avoids IP "
            "fragmentation (DNS flag day 2020); larger answers come over TCP.",
            check=_check_edns,
        ),
        "cache_size": Key(
            (int,),
            10_000,
            "Answers each worker keeps (0: no cache). Least recently used go first.",
            check=at_least(0),
        ),
        "min_ttl": Key(
            (int,), 0, "Cache every answer for at least this many seconds.", check=at_least(0)
        ),
        "max_ttl": Key((int,), 86_400, "Cache no answer for longer than this.", check=at_least(0)),
        "max_negative_ttl": Key(
            (int,),
            3_600,
            "Cache NXDOMAIN and NODATA answers for at most this many seconds (RFC 2308 §5).",
            check=at_least(0),
        ),
    },
    "DNS resolution: the recursive servers milterd asks, retries and the answer cache.",
)


def _number(section: Mapping[str, object], key: str) -> float:
    value = section[key]
    assert isinstance(value, int | float), "the schema validated it"
    return value


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The ``[dns]`` section, parsed, with the system's nameservers filled in."""

    nameservers: tuple[Nameserver, ...]
    timeout: float = 1.0
    attempts: int = 2
    lifetime: float = 4.0
    rotate: bool = False
    edns_buffer_size: int = 1232
    cache_size: int = 10_000
    min_ttl: int = 0
    max_ttl: int = 86_400
    max_negative_ttl: int = 3_600

    @classmethod
    def from_section(
        cls, section: Mapping[str, object], resolv_conf: Path = RESOLV_CONF
    ) -> tuple[DnsSettings, list[tuple[str, str]]]:
        """Build from a validated ``[dns]`` table; also return (key, message) problems that
        involve two keys, which the per-key schema cannot see."""
        listed = section["nameservers"]
        assert isinstance(listed, list)
        servers = tuple(parse_nameserver(str(s)) for s in listed)
        settings = cls(
            nameservers=servers or system_nameservers(resolv_conf),
            timeout=float(_number(section, "timeout")),
            attempts=int(_number(section, "attempts")),
            lifetime=float(_number(section, "lifetime")),
            rotate=bool(section["rotate"]),
            edns_buffer_size=int(_number(section, "edns_buffer_size")),
            cache_size=int(_number(section, "cache_size")),
            min_ttl=int(_number(section, "min_ttl")),
            max_ttl=int(_number(section, "max_ttl")),
            max_negative_ttl=int(_number(section, "max_negative_ttl")),
        )
        problems = []
        if settings.min_ttl > settings.max_ttl:
            problems.append(("min_ttl", f"must not exceed max_ttl ({settings.max_ttl})"))
        if settings.lifetime < settings.timeout:
            problems.append(("lifetime", f"must be at least timeout ({settings.timeout})"))
        return settings, problems

    @classmethod
    def from_config(cls, config: Config, resolv_conf: Path = RESOLV_CONF) -> DnsSettings:
        """The ``[dns]`` section of ``config``.

        Raises:
            ConfigError: naming the file, line and key of each problem.
        """
        settings, problems = cls.from_section(config.section("dns"), resolv_conf)
        if problems:
            raise ConfigError([config.problem(("dns", key), msg) for key, msg in problems])
        return settings
