"""Receive buffer that frames milter packets without re-slicing per frame.

Theory of operation: received bytes are appended to one ``bytearray``; a read offset
(``_start``) advances as frames are consumed, so taking a frame costs one copy of its
payload and nothing else.  The consumed prefix is dropped only when the buffer is empty
(``clear()``, the common case when the peer sends whole frames) or when the dead prefix is
both large and more than half the buffer, which keeps total work O(n) in the bytes
received (the idea of h11's ``_receivebuffer``).
"""

from __future__ import annotations

import struct
from typing import Final

from .errors import RemoteProtocolError

__all__ = ["ReceiveBuffer"]

_LENGTH: Final = struct.Struct(">I")
# Below this, slicing the bytearray then copying beats a memoryview (measured: ~0.3 vs
# ~0.7 µs for a 40-byte payload); above it the memoryview's single copy wins.
_SMALL_FRAME: Final = 1024
# Compacting a smaller dead prefix is not worth the memmove.
_COMPACT_THRESHOLD: Final = 1 << 16


class ReceiveBuffer:
    """Byte buffer with an advancing read offset."""

    __slots__ = ("_data", "_start")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def __bytes__(self) -> bytes:
        return bytes(self._data[self._start :])

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes at the end."""
        self._data += data

    def startswith(self, prefixes: tuple[bytes, ...]) -> bool:
        """Whether the unread bytes start with one of ``prefixes``."""
        data = self._data
        start = self._start
        return any(data.startswith(p, start) for p in prefixes)

    def peek_length(self) -> int | None:
        """The length field of the next frame, or None if fewer than 4 bytes are buffered."""
        if len(self._data) - self._start < 4:
            return None
        return int(_LENGTH.unpack_from(self._data, self._start)[0])

    def next_frame(self, max_size: int) -> tuple[int, bytes] | None:
        """Remove and return the next complete frame as ``(command byte, payload)``.

        Returns None when the frame is not complete yet.

        Raises:
            RemoteProtocolError: the length field is 0 or above ``max_size``; raised as
                soon as the 4 length bytes are in, before waiting for the payload.
        """
        data = self._data
        start = self._start
        if len(data) - start < 4:
            return None
        (length,) = _LENGTH.unpack_from(data, start)
        if length == 0 or length > max_size:
            raise RemoteProtocolError(f"frame length {length} outside 1..{max_size}")
        end = start + 4 + length
        if len(data) < end:
            return None
        command = data[start + 4]
        if length <= _SMALL_FRAME:
            payload = bytes(data[start + 5 : end])
        else:
            # One copy instead of two for body-sized frames.
            with memoryview(data) as view:
                payload = view[start + 5 : end].tobytes()
        self._consume_to(end)
        return command, payload

    def next_line(self, limit: int) -> bytes | None:
        """Remove and return the next LF-terminated line (terminator included).

        Returns None while no LF has arrived within the first ``limit`` bytes.

        Raises:
            RemoteProtocolError: ``limit`` bytes arrived without a LF.
        """
        data = self._data
        start = self._start
        idx = data.find(b"\n", start, start + limit)
        if idx < 0:
            if len(data) - start >= limit:
                raise RemoteProtocolError(f"line longer than {limit} bytes")
            return None
        line = bytes(data[start : idx + 1])
        self._consume_to(idx + 1)
        return line

    def _consume_to(self, end: int) -> None:
        data = self._data
        if end == len(data):
            data.clear()
            self._start = 0
        elif end > _COMPACT_THRESHOLD and end > len(data) // 2:
            del data[:end]
            self._start = 0
        else:
            self._start = end
