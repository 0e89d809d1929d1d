"""`pip install .` must carry the shipped rules/ and maps/ (they live outside the packages)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_ships_rules_and_maps_where_the_engine_finds_them(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("milterd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        p.relative_to(ROOT).as_posix()
        for d in ("rules", "maps")
        for p in (ROOT / d).rglob("*")
        if p.is_file()
    }
    assert {f"engine/_data/{name}" for name in shipped} <= names

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = "from engine.data import shipped_dir; print(shipped_dir('rules')); print(shipped_dir('maps'))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target)},
    ).stdout.split()
    assert out == [
        str(target / "engine" / "_data" / "rules"),
        str(target / "engine" / "_data" / "maps"),
    ]
