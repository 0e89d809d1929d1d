"""The supervisor with real processes: Postfix → milterd (supervisor + 2 scanning workers +
a controller) under a stream of messages, while a worker is killed with SIGKILL, the
configuration is reloaded (good and broken) and the daemon is stopped.

milterd takes over the session's milter port (the one Postfix's main service uses) for
the test, then gives it back: the next test's ``milterd.use`` starts the usual daemon.
The controller listens on a unix socket in the test's directory (unix clients are
trusted), so ``milterd status`` is asked exactly as an operator would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from e2e_support import WAIT, Reply, _die_with_parent, dump_logs, message, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from e2e_support import Milterd, Postfix

pytestmark = [pytest.mark.e2e, pytest.mark.postfix]

BASE = '[options]\ngtube_patterns = "all"\n'
# Every delivered message gets X-Spam: Yes (the add header rung at a threshold no score
# stays under), so a message shows which configuration scanned it.
MARKING = BASE + "[actions]\nadd_header = -1000.0\ngreylist = false\n"
BROKEN = BASE + '[actions]\nreject = "high"\n'


class Supervised:
    """``milterd run --workers 2`` on the milter port Postfix uses."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.config_dir = workdir / "etc"
        self.config_dir.mkdir()
        self.control = workdir / "ctl.sock"
        self.log_path = workdir / "milterd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, config: str) -> None:
        self.write_config(config)
        env = {**os.environ, "MILTERD_DATA_DIR": str(self.workdir / "data")}
        env.pop("MILTERD_MILTER_LISTEN", None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "milterd",
                    "run",
                    "--workers",
                    "2",
                    "--config-dir",
                    str(self.config_dir),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--http-listen",
                    "off",
                    "--controller-listen",
                    f"unix:{self.control}",
                    "--log-level",
                    "info",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                preexec_fn=_die_with_parent,
            )
        self.wait_log(r"serving: 2 scanning workers and a controller")

    def write_config(self, config: str) -> None:
        (self.config_dir / "milterd.toml").write_text(config)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=WAIT * 3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def status(self) -> dict[str, object]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "milterd",
                "status",
                "--connect",
                f"unix:{self.control}",
                "--json",
                "--config-dir",
                str(self.workdir / "no-config"),
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        ).stdout
        data = json.loads(out)
        assert isinstance(data, dict)
        return data

    def scanning_pids(self) -> set[int]:
        workers = self.status()["workers"]
        assert isinstance(workers, list)
        return {w["pid"] for w in workers if w["kind"] == "scan" and w["state"] == "serving"}

    def log_text(self, offset: int = 0) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def wait_log(self, pattern: str, offset: int = 0, timeout: float = WAIT * 2) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"milterd exited with {self.proc.returncode}")
            return re.search(pattern, self.log_text(offset)) is not None

        wait_for(f"milterd log line /{pattern}/", seen, timeout)


@pytest.fixture
def supervised(
    milterd_server: Milterd,
    postfix_instance: Postfix,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Supervised]:
    milterd_server.stop()  # the port is ours for this test; the next test restarts it
    daemon = Supervised(tmp_path, milterd_server.port)
    try:
        yield daemon
    finally:
        status = daemon.stop()
        text = daemon.log_text()
        failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
        if status not in (0, None) or failed:
            dump_logs(request, tmp_path, {"milterd.log": text})
        assert status in (0, None), f"milterd exited with {status}"
        assert "Traceback" not in text, text


def send_until_accepted(postfix: Postfix, data: bytes, tries: int = 5) -> list[Reply]:
    """Send as an MTA would: a 4xx answer is tried again; returns every reply."""
    replies: list[Reply] = []
    for _ in range(tries):
        reply = postfix.send(data)
        replies.append(reply)
        if reply.code < 400 or reply.code >= 500:
            break
        time.sleep(0.2)
    return replies


