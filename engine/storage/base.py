"""The Store: one interface for all state shared across messages, processes and machines.

Theory of operation
-------------------
Every stateful module (greylisting, Bayes, rate limits, reputation, history, fuzzy hashes,
the learn cache) keeps its state in one ``Store``, built once by ``open_store`` and handed
down through ``ModuleContext``. Two backends implement it and pass one conformance suite
(``tests/integration/test_store_conformance.py``): embedded SQLite (the default) and Redis.

The data model is Redis's, cut down to what those users need:

- **Keys** are ``str`` (module-prefixed: ``gl:`` greylist, ``bayes:`` …). Each live key
  holds exactly one *kind* of value:

  - a **string**: ``bytes``. A *counter* is a string holding a decimal integer in ASCII
    (``b"42"``), so ``get`` of a counter returns ``b"42"`` and ``set(k, b"7")`` makes a
    counter that ``incrby`` can increase;
  - a **hash**: ``str`` field → ``bytes`` value (counters as above);
  - a **list** of ``bytes``, newest first.

  An operation for one kind on a key that holds another raises ``WrongType``, except that
  ``set``, ``delete``, ``exists`` and ``expire`` work on any kind (``set`` replaces it with
  a string) and ``mget`` reports ``None`` for a key that is not a string.
- **Expiry**: a key may carry an expiry time. Past it, the key is gone for every reader at
  once, whatever the backend does about the space. ``ttl`` arguments are seconds (float),
  ``None`` or positive and finite (``ValueError`` otherwise); the backends keep at least
  millisecond precision. ``set`` replaces a key's expiry with its own (``ttl=None``: never
  expires); every other writer sets the expiry to ``ttl`` from now when given and leaves
  the key's current expiry alone when ``ttl`` is None. An expired key written again starts
  afresh, empty.
- **Batches**: ``mget``, ``hmget_many``, ``hcounters_many`` and ``hincrby_many`` each take
  one round trip to Redis (one command: a pipeline, or a server-side script for the two
  that Bayes calls with hundreds of keys) or one transaction in SQLite, whatever their size,
  so that Bayes reads or learns the tokens of a message at the cost of one call.
- **Errors**: ``StoreUnavailable`` when the backend cannot answer now (Redis down or slow,
  the SQLite file locked past its busy timeout, a full disk). Modules turn it into a
  temporary failure (a ``*_TEMPFAIL`` symbol or a 451), never a lost message.
  ``WrongType`` is a caller's bug. Cancellation propagates; an operation cancelled while
  it runs may or may not have taken effect.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

from engine.errors import EngineError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

__all__ = ["Store", "StoreError", "StoreUnavailable", "WrongType", "check_maxlen", "check_ttl"]


class StoreError(EngineError):
    """Base of the errors a Store raises."""


class StoreUnavailable(StoreError):
    """The backend cannot answer now; try again later (a temporary failure)."""


class WrongType(StoreError):
    """The key holds another kind of value, or a counter does not hold an integer."""


def check_ttl(ttl: float | None) -> float | None:
    """``ttl`` itself when it is None or positive and finite, else ``ValueError``."""
    if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    return ttl


def check_maxlen(maxlen: int) -> int:
    if maxlen < 1:
        raise ValueError(f"maxlen must be at least 1, not {maxlen!r}")
    return maxlen


class Store(Protocol):
    """State shared by every worker process (SQLite) or every instance (Redis).

    All methods may raise ``StoreUnavailable``; see the module docstring for the data
    model, expiry and ``WrongType``.
    """

    # -- strings and counters ---------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The string at ``key``, or None when the key is missing (or expired)."""

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Make ``key`` the string ``value``, replacing whatever it held and its expiry:
        it expires ``ttl`` seconds from now, or never when ``ttl`` is None."""

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """The strings at ``keys``, in order, in one round trip; None for a key that is
        missing or not a string. An empty ``keys`` gives ``[]``."""

    async def incrby(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` (may be negative) to the counter at ``key`` and return the new
        value. A missing key counts from 0. ``WrongType`` when the key holds something
        that is not a signed 64-bit decimal integer, or the result would not be one."""

    # -- any kind of key ----------------------------------------------------------------

    async def delete(self, key: str) -> bool:
        """Remove ``key`` whatever it holds; True when it existed."""

    async def exists(self, key: str) -> bool:
        """True when ``key`` holds anything (and has not expired)."""

    async def expire(self, key: str, ttl: float | None) -> bool:
        """Make ``key`` expire ``ttl`` seconds from now, or never when ``ttl`` is None.
        True when the key exists (its expiry was changed), False when it does not."""

    def scan(self, prefix: str) -> AsyncIterator[str]:
        """Every key that starts with ``prefix``, for maintenance and statistics, fetched
        in batches (never all at once). A key that exists for the whole iteration is
        reported at least once (Redis may report it twice: deduplicate to count exactly);
        one created or deleted meanwhile may or may not be. No order. ``async for``."""
        ...

    # -- hashes -------------------------------------------------------------------------

    async def hget(self, key: str, field: str) -> bytes | None:
        """The value of ``field`` in the hash at ``key``; None when either is missing."""

    async def hset(self, key: str, values: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Set the fields of ``values`` in the hash at ``key`` (created when missing),
        leaving its other fields alone. An empty ``values`` does nothing at all."""

    async def hincrby(
        self, key: str, amounts: Mapping[str, int], ttl: float | None = None
    ) -> dict[str, int]:
        """Add each amount to its field's counter (a missing field counts from 0) in the
        hash at ``key``; return the new values. Empty ``amounts``: nothing, ``{}``."""

    async def hgetall(self, key: str) -> dict[str, bytes]:
        """Every field of the hash at ``key``; ``{}`` when the key is missing."""

    async def hmget_many(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> list[list[bytes | None]]:
        """For each key in order, the values of ``fields`` in order (None where missing),
        in one round trip: Bayes reads every token of a message with one call."""

    async def hcounters_many(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> list[tuple[int, ...]]:
        """For each key in order, the counters at ``fields`` in order, 0 where the key or
        the field is missing, in one round trip: Bayes reads every token of a message with
        one call, and pays for decoding only the few tokens it knows. ``WrongType`` when a
        key holds another kind, or a value is not a signed 64-bit decimal integer."""

    async def hincrby_many(
        self, amounts: Mapping[str, Mapping[str, int]], ttl: float | None = None
    ) -> None:
        """``hincrby`` for each key of ``amounts`` in one round trip (Bayes learning);
        ``ttl``, when given, applies to every key touched. Keys that share one amounts
        mapping (``dict.fromkeys(keys, {"S": 1})``) cost least. When a key meets
        ``WrongType`` the batch is refused: nothing of it is applied on SQLite; on Redis
        the keys before the bad one may have been."""

    # -- lists --------------------------------------------------------------------------

    async def lpush_trim(
        self, key: str, *values: bytes, maxlen: int, ttl: float | None = None
    ) -> None:
        """Put ``values`` at the head of the list at ``key`` (created when missing), one
        after the other as Redis ``LPUSH`` does (the last ends up first), and drop the
        oldest entries beyond ``maxlen`` (≥ 1): a bounded history. One round trip however
        many values: a writer that batches pays once."""

    async def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[bytes]:
        """Entries ``start`` to ``stop`` inclusive of the list at ``key``, newest first.
        Negative indexes count from the end (-1 the oldest); out-of-range indexes are
        clamped; a missing key or an empty range gives ``[]`` (Redis ``LRANGE``)."""

    # -- lifetime -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release connections and files. The store is not used afterwards."""
