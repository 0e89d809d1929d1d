"""Rspamd's own client, ``rspamc`` (Debian package ``rspamd``), against ``milterd run``.

milterd runs as a real process with its shipped configuration, the scan API and the
controller on free loopback ports (never Rspamd's 11333/11334). Rspamd itself is never
started: only its client is used. What is asserted is what ``rspamc`` prints.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import pytest
from e2e_support import Milterd, dump_logs, error_lines, free_port, gtube, message

from engine import Engine
from milterd.http import hash_password

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("rspamc") is None, reason="rspamc (Debian: rspamd) missing"),
]

READ, ENABLE = "reader-secret", "admin-secret"
HAS_LEARN = hasattr(Engine, "learn")


class Rspamc:
    def __init__(self, server: Milterd, scan: int, controller: int, workdir: Path) -> None:
        self.server = server
        self.scan_address = f"127.0.0.1:{scan}"
        self.controller_address = f"127.0.0.1:{controller}"
        self.workdir = workdir

    def run(self, *args: str, controller: bool = False) -> str:
        """rspamc's standard output (its exit status says little: errors go to stdout)."""
        address = self.controller_address if controller else self.scan_address
        done = subprocess.run(
            ["rspamc", "-h", address, "-t", "10", *args],
            capture_output=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode >= 0, f"rspamc crashed (signal {-done.returncode})"
        return done.stdout.decode("utf-8", "replace")

    def file(self, name: str, content: bytes) -> str:
        path = self.workdir / name
        path.write_bytes(content)
        return str(path)


@pytest.fixture(scope="module")
def rspamc(tmp_path_factory: pytest.TempPathFactory, offline_dns: str) -> Iterator[Rspamc]:
    workdir = tmp_path_factory.mktemp("rspamc")
    scan, controller = free_port(), free_port()
    server = Milterd(workdir, free_port(), dns=offline_dns, http=True)
    server.use(
        f"""
[http]
listen = "127.0.0.1:{scan}"

[controller]
listen = "127.0.0.1:{controller}"
password = "{hash_password(READ, ln=6)}"
enable_password = "{hash_password(ENABLE, ln=6)}"
"""
    )
    yield Rspamc(server, scan, controller, workdir)
    server.stop()
    assert not server.exit_problems, server.exit_problems


@pytest.fixture
def checked(rspamc: Rspamc, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rspamc]:
    """After the test, milterd's log must hold no ERROR line."""
    offset = rspamc.server.log_offset()
    yield rspamc
    text = rspamc.server.log_text(offset)
    errors = error_lines(text)
    if errors:
        dump_logs(request, tmp_path, {"milterd.log": text})
    assert not errors, "milterd logged errors:\n" + "\n".join(errors)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "zstd"])
def test_rspamc_scans_and_prints_symbols_score_and_action(
    checked: Rspamc, compressed: bool
) -> None:
    path = checked.file("gtube.eml", gtube("X"))
    out = checked.run(*(["-z"] if compressed else []), path)
    assert "Action: reject" in out
    assert "Spam: true" in out
    assert "Symbol: GTUBE" in out
    assert "Score: " in out
    assert "/ 15.00" in out


def test_rspamc_sends_the_envelope(checked: Rspamc) -> None:
    path = checked.file("clean.eml", message())
    out = checked.run(
        "--ip", "203.0.113.5", "--helo", "mail.sender.test", "-F", "alice@sender.test",
        "-r", "rcpt@example.test", path,
    )  # fmt: skip
    assert "Action: no action" in out
    assert "Spam: false" in out
    assert "Message-ID: " in out


def test_rspamc_stat(checked: Rspamc) -> None:
    checked.run(checked.file("clean.eml", message()))
    # Scanning workers report their counters to the controller about once a second.
    deadline = time.monotonic() + 10
    while True:
        out = checked.run("-P", READ, "stat", controller=True)
        if "Messages scanned: 0\n" not in out or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "Messages scanned: " in out
    assert "Messages with action no action: " in out
    assert "Statfile: BAYES_SPAM" in out
    assert "Total learns: " in out
    scanned = int(out.split("Messages scanned: ")[1].split()[0])
    assert scanned >= 1


def test_rspamc_passwords(checked: Rspamc) -> None:
    assert "HTTP error: 403" in checked.run("-P", "wrong", "stat", controller=True)
    assert "HTTP error: 403" in checked.run("stat", controller=True)
    assert "HTTP error: 403" in checked.run("-P", READ, "stat_reset", controller=True)
    assert "Messages scanned: " in checked.run("-P", ENABLE, "stat_reset", controller=True)


def test_rspamc_learn_spam(checked: Rspamc) -> None:
    path = checked.file("spam.eml", message("cheap pills", "buy cheap pills now " * 20))
    out = checked.run("-P", ENABLE, "learn_spam", path, controller=True)
    if HAS_LEARN:
        assert "success = true" in out or "already" in out, out
    else:
        assert "HTTP error: 501" in out  # statistics not available yet
