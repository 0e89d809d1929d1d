"""Every shipped rule and composite against its case file, on both regexp backends.

For each ``[rules.NAME]`` and ``[composites.NAME]`` in the shipped ``rules/*.toml`` there
must be ``tests/rules/cases/NAME.toml`` (format: rules-contract.md, "Fixtures") with at
least one ``[hit]`` (must raise NAME) and one ``[miss]`` (must not). Each message is
scanned by the whole engine (every built-in module, the shipped configuration) once with
the Hyperscan backend and once with the ``re`` backend; the two must agree on every rule
and composite symbol. Run one rule with ``pytest -p no:cacheprovider
tests/rules/test_shipped_rules.py -k NAME``.

``NOW`` pins every module clock one hour after the fixtures' usual Date.
"""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from engine import Engine, ScanRequest
from engine.data import shipped_dir
from engine.mime.dates import parse_date
from engine.task.envelope import Envelope

if TYPE_CHECKING:
    from collections.abc import Iterator

CASES = Path(__file__).parent / "cases"
NOW = parse_date("Mon, 15 Jan 2024 12:00:00 +0000")
DEFAULT_ENVELOPE: dict[str, object] = {
    "helo": "mail.example.org",
    "client_addr": "192.0.2.10",
    "client_name": "mail.example.org",
    "mail_from": "a@example.org",
    "rcpts": ["b@example.net"],
}
BACKENDS = ("hyperscan", "re")
# Shared across runs: entries are keyed by a hash of their patterns, and a damaged one is
# rebuilt, so a rule writer's `-k NAME` run does not recompile every scope.
HS_CACHE = Path(tempfile.gettempdir()) / "milterd-tests-hs-cache"


def _shipped() -> dict[str, str]:
    """Every enabled shipped rule and composite: name → ``rules`` or ``composites``."""
    names: dict[str, str] = {}
    for path in sorted(shipped_dir("rules").glob("*.toml")):
        with path.open("rb") as f:
            data = tomllib.load(f)
        for kind in ("rules", "composites"):
            for name, table in data.get(kind, {}).items():
                if table.get("enabled", True):
                    names[name] = kind
    return names


SHIPPED = _shipped()


@pytest.fixture(scope="module")
def engines(
    tmp_path_factory: pytest.TempPathFactory, offline_dns: str
) -> Iterator[dict[str, Engine]]:
    built: dict[str, Engine] = {}
    for backend in BACKENDS:
        base = tmp_path_factory.mktemp(f"engine-{backend}")
        config_dir = base / "etc"
        config_dir.mkdir()
        (config_dir / "milterd.toml").write_text(
            f'[regexp]\nengine = "{backend}"\ncache_dir = "{HS_CACHE}"\n'
        )
        environ = {"MILTERD_DATA_DIR": str(base / "data"), "MILTERD_DNS_NAMESERVERS": offline_dns}
        config = Engine.load_config(config_dir, environ=environ)
        engine = Engine.from_config(config)
        assert NOW is not None
        for module in engine.modules:
            if hasattr(module, "clock"):
                module.clock = lambda: NOW
        built[backend] = engine
    yield built
    for engine in built.values():
        trio.run(engine.aclose)


def _messages(case: dict[str, object], key: str) -> list[dict[str, object]]:
    value = case.get(key, [])
    return [value] if isinstance(value, dict) else list(value)  # type: ignore[call-overload]


def _request(item: dict[str, object]) -> ScanRequest:
    if "message_file" in item:
        raw = (CASES / str(item["message_file"])).read_bytes()
    else:
        text = str(item["message"]).replace("\r\n", "\n").replace("\n", "\r\n")
        raw = text.encode("utf-8")
    envelope = {**DEFAULT_ENVELOPE, **item.get("envelope", {})}  # type: ignore[dict-item]
    envelope["rcpts"] = tuple(envelope.get("rcpts") or ())  # type: ignore[arg-type]
    return ScanRequest(raw=raw, envelope=Envelope(**envelope))  # type: ignore[arg-type]


async def _scan_both(engines: dict[str, Engine], item: dict[str, object]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for backend, engine in engines.items():
        result = await engine.scan(_request(item))
        assert "ENGINE_MODULE_ERROR" not in result.symbols, result.symbols["ENGINE_MODULE_ERROR"]
        out[backend] = set(result.symbols)
    return out


# A plain test that runs its own trio loop: a failed assertion then reads as itself, not
# as an exception group from pytest-trio's nursery.
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_rule_has_hit_and_miss(engines: dict[str, Engine], name: str) -> None:
    path = CASES / f"{name}.toml"
    assert path.is_file(), (
        f"{SHIPPED[name]}.{name} has no case file: add tests/rules/cases/{name}.toml "
        "with a [hit] and a [miss] (see rules-contract.md, Fixtures)"
    )
    with path.open("rb") as f:
        case = tomllib.load(f)
    hits, misses = _messages(case, "hit"), _messages(case, "miss")
    assert hits, f"{path.name}: needs at least one [hit]"
    assert misses, f"{path.name}: needs at least one [miss]"
    for expected, items in ((True, hits), (False, misses)):
        for n, item in enumerate(items, 1):
            where = f"{path.name} {'hit' if expected else 'miss'} #{n}"
            found = trio.run(_scan_both, engines, item)
            ours = {s for s in found["re"] | found["hyperscan"] if s in SHIPPED}
            assert {s for s in found["hyperscan"] if s in SHIPPED} == {
                s for s in found["re"] if s in SHIPPED
            }, f"{where}: the backends disagree: {sorted(ours)}"
            if expected:
                assert name in found["re"], f"{where}: {name} not raised; got {sorted(found['re'])}"
            else:
                assert name not in found["re"], f"{where}: {name} raised on the near-miss"


def test_every_case_file_belongs_to_a_shipped_rule() -> None:
    orphans = sorted(p.stem for p in CASES.glob("*.toml") if p.stem not in SHIPPED)
    assert orphans == [], "case files without a shipped rule or composite"
