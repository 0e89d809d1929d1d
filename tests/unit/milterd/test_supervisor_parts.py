"""The supervisor's pieces without forking: socket binding, exit-status wording, the
counters channel (worker reports summed, a departed worker folded in, /statreset), the
scan log line as text and as JSON, and the ``status`` printout."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING

import pytest

from engine import Action
from milterd.http.cluster import Cluster, send_report
from milterd.http.metrics import Metrics
from milterd.logging import JsonFormatter, LogSettings, log_scan
from milterd.status import format_status
from milterd.supervisor import bind_sockets, describe_status

if TYPE_CHECKING:
    from pathlib import Path


class _Result:
    """The parts of a ScanResult that metrics and the scan line read."""

    def __init__(self, action: Action, symbols: dict[str, float]) -> None:
        self.action = action
        self.score = sum(symbols.values())
        self.required_score = 15.0
        self.settings_id = None
        self.symbols = {
            name: type("Sym", (), {"name": name, "score": score})()
            for name, score in symbols.items()
        }


def _metrics(*actions: Action) -> Metrics:
    metrics = Metrics()
    for action in actions:
        metrics.observe_scan(_Result(action, {"MISSING_DATE": 1.0}), 0.004)  # type: ignore[arg-type]
    return metrics


def test_bind_sockets_tcp_and_unix(tmp_path: Path) -> None:
    path = tmp_path / "run" / "m.sock"
    socks = bind_sockets(["127.0.0.1:0", f"unix:{path}"], 0o660)
    try:
        assert [s.family for s in socks] == [socket.AF_INET, socket.AF_UNIX]
        assert oct(path.stat().st_mode & 0o777) == "0o660"
        port = socks[0].getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # listening
    finally:
        for s in socks:
            s.close()


def test_bind_sockets_closes_what_it_bound_when_one_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(FileExistsError):
        bind_sockets(["127.0.0.1:0", f"unix:{blocker}/m.sock"], 0o660)


def test_exit_statuses_are_worded_for_the_log() -> None:
    assert describe_status(signal.SIGKILL) == "killed by signal SIGKILL"  # raw wait status
    assert describe_status(78 << 8) == "exited with status 78 (configuration refused)"
    assert describe_status(1 << 8) == "exited with status 1"


def test_metrics_snapshots_add_up() -> None:
    total = Metrics()
    total.add(_metrics(Action.NO_ACTION, Action.REJECT).snapshot())
    total.add(_metrics(Action.REJECT).snapshot())
    assert total.scanned == 3
    assert total.actions[Action.REJECT] == 2
    assert total.symbols["MISSING_DATE"] == 3
    assert sum(total.buckets) == 3
    total.add({"actions": {"no such action": 5}, "buckets": "garbage"})  # ignored, no error
    assert total.scanned == 3


def test_cluster_sums_workers_and_keeps_a_departed_workers_counts() -> None:
    cluster = Cluster(Metrics())

    def worker(pid: int, metrics: Metrics) -> bytes:
        return json.dumps({"type": "worker", "pid": pid, "metrics": metrics.snapshot()}).encode()

    def supervisor(*pids: int) -> bytes:
        workers = [{"pid": p, "kind": "scan", "slot": i, "started": 0} for i, p in enumerate(pids)]
        return json.dumps({"type": "supervisor", "workers": workers, "started": 1.0}).encode()

    cluster.receive(supervisor(10, 11))
    cluster.receive(worker(10, _metrics(Action.NO_ACTION, Action.NO_ACTION)))
    cluster.receive(worker(11, _metrics(Action.REJECT)))
    assert cluster.totals().scanned == 3
    # pid 11 is killed and replaced by 12: its counts stay in the totals
    cluster.receive(supervisor(10, 12))
    cluster.receive(worker(12, _metrics(Action.ADD_HEADER)))
    totals = cluster.totals()
    assert totals.scanned == 4
    assert totals.actions[Action.REJECT] == 1
    status = cluster.status()
    workers = status["workers"]
    assert isinstance(workers, list)
    assert [w["messages"] for w in workers] == [2, 1]
    cluster.reset()
    assert cluster.totals().scanned == 0
    cluster.receive(worker(12, _metrics(Action.ADD_HEADER, Action.ADD_HEADER)))
    assert cluster.totals().scanned == 1
    cluster.receive(b"not json")  # ignored


def test_a_new_controller_carries_on_from_the_last_ones_totals() -> None:
    def worker(pid: int, metrics: Metrics) -> bytes:
        return json.dumps({"type": "worker", "pid": pid, "metrics": metrics.snapshot()}).encode()

    def supervisor(*pids: int) -> bytes:
        workers = [{"pid": p, "kind": "scan", "slot": i, "started": 0} for i, p in enumerate(pids)]
        return json.dumps({"type": "supervisor", "workers": workers, "started": 1.0}).encode()

    old = Cluster(_metrics(Action.GREYLIST))  # the controller's own scan counts too
    old.receive(supervisor(10, 11))
    old.receive(worker(10, _metrics(Action.NO_ACTION)))
    old.receive(worker(11, _metrics(Action.REJECT)))
    old.receive(supervisor(10, 12))  # 11 left: folded into the retired sums
    old.receive(worker(12, _metrics(Action.NO_ACTION)))
    old.reset()
    old.receive(worker(12, _metrics(Action.NO_ACTION, Action.ADD_HEADER)))
    assert old.totals().scanned == 1

    new = Cluster(Metrics())
    new.carry_over(old.carried_over())
    assert new.totals().scanned == 1  # what the old one showed, baseline included
    new.receive(worker(12, _metrics(Action.NO_ACTION, Action.ADD_HEADER, Action.REJECT)))
    assert new.totals().scanned == 2  # a carried worker reporting again is not counted twice
    new.receive(supervisor(20, 21))  # the old generation has gone: its counts stay
    new.receive(worker(20, _metrics(Action.NO_ACTION)))
    assert new.totals().scanned == 3
    new.carry_over(b"not json")  # unreadable: ignored
    assert new.totals().scanned == 3


def test_a_report_goes_over_a_datagram_socket_and_a_full_one_is_dropped() -> None:
    out, into = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with out, into:
        assert send_report(out, {"type": "worker", "pid": 1})
        assert json.loads(into.recv(65536)) == {"type": "worker", "pid": 1}
        sent = 0
        while send_report(out, {"pad": "x" * 4096}) and sent < 100000:
            sent += 1
        assert not send_report(out, {"pad": "x"})  # never blocks


def test_scan_line_as_text_and_as_json(caplog: pytest.LogCaptureFixture) -> None:
    from engine import Envelope, ScanRequest

    request = ScanRequest(
        envelope=Envelope(client_addr="203.0.113.5", mail_from="a@b.test", rcpts=("c@d.test",)),
        raw=b"Subject: x\r\n\r\nbody\r\n",
    )
    result = _Result(Action.ADD_HEADER, {"MISSING_DATE": 1.0, "BAYES_SPAM": 5.5})
    with caplog.at_level(logging.INFO, logger="milterd.scan"):
        log_scan(request, result, 0.0123, qid="4ABC", via="milter")  # type: ignore[arg-type]
    [record] = caplog.records
    assert record.getMessage() == (
        "qid=4ABC client=203.0.113.5 from=<a@b.test> rcpts=c@d.test score=6.50/15.00 "
        "action=add_header symbols=[MISSING_DATE(1.00),BAYES_SPAM(5.50)] time=12.3ms via=milter"
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["qid"] == "4ABC"
    assert line["rcpts"] == ["c@d.test"]
    assert line["symbols"] == {"MISSING_DATE": 1.0, "BAYES_SPAM": 5.5}
    assert (line["action"], line["score"], line["pid"]) == ("add_header", 6.5, os.getpid())


def test_log_settings_from_the_section() -> None:
    settings = LogSettings.from_section({"level": "debug", "target": "file", "file": "/x.log"})
    assert (settings.level, settings.target, settings.file, settings.format) == (
        "debug",
        "file",
        "/x.log",
        "text",
    )


def test_status_printout() -> None:
    text = format_status(
        {
            "version": "1.0",
            "mode": "supervisor",
            "pid": 100,
            "uptime": 3725,
            "config_generation": 2,
            "reloads": 1,
            "restarts": 1,
            "workers": [
                {"kind": "scan", "slot": 0, "pid": 101, "generation": 2, "state": "serving"}
                | {"uptime": 12.0, "messages": 40, "restarts": 1}
            ],
            "last_errors": [{"ts": 0, "pid": 100, "message": "worker scan#0 killed by SIGKILL"}],
        }
    )
    assert "pid 100, up 1h02m" in text
    assert "Configuration generation 2 (1 reloads), 1 worker restarts" in text
    assert "scan" in text
    assert "101" in text
    assert "40" in text
    assert "killed by SIGKILL" in text
