"""Configuration layering, Rspamd style, and errors that point at file, line and key.

Order, later wins:

1. the schema defaults (shipped with the code; the single source of defaults);
2. the shipped policy files (``rules/*.toml``: rules, composites, groups), deep-merged;
3. ``<config-dir>/milterd.toml``;
4. ``<config-dir>/local.d/*.toml`` in name order, deep-merged: tables merge, lists and
   scalars replace, except lists whose key says ``extend`` (those grow);
5. ``<config-dir>/override.d/*.toml`` in name order: each table replaces the table of the
   same name (the first level of a file that sets plain keys);
6. a few environment variables that containers need (``MILTERD_MILTER_LISTEN``,
   ``MILTERD_DATA_DIR``, ``MILTERD_REDIS_URL``, ``MILTERD_DNS_NAMESERVERS``).

A missing config directory means the defaults. Every value remembers the file that set it,
so ``configdump --sources`` can say where it came from and an error can say where to look.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config.schema import Key, Section, TableOf, validate
from engine.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_SOURCE", "ENV_OVERRIDES", "Config", "load_config"]

DEFAULT_SOURCE = "(default)"
ENV_OVERRIDES: Mapping[str, tuple[str, ...]] = {
    "MILTERD_MILTER_LISTEN": ("milter", "listen"),
    "MILTERD_DATA_DIR": ("options", "data_dir"),
    "MILTERD_REDIS_URL": ("redis", "url"),
    # host:port list, commas or spaces between (a compose stack points it at its Unbound).
    "MILTERD_DNS_NAMESERVERS": ("dns", "nameservers"),
}

KeyPath = tuple[str, ...]


@dataclass(slots=True)
class Config:
    """The effective configuration: validated values with defaults, and where each came from."""

    data: dict[str, object]
    sources: dict[KeyPath, str] = field(default_factory=dict)
    config_dir: Path | None = None

    def section(self, name: str) -> dict[str, object]:
        value = self.data.get(name, {})
        assert isinstance(value, dict)
        return value

    def problem(self, path: KeyPath, message: str) -> ConfigProblem:
        """A problem with the value at ``path``, located in the file that set it (or, for a
        key that no file set, such as a missing required one, the file of its table)."""
        source = DEFAULT_SOURCE
        for length in range(len(path), 0, -1):
            if path[:length] in self.sources:
                source = self.sources[path[:length]]
                break
        line = _locate(Path(source), path) if not source.startswith(("$", "(")) else None
        return ConfigProblem(source, line, ".".join(path), message)

    def source_of(self, path: KeyPath) -> str:
        """The file (or ``$VARIABLE``) that set exactly this value, else ``(default)``."""
        return self.sources.get(path, DEFAULT_SOURCE)


def load_config(
    config_dir: str | os.PathLike[str] | None,
    schema: Section,
    *,
    environ: Mapping[str, str] | None = None,
    base_files: Sequence[Path] = (),
) -> Config:
    """Read, layer and validate; raise ``ConfigError`` listing every problem found.

    ``base_files`` are the shipped policy files, layered under the config directory.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    sources: dict[KeyPath, str] = {}
    problems: list[ConfigProblem] = []
    for path in base_files:
        _merge_file(path, raw, sources, problems, schema, replace=False)
    directory = Path(config_dir) if config_dir is not None else None
    if directory is not None and directory.is_dir():
        main = directory / "milterd.toml"
        if main.is_file():
            _merge_file(main, raw, sources, problems, schema, replace=False)
        for sub, replace in (("local.d", False), ("override.d", True)):
            for path in sorted((directory / sub).glob("*.toml")):
                _merge_file(path, raw, sources, problems, schema, replace=replace)
    elif directory is not None and directory.exists():
        problems.append(ConfigProblem(str(directory), None, "", "is not a directory"))
    for variable, key_path in ENV_OVERRIDES.items():
        # Only for settings this schema has: the engine alone has no [milter] section.
        if variable in environ and _in_schema(schema, key_path):
            value: object = environ[variable]
            if _is_list_key(schema, key_path):
                value = [item for item in re.split(r"[,\s]+", str(value)) if item]
            _set_path(raw, key_path, value)
            sources[key_path] = f"${variable}"
    data, found = validate(schema, raw)
    config = Config(data, sources, directory)
    problems.extend(config.problem(key_path, message) for key_path, message in found)
    if problems:
        raise ConfigError(problems)
    return config


