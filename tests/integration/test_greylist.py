"""Greylisting through the real engine and the embedded SQLite store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine import Action, Engine, Envelope, ScanRequest
from engine.modules.greylist import Greylist

if TYPE_CHECKING:
    from pathlib import Path

MESSAGE = b"From: a@sender.test\r\nSubject: hello\r\n\r\nhello\r\n"


def _engine(tmp_path: Path, timeout: float, greylist_at: float = -100.0) -> Engine:
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "milterd.toml").write_text(
        f'[options]\ndata_dir = "{tmp_path / "data"}"\n'
        f"[actions]\ngreylist = {greylist_at}\n"
        f"[greylist]\ntimeout = {timeout}\n"
    )
    # Greylisting alone, so the assertions see exactly its symbols.
    return Engine.from_config(Engine.load_config(conf), modules=[Greylist])


def _request(
    client: str = "203.0.113.5", sender: str = "a@sender.test", rcpt: str = "r@example.test"
) -> ScanRequest:
    return ScanRequest(
        envelope=Envelope(client_addr=client, mail_from=sender, rcpts=(rcpt,)), raw=MESSAGE
    )


async def test_first_attempt_is_greylisted_and_an_early_retry_too(tmp_path: Path) -> None:
    async with _engine(tmp_path, timeout=3600) as engine:
        first = await engine.scan(_request())
        again = await engine.scan(_request())
    assert first.action is Action.GREYLIST
    assert set(first.symbols) == {"GREYLIST_NEW"}
    assert again.action is Action.GREYLIST
    assert set(again.symbols) == {"GREYLIST_EARLY"}


async def test_retry_after_the_delay_passes(tmp_path: Path) -> None:
    async with _engine(tmp_path, timeout=0) as engine:
        await engine.scan(_request())
        retry = await engine.scan(_request())
    assert retry.action is Action.NO_ACTION
    assert set(retry.symbols) == {"GREYLIST_PASS"}


async def test_the_triplet_survives_a_restart(tmp_path: Path) -> None:
    async with _engine(tmp_path, timeout=3600) as engine:
        await engine.scan(_request())
    async with _engine(tmp_path, timeout=3600) as engine:
        again = await engine.scan(_request())
    assert set(again.symbols) == {"GREYLIST_EARLY"}


@pytest.mark.parametrize(
    ("second", "symbol"),
    [
        (_request(client="203.0.113.99"), "GREYLIST_EARLY"),  # same /24: the same sender
        (_request(client="198.51.100.5"), "GREYLIST_NEW"),
        (_request(sender="other@sender.test"), "GREYLIST_NEW"),
        (_request(rcpt="other@example.test"), "GREYLIST_NEW"),
    ],
)
async def test_the_triplet_is_network_sender_and_recipients(
    tmp_path: Path, second: ScanRequest, symbol: str
) -> None:
    async with _engine(tmp_path, timeout=3600) as engine:
        await engine.scan(_request())
        result = await engine.scan(second)
    assert set(result.symbols) == {symbol}


async def test_only_the_greylist_rung_is_greylisted(tmp_path: Path) -> None:
    async with _engine(tmp_path, timeout=3600, greylist_at=4.0) as engine:
        result = await engine.scan(_request())
    assert result.action is Action.NO_ACTION
    assert not {"GREYLIST_NEW", "GREYLIST_EARLY"} & set(result.symbols)


async def test_without_a_client_address_the_rung_stands(tmp_path: Path) -> None:
    async with _engine(tmp_path, timeout=3600) as engine:
        result = await engine.scan(ScanRequest(raw=MESSAGE))
    assert result.action is Action.GREYLIST
    assert "GREYLIST_NEW" not in result.symbols


async def test_an_unreachable_store_lets_the_message_pass(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    # Port 9 (discard) on loopback: nothing listens, so every call fails at once.
    (conf / "milterd.toml").write_text(
        f'[options]\ndata_dir = "{tmp_path / "data"}"\n'
        "[actions]\ngreylist = -100.0\n"
        '[store]\nbackend = "redis"\n[redis]\nurl = "redis://127.0.0.1:9/0"\n'
    )
    engine = Engine.from_config(Engine.load_config(conf), modules=[Greylist])
    async with engine:
        result = await engine.scan(_request())
    assert result.action is Action.NO_ACTION
    assert "store unavailable" in caplog.text
