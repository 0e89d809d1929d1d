"""Where the classifier reads and writes its counts: the ``StatBackend`` protocol.

A backend keeps, per statistics owner (``user``: None is the shared database; a string
is one user's own when per-user statistics are on):

* for every token, how many learned spam and ham messages contained it;
* how many spam and ham messages were learned.

Every call is one round trip whatever the number of tokens: a scan asks for all of a
message's tokens at once, and a learn writes them together with the class's learn
counter. ``learn`` adds ``delta`` as it is (+1 learns, -1 unlearns: a relearn as the
other class is an unlearn plus a learn), so that Redis can do it with ``HINCRBY`` in one
pipeline; reads clamp at zero, so a stray unlearn of a message that was never learned
cannot produce a negative count. Callers keep that rare by unlearning only what a learn
cache says was learned.
"""

from __future__ import annotations

from itertools import repeat
from typing import TYPE_CHECKING, Protocol, final

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MemoryStatBackend", "StatBackend"]


class StatBackend(Protocol):
    async def token_counts(
        self, tokens: Sequence[int], user: str | None = None
    ) -> list[tuple[int, int]]:
        """``(spam, ham)`` for each token, in order; ``(0, 0)`` for unknown tokens."""
        ...

    async def learn(
        self, tokens: Sequence[int], is_spam: bool, user: str | None = None, delta: int = 1
    ) -> None:
        """Add ``delta`` to the class count of each distinct token and to the class's
        learn counter, in one round trip."""
        ...

    async def learn_counts(self, user: str | None = None) -> tuple[int, int]:
        """``(spam, ham)`` messages learned."""
        ...


@final
class MemoryStatBackend:
    """A dict-backed ``StatBackend`` for tests and corpus experiments (one process only)."""

    __slots__ = ("_learns", "_raw", "_tokens")

    def __init__(self) -> None:
        # Raw sums (what Redis would hold) and, for reads, the same clamped at zero with
        # the all-zero tokens left out: a read is then one C-level map over dict.get.
        self._raw: dict[str | None, dict[int, tuple[int, int]]] = {}
        self._tokens: dict[str | None, dict[int, tuple[int, int]]] = {}
        self._learns: dict[str | None, tuple[int, int]] = {}

    async def token_counts(
        self, tokens: Sequence[int], user: str | None = None
    ) -> list[tuple[int, int]]:
        return self.token_counts_now(tokens, user)

    def token_counts_now(
        self, tokens: Sequence[int], user: str | None = None
    ) -> list[tuple[int, int]]:
        """The synchronous core of ``token_counts`` (for benchmarks outside trio)."""
        table = self._tokens.get(user, {})
        return list(map(table.get, tokens, repeat((0, 0))))

    async def learn(
        self, tokens: Sequence[int], is_spam: bool, user: str | None = None, delta: int = 1
    ) -> None:
        self.learn_now(tokens, is_spam, user, delta)

    def learn_now(
        self, tokens: Sequence[int], is_spam: bool, user: str | None = None, delta: int = 1
    ) -> None:
        """The synchronous core of ``learn``."""
        raw = self._raw.setdefault(user, {})
        table = self._tokens.setdefault(user, {})
        zero = (0, 0)
        for token in dict.fromkeys(tokens):
            spam, ham = raw.get(token, zero)
            if is_spam:
                spam += delta
            else:
                ham += delta
            raw[token] = (spam, ham)
            if spam > 0 or ham > 0:
                table[token] = (max(spam, 0), max(ham, 0))
            else:
                table.pop(token, None)
        spam_learns, ham_learns = self._learns.get(user, zero)
        if is_spam:
            spam_learns += delta
        else:
            ham_learns += delta
        self._learns[user] = (spam_learns, ham_learns)

    async def learn_counts(self, user: str | None = None) -> tuple[int, int]:
        spam, ham = self._learns.get(user, (0, 0))
        return max(spam, 0), max(ham, 0)

    def __len__(self) -> int:
        """Tokens with a positive count, all users together."""
        return sum(len(table) for table in self._tokens.values())