class Stream:
    """Messages sent through Postfix by ``senders`` threads until stopped."""

    def __init__(self, postfix: Postfix, subject: str, senders: int = 3) -> None:
        self.postfix = postfix
        self.subject = subject
        self.replies: list[list[Reply]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(senders)
        self._futures = [self._pool.submit(self._run, i) for i in range(senders)]

    def _run(self, sender: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            replies = send_until_accepted(
                self.postfix, message(f"{self.subject} {sender}-{n}", msgid=None)
            )
            with self._lock:
                self.replies.append(replies)

    def stop(self) -> list[list[Reply]]:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=WAIT * 4)
        self._pool.shutdown()
        return self.replies

    def count(self) -> int:
        with self._lock:
            return len(self.replies)


def assert_all_delivered(postfix: Postfix, outcomes: list[list[Reply]]) -> None:
    """Every message was answered and finally accepted (none bounced, none lost)."""
    assert outcomes, "no message was sent"
    for replies in outcomes:
        assert all(r.code < 500 for r in replies), replies  # never refused for good
        final = replies[-1]
        assert final.code == 250, replies
        assert final.queue_id is not None
        postfix.delivered(final.queue_id)


def test_kill_9_of_a_scanning_worker_loses_no_message(
    supervised: Supervised, postfix_instance: Postfix
) -> None:
    supervised.start(BASE)
    before = supervised.scanning_pids()
    assert len(before) == 2
    offset = supervised.log_offset()
    stream = Stream(postfix_instance, "under kill")
    wait_for("a few messages through", lambda: stream.count() >= 6, WAIT * 2)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    supervised.wait_log(rf"scan#\d \(pid {victim}, generation 1\) killed by signal SIGKILL", offset)
    supervised.wait_log(r"started worker scan#\d \(pid \d+, generation 1\)", offset)
    wait_for("messages after the kill", lambda: stream.count() >= 20, WAIT * 3)
    outcomes = stream.stop()

    assert_all_delivered(postfix_instance, outcomes)

    def replaced() -> set[int] | None:
        pids = supervised.scanning_pids()
        return pids if len(pids) == 2 and victim not in pids else None

    after = wait_for("a new scanning worker to serve", replaced)
    assert victim not in after
    assert len(after - before) == 1
    status = supervised.status()
    assert status["restarts"] == 1
    errors = status["last_errors"]
    assert isinstance(errors, list)
    assert any("SIGKILL" in str(e.get("message")) for e in errors)


def test_sighup_under_load_switches_threshold_without_a_failure(
    supervised: Supervised, postfix_instance: Postfix
) -> None:
    supervised.start(BASE)
    offset = supervised.log_offset()
    stream = Stream(postfix_instance, "under reload")
    # A session opened before the reload: its milter connection is an old worker's, which
    # must finish this message (under the old configuration) before it exits.
    with postfix_instance.session() as held:
        assert held.mail("alice@sender.test")[0] == 250
        assert held.rcpt("rcpt@example.test")[0] == 250
        wait_for("some messages through", lambda: stream.count() >= 4, WAIT * 2)
        supervised.write_config(MARKING)
        supervised.signal(signal.SIGHUP)
        supervised.wait_log(r"configuration reloaded: generation 2 serves", offset)
        code, text = held.data(message("held across the reload"))
        assert code == 250, text
    queued = re.search(rb"queued as ([0-9A-Za-z]+)", text)
    assert queued is not None
    old_config = postfix_instance.delivered(queued.group(1).decode())
    assert old_config.get_all("X-Spam") is None  # scanned by the old worker, old thresholds

    count = stream.count()
    wait_for("messages after the reload", lambda: stream.count() >= count + 6, WAIT * 3)
    outcomes = stream.stop()
    for replies in outcomes:  # no message failed, not even once
        assert [r.code for r in replies] == [250], replies
    fresh = postfix_instance.send(message("after the reload"))
    assert fresh.code == 250
    assert fresh.queue_id is not None
    assert postfix_instance.delivered(fresh.queue_id).get_all("X-Spam") == ["Yes"]
    assert supervised.status()["config_generation"] == 2


def test_sighup_with_a_broken_config_keeps_the_old_one_serving(
    supervised: Supervised, postfix_instance: Postfix
) -> None:
    supervised.start(MARKING)
    pids = supervised.scanning_pids()
    offset = supervised.log_offset()
    supervised.write_config(BROKEN)
    supervised.signal(signal.SIGHUP)
    supervised.wait_log(r"reload refused; still serving with configuration generation 1", offset)
    text = supervised.log_text(offset)
    assert re.search(r"ERROR .*actions\.reject", text), text  # the problem, with its key

    reply = postfix_instance.send(message("after a refused reload"))
    assert reply.code == 250
    assert reply.queue_id is not None
    assert postfix_instance.delivered(reply.queue_id).get_all("X-Spam") == ["Yes"]
    status = supervised.status()
    assert status["config_generation"] == 1
    assert supervised.scanning_pids() == pids


def test_sigterm_under_load_finishes_messages_in_flight(
    supervised: Supervised, postfix_instance: Postfix
) -> None:
    supervised.start(BASE)
    stream = Stream(postfix_instance, "under stop")
    wait_for("some messages through", lambda: stream.count() >= 4, WAIT * 2)
    with postfix_instance.session() as a, postfix_instance.session() as b:
        for held in (a, b):
            assert held.mail("alice@sender.test")[0] == 250
            assert held.rcpt("rcpt@example.test")[0] == 250
        offset = supervised.log_offset()
        supervised.signal(signal.SIGTERM)
        supervised.wait_log(r"SIGTERM: stopping", offset)
        queue_ids = []
        for held in (a, b):
            code, text = held.data(message("in flight at SIGTERM"))
            assert code == 250, text
            found = re.search(rb"queued as ([0-9A-Za-z]+)", text)
            assert found is not None
            queue_ids.append(found.group(1).decode())
    for queue_id in queue_ids:  # scanned (result headers) and delivered
        assert postfix_instance.delivered(queue_id).get_all("X-Spamd-Result")
    stream.stop()  # messages after the stop are refused by Postfix (tempfail): not ours
    assert supervised.stop() == 0


def _controller(
    supervised: Supervised, path: str, body: object, headers: Sequence[tuple[str, str]] = ()
) -> tuple[int, object]:
    """POST to the controller as an operator's script would (the unix socket is trusted)."""
    import trio

    from milterd.client import http_request

    data = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def post() -> tuple[int, object]:
        with trio.fail_after(WAIT * 3):
            reply = await http_request(
                f"unix:{supervised.control}", "POST", path, headers=headers, body=data
            )
        return reply.status, json.loads(reply.body)

    return trio.run(post)


def test_a_controller_save_reloads_every_worker(
    supervised: Supervised, postfix_instance: Postfix
) -> None:
    """/saveactions under the supervisor: the change reaches the scanning workers (the
    controller asks the supervisor for the reload) and is in force when the answer comes;
    two saves in a row both land; a refused one is undone and the old workers serve on."""
    supervised.start(BASE)
    pids = supervised.scanning_pids()

    status, answer = _controller(supervised, "/saveactions", {"greylist": None})
    assert (status, answer) == (200, {"success": True})
    status, answer = _controller(supervised, "/saveactions", {"add header": -1000})
    assert (status, answer) == (200, {"success": True})
    reply = postfix_instance.send(message("after two saves"))
    assert reply.code == 250
    assert reply.queue_id is not None
    assert postfix_instance.delivered(reply.queue_id).get_all("X-Spam") == ["Yes"]
    assert supervised.scanning_pids().isdisjoint(pids)  # new workers read the new files
    generation = supervised.status()["config_generation"]
    assert isinstance(generation, int)
    assert generation >= 2

    status, answer = _controller(
        supervised, "/savemap", b"text/html not-a-weight\n", [("Map", "mime_types.map")]
    )
    assert status == 409, answer  # refused by the engine: undone, nothing reloaded
    assert not (supervised.config_dir / "maps" / "mime_types.map").exists()
    assert supervised.status()["config_generation"] == generation


def _stat_scanned(supervised: Supervised) -> int:
    import trio

    from milterd.client import http_request

    async def get() -> int:
        with trio.fail_after(WAIT):
            reply = await http_request(f"unix:{supervised.control}", "GET", "/stat")
        scanned = json.loads(reply.body)["scanned"]
        assert isinstance(scanned, int)
        return scanned

    return trio.run(get)


def test_statistics_survive_reloads(supervised: Supervised, postfix_instance: Postfix) -> None:
    """A reload replaces the controller too: the new one starts from the totals the old
    one kept in the Store, so /stat never goes back (as Rspamd's does not at a reload)."""
    supervised.start(BASE)
    for n in range(3):
        assert postfix_instance.send(message(f"counted {n}")).code == 250
    wait_for("three scans in /stat", lambda: _stat_scanned(supervised) >= 3, WAIT * 2)
    for generation in (2, 3):  # twice: the second controller must hand on what it got
        offset = supervised.log_offset()
        time.sleep(1.5)  # the carried totals are written within a report period
        supervised.signal(signal.SIGHUP)
        supervised.wait_log(rf"configuration reloaded: generation {generation} serves", offset)
        assert postfix_instance.send(message(f"after reload {generation}")).code == 250
        want = 3 + generation - 1
        wait_for(
            f"{want} scans in /stat after the reload",
            lambda want=want: _stat_scanned(supervised) >= want,
            WAIT * 2,
        )
