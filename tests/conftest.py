"""Fixtures every test directory may use: the loopback DNS server, and an offline one for
the whole session.

Whole-engine tests scan mail whose SPF, DKIM and DMARC checks ask DNS. Tests must never
depend on public DNS, so the session starts an authoritative server for the root zone
that knows no names (every lookup is a fast, cached NXDOMAIN) and points
``MILTERD_DNS_NAMESERVERS`` at it: engines built here and daemons started as
subprocesses both use it. A test that needs records starts its own ``dns_server``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from dnsserver import DnsServer  # tests/support, on pythonpath (pyproject.toml)

from engine.dns import ZoneData

if TYPE_CHECKING:
    from collections.abc import Iterator

OFFLINE_DNS_ENV = "MILTERD_DNS_NAMESERVERS"


@pytest.fixture(scope="session", autouse=True)
def offline_dns() -> Iterator[str]:
    """``host:port`` of a server that answers NXDOMAIN for every name."""
    zones = ZoneData().add_records(".", {})
    with DnsServer(zones, ipv6=False) as server:
        address = server.nameserver
        previous = os.environ.get(OFFLINE_DNS_ENV)
        os.environ[OFFLINE_DNS_ENV] = address
        try:
            yield address
        finally:
            if previous is None:
                os.environ.pop(OFFLINE_DNS_ENV, None)
            else:
                os.environ[OFFLINE_DNS_ENV] = previous


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """An authoritative server on 127.0.0.1/::1 (ephemeral port), empty until a test adds
    zones; ``dns_server.resolver()`` is a real Resolver pointed at it."""
    with DnsServer() as server:
        yield server
