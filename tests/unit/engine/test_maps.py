"""Where maps are read from: the config directory's ``maps/NAME`` before the shipped one,
for every reader (modules and the rules' function atoms), read when the engine is built,
and a map that cannot be read refused with its path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine import ConfigError, Engine, ScanRequest
from engine.data import shipped_dir
from engine.maps import MapError, Maps, map_files, map_path, maps_in
from engine.modules.mime_types import MimeTypes
from engine.modules.regexp import Regexp
from engine.task import Stash

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

SHIPPED = shipped_dir("maps")
RULES = """
[regexp]
engine = "re"

[rules.SHORT_LINK]
expression = 'has_shortener_url()'
score = 1.0

[rules.ODD_TLD]
expression = 'has_suspicious_tld_url()'
score = 1.0
"""


def write_map(config_dir: Path, name: str, text: str | bytes) -> Path:
    path = config_dir / "maps" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def problems_of(build: Callable[[], object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build()
    return [str(p) for p in info.value.problems]


# -- resolving ---------------------------------------------------------------------------------


def test_the_config_directorys_copy_wins(config_dir: Path) -> None:
    assert map_path("url_shorteners.map", config_dir) == SHIPPED / "url_shorteners.map"
    assert map_path("url_shorteners.map", None) == SHIPPED / "url_shorteners.map"
    local = write_map(config_dir, "url_shorteners.map", "sho.rt\n")
    assert map_path("url_shorteners.map", config_dir) == local
    assert map_path("suspicious_tlds.map", config_dir) == SHIPPED / "suspicious_tlds.map"


def test_map_files_lists_both_places(config_dir: Path) -> None:
    shipped = map_files(None)
    assert "url_shorteners.map" in shipped
    assert all(path.parent == SHIPPED for path in shipped.values())
    local = write_map(config_dir, "url_shorteners.map", "sho.rt\n")
    extra = write_map(config_dir, "site_only.map", "x\n")
    write_map(config_dir, "notes.txt", "not a map\n")
    files = map_files(config_dir)
    assert list(files) == sorted(files)
    assert files["url_shorteners.map"] == local
    assert files["site_only.map"] == extra
    assert files["suspicious_tlds.map"] == SHIPPED / "suspicious_tlds.map"
    assert "notes.txt" not in files


def test_entries_and_domains_are_read_once(config_dir: Path) -> None:
    path = write_map(config_dir, "url_shorteners.map", "# mine\n.Sho.RT  # trailing\n\nx.test\n")
    maps = Maps(config_dir)
    assert maps.entries("url_shorteners.map") == [".Sho.RT", "x.test"]
    assert maps.domains("url_shorteners.map") == {"sho.rt", "x.test"}
    path.write_text("changed.test\n")
    assert maps.domains("url_shorteners.map") == {"sho.rt", "x.test"}  # until a new engine


def test_a_map_that_cannot_be_read_names_its_path(config_dir: Path) -> None:
    bad = write_map(config_dir, "url_shorteners.map", b"\xff\xfe not utf-8\n")
    maps = Maps(config_dir)
    with pytest.raises(MapError) as info:
        maps.entries("url_shorteners.map")
    assert info.value.path == bad
    assert str(info.value).startswith(f"{bad}: cannot read this map: not UTF-8 text")
    with pytest.raises(MapError):  # every ask, without reading again
        maps.entries("url_shorteners.map")
    with pytest.raises(MapError, match=r"no_such\.map: cannot read this map"):
        maps.entries("no_such.map")


def test_load_all_reports_each_unreadable_map_once(config_dir: Path) -> None:
    write_map(config_dir, "url_shorteners.map", b"\xff\n")
    (config_dir / "maps" / "suspicious_tlds.map").mkdir()
    maps = Maps(config_dir)
    with pytest.raises(MapError):
        maps.entries("url_shorteners.map")  # a module asked first, and reported it
    problems = maps.load_all()
    assert [p.file for p in problems] == [str(config_dir / "maps" / "suspicious_tlds.map")]
    assert maps.entries("mime_types.map")  # the others were read


def test_a_task_built_by_hand_reads_the_shipped_maps() -> None:
    assert maps_in(Stash()).config_dir is None


# -- every reader ------------------------------------------------------------------------------


async def test_rule_functions_read_the_site_map(
    build_engine: Callable[..., Engine],
    write_config: Callable[[str, str], Path],
    config_dir: Path,
    message: Callable[..., bytes],
) -> None:
    write_config("milterd.toml", RULES)
    raw = message("See https://go.sho.rt/x and https://bit.ly/y and https://a.example.museum/\n")
    shipped = await build_engine(Regexp).scan(ScanRequest(raw=raw))
    assert set(shipped.symbols) == {"SHORT_LINK"}  # bit.ly; .museum is not in the shipped map
    write_map(config_dir, "url_shorteners.map", "sho.rt\n")
    write_map(config_dir, "suspicious_tlds.map", "museum\n")
    site = build_engine(Regexp)  # what a reload does
    result = await site.scan(ScanRequest(raw=raw))
    assert set(result.symbols) == {"SHORT_LINK", "ODD_TLD"}
    only_bitly = message("See https://bit.ly/y\n")
    assert not (await site.scan(ScanRequest(raw=only_bitly))).symbols  # replaced, not added


async def test_modules_read_the_site_map(
    build_engine: Callable[..., Engine], config_dir: Path
) -> None:
    write_map(config_dir, "bad_extensions.map", "pdf\n")
    engine = build_engine(MimeTypes)
    module = next(m for m in engine.modules if isinstance(m, MimeTypes))
    assert module.bad_extensions == {"pdf"}


def test_start_refuses_an_unreadable_map_with_its_path(
    build_engine: Callable[..., Engine], write_config: Callable[[str, str], Path], config_dir: Path
) -> None:
    write_config("milterd.toml", RULES)
    bad = write_map(config_dir, "suspicious_tlds.map", b"\xffzip\n")
    found = problems_of(lambda: build_engine(Regexp))
    assert len(found) == 1
    assert found[0].startswith(f"{bad}: cannot read this map")


def test_a_module_map_is_reported_once_and_a_bad_entry_too(
    build_engine: Callable[..., Engine], config_dir: Path
) -> None:
    bad = write_map(config_dir, "bad_extensions.map", b"\xff\n")
    found = problems_of(lambda: build_engine(MimeTypes))
    assert found == [f"{bad}: cannot read this map: not UTF-8 text (invalid start byte at byte 0)"]
    bad.unlink()
    types = write_map(config_dir, "mime_types.map", "text/plain lots\n")
    assert problems_of(lambda: build_engine(MimeTypes)) == [
        f"{types}: 'text/plain lots': the weight is not a number"
    ]


def test_a_copy_we_may_not_even_look_at_is_reported_not_skipped(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = write_map(config_dir, "url_shorteners.map", "sho.rt\n")
    path_type = type(local)
    lstat, read_text = path_type.lstat, path_type.read_text

    def deny(original: Callable[..., object]) -> Callable[..., object]:
        def call(self: Path, *args: object, **kwargs: object) -> object:
            if self == local:
                raise PermissionError(13, "Permission denied", str(self))
            return original(self, *args, **kwargs)

        return call

    # As root, a mode-0600 directory would not stop us: deny the looks themselves.
    monkeypatch.setattr(path_type, "lstat", deny(lstat))
    monkeypatch.setattr(path_type, "read_text", deny(read_text))
    maps = Maps(config_dir)
    assert maps.path("url_shorteners.map") == local
    assert [str(p) for p in maps.load_all()] == [
        f"{local}: cannot read this map: Permission denied"
    ]
