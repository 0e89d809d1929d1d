"""zstd bodies, Rspamd's way.

A request body is zstd when the client says so (``Compression: zstd``, which ``rspamc
-z`` sends, or ``Content-Encoding: zstd``) or when it starts with zstd's magic number (no
mail starts with those bytes). The reply is compressed when the request was, when the
client accepts it (``Accept-Encoding: zstd``) or asks with the ``zstd`` flag; it then
carries both ``Compression: zstd`` (what ``rspamc`` looks for) and ``Content-Encoding:
zstd``. Decompression stops one byte past the size limit, so a small bomb costs no more
than an honest message of the largest size allowed.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Final

import trio
import zstandard

from milterd.http.protocol import HttpError

if TYPE_CHECKING:
    from milterd.http.protocol import HttpRequest

__all__ = ["ZSTD_MAGIC", "compress_reply", "decode_body", "wants_compressed_reply"]

ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
COMPRESSED_HEADERS: Final = (("Compression", "zstd"), ("Content-Encoding", "zstd"))
# Bodies above this are (de)compressed in a worker thread, so other connections go on.
_THREAD_ABOVE: Final = 1 << 20
_LEVEL: Final = 3


def _declared(request: HttpRequest) -> str | None:
    value = request.header("compression") or request.header("content-encoding")
    return value.strip().lower() if value else None


def is_compressed(request: HttpRequest) -> bool:
    return _declared(request) == "zstd" or request.body.startswith(ZSTD_MAGIC)


async def decode_body(request: HttpRequest, max_size: int) -> bytes:
    """The request body, decompressed when it is zstd.

    Raises:
        HttpError: 415 for another encoding, 400 for a broken or dictionary-compressed
            stream, 413 when it decompresses past ``max_size``.
    """
    declared = _declared(request)
    if declared not in (None, "zstd", "identity"):
        raise HttpError(415, f"unsupported compression {declared!r} (only zstd)")
    if not is_compressed(request):
        return request.body
    if request.header("dictionary"):
        raise HttpError(400, "zstd dictionaries are not supported")
    body = request.body
    if len(body) > _THREAD_ABOVE:
        return await trio.to_thread.run_sync(_decompress, body, max_size)
    return _decompress(body, max_size)


def _decompress(body: bytes, max_size: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True)
    try:
        data = reader.read(max_size + 1)
    except zstandard.ZstdError as exc:
        raise HttpError(400, f"cannot decompress the zstd body: {exc}") from None
    if len(data) > max_size:
        raise HttpError(413, f"decompressed body over the limit of {max_size} bytes")
    return data


def wants_compressed_reply(request: HttpRequest, flags: frozenset[str]) -> bool:
    accept = (request.header("accept-encoding") or "").lower()
    return is_compressed(request) or "zstd" in accept or "zstd" in flags


async def compress_reply(body: bytes) -> bytes:
    if len(body) > _THREAD_ABOVE:
        return await trio.to_thread.run_sync(_compress, body)
    return _compress(body)


def _compress(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=_LEVEL).compress(body)
