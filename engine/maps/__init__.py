"""Maps: lists of entries kept as data (one entry a line, ``#`` comments).

Theory of operation: every map is known by its file name (``url_shorteners.map``) and
read from one of two places, chosen by ``map_path`` and nowhere else:

* ``<config_dir>/maps/NAME`` when that file exists: the site's copy, which is where the
  controller's ``/savemap`` writes;
* otherwise the shipped ``maps/NAME``.

A copy replaces the shipped map as a whole (it does not add to it), as a ``/savemap``
of the whole text means. An engine reads its maps once, when it is built (``Maps``): a
reload (SIGHUP, or the controller after a save) builds a new engine, which reads them
again, so a scan never touches the disk for a map, and a map that cannot be read is a
``ConfigError`` naming its path at start, reload or ``milterd configtest``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from engine.data import shipped_dir
from engine.errors import ConfigError, ConfigProblem
from engine.task.stash import StashKey

if TYPE_CHECKING:
    from pathlib import Path

    from engine.task.stash import Stash

__all__ = [
    "MAPS",
    "MapError",
    "Maps",
    "map_files",
    "map_path",
    "maps_in",
    "read_map_entries",
]

MAP_SUFFIX = ".map"


class MapError(ConfigError):
    """A map file that cannot be read, or holds an entry its reader refuses; the problem
    names the file."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__([ConfigProblem(str(path), None, "", message)])


def read_map_entries(path: Path) -> list[str]:
    """The entries of a map file: stripped lines, comments and blank lines dropped."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries.append(entry)
    return entries


def map_path(name: str, config_dir: Path | None) -> Path:
    """Where the map ``name`` is read from: ``<config_dir>/maps/name`` when it exists,
    else the shipped ``maps/name`` (which may not exist either; reading then says so)."""
    shipped = shipped_dir("maps") / name
    if config_dir is None:
        return shipped
    local = config_dir / "maps" / name
    try:
        local.lstat()
    except FileNotFoundError:
        return shipped
    except OSError:
        # Not even allowed to look: still the site's copy. Like a directory or a dangling
        # link in its place, it is the site's mistake to hear about (reading it says what
        # is wrong), not a reason to fall back to the shipped map silently.
        pass
    return local


def map_files(config_dir: Path | None) -> dict[str, Path]:
    """Every map by name (sorted), each with the path ``map_path`` reads it from: the
    shipped ones and those only the config directory has."""
    names = {p.name for p in shipped_dir("maps").glob(f"*{MAP_SUFFIX}")}
    if config_dir is not None and (config_dir / "maps").is_dir():
        names.update(p.name for p in (config_dir / "maps").glob(f"*{MAP_SUFFIX}"))
    return {name: map_path(name, config_dir) for name in sorted(names)}


class Maps:
    """The maps one engine reads, each resolved by ``map_path`` and read once.

    ``load_all`` (called when the engine is built, after the modules have read theirs)
    reads every other map there is, so that a scan only looks them up; a map asked for
    later that was not there is read then. A map that cannot be read raises the same
    ``MapError`` at every ask, and ``load_all`` leaves it to whoever asked first, so that
    each unreadable map is reported once.
    """

    def __init__(self, config_dir: Path | None) -> None:
        self.config_dir = config_dir
        self._entries: dict[str, list[str]] = {}
        self._failed: dict[str, tuple[Path, str]] = {}  # name → (path, why)
        self._domains: dict[str, frozenset[str]] = {}

    def path(self, name: str) -> Path:
        return map_path(name, self.config_dir)

    def load_all(self) -> list[ConfigProblem]:
        """Read every map of ``map_files`` not asked for yet; the problems of those that
        cannot be read."""
        problems: list[ConfigProblem] = []
        for name in map_files(self.config_dir):
            if name in self._entries or name in self._failed:
                continue
            try:
                self.entries(name)
            except MapError as exc:
                problems.extend(exc.problems)
        return problems

    def entries(self, name: str) -> list[str]:
        """The map's entries (see ``read_map_entries``).

        Raises:
            MapError: the file is missing, unreadable or not UTF-8.
        """
        found = self._entries.get(name)
        if found is None:
            if name in self._failed:
                raise MapError(*self._failed[name])
            path = self.path(name)
            try:
                found = read_map_entries(path)
            except (OSError, UnicodeDecodeError) as exc:
                self._failed[name] = (path, f"cannot read this map: {_reason(exc)}")
                raise MapError(*self._failed[name]) from None
            self._entries[name] = found
        return found

    def domains(self, name: str) -> frozenset[str]:
        """The map's entries as domain names or labels: lower case, no leading dot."""
        found = self._domains.get(name)
        if found is None:
            found = frozenset(e.lower().lstrip(".") for e in self.entries(name))
            self._domains[name] = found
        return found


# The engine puts its ``Maps`` here for every task, so that what reaches only the task
# (the rules' function atoms) reads the same maps as the modules.
MAPS: StashKey[Maps] = StashKey("maps")


def maps_in(stash: Stash) -> Maps:
    """The engine's maps for this task; the shipped maps for a task built by hand."""
    return stash[MAPS] if MAPS in stash else _shipped_maps()


@functools.cache
def _shipped_maps() -> Maps:
    return Maps(None)


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    return exc.strerror or str(exc)
