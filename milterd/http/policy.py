"""Actions, scores and maps as the controller shows and saves them.

Theory of operation: a save never edits the administrator's own files. Thresholds and
scores go to ``local.d/zz-controller.toml`` in the config directory (named to sort last,
so it wins over the other ``local.d`` files; ``override.d`` still wins over it), maps to
``maps/NAME`` there. Each save is checked first (known rungs and symbols, finite numbers,
UTF-8 text), written atomically, then applied by the daemon's reload.

* Rule 1: a save the reload refuses is undone (the file gets its previous content back)
  and answered 409, so what is on disk is always what runs.
* Rule 2: saves are serialised; two administrators saving at once each get their own
  whole change applied, one after the other.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from typing import TYPE_CHECKING, Final

import trio

from engine import Action
from engine.maps import map_files
from milterd.http.protocol import HttpError, HttpResponse, error_response, json_response

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from engine import Engine
    from milterd.http.context import HttpContext

__all__ = ["DYNAMIC_FILE", "PolicyEditor"]

DYNAMIC_FILE: Final = "zz-controller.toml"
# /saveactions takes Rspamd's array: exactly these four rungs, in this order.
_RSPAMD_ORDER: Final = (Action.REJECT, Action.REWRITE_SUBJECT, Action.ADD_HEADER, Action.GREYLIST)
_HEADER: Final = (
    "# Written by the milterd controller (/saveactions, /savesymbols, the web UI).\n"
    "# It sorts last in local.d/, so its values win over the other local.d files;\n"
    "# override.d/ still wins over it. Edit it by hand only while milterd is stopped.\n"
)


class PolicyEditor:
    """Reads and saves thresholds, symbol scores and maps (see the module docstring)."""

    def __init__(self, context: HttpContext) -> None:
        self.context = context
        self._lock = trio.Lock()

    # -- actions and symbols ----------------------------------------------------------------

    def actions(self) -> list[dict[str, object]]:
        """Rspamd's ``/actions``: ``[{"action": "reject", "value": 15.0}, ...]``, strongest
        first; a rung that is off has ``null``."""
        with self.context.engines.lease() as engine:
            levels = engine.thresholds.levels
        return [
            {"action": a.value, "value": levels.get(a)}
            for a in reversed(Action)
            if a is not Action.NO_ACTION
        ]

    def symbols(self) -> list[dict[str, object]]:
        """Rspamd's ``/symbols``: groups, each with its symbols, weights and hit counts."""
        hits = self.context.metrics.symbols
        groups: dict[str, list[dict[str, object]]] = {}
        with self.context.engines.lease() as engine:
            specs = list(engine.registry.symbols.values())
        for spec in sorted(specs, key=lambda s: s.name):
            groups.setdefault(spec.group, []).append(
                {
                    "symbol": spec.name,
                    "weight": spec.score,
                    "description": spec.description,
                    "frequency": hits[spec.name],
                    "time": 0.0,
                }
            )
        return [{"group": g, "rules": rules} for g, rules in sorted(groups.items())]

    async def save_actions(self, body: bytes) -> HttpResponse:
        value = _json(body)
        if isinstance(value, list):
            if len(value) != len(_RSPAMD_ORDER):
                raise HttpError(400, "expected [reject, rewrite subject, add header, greylist]")
            changes = dict(zip(_RSPAMD_ORDER, value, strict=True))
        elif isinstance(value, dict):
            try:
                changes = {Action.parse(str(k)): v for k, v in value.items()}
            except ValueError as exc:
                raise HttpError(400, f"unknown action: {exc}") from None
        else:
            raise HttpError(400, "expected a JSON array or object of thresholds")
        updates: dict[str, object] = {}
        for action, threshold in changes.items():
            if action is Action.NO_ACTION:
                raise HttpError(400, "'no action' has no threshold")
            updates[action.config_key] = _threshold(threshold, action.value)
        return await self._save_dynamic(lambda data: _merge(data, "actions", updates))

    async def save_symbols(self, body: bytes) -> HttpResponse:
        value = _json(body)
        if not isinstance(value, list):
            raise HttpError(400, 'expected [{"name": "SYMBOL", "value": 1.5}, ...]')
        if not value:
            return error_response(404, "no symbols to save")
        with self.context.engines.lease() as engine:
            known = set(engine.registry.symbols)
        scores: dict[str, float] = {}
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise HttpError(400, 'each entry must be {"name": "SYMBOL", "value": number}')
            name = item["name"]
            if name not in known:
                raise HttpError(400, f"unknown symbol {name}")
            score = _threshold(item.get("value"), name)
            if score is False:
                raise HttpError(400, f"{name}: the value must be a number")
            assert isinstance(score, float)
            scores[name] = score

        def change(data: dict[str, object]) -> None:
            for name, score in scores.items():
                _merge(data, "symbols", {name: {"score": score}})

        return await self._save_dynamic(change)

    async def _save_dynamic(self, change: Callable[[dict[str, object]], object]) -> HttpResponse:
        async with self._lock:
            path = self._config_dir() / "local.d" / DYNAMIC_FILE
            old = await trio.to_thread.run_sync(_read_bytes, path)
            data = _parse_dynamic(old, path)
            change(data)
            await trio.to_thread.run_sync(_write_atomic, path, _HEADER + _to_toml(data))
            return await self._apply(path, old)

    # -- maps ---------------------------------------------------------------------------------

    def maps(self) -> list[dict[str, object]]:
        """Rspamd's ``/maps``: ``[{"map": id, "uri", "description", "editable"}, ...]``."""
        config_dir = self._config_dir_or_none()
        writable = config_dir is not None and _writable(config_dir)
        out = []
        for number, (name, path) in enumerate(self._map_files(), 1):
            out.append(
                {
                    "map": number,
                    "name": name,
                    "uri": f"file://{path}",
                    "description": _map_description(path),
                    "type": "file",
                    "editable": writable,
                    "loaded": True,
                }
            )
        return out

    async def get_map(self, selector: str | None) -> HttpResponse:
        _, path = self._find_map(selector)
        text = await trio.to_thread.run_sync(path.read_bytes)
        return HttpResponse(200, text, content_type="text/plain; charset=utf-8")

    async def save_map(self, selector: str | None, body: bytes) -> HttpResponse:
        name, _ = self._find_map(selector)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "a map must be UTF-8 text") from None
        async with self._lock:
            path = self._config_dir() / "maps" / name
            old = await trio.to_thread.run_sync(_read_bytes, path)
            await trio.to_thread.run_sync(_write_atomic, path, body.decode("utf-8"))
            return await self._apply(path, old)

    def _map_files(self) -> list[tuple[str, Path]]:
        """Every map, each where the engine reads it from: the config directory's copy
        when there is one, else the shipped map (``engine.maps.map_path``)."""
        return list(map_files(self._config_dir_or_none()).items())

    def _find_map(self, selector: str | None) -> tuple[str, Path]:
        if not selector:
            raise HttpError(400, "name the map in the Map header (its number or file name)")
        files = self._map_files()
        selector = selector.strip()
        if selector.isdigit() and 1 <= int(selector) <= len(files):
            return files[int(selector) - 1]
        for name, path in files:
            if selector in (name, name.removesuffix(".map")):
                return name, path
        raise HttpError(404, f"no map {selector}")

    # -- applying -----------------------------------------------------------------------------

    async def _apply(self, path: Path, old: bytes | None) -> HttpResponse:
        reload = self.context.reload
        accepted = reload is not None and await reload()
        if accepted:
            return json_response({"success": True})
        await trio.to_thread.run_sync(_restore, path, old)  # Rule 1
        if reload is None:
            return error_response(503, "this server cannot reload; nothing was changed")
        return error_response(409, "the new configuration was refused (see the server log)")

    def _config_dir_or_none(self) -> Path | None:
        with self.context.engines.lease() as engine:
            return _engine_config_dir(engine)

    def _config_dir(self) -> Path:
        config_dir = self._config_dir_or_none()
        if config_dir is None:
            raise HttpError(503, "milterd runs without a configuration directory to save in")
        return config_dir


