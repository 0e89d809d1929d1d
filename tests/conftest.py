"""Fixtures every test directory may use: the loopback DNS server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from dnsserver import DnsServer  # tests/support, on pythonpath (pyproject.toml)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """An authoritative server on 127.0.0.1/::1 (ephemeral port), empty until a test adds
    zones; ``dns_server.resolver()`` is a real Resolver pointed at it."""
    with DnsServer() as server:
        yield server
