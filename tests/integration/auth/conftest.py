"""Keys for the DKIM and ARC tests: made fresh once per test session (RSA takes a while)."""

from __future__ import annotations

import pytest
from dkim_testkit import KeyPair, new_key


@pytest.fixture(scope="session")
def rsa2048() -> KeyPair:
    return new_key("sender.test", "rsa2048")


@pytest.fixture(scope="session")
def rsa1024() -> KeyPair:
    return new_key("sender.test", "rsa1024", bits=1024)


@pytest.fixture(scope="session")
def ed25519() -> KeyPair:
    return new_key("sender.test", "ed25519", "ed25519")


@pytest.fixture(scope="session")
def other_domain() -> KeyPair:
    return new_key("relay.test", "mail")


@pytest.fixture(scope="session")
def forwarder() -> KeyPair:
    """The sealing key of a forwarder (lists.example) for ARC."""
    return new_key("lists.example", "arc")


@pytest.fixture(scope="session")
def forwarder2() -> KeyPair:
    return new_key("forward.example", "arc2")
