"""One query in flight per key, however many tasks ask for it.

Theory of operation: the first task to ask for a key becomes its *leader* and does the
work; tasks that ask while it is running become *followers* and wait on the leader's
``trio.Event``, then share its result. A hundred concurrent scans that look up the same
sender domain therefore send one query.

No background task is spawned (there is no nursery to own it): the work runs in the
leader's own task, under the leader's own cancel scopes. If the leader is cancelled (its
check timed out) it still wakes the followers, with no result; the first follower to
run becomes the new leader and starts over, so one caller's deadline never becomes
everybody's failure. Followers wait under their own cancel scopes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar, final

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable

__all__ = ["InFlight"]

K = TypeVar("K", bound="Hashable")
V = TypeVar("V")


@final
class _Pending(Generic[V]):
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: V | None = None


@final
class InFlight(Generic[K, V]):
    """Coalesces concurrent calls for the same key into one."""

    def __init__(self) -> None:
        self._pending: dict[K, _Pending[V]] = {}
        self.coalesced = 0  # calls that were answered by another task's work

    def __len__(self) -> int:
        return len(self._pending)

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """Run ``work`` for ``key`` unless it is already running; return its result."""
        while True:
            pending = self._pending.get(key)
            if pending is None:
                break
            await pending.done.wait()
            if pending.result is not None:
                self.coalesced += 1
                return pending.result
            # The leader was cancelled before it had a result: try again, maybe as leader.
        pending = _Pending[V]()
        self._pending[key] = pending
        try:
            pending.result = result = await work()
        finally:
            del self._pending[key]
            pending.done.set()
        return result