def _engine_config_dir(engine: Engine) -> Path | None:
    return engine.config.config_dir


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise HttpError(400, "the body is not JSON") from None


def _threshold(value: object, what: str) -> float | bool:
    """A finite number, or ``False`` for ``null`` (Rspamd: switch the rung off)."""
    if value is None:
        return False
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HttpError(400, f"{what}: expected a number or null, not {value!r}")
    return float(value)


def _merge(data: dict[str, object], section: str, values: dict[str, object]) -> None:
    table = data.setdefault(section, {})
    assert isinstance(table, dict)
    table.update(values)


def _parse_dynamic(old: bytes | None, path: Path) -> dict[str, object]:
    if old is None:
        return {}
    try:
        data = tomllib.loads(old.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HttpError(500, f"{path} is not valid TOML ({exc}); fix or remove it") from None
    # This file holds only what the controller writes; anything else would be lost on
    # rewriting it, so it is refused rather than dropped.
    unexpected = sorted(set(data) - {"actions", "symbols"})
    if unexpected:
        raise HttpError(500, f"{path} holds {', '.join(unexpected)}: move them to another file")
    return data


def _to_toml(data: dict[str, object]) -> str:
    """The two shapes this file holds: ``[actions]`` scalars and ``[symbols.NAME]`` tables."""
    lines: list[str] = []
    actions = data.get("actions")
    if isinstance(actions, dict) and actions:
        lines.append("\n[actions]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in actions.items()]
    symbols = data.get("symbols")
    if isinstance(symbols, dict):
        for name, table in sorted(symbols.items()):
            assert isinstance(table, dict)
            lines.append(f"\n[symbols.{name}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float | int):
        return repr(float(value))
    return json.dumps(str(value))  # a JSON string of printable text is a TOML basic string


def _map_description(path: Path) -> str:
    """The map's first comment line, which by convention says what it holds."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except OSError:
        return ""
    return first.lstrip("#").strip() if first.startswith("#") else ""


def _writable(directory: Path) -> bool:
    return os.access(directory if directory.exists() else directory.parent, os.W_OK)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _restore(path: Path, old: bytes | None) -> None:
    if old is None:
        path.unlink(missing_ok=True)
    else:
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_bytes(old)
        os.replace(temporary, path)
