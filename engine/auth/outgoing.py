"""The message as the MTA will pass it on, for the signatures made over it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.pipeline.actions import Action

if TYPE_CHECKING:
    from engine.config.loader import Config
    from engine.task.task import Task

__all__ = ["outgoing_headers"]


def outgoing_headers(task: Task, config: Config) -> list[tuple[str, str]]:
    """The headers after the verdict's edits that a signature covers: with a rewrite
    subject verdict the milter changes the first Subject (``milterd/verdict.py``), so a
    signature made over the old one would arrive broken."""
    headers = list(task.message.headers)
    if task.action is not Action.REWRITE_SUBJECT:
        return headers
    template = str(config.section("actions")["subject"])
    subject = template.replace("%s", task.message.subject or "")
    for index, (name, _) in enumerate(headers):
        if name.lower() == "subject":
            headers[index] = (name, subject)
            break
    return headers
