"""Fixtures every test directory may use: the loopback DNS server, and an offline one for
the whole session.

Whole-engine tests scan mail whose SPF, DKIM and DMARC checks ask DNS. Tests must never
depend on public DNS, so the session starts an authoritative server for the root zone
that knows no names (every lookup is a fast, cached NXDOMAIN); a test that scans with
the whole engine passes its address as ``MILTERD_DNS_NAMESERVERS`` (``offline_env``
sets that for code that reads the process environment, such as the CLI and daemons
started as subprocesses). A test that needs records starts its own ``dns_server``.

The variable is not set for the whole session: it outranks config files, and the
SPF/DKIM/DMARC tests point their engines at their own servers in milterd.toml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from dnsserver import DnsServer  # tests/support, on pythonpath (pyproject.toml)

from engine.dns import ZoneData

if TYPE_CHECKING:
    from collections.abc import Iterator

OFFLINE_DNS_ENV = "MILTERD_DNS_NAMESERVERS"


@pytest.fixture(scope="session")
def offline_dns() -> Iterator[str]:
    """``host:port`` of a server that answers NXDOMAIN for every name."""
    zones = ZoneData().add_records(".", {})
    with DnsServer(zones, ipv6=False) as server:
        yield server.nameserver


@pytest.fixture
def offline_env(offline_dns: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The offline server in this process's environment, for the CLI and subprocesses."""
    monkeypatch.setenv(OFFLINE_DNS_ENV, offline_dns)
    return offline_dns


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """An authoritative server on 127.0.0.1/::1 (ephemeral port), empty until a test adds
    zones; ``dns_server.resolver()`` is a real Resolver pointed at it."""
    with DnsServer() as server:
        yield server