def _merge_file(
    path: Path,
    raw: dict[str, object],
    sources: dict[KeyPath, str],
    problems: list[ConfigProblem],
    schema: Section,
    *,
    replace: bool,
) -> None:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        problems.append(
            ConfigProblem(str(path), int(match.group(1)) if match else None, "", str(exc))
        )
        return
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib lets this one through
        problems.append(
            ConfigProblem(str(path), None, "", f"not UTF-8: {exc.reason} at byte {exc.start}")
        )
        return
    except OSError as exc:
        problems.append(ConfigProblem(str(path), None, "", f"cannot read: {exc.strerror}"))
        return
    if replace:
        _replace(raw, data, sources, str(path), ())
    else:
        _deep_merge(raw, data, sources, str(path), (), schema)


def _deep_merge(
    into: dict[str, object],
    data: Mapping[str, object],
    sources: dict[KeyPath, str],
    source: str,
    prefix: KeyPath,
    schema: Section,
) -> None:
    for key, value in data.items():
        path = (*prefix, key)
        current = into.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _deep_merge(current, value, sources, source, path, schema)
            continue
        spec = _spec_at(schema, path)
        extends = isinstance(spec, Key) and spec.extend
        if extends and isinstance(current, list) and isinstance(value, list):
            into[key] = current + [_copy(v) for v in value if v not in current]
            sources[path] = source
            continue
        into[key] = _copy(value)
        _record(sources, value, source, path)


def _spec_at(schema: Section, path: KeyPath) -> Key | Section | TableOf | None:
    node: Key | Section | TableOf | None = schema
    for key in path:
        if isinstance(node, TableOf):
            node = node.item  # the user-chosen name selects one item
            continue
        if not isinstance(node, Section):
            return None
        node = node.keys.get(key)
    return node


def _replace(
    into: dict[str, object],
    data: Mapping[str, object],
    sources: dict[KeyPath, str],
    source: str,
    prefix: KeyPath,
) -> None:
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            target = into.setdefault(key, {})
            if isinstance(target, dict):
                _replace(target, value, sources, source, path)
                continue
        for old in [p for p in sources if p[: len(path)] == path]:
            del sources[old]
        into[key] = _copy(value)
        _record(sources, value, source, path)


def _record(sources: dict[KeyPath, str], value: object, source: str, path: KeyPath) -> None:
    sources[path] = source
    if isinstance(value, dict):
        for key, item in value.items():
            _record(sources, item, source, (*path, key))


def _copy(value: object) -> object:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _in_schema(schema: Section, path: KeyPath) -> bool:
    node: object = schema
    for key in path:
        if not isinstance(node, Section) or key not in node.keys:
            return False
        node = node.keys[key]
    return True


def _is_list_key(schema: Section, path: KeyPath) -> bool:
    spec = _spec_at(schema, path)
    return isinstance(spec, Key) and list in spec.types


def _set_path(raw: dict[str, object], path: KeyPath, value: object) -> None:
    node = raw
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")


def _locate(file: Path, path: KeyPath) -> int | None:
    """The line where ``path`` is set in a TOML file (best effort: tables, dotted keys)."""
    try:
        lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    table: KeyPath = ()
    best: int | None = None
    for number, line in enumerate(lines, 1):
        match = _TABLE.match(line)
        if match:
            table = _split_key(match.group(1))
            if table == path:
                return number
            if best is None and path[: len(table)] == table and table:
                best = number
            continue
        match = _ASSIGN.match(line)
        if match and (*table, *_split_key(match.group(1))) == path:
            return number
    return best


def _split_key(text: str) -> KeyPath:
    return tuple(part.strip().strip("\"'") for part in text.split("."))
