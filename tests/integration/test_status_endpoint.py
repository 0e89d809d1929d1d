"""``/status`` of a one-process daemon (``milterd run --single``): itself as the only
worker, its messages, and the configuration generation that a reload advances.
The supervisor's ``/status`` is asserted end to end (tests/e2e/test_supervisor_e2e.py)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from test_http_controller import READ, _json, controller, no_error_logs, start

if TYPE_CHECKING:
    from test_http_controller import Controller

__all__ = ["controller", "no_error_logs", "start"]  # fixtures, re-used


async def test_status_of_a_single_process_daemon(controller: Controller) -> None:
    await controller.scan()
    status = _json(await controller.call("/status", READ))
    assert isinstance(status, dict)
    assert (status["mode"], status["pid"], status["config_generation"]) == (
        "single",
        os.getpid(),
        1,
    )
    [worker] = status["workers"]
    assert worker["messages"] == 1
    assert worker["kind"] == "single"
    assert await controller.daemon.reload()
    status = _json(await controller.call("/status", READ))
    assert status["config_generation"] == 2  # type: ignore[index]


async def test_status_needs_the_read_password(controller: Controller) -> None:
    assert (await controller.call("/status", None)).status == 403
