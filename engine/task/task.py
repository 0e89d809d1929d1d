"""One message's state while it is scanned."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.pipeline.actions import Action, ForcedAction
from engine.symbols.results import ScoredSymbol, SymbolHit
from engine.task.stash import Stash

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from engine.mime.message import ParsedMessage
    from engine.symbols.spec import SymbolSpec
    from engine.task.envelope import Envelope, ScanRequest

__all__ = ["MilterEdits", "Task", "UnknownSymbolError"]


class UnknownSymbolError(KeyError):
    """A check inserted a symbol nobody declared (a module bug; the executor reports it)."""


@dataclass(slots=True)
class MilterEdits:
    """Header edits that the MTA should apply (the result's ``milter`` block)."""

    add_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: dict[str, int] = field(default_factory=dict)  # name → 0 (all) or 1-based index


class Task:
    """Envelope, parsed message and everything the checks found so far.

    Checks read ``envelope`` and ``message`` and call ``insert_result``; the pipeline
    owns the rest. ``stash`` holds typed facts modules share.

    ``symbols`` are the specs in force for this message and ``disabled`` the symbols its
    settings switched off (``settings_id`` names those settings, ``None`` for the global
    configuration): inserting a disabled symbol does nothing, so a check need not know.
    """

    def __init__(
        self,
        request: ScanRequest,
        message: ParsedMessage,
        symbols: Mapping[str, SymbolSpec],
        *,
        disabled: frozenset[str] = frozenset(),
        settings_id: str | None = None,
    ) -> None:
        self.request = request
        self.envelope: Envelope = request.envelope
        self.message = message
        self.hits: dict[str, SymbolHit] = {}
        self.stash = Stash()
        self.forced: ForcedAction | None = None
        self.pre_result: ForcedAction | None = None
        self.messages: dict[str, str] = {}
        self.milter = MilterEdits()
        self.partial = False
        self.score = 0.0
        self.required_score = 0.0
        self.action = Action.NO_ACTION
        self.scored: dict[str, ScoredSymbol] = {}
        self.settings_id = settings_id
        self._symbols = symbols
        self._disabled = disabled

    @property
    def symbols(self) -> Mapping[str, SymbolSpec]:
        """Every declared symbol's spec as it holds for this message (scores included)."""
        return self._symbols

    @property
    def disabled(self) -> frozenset[str]:
        """The symbols this message's settings switched off."""
        return self._disabled

    def is_enabled(self, name: str) -> bool:
        """Whether inserting ``name`` would count: lets a check skip work for a symbol
        this message's settings switched off."""
        return name in self._symbols and name not in self._disabled

    def insert_result(self, name: str, weight: float = 1.0, options: Iterable[str] = ()) -> None:
        """Record that ``name`` matched; options merge on repeated inserts.

        A disabled symbol (see the class docstring) is dropped. A repeated insert keeps the
        strongest weight, or adds its weight when the symbol is not ``one_shot``.
        """
        spec = self._symbols.get(name)
        if spec is None:
            raise UnknownSymbolError(name)
        if name in self._disabled:
            return  # switched off by this message's settings: dropped without a word
        hit = self.hits.get(name)
        if hit is None:
            self.hits[name] = SymbolHit(name, weight, [str(o) for o in options])
            return
        if not spec.one_shot:
            hit.weight += weight
        elif abs(weight) > abs(hit.weight):
            hit.weight = weight
        for option in options:
            if option not in hit.options:
                hit.options.append(str(option))

    def has(self, name: str) -> bool:
        return name in self.hits

    def remove_result(self, name: str) -> None:
        self.hits.pop(name, None)

    def set_pre_result(self, action: Action, module: str, message: str | None = None) -> None:
        """Decide now and skip the remaining filters (pre-filters only)."""
        if self.pre_result is None:
            self.pre_result = ForcedAction(action, module, message)

    def force_action(self, action: Action, module: str, message: str | None = None) -> None:
        """Override the score's rung (post-filters); the strongest forced action wins."""
        if self.forced is None or action.rank > self.forced.action.rank:
            self.forced = ForcedAction(action, module, message)
