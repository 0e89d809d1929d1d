"""GTUBE: the Generic Test for Unsolicited Bulk Email, as Rspamd honours it.

The standard string (``XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X``)
in a text part forces reject. With ``gtube_patterns = "all"`` the same string starting
``YJS`` forces add header, ``ZJS`` rewrite subject and ``AJS`` no action, so a deployment
can be tested rung by rung end to end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.modules.base import Module, check
from engine.pipeline.actions import Action
from engine.pipeline.stages import Stage
from engine.symbols.spec import SymbolSpec

if TYPE_CHECKING:
    from engine.task.task import Task

_TAIL = "JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
_MARKER = b"GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL"
_ACTIONS = {
    "X": Action.REJECT,
    "Y": Action.ADD_HEADER,
    "Z": Action.REWRITE_SUBJECT,
    "A": Action.NO_ACTION,
}


class Gtube(Module):
    name = "gtube"
    description = "GTUBE test strings force an action, for testing a deployment end to end."
    symbols = (SymbolSpec("GTUBE", 0.0, "gtube", "GTUBE test string found"),)

    def setup(self) -> None:
        mode = self.ctx.config.section("options")["gtube_patterns"]
        self.accepted = (
            {}
            if mode == "disabled"
            else (dict(_ACTIONS) if mode == "all" else {"X": Action.REJECT})
        )

    @check(produces=("GTUBE",), stage=Stage.PRE, priority=100)
    def find(self, task: Task) -> None:
        if not self.accepted:
            return
        # A byte search rules out nearly every message before any MIME decoding; encoded
        # text parts are still decoded when the marker is not in plain sight.
        if _MARKER not in task.message.body and not _has_encoded_text(task):
            return
        for part in task.message.text_parts:
            at = part.text.find(_TAIL, 1)  # from 1: the letter before the tail decides
            while at > 0:
                action = self.accepted.get(part.text[at - 1])
                if action is not None:
                    task.insert_result("GTUBE", options=[action.value])
                    task.set_pre_result(action, self.name, "Gtube pattern")
                    return
                at = part.text.find(_TAIL, at + 1)


def _has_encoded_text(task: Task) -> bool:
    return any(p.is_text and p.cte in ("base64", "quoted-printable") for p in task.message.leaves)
