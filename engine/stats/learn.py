"""Learning: the learn cache that makes training idempotent, and the autolearn policy.

Theory of operation
-------------------
**The learn cache.** Users train from their mail folders, and they repeat themselves: a
message moved to Junk twice, moved back to the inbox, or autolearned at delivery and then
moved by hand. Counting a message twice would teach the classifier that its tokens are
twice as telling as they are, so every learn goes through a record of what was learned:

* The message is known by a digest of its body (CR stripped, trailing white space
  dropped) and its Message-ID, plus the statistics owner (per-user statistics): what
  stays the same between the copy scanned at delivery and the copy in the mailbox.
  Digesting the token set instead (as Rspamd does) would change with the headers the
  delivery adds (Received, Delivered-To) and with a rewritten Subject, and the move from
  the inbox to Junk would not be recognised as the same message.
* The record is a hash ``bayes:lc:<digest>`` with fields ``S`` and ``H``, claimed with
  one ``hincrby`` (+1 for the class being learned, +0 for the other): the answer says at
  once, atomically across workers, whether this class was already claimed (refused:
  "already learned as spam") and whether the other one was (a move: unlearn it, learn
  this class, clear the other field). Two workers learning the same message at once
  cannot both count it; a learn as ham racing a learn as spam ends as a move either way.
* A learn that fails half way (the store went away) releases its claim, so a retry can
  learn the message; the counts may then be off by that message, which Bayes tolerates.
* The record expires with the tokens (``token_ttl`` after the learn): once the tokens a
  message taught are gone, learning it again is learning it afresh.

An unlearn subtracts the message's *current* tokens. They are the tokens that were
learned, except for the few header features that the delivery changed in between; the
backends clamp the resulting stray decrements at zero.

**Autolearn** (``autolearn_class``) learns, after a scan, the messages whose verdict is
clear enough to teach from, and refuses whatever could poison the statistics:

* a verdict that came from a pre-result or a forced action (GTUBE, a whitelist, a rate
  limit: the score did not decide), a partial scan, or any ``ENGINE_*`` symbol (a check
  failed or timed out, so the score is missing evidence);
* spam: action add header or worse, and the score *without Bayes' own contribution* at
  least ``spam_threshold``; ham: no action, and that score at most ``ham_threshold``
  (≤ 0). Leaving Bayes out keeps the classifier from confirming itself;
* Bayes itself disagreeing strongly (the other class with ``veto_probability`` or more):
  the rules and the statistics disagree, so neither is trusted to teach;
* Bayes already sure (the class with ``sure_probability`` or more): the message would
  teach nothing, and on SQLite a learn costs tens of milliseconds of writes;
* the class already holding ``max_imbalance`` times the other class's learns, once it
  has ``min_learns`` (so that either class can bootstrap alone): the classifier rescales
  counts by learn counts, but autolearn should not bury the hand training under one
  class (Rspamd's ``check_balance``).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from engine.storage import StoreError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.stats.backend import StatBackend
    from engine.storage import Store

__all__ = [
    "AutolearnPolicy",
    "LearnResult",
    "Learner",
    "Verdict",
    "autolearn_class",
    "class_name",
    "message_digest",
]

_FIELDS: Final = {True: "S", False: "H"}


def class_name(is_spam: bool) -> str:
    return "spam" if is_spam else "ham"


@dataclass(slots=True, frozen=True)
class LearnResult:
    """What a learn did. True (as a boolean) when the statistics changed.

    ``message`` is for people: "learned as spam", "already learned as spam",
    "relearned as spam (was ham)", or why nothing was learned.
    """

    learned: bool
    message: str
    # Refused because the cache says this message was learned as this class already
    # (Rspamd's 208 over HTTP), as opposed to refused for want of tokens or statistics.
    already: bool = False

    def __bool__(self) -> bool:
        return self.learned


def message_digest(body: bytes, message_id: str | None, owner: str | None) -> str:
    """The learn cache's name for a message (module docstring): 32 hex digits."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(body.replace(b"\r", b"").rstrip())
    digest.update(b"\x00" + (message_id or "").strip().encode("utf-8", "surrogateescape"))
    if owner is not None:
        digest.update(b"\x00" + owner.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


class Learner:
    """Learns token sets through the learn cache (module docstring).

    Args:
        backend: where the token counts live.
        store: where the learn cache lives (the same store as the backend's).
        prefix: the learn cache's key prefix (``bayes:lc:``).
        ttl: seconds a learn cache record lives; None: forever.
    """

    __slots__ = ("_backend", "_prefix", "_store", "_ttl")

    def __init__(
        self, backend: StatBackend, store: Store, *, prefix: str, ttl: float | None
    ) -> None:
        self._backend = backend
        self._store = store
        self._prefix = prefix
        self._ttl = ttl

    async def learn(
        self, tokens: Sequence[int], digest: str, *, is_spam: bool, user: str | None = None
    ) -> LearnResult:
        """Learn ``tokens`` as spam or ham unless the cache says it was already.

        Raises:
            StoreError: the store could not answer (nothing was learned).
        """
        mine, other = _FIELDS[is_spam], _FIELDS[not is_spam]
        key = self._prefix + digest
        claimed = await self._store.hincrby(key, {mine: 1, other: 0}, ttl=self._ttl)
        name = class_name(is_spam)
        if claimed[mine] > 1:
            return LearnResult(False, f"already learned as {name}", already=True)
        moved = claimed[other] > 0
        try:
            if moved:
                await self._backend.learn(tokens, not is_spam, user, delta=-1)
            await self._backend.learn(tokens, is_spam, user)
        except StoreError:
            await self._release(key, mine)
            raise
        if moved:
            await self._store.hincrby(key, {other: -claimed[other]})
            return LearnResult(True, f"relearned as {name} (was {class_name(not is_spam)})")
        return LearnResult(True, f"learned as {name}")

    async def _release(self, key: str, field: str) -> None:
        # When the store is gone, the claim stays until the record expires.
        with contextlib.suppress(StoreError):
            await self._store.hincrby(key, {field: -1})


@dataclass(slots=True, frozen=True)
class AutolearnPolicy:
    """The ``[bayes.autolearn]`` settings, resolved (see the module docstring)."""

    spam_threshold: float
    ham_threshold: float
    veto_probability: float = 0.9
    sure_probability: float = 0.99
    max_imbalance: float = 5.0


@dataclass(slots=True, frozen=True)
class Verdict:
    """What autolearn needs to know about a finished scan."""

    score_without_bayes: float
    is_spam_action: bool  # add header or worse
    is_no_action: bool
    decided: bool  # a pre-result or a forced action made the verdict
    partial: bool
    engine_symbols: bool  # any ENGINE_* symbol
    bayes_probability: float | None  # P(spam), None when Bayes was silent


def autolearn_class(
    verdict: Verdict, policy: AutolearnPolicy, learns: tuple[int, int], min_learns: int = 0
) -> tuple[bool | None, str]:
    """``(is_spam, why)``: the class to learn the message as, or None and why not.

    ``learns`` are the (spam, ham) messages learned so far.
    """
    if verdict.decided:
        return None, "the action was forced, not scored"
    if verdict.partial or verdict.engine_symbols:
        return None, "the scan was incomplete"
    score = verdict.score_without_bayes
    if verdict.is_spam_action and score >= policy.spam_threshold:
        is_spam = True
    elif verdict.is_no_action and score <= policy.ham_threshold:
        is_spam = False
    else:
        return None, "the score is not clear enough"
    p = verdict.bayes_probability
    if p is not None:
        mine = p if is_spam else 1.0 - p
        if 1.0 - mine >= policy.veto_probability:
            return None, f"bayes disagrees ({(1.0 - mine) * 100:.1f}% the other way)"
        if mine >= policy.sure_probability:
            return None, f"bayes is already sure ({mine * 100:.1f}%)"
    spam, ham = learns
    this, that = (spam, ham) if is_spam else (ham, spam)
    if this >= min_learns and this >= policy.max_imbalance * max(that, 1):
        return None, f"{class_name(is_spam)} already has {this} learns to {that}"
    return is_spam, "autolearn"
