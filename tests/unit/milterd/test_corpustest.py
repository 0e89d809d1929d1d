"""``milterd corpustest``: the figures it reports and the envelope it rebuilds."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from engine.mime.dates import parse_date
from milterd.cli import main
from milterd.corpusplot import roc_points
from milterd.corpustest import detection_at_fp, envelope_from_received, received_at, roc_auc

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

HAM = b"""\
Return-Path: <alice@example.org>
Delivered-To: bob@example.net
Received: from localhost (localhost [127.0.0.1])
\tby collector.example.net (Postfix) with ESMTP id 1;
\tMon, 15 Jan 2024 11:00:05 +0000
Received: from mail.example.org (mail.example.org [192.0.2.10])
\tby mx.example.net (Postfix) with ESMTP id 2 for <bob@example.net>;
\tMon, 15 Jan 2024 11:00:02 +0000
From: Alice <alice@example.org>
To: bob@example.net
Subject: Lunch on Friday
Date: Mon, 15 Jan 2024 11:00:00 +0000
Message-ID: <1@example.org>

Shall we meet at noon?
"""

SPAM = (
    b"From: Winner <w@example.com>\nTo: bob@example.net\nSubject: You won\n"
    b"Date: Mon, 15 Jan 2024 11:00:00 +0000\nMessage-ID: <2@example.com>\n\n"
    b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n"
)


def test_auc_counts_ties_half() -> None:
    assert roc_auc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert roc_auc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert roc_auc([1.0], [1.0]) == 0.5
    assert roc_auc([], [1.0]) == 0.0


def test_detection_at_fp_sits_above_the_allowed_ham() -> None:
    ham = [float(i) for i in range(1000)]  # 0 … 999
    spam = [998.5, 999.5, 1000.0, 10.0]
    # 0.1 % of 1000 ham = 1 message may pass: threshold just above 998.
    assert detection_at_fp(ham, spam, 0.001) == 0.75
    assert detection_at_fp(ham, spam, 0.0) == 0.5
    assert detection_at_fp(ham, spam, 1.0) == 1.0


def test_roc_points_run_from_origin_to_one() -> None:
    points = roc_points([0.0, 1.0], [2.0])
    assert points[0] == (0.0, 0.0)
    assert points[-1] == (1.0, 1.0)
    assert (0.0, 1.0) in points


def test_envelope_comes_from_the_first_public_hop() -> None:
    envelope = envelope_from_received(HAM)
    assert envelope.client_addr == "192.0.2.10" or envelope.client_addr is None
    assert envelope.mail_from == "alice@example.org"
    assert envelope.rcpts == ("bob@example.net",)


def test_envelope_of_a_public_hop(tmp_path: Path) -> None:
    raw = HAM.replace(b"192.0.2.10", b"203.0.113.9").replace(b"203.0.113", b"8.8.8")
    envelope = envelope_from_received(raw)
    assert envelope.client_addr == "8.8.8.9"
    assert envelope.client_name == "mail.example.org"
    assert envelope.helo == "mail.example.org"


def _corpus(tmp_path: Path) -> tuple[Path, Path]:
    ham, spam = tmp_path / "ham", tmp_path / "spam"
    ham.mkdir()
    spam.mkdir()
    for i in range(3):
        (ham / f"{i}.eml").write_bytes(HAM)
        (spam / f"{i}.eml").write_bytes(SPAM)
    return ham, spam


def test_corpustest_json_has_the_documented_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], offline_env: str
) -> None:
    ham, spam = _corpus(tmp_path)
    args = ["corpustest", "--config-dir", str(tmp_path / "none")]
    assert main([*args, "--ham", str(ham), "--spam", str(spam), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ham"]["n"] == 3
    assert report["spam"]["n"] == 3
    assert report["spam"]["actions"] == {"reject": 3}
    assert report["spam"]["detection_rate"] == 1.0
    assert report["ham"]["fp_rate"] == 0.0
    assert report["auc"] == 1.0
    assert set(report["detection_at_fp"]) == {"0.001", "0.01"}
    assert "GTUBE" in report["spam"]["top_symbols"]


def test_corpustest_text_report_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], offline_env: str
) -> None:
    ham, spam = _corpus(tmp_path)
    plot = tmp_path / "roc.svg"
    args = ["corpustest", "--config-dir", str(tmp_path / "none"), "--plot", str(plot)]
    assert main([*args, "--ham", str(ham), "--spam", str(spam)]) == 0
    out = capsys.readouterr().out
    assert "ROC AUC: 1.0000" in out
    assert "symbols firing most on spam:" in out
    assert plot.read_text().lstrip().startswith("<?xml")


def test_a_replayed_message_is_dated_by_its_arrival() -> None:
    assert received_at(HAM) == parse_date("Mon, 15 Jan 2024 11:00:05 +0000")
    assert received_at(b"Subject: no hops\n\nbody\n") is None
