"""Fixtures for the end-to-end tests (the machinery is in ``e2e_support``)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest
from e2e_support import (
    GarbageMilter,
    Milterd,
    MilterEndpoints,
    Postfix,
    dump_logs,
    error_lines,
    free_port,
    postfix_unavailable,
)

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from pathlib import Path

_failed_key = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[_failed_key] = True
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    return bool(request.node.stash.get(_failed_key, False))


@pytest.fixture(scope="session")
def milterd_server(tmp_path_factory: pytest.TempPathFactory, offline_dns: str) -> Iterator[Milterd]:
    server = Milterd(tmp_path_factory.mktemp("milterd"), free_port(), dns=offline_dns)
    yield server
    server.stop()
    assert not server.exit_problems, server.exit_problems


@pytest.fixture
def milterd(
    milterd_server: Milterd, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Milterd]:
    """The session's milterd; after the test, its log must hold no ERROR line."""
    offset = milterd_server.log_offset()
    problems_before = len(milterd_server.exit_problems)
    yield milterd_server
    text = milterd_server.log_text(offset)
    errors = error_lines(text)
    problems = milterd_server.exit_problems[problems_before:]
    if milterd_server.proc is not None and milterd_server.proc.poll() is not None:
        problems.append(f"milterd died during the test (status {milterd_server.proc.returncode})")
    if errors or problems or _test_failed(request):
        dump_logs(request, tmp_path, {"milterd.log": text})
    assert not errors, "milterd logged errors:\n" + "\n".join(errors)
    assert not problems, problems


@pytest.fixture(scope="session")
def milter_endpoints() -> Iterator[MilterEndpoints]:
    # Bound but never listening: every connect is refused, and no one else can take the port.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    garbage = GarbageMilter()
    yield MilterEndpoints(int(dead.getsockname()[1]), garbage)
    garbage.close()
    dead.close()


@pytest.fixture(scope="session")
def postfix_instance(
    milterd_server: Milterd, milter_endpoints: MilterEndpoints
) -> Iterator[Postfix]:
    reason = postfix_unavailable()
    if reason is not None:
        pytest.skip(reason)
    dead = f"inet:127.0.0.1:{milter_endpoints.dead_port}"
    garbage = f"inet:127.0.0.1:{milter_endpoints.garbage.port}"
    instance = Postfix(
        f"inet:{milterd_server.address}",
        {
            "dead_tempfail": {"smtpd_milters": dead, "milter_default_action": "tempfail"},
            "dead_accept": {"smtpd_milters": dead, "milter_default_action": "accept"},
            "garbage_tempfail": {"smtpd_milters": garbage, "milter_default_action": "tempfail"},
            "garbage_accept": {"smtpd_milters": garbage, "milter_default_action": "accept"},
            # relative to the queue directory, as a chrooted smtpd needs it
            "unix": {"smtpd_milters": "unix:milterd/milter.sock"},
        },
    )
    instance.up()
    milterd_server.add_listen(f"unix:{instance.milter_socket}")
    yield instance
    instance.down()


@pytest.fixture
def postfix(
    postfix_instance: Postfix, milterd: Milterd, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Postfix]:
    """The session's Postfix; after the test, no Postfix warning about milterd's connection."""
    offset = postfix_instance.log_offset()
    yield postfix_instance
    text = postfix_instance.log_text(offset)
    ours = f"inet:{milterd.address}"
    warnings = [line for line in text.splitlines() if "warning:" in line and ours in line]
    if warnings or _test_failed(request):
        dump_logs(request, tmp_path, {"maillog": text})
    assert not warnings, "Postfix warned about milterd:\n" + "\n".join(warnings)
