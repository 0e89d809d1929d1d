"""Bayes: the statistical classifier's verdict, learning and autolearn.

The ``classify`` check (stage CLASSIFY) tokenises the message (``engine/stats/tokenizer``),
reads every token's counts in one round trip and inserts ``BAYES_SPAM`` or ``BAYES_HAM``
with Rspamd's dynamic weight and the class probability as the option ("97.25%"). It stays
silent while either class has fewer than ``min_learns`` learned messages, for messages
of fewer than ``min_tokens`` tokens, and when the store cannot answer: statistics are
evidence, and a message is never held back for want of them.

Learning goes through ``Bayes.learn`` (``Engine.learn``: ``milterd learn``, the controller)
and, after a scan, the ``autolearn`` check (stage IDEMPOTENT), both through the learn cache
of ``engine/stats/learn.py``, whose docstring gives the autolearn guards.

The learn counts are read once every ``_LEARNS_TTL`` seconds per statistics owner and
process, not once per message: they change by one per learn, and a few seconds of delay
in reaching ``min_learns`` or in the rescaling of counts changes no verdict, while the
read would be a second round trip per scan.

Per-user statistics (``per_user``): the owner is the message's first envelope recipient,
lower-cased; each owner has its own counts and learns, and a message without recipients
uses the shared ones. ``milterd learn --user`` learns into an owner's statistics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from engine.config.schema import Key, Section, at_least, between
from engine.errors import ConfigError
from engine.modules.base import Module, check
from engine.pipeline.actions import Action
from engine.pipeline.stages import Stage
from engine.stats.classifier import (
    BAYES_HAM,
    BAYES_SPAM,
    BayesParams,
    Classification,
    bayes_symbol,
    classify,
)
from engine.stats.learn import (
    AutolearnPolicy,
    Learner,
    LearnResult,
    Verdict,
    autolearn_class,
    class_name,
    message_digest,
)
from engine.stats.store_backend import StoreStatBackend
from engine.stats.tokenizer import DEFAULT_CLASSIFY_HEADERS, Tokenizer, TokenizerConfig
from engine.storage import StoreError
from engine.symbols.spec import SymbolSpec
from engine.task.stash import StashKey

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.mime.message import ParsedMessage
    from engine.task.envelope import Envelope
    from engine.task.task import Task

__all__ = ["BAYES_STATE", "Bayes", "BayesState", "Explanation", "TokenWeight"]

log = logging.getLogger(__name__)

_LEARNS_TTL: Final = 10.0  # seconds a process trusts its copy of the learn counts
_DAY: Final = 86400.0
_DEFAULT_SPAM_THRESHOLD: Final = 12.0  # when the reject rung is off
_LEARN_CACHE_PREFIX: Final = "bayes:lc:"


def _headers(value: object) -> str | None:
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        return "must be a list of header names"
    try:
        TokenizerConfig(classify_headers=tuple(value))
    except ValueError as exc:
        return str(exc)
    return None


def _expire(value: object) -> str | None:
    ok = isinstance(value, int | float) and (value == 0 or value >= 1)
    return None if ok else "must be 0 (never) or at least 1 day"


def _spam_threshold(value: object) -> str | None:
    return "must be a score or 'reject'" if isinstance(value, str) and value != "reject" else None


def _at_most_zero(value: object) -> str | None:
    return None if isinstance(value, int | float) and value <= 0 else "must be ≤ 0"


@dataclass(slots=True)
class BayesState:
    """What ``classify`` found, for ``autolearn`` later in the same scan."""

    tokens: list[int]
    owner: str | None
    learns: tuple[int, int] | None = None  # None: the store did not answer
    classification: Classification | None = None


BAYES_STATE: Final = StashKey[BayesState]("bayes")


@dataclass(slots=True, frozen=True)
class TokenWeight:
    """One token of the "why" display: what it reads as, its counts and f(t)."""

    name: str
    spam: int
    ham: int
    probability: float


@dataclass(slots=True, frozen=True)
class Explanation:
    """Why Bayes said what it said about one message (``milterd scan``)."""

    probability: float | None
    silent: str | None
    tokens_total: int
    tokens_used: int
    learns: tuple[int, int]
    owner: str | None
    top: list[TokenWeight] = field(default_factory=list)
    evidence: float = 0.0  # decades, positive for spam (engine.stats.classifier, step 5)

    def to_json(self) -> dict[str, object]:
        return {
            "probability": self.probability,
            "evidence": round(self.evidence, 2),
            "silent": self.silent,
            "tokens": self.tokens_total,
            "tokens_used": self.tokens_used,
            "learns": {"spam": self.learns[0], "ham": self.learns[1]},
            "user": self.owner,
            "top_tokens": [
                {
                    "token": t.name,
                    "spam": t.spam,
                    "ham": t.ham,
                    "probability": round(t.probability, 4),
                }
                for t in self.top
            ],
        }


class Bayes(Module):
    name = "bayes"
    description = "Statistical (Bayes) classification, learning and autolearn."
    symbols = (
        SymbolSpec(BAYES_SPAM, 5.1, "statistics", "Message probably spam, probability of spam"),
        SymbolSpec(BAYES_HAM, -3.0, "statistics", "Message probably ham, probability of ham"),
    )
    settings_schema = Section(
        {
            "min_learns": Key(
                (int,),
                200,
                "Spam and ham messages each that must have been learned before Bayes speaks.",
                check=at_least(0),
            ),
            "min_tokens": Key(
                (int,),
                11,
                "Messages with fewer tokens are neither classified nor learned.",
                check=at_least(0),
            ),
            "per_user": Key(
                (bool,),
                False,
                "Statistics of their own for each recipient (the first envelope recipient) "
                "instead of shared ones.",
            ),
            "classify_headers": Key(
                (list,),
                list(DEFAULT_CLASSIFY_HEADERS),
                "Headers whose features are tokens (collector and filter headers, X-Spam-* "
                "and the like, never are).",
                check=_headers,
            ),
            "expire": Key(
                (float,),
                100.0,
                "Days a token (and a learn cache record) lives after the last learn that "
                "touched it; 0 keeps them forever.",
                check=_expire,
            ),
            "autolearn": Section(
                {
                    "enabled": Key(
                        (bool,), False, "Learn clear verdicts after the scan (see the guards)."
                    ),
                    "spam_threshold": Key(
                        (float, str),
                        "reject",
                        "Learn as spam from this score (without Bayes' own), with an action of "
                        "add header or worse; 'reject': the reject threshold (12 when off).",
                        check=_spam_threshold,
                    ),
                    "ham_threshold": Key(
                        (float,),
                        -0.5,
                        "Learn as ham up to this score (without Bayes' own), with no action.",
                        check=_at_most_zero,
                    ),
                    "veto_probability": Key(
                        (float,),
                        0.9,
                        "Do not learn when Bayes gives the other class this probability.",
                        check=between(0.5, 1.0),
                    ),
                    "sure_probability": Key(
                        (float,),
                        0.99,
                        "Do not learn when Bayes already gives the class this probability.",
                        check=between(0.5, 1.0),
                    ),
                    "max_imbalance": Key(
                        (float,),
                        5.0,
                        "Stop learning a class that has this many times the other's learns "
                        "(and min_learns).",
                        check=at_least(1.0),
                    ),
                },
                "Autolearn: which scanned messages teach the classifier.",
            ),
        }
    )

    def setup(self) -> None:
        settings = self.settings
        headers = settings["classify_headers"]
        assert isinstance(headers, list)
        self.tokenizer = Tokenizer(TokenizerConfig(classify_headers=tuple(headers)))
        self.params = BayesParams(
            min_learns=int(settings["min_learns"]),  # type: ignore[call-overload]
            min_tokens=int(settings["min_tokens"]),  # type: ignore[call-overload]
        )
        self.per_user = bool(settings["per_user"])
        expire = float(settings["expire"])  # type: ignore[arg-type]
        ttl = expire * _DAY if expire else None
        store = self.ctx.store
        self.backend = StoreStatBackend(store, token_ttl=ttl)
        self.learner = Learner(self.backend, store, prefix=_LEARN_CACHE_PREFIX, ttl=ttl)
        autolearn = settings["autolearn"]
        assert isinstance(autolearn, dict)
        self.autolearn_enabled = bool(autolearn["enabled"])
        self.policy = self._policy(autolearn)
        self._learns: dict[str | None, tuple[float, tuple[int, int]]] = {}

    def _policy(self, autolearn: Mapping[str, object]) -> AutolearnPolicy:
        spam = autolearn["spam_threshold"]
        ham_threshold = float(autolearn["ham_threshold"])  # type: ignore[arg-type]
        if spam == "reject":
            reject = self.ctx.config.section("actions")["reject"]
            spam = _DEFAULT_SPAM_THRESHOLD if reject is False else reject
            if float(spam) <= ham_threshold:  # type: ignore[arg-type]
                # A site that rejects at a very low score (a test rig, a trap address)
                # must not autolearn everything as spam; the default threshold holds.
                spam = _DEFAULT_SPAM_THRESHOLD
        spam_threshold = float(spam)  # type: ignore[arg-type]
        if spam_threshold <= ham_threshold:
            where = (self.name, "autolearn", "spam_threshold")
            message = f"must be above ham_threshold ({ham_threshold})"
            raise ConfigError([self.ctx.config.problem(where, message)])
        return AutolearnPolicy(
            spam_threshold,
            ham_threshold,
            veto_probability=float(autolearn["veto_probability"]),  # type: ignore[arg-type]
            sure_probability=float(autolearn["sure_probability"]),  # type: ignore[arg-type]
            max_imbalance=float(autolearn["max_imbalance"]),  # type: ignore[arg-type]
        )

    # -- scanning -----------------------------------------------------------------------

    @check(produces=(BAYES_SPAM, BAYES_HAM), stage=Stage.CLASSIFY)
    async def classify(self, task: Task) -> None:
        owner = self.owner(task.envelope)
        try:
            learns = await self.learn_counts(owner)
            if min(learns) < max(self.params.min_learns, 1) and not self.autolearn_enabled:
                return  # silent, and nothing would use the tokens: spare their 0.3 ms
            tokens = list(self.tokenizer.tokenize(task.message, task.envelope))
            state = BayesState(tokens, owner, learns)
            task.stash[BAYES_STATE] = state
            state.classification = await self._classify(tokens, owner, learns)
        except StoreError as exc:
            log.warning("bayes: store unavailable (%s); no Bayes verdict for this message", exc)
            return
        hit = bayes_symbol(state.classification, self.params)
        if hit is not None:
            name, weight, option = hit
            task.insert_result(name, weight, [option])

    async def _classify(
        self, tokens: list[int], owner: str | None, learns: tuple[int, int]
    ) -> Classification:
        params = self.params
        if min(learns) >= max(params.min_learns, 1) and len(tokens) >= params.min_tokens:
            counts = await self.backend.token_counts(tokens, owner)
        else:  # a gate keeps the classifier silent: the counts would not be read
            counts = [(0, 0)] * len(tokens)
        return classify(tokens, counts, learns[0], learns[1], params)

    async def learn_counts(self, owner: str | None) -> tuple[int, int]:
        """(spam, ham) learned, from this process's copy when it is fresh enough."""
        now = time.monotonic()
        cached = self._learns.get(owner)
        if cached is not None and cached[0] > now:
            return cached[1]
        learns = await self.backend.learn_counts(owner)
        if len(self._learns) > 1024:  # per-user statistics: bound the copies kept
            self._learns.clear()
        self._learns[owner] = (now + _LEARNS_TTL, learns)
        return learns

    def owner(self, envelope: Envelope) -> str | None:
        """Whose statistics a message uses: None (shared) unless ``per_user``."""
        if not self.per_user or not envelope.rcpts:
            return None
        return envelope.rcpts[0].strip().lower() or None

    # -- learning -----------------------------------------------------------------------

    async def learn(
        self, message: ParsedMessage, envelope: Envelope, *, is_spam: bool
    ) -> LearnResult:
        """Learn one message as spam or ham, through the learn cache.

        Raises:
            StoreError: the store could not answer; nothing was learned.
        """
        owner = self.owner(envelope)
        tokens = list(self.tokenizer.tokenize(message, envelope))
        if len(tokens) < self.params.min_tokens:
            return LearnResult(
                False, f"not learned: too few tokens ({len(tokens)} < {self.params.min_tokens})"
            )
        digest = message_digest(message.body, message.headers.get("message-id"), owner)
        result = await self.learner.learn(tokens, digest, is_spam=is_spam, user=owner)
        self._learns.pop(owner, None)  # this process sees its own learns at once
        return result

    @check(produces=(), stage=Stage.IDEMPOTENT)
    async def autolearn(self, task: Task) -> None:
        if not self.autolearn_enabled or BAYES_STATE not in task.stash:
            return  # off, or Bayes did not run (switched off by settings, a pre-result)
        state = task.stash[BAYES_STATE]
        if state.learns is None or state.classification is None:
            return  # the store did not answer
        if len(state.tokens) < self.params.min_tokens:
            return
        bayes_score = sum(task.scored[n].score for n in (BAYES_SPAM, BAYES_HAM) if n in task.scored)
        classification = state.classification
        verdict = Verdict(
            score_without_bayes=task.score - bayes_score,
            is_spam_action=task.action.rank >= Action.ADD_HEADER.rank,
            is_no_action=task.action is Action.NO_ACTION,
            decided=task.pre_result is not None or task.forced is not None,
            partial=task.partial,
            engine_symbols=any(name.startswith("ENGINE_") for name in task.hits),
            bayes_probability=None if classification is None else classification.probability,
        )
        is_spam, why = autolearn_class(verdict, self.policy, state.learns, self.params.min_learns)
        if is_spam is None:
            log.debug("bayes: not autolearned: %s", why)
            return
        message_id = task.message.headers.get("message-id")
        digest = message_digest(task.message.body, message_id, state.owner)
        try:
            result = await self.learner.learn(
                state.tokens, digest, is_spam=is_spam, user=state.owner
            )
        except StoreError as exc:
            log.warning("bayes: autolearn as %s failed: %s", class_name(is_spam), exc)
            return
        self._learns.pop(state.owner, None)
        log.info(
            "bayes: autolearn %s (score %.2f without bayes): %s",
            message_id or "(no Message-ID)",
            verdict.score_without_bayes,
            result.message,
        )

    # -- the "why" display ----------------------------------------------------------------

    async def explain(
        self, message: ParsedMessage, envelope: Envelope, top: int = 10
    ) -> Explanation:
        """Bayes' verdict on a message and the ``top`` tokens that weighed most, by name.

        Slow (it names every token) and read-only: for ``milterd scan``, not the scan path.

        Raises:
            StoreError: the store could not answer.
        """
        owner = self.owner(envelope)
        tokens = list(self.tokenizer.tokenize(message, envelope))
        learns = await self.backend.learn_counts(owner)
        result = await self._classify(tokens, owner, learns)
        names = self.tokenizer.explain(message, envelope)
        weights = [
            TokenWeight(names.get(t.token, f"{t.token:016x}"), t.spam, t.ham, t.probability)
            for t in result.top(top)
        ]
        return Explanation(
            result.probability,
            result.silent,
            result.tokens_total,
            result.tokens_used,
            learns,
            owner,
            weights,
            result.evidence,
        )
