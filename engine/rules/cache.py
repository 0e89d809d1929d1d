"""Compiled Hyperscan databases on disk, so a restart does not recompile.

A file is named after a content hash of everything that went into the database (the
patterns, their ids and flags, the Hyperscan build), so a changed rule simply misses and
the old file ages out. A file that cannot be read or parsed is ignored: the caller
rebuilds and overwrites it. Writes go to a temporary file renamed into place, so workers
that build at the same time never read half a file.

Format: ``MILTERD-HS1\\n``, a 4-byte big-endian length, that many bytes of JSON metadata
(with a BLAKE2b checksum of the rest), then the serialised database.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["DatabaseCache"]

log = logging.getLogger(__name__)

_MAGIC = b"MILTERD-HS1\n"
_UNUSED_FOR = 14 * 86400  # files not loaded for two weeks belong to rules long gone


class DatabaseCache:
    """A directory of cached databases; ``None`` disables caching."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._warned = False

    def load(self, key: str) -> tuple[dict[str, object], bytes] | None:
        """The metadata and database bytes stored under ``key``, or None."""
        if self.directory is None:
            return None
        path = self.directory / f"{key}.hsdb"
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            if not data.startswith(_MAGIC):
                raise ValueError("bad magic")
            start = len(_MAGIC) + 4
            size = int.from_bytes(data[len(_MAGIC) : start], "big")
            meta = json.loads(data[start : start + size])
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a table")
            blob = data[start + size :]
            # Hyperscan's own loader takes some damaged databases without a word.
            if meta.pop("blake2b", None) != hashlib.blake2b(blob).hexdigest():
                raise ValueError("checksum mismatch")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("ignoring unreadable Hyperscan cache file %s: %s", path, exc)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # marks it in use, for pruning
        return meta, blob

    def save(self, key: str, meta: dict[str, object], blob: bytes) -> None:
        """Store ``blob`` under ``key``; a directory we cannot write is logged once."""
        if self.directory is None:
            return
        checked = {**meta, "blake2b": hashlib.blake2b(blob).hexdigest()}
        payload = json.dumps(checked, sort_keys=True).encode()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".hsdb")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_MAGIC + len(payload).to_bytes(4, "big") + payload + blob)
                os.replace(tmp, self.directory / f"{key}.hsdb")
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write the Hyperscan cache in %s: %s", self.directory, exc)
                self._warned = True
            return
        self._prune(key.partition("-")[0])

    def _prune(self, prefix: str) -> None:
        assert self.directory is not None
        cutoff = time.time() - _UNUSED_FOR
        for path in self.directory.glob(f"{prefix}-*.hsdb"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue
