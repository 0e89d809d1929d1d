"""The result of a scan, in the shape of Rspamd's ``/checkv2`` answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.pipeline.actions import Action, ForcedAction
    from engine.symbols.results import ScoredSymbol

__all__ = ["ScanResult"]


@dataclass(slots=True, frozen=True)
class ScanResult:
    """What the engine decided about one message.

    ``partial`` is true when the scan's deadline passed or a stage could not finish; the
    result then holds what did finish. ``subject`` is the rewritten Subject when the
    action is rewrite subject. ``settings_id`` names the ``[settings.NAME]`` table that
    applied (``None``: the global configuration); the JSON carries it only when set, so
    the answer stays Rspamd's shape for clients that know nothing of it.
    """

    action: Action
    score: float
    required_score: float
    thresholds: Mapping[str, float]
    symbols: Mapping[str, ScoredSymbol]
    message_id: str = ""
    messages: Mapping[str, str] = field(default_factory=dict)
    subject: str | None = None
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: Mapping[str, int] = field(default_factory=dict)
    forced: ForcedAction | None = None
    partial: bool = False
    time_real: float = 0.0
    settings_id: str | None = None

    def to_json(self) -> dict[str, object]:
        """The ``/checkv2`` JSON object (Rspamd's field names and value shapes)."""
        out: dict[str, object] = {
            "is_skipped": False,
            "score": self.score,
            "required_score": self.required_score,
            "action": self.action.value,
            "thresholds": dict(self.thresholds),
            "symbols": {name: _symbol_json(sym) for name, sym in self.symbols.items()},
            "messages": dict(self.messages),
            "message-id": self.message_id,
            "time_real": round(self.time_real, 6),
            "milter": self._milter_json(),
        }
        if self.subject is not None:
            out["subject"] = self.subject
        if self.forced is not None:
            out["passthrough_module"] = self.forced.module
        if self.partial:
            out["partial"] = True
        if self.settings_id is not None:
            out["settings_id"] = self.settings_id
        return out

    def _milter_json(self) -> dict[str, object]:
        add: dict[str, object] = {}
        for name, value in self.add_headers:
            entry = {"value": value, "order": 0}
            previous = add.get(name)
            if previous is None:
                add[name] = entry
            elif isinstance(previous, list):
                previous.append(entry)
            else:
                add[name] = [previous, entry]
        return {"add_headers": add, "remove_headers": dict(self.remove_headers)}


def _symbol_json(sym: ScoredSymbol) -> dict[str, object]:
    out: dict[str, object] = {
        "name": sym.name,
        "score": sym.score,
        "metric_score": sym.metric_score,
    }
    if sym.description:
        out["description"] = sym.description
    if sym.options:
        out["options"] = list(sym.options)
    return out
