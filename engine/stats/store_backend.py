"""The ``StatBackend`` on the Store: Bayes counts in SQLite or Redis.

Key layout (inside the Store's own prefix, ``milterd:`` on Redis by default):

| key | kind | fields |
| --- | --- | --- |
| ``bayes:t:<token as 16 hex digits>`` | hash | ``S``, ``H``: spam and ham messages that held the token; ``S:<user>``, ``H:<user>`` for per-user statistics |
| ``bayes:learns`` | hash | ``S``, ``H`` (and ``S:<user>``, ``H:<user>``): messages learned |

One hash per token keeps a user's counts next to the shared ones: a per-user read is
the same single ``hmget_many`` with other field names, and one expiry covers all owners.

Round trips: ``token_counts`` is one ``hcounters_many`` (one ``EVALSHA`` on Redis, one
query in SQLite) that answers only for the tokens the store knows; ``learn`` is one
``hincrby_many`` (one ``EVALSHA``, or one transaction) that carries the learn counter
along with the tokens, all of them sharing one amounts mapping.

Expiry plan: every learn refreshes the expiry of each key it touches to ``token_ttl``
(100 days by default, Rspamd's ``bayes_expiry`` horizon), so a token disappears 100 days
after the last learned message that contained it. OSB makes most tokens single sightings
that never come back; they are exactly the ones that expire, and the database stays
bounded by what the last 100 days of learning said. The learn counter is touched by
every learn, so it outlives every token. Reads never refresh an expiry: relevance comes
from learning (autolearn keeps frequent tokens fresh). ``token_ttl=None`` keeps
everything forever.
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import TYPE_CHECKING, Final, cast, final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.storage.base import Store

__all__ = ["DEFAULT_TOKEN_TTL", "StoreStatBackend"]

DEFAULT_TOKEN_TTL: Final = 100 * 86400.0


@final
class StoreStatBackend:
    """Bayes statistics in a ``Store``; see the module docstring for keys and expiry.

    Args:
        store: the engine's Store (SQLite or Redis).
        prefix: key prefix of this classifier's data (two classifiers need two prefixes).
        token_ttl: seconds a key lives after the last learn that touched it; None: forever.
    """

    __slots__ = ("_learns_key", "_prefix", "_store", "_ttl")

    def __init__(
        self, store: Store, *, prefix: str = "bayes:", token_ttl: float | None = DEFAULT_TOKEN_TTL
    ) -> None:
        if token_ttl is not None and not token_ttl > 0:
            raise ValueError("token_ttl must be positive or None")
        self._store = store
        self._prefix = prefix + "t:"
        self._learns_key = prefix + "learns"
        self._ttl = token_ttl

    def key(self, token: int) -> str:
        """The Store key of one token (``bayes:t:00ff…``)."""
        return f"{self._prefix}{token:016x}"

    async def token_counts(
        self, tokens: Sequence[int], user: str | None = None
    ) -> list[tuple[int, int]]:
        if not tokens:
            return []
        rows = await self._store.hcounters_many(self.keys(tokens), _fields(user))
        if min(chain.from_iterable(rows)) < 0:  # a stray unlearn (module docstring): clamp
            rows = [(max(spam, 0), max(ham, 0)) for spam, ham in rows]
        return cast("list[tuple[int, int]]", rows)

    def keys(self, tokens: Sequence[int]) -> list[str]:
        """The Store keys of ``tokens``, in order. One ``bytes.hex`` of the packed tokens
        with a separator every 8 bytes, the prefix put in front of each by one
        ``str.replace`` and cut by one ``split``: no Python-level step per token (a third
        of the cost of formatting each token, half of slicing one long hex string)."""
        if not tokens:
            return []
        prefix = self._prefix
        if "," in prefix:  # the separator must not occur in a key
            return [f"{prefix}{token:016x}" for token in tokens]
        digits = struct.pack(f">{len(tokens)}Q", *tokens).hex(",", 8)
        return (prefix + digits.replace(",", "," + prefix)).split(",")

    async def learn(
        self, tokens: Sequence[int], is_spam: bool, user: str | None = None, delta: int = 1
    ) -> None:
        field = _fields(user)[0 if is_spam else 1]
        amount = {field: delta}
        # One shared mapping: the stores group keys by it (duplicates count once).
        amounts = dict.fromkeys(self.keys(tokens), amount)
        amounts[self._learns_key] = amount
        await self._store.hincrby_many(amounts, ttl=self._ttl)

    async def learn_counts(self, user: str | None = None) -> tuple[int, int]:
        ((spam, ham),) = await self._store.hcounters_many([self._learns_key], _fields(user))
        return max(spam, 0), max(ham, 0)


def _fields(user: str | None) -> tuple[str, str]:
    return ("S", "H") if user is None else ("S:" + user, "H:" + user)
