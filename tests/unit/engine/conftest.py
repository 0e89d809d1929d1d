"""Fixtures for the engine core's unit tests: a config directory and engines built from it.

Engines here are built from an explicit module list (``Engine.from_config(modules=...)``)
so that modules added to ``BUILTIN_MODULES`` later cannot change the exact symbol sets
these tests pin, and from an empty rules directory unless a test ships its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine import Action, Engine
from engine.modules import Module, check
from engine.pipeline.stages import Stage
from engine.symbols import SymbolSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from engine.task import Task


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    path = tmp_path / "etc"
    path.mkdir()
    return path


@pytest.fixture
def write_config(config_dir: Path) -> Callable[[str, str], Path]:
    """``write_config("local.d/10-x.toml", text)`` → the written file's path."""

    def write(name: str, text: str) -> Path:
        path = config_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """An environment that only points the data directory at a temporary one."""
    return {"MILTERD_DATA_DIR": str(tmp_path / "data")}


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    path = tmp_path / "rules"
    path.mkdir()
    return path


@pytest.fixture
def build_engine(
    config_dir: Path, environ: dict[str, str], rules_dir: Path
) -> Callable[..., Engine]:
    """Load ``config_dir`` for exactly ``modules`` and build an engine from it."""

    def build(*modules: type[Module], rules: Path | None = None) -> Engine:
        config = Engine.load_config(
            config_dir, environ=environ, modules=modules, rules_dir=rules or rules_dir
        )
        return Engine.from_config(config, modules=modules)

    return build


def _message(
    body: str | bytes = "Hello.\n",
    *,
    subject: str = "Test",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    lines = [
        "From: Alice <alice@example.org>",
        "To: bob@example.net",
        f"Subject: {subject}",
        "Message-ID: <test-1@example.org>",
        *(f"{name}: {value}" for name, value in headers),
    ]
    body_bytes = body.encode() if isinstance(body, str) else body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body_bytes.replace(b"\r\n", b"\n").replace(
        b"\n", b"\r\n"
    )


@pytest.fixture
def message() -> Callable[..., bytes]:
    """``message(body, subject=..., headers=[...])`` → a small RFC 5322 message (CRLF)."""
    return _message


class Scorer(Module):
    """Inserts what the message asks for, so a test controls the symbols and the score.

    ``X-Insert: ONE TWO=0.5 BIG=-1`` inserts ONE (weight 1), TWO (weight 0.5) and BIG
    (weight -1) in that order; ``X-Force: reject`` forces that action from a post-filter.
    """

    name = "scorer"
    symbols = (
        SymbolSpec("ONE", 1.0, "alpha", "One point"),
        SymbolSpec("TWO", 2.0, "alpha", "Two points"),
        SymbolSpec("BIG", 10.0, "beta", "Ten points"),
        SymbolSpec("NEG", -3.0, "beta", "Minus three"),
        SymbolSpec("OPT", 0.5, "gamma"),
    )

    @check(produces=("ONE", "TWO", "BIG", "NEG", "OPT"))
    def insert(self, task: Task) -> None:
        for item in (task.message.headers.get("x-insert") or "").split():
            name, _, weight = item.partition("=")
            options = ["a", "b"] if name == "OPT" else []
            task.insert_result(name, float(weight or 1.0), options)

    @check(produces=(), stage=Stage.POST)
    def force(self, task: Task) -> None:
        value = task.message.headers.get("x-force")
        if value:
            task.force_action(Action.parse(value), self.name, f"forced {value}")


@pytest.fixture
def scorer() -> type[Module]:
    """The ``Scorer`` test module (see its docstring)."""
    return Scorer
