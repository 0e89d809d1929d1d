"""Where the shipped policy (``rules/``) and map data (``maps/``) are.

In a wheel they travel inside this package (``engine/_data/``); in a source checkout or
an editable install they are the top-level ``rules/`` and ``maps/`` of the repository.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["shipped_dir"]

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path:
    """The directory of shipped ``rules`` or ``maps``."""
    for candidate in (_PACKAGE / "_data" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"shipped {kind}/ directory not found next to {_PACKAGE}")
