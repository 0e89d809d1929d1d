"""Fixtures for milterd's unit tests (the codec's own tests live in ``protocol/``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline_dns: str) -> Path:
    """The process environment as the CLI reads it: data in tmp_path, no listen override,
    DNS answered by the session's offline server.

    Returns a config directory path that does not exist (the shipped defaults).
    """
    monkeypatch.setenv("MILTERD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MILTERD_DNS_NAMESERVERS", offline_dns)
    monkeypatch.delenv("MILTERD_MILTER_LISTEN", raising=False)
    return tmp_path / "no-such-etc"


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """An empty config directory."""
    path = tmp_path / "etc"
    path.mkdir()
    return path
