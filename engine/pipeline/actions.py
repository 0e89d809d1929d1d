"""The six-rung action ladder: thresholds (and forced actions) → the action to take."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Action", "ForcedAction", "Thresholds"]


class Action(Enum):
    """The rungs, weakest first. Values are Rspamd's names (with spaces), as on the wire."""

    NO_ACTION = "no action"
    GREYLIST = "greylist"
    ADD_HEADER = "add header"
    REWRITE_SUBJECT = "rewrite subject"
    SOFT_REJECT = "soft reject"
    REJECT = "reject"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def config_key(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Action:
        """Accept ``add header``, ``add_header`` and Rspamd's alias ``accept``."""
        key = text.strip().lower().replace("_", " ")
        if key == "accept":
            return cls.NO_ACTION
        return cls(key)


_RANK = {action: i for i, action in enumerate(Action)}


@dataclass(slots=True, frozen=True)
class ForcedAction:
    """An action set by a module regardless of the score (GTUBE, a whitelist, a rate limit)."""

    action: Action
    module: str
    message: str | None = None


@dataclass(slots=True, frozen=True)
class Thresholds:
    """Score thresholds per rung; ``None`` switches a rung off."""

    levels: Mapping[Action, float | None]

    def action_for(self, score: float) -> Action:
        """The rung with the highest threshold the score reaches (Rspamd's rule)."""
        best = Action.NO_ACTION
        best_threshold = float("-inf")
        for action, threshold in self.levels.items():
            if threshold is None or score < threshold:
                continue
            if threshold > best_threshold or (
                threshold == best_threshold and action.rank > best.rank
            ):
                best, best_threshold = action, threshold
        return best

    @property
    def required_score(self) -> float:
        """The reject threshold, or the highest one configured (what ``required_score`` shows)."""
        reject = self.levels.get(Action.REJECT)
        if reject is not None:
            return reject
        configured = [t for t in self.levels.values() if t is not None]
        return max(configured, default=0.0)

    def as_dict(self) -> dict[str, float]:
        return {a.value: t for a, t in self.levels.items() if t is not None}
