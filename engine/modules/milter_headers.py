"""Result headers for the delivered message: X-Spamd-Result, X-Spam-Status and friends.

The headers go into the result's ``milter`` block (as in Rspamd's ``/checkv2`` answer), so
the milter applies them and an HTTP client can too. Headers of the same names that
arrive from upstream are removed first (``remove_upstream``): a sender must not be able
to pre-fill our verdict.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from engine.config.schema import Key, Section
from engine.modules.base import Module, check
from engine.pipeline.actions import Action
from engine.pipeline.stages import Stage

if TYPE_CHECKING:
    from engine.task.task import Task

ROUTINES = ("x-spamd-result", "x-spam-status", "x-spamd-bar", "x-spam-level")
_HEADER_NAMES = {
    "x-spamd-result": "X-Spamd-Result",
    "x-spam-status": "X-Spam-Status",
    "x-spamd-bar": "X-Spamd-Bar",
    "x-spam-level": "X-Spam-Level",
}
_NOT_SPAM = (Action.NO_ACTION, Action.GREYLIST)


def _routines(value: object) -> str | None:
    unknown = [r for r in value if r not in ROUTINES] if isinstance(value, list) else ["?"]
    return f"unknown routines {unknown}; known: {', '.join(ROUTINES)}" if unknown else None


class MilterHeaders(Module):
    name = "milter_headers"
    description = "Headers describing the verdict, added to every scanned message."
    settings_schema = Section(
        {
            "use": Key(
                (list,),
                ["x-spamd-result", "x-spam-status"],
                "Which headers to add.",
                check=_routines,
            ),
            "remove_upstream": Key(
                (bool,), True, "Remove same-named headers that came with the mail."
            ),
        }
    )

    @check(produces=(), stage=Stage.IDEMPOTENT, priority=10)
    def headers(self, task: Task) -> None:
        use = self.settings["use"]
        assert isinstance(use, list)
        for routine in use:
            name = _HEADER_NAMES[routine]
            value = getattr(self, "_" + routine.replace("-", "_"))(task)
            if self.settings["remove_upstream"] and name in task.message.headers:
                task.milter.remove_headers[name] = 0
            if value is not None:
                task.milter.add_headers.append((name, value))

    @staticmethod
    def _x_spamd_result(task: Task) -> str:
        required = task.required_score
        lines = [f"default: {task.action is Action.REJECT} [{task.score:.2f} / {required:.2f}]"]
        for sym in sorted(task.scored.values(), key=lambda s: (-abs(s.score), s.name)):
            options = f"[{','.join(sym.options)}]" if sym.options else ""
            lines.append(f"{sym.name}({sym.score:.2f}){options}")
        # Folded with LF + tab: milter header values must not contain CR (Postfix doubles it).
        return ";\n\t".join(lines)

    @staticmethod
    def _x_spam_status(task: Task) -> str:
        verdict = "No" if task.action in _NOT_SPAM else "Yes"
        return f"{verdict}, score={task.score:.2f}"

    @staticmethod
    def _x_spamd_bar(task: Task) -> str:
        if task.score >= 1:
            return "+" * min(math.floor(task.score), 50)
        if task.score <= -1:
            return "-" * min(math.floor(-task.score), 50)
        return "/"

    @staticmethod
    def _x_spam_level(task: Task) -> str | None:
        return "*" * min(math.floor(task.score), 50) if task.score >= 1 else None
