"""Runs the checks of one stage, isolating each one.

Theory of operation:

* PRE, POST and IDEMPOTENT checks run one at a time in priority order; a PRE check that
  sets a pre-result ends the stage.
* FILTER and CLASSIFY checks run concurrently in one nursery. Plain-function checks are
  CPU-only; they run inline (no task, no scheduling cost) as soon as their dependencies
  are done. Coroutine checks start in the nursery, wait for their dependencies, and run
  under their own ``move_on_after``.
* Rule 1: a check never fails a scan. An exception becomes ``ENGINE_MODULE_ERROR`` (the
  check as its option) plus a logged traceback; a timeout becomes
  ``ENGINE_MODULE_TIMEOUT``.
* Rule 2: cancellation always propagates: the scan's own deadline is the caller's
  cancel scope, and the stage ends with whatever finished.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import trio

from engine.pipeline.stages import Stage

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from engine.symbols.spec import CheckSpec
    from engine.task.task import Task

__all__ = ["MODULE_ERROR", "MODULE_TIMEOUT", "run_stage"]

log = logging.getLogger(__name__)

MODULE_ERROR = "ENGINE_MODULE_ERROR"
MODULE_TIMEOUT = "ENGINE_MODULE_TIMEOUT"

_SEQUENTIAL = frozenset({Stage.PRE, Stage.POST, Stage.IDEMPOTENT})


async def run_stage(
    stage: Stage, checks: list[CheckSpec], task: Task, default_timeout: float
) -> None:
    if not checks:
        return
    if stage in _SEQUENTIAL:
        for check in checks:
            await _run_one(check, task, default_timeout)
            if stage is Stage.PRE and task.pre_result is not None:
                return
        return
    if not any(c.is_async for c in checks):
        for check in checks:  # dependency order; nothing to wait for
            _run_sync(check, task)
        return
    await _run_concurrently(checks, task, default_timeout)


async def _run_concurrently(checks: list[CheckSpec], task: Task, default_timeout: float) -> None:
    done = {c.name: trio.Event() for c in checks}
    async with trio.open_nursery() as nursery:
        for check in checks:
            if check.is_async or any(not done[d].is_set() for d in check.depends_on):
                nursery.start_soon(_run_after_deps, check, task, done, default_timeout)
            else:
                _run_sync(check, task)
                done[check.name].set()


async def _run_after_deps(
    check: CheckSpec, task: Task, done: dict[str, trio.Event], default_timeout: float
) -> None:
    for dep in check.depends_on:
        await done[dep].wait()
    try:
        await _run_one(check, task, default_timeout)
    finally:
        done[check.name].set()


async def _run_one(check: CheckSpec, task: Task, default_timeout: float) -> None:
    if not check.is_async:
        _run_sync(check, task)
        return
    timeout = check.timeout if check.timeout is not None else default_timeout
    with trio.move_on_after(timeout) as scope:
        try:
            await cast("Awaitable[None]", check.run(task))
        # Isolation boundary: a module's bug must cost its own symbols, not the message.
        except Exception:
            _report_error(check, task)
    if scope.cancelled_caught:
        log.warning("check %s timed out after %.3gs", check.name, timeout)
        task.insert_result(MODULE_TIMEOUT, options=[check.name])


def _run_sync(check: CheckSpec, task: Task) -> None:
    try:
        check.run(task)
    # Isolation boundary: a module's bug must cost its own symbols, not the message.
    except Exception:
        _report_error(check, task)


def _report_error(check: CheckSpec, task: Task) -> None:
    log.exception("check %s (module %s) failed", check.name, check.module)
    task.insert_result(MODULE_ERROR, options=[check.name])
