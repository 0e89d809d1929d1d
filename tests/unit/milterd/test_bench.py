"""``milterd bench``: the generated corpus, the in-process mode, and the milter driver
against a daemon on loopback. No timing assertions: timing belongs in ``make bench``."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.policy import default as default_policy
from typing import TYPE_CHECKING

import pytest
import trio

from engine import Engine
from engine.modules.gtube import Gtube
from engine.modules.milter_headers import MilterHeaders
from milterd.bench import _drive, generate_corpus
from milterd.cli import main
from milterd.daemon import run_daemon
from milterd.mta import split_for_milter
from milterd.settings import MILTER_SECTION, MilterSettings

if TYPE_CHECKING:
    from pathlib import Path


def test_generated_corpus_is_deterministic() -> None:
    assert generate_corpus(25) == generate_corpus(25)
    assert generate_corpus(10) == generate_corpus(25)[:10]
    assert generate_corpus(10, seed=1) != generate_corpus(10)
    assert generate_corpus(0) == []


def test_generated_corpus_has_the_shapes_of_real_mail() -> None:
    corpus = generate_corpus(10)
    assert len(corpus) == 10
    assert len(set(corpus)) == 10
    for raw in corpus:
        message = message_from_bytes(raw, policy=default_policy)
        assert message["From"]
        assert message["Subject"]
        assert message["Message-ID"]
        assert b"\r\n\r\n" in raw
        assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    kinds = [
        message_from_bytes(raw, policy=default_policy).get_content_type() for raw in corpus[:5]
    ]
    assert kinds == [
        "text/plain",
        "multipart/alternative",
        "multipart/mixed",
        "multipart/mixed",
        "text/plain",
    ]
    assert b'filename="report.pdf"' in corpus[2]
    assert b"--broken--" not in corpus[3]  # broken MIME: the closing boundary is missing
    subject = message_from_bytes(corpus[4], policy=default_policy)["Subject"]
    assert subject == subject.upper()


@pytest.mark.usefixtures("isolated_env")
def test_bench_in_process(capsys: pytest.CaptureFixture[str], isolated_env: Path) -> None:
    code = main(
        ["bench", "--config-dir", str(isolated_env), "--in-process", "--count", "20", "--runs", "1"]
    )
    out = capsys.readouterr().out
    assert code == 0
    run_line, median_line = out.splitlines()
    assert run_line.split()[:4] == ["run", "in-process", "20", "msgs"]
    assert median_line.split()[:4] == ["median", "in-process", "20", "msgs"]
    assert median_line.endswith("errors 0")


@pytest.mark.usefixtures("isolated_env")
def test_bench_in_process_json(capsys: pytest.CaptureFixture[str], isolated_env: Path) -> None:
    code = main(
        [
            "bench",
            "--config-dir",
            str(isolated_env),
            "--in-process",
            "--count",
            "5",
            "--runs",
            "2",
            "--json",
        ]
    )
    assert code == 0
    *runs, median = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert len(runs) == 2
    assert all(r["mode"] == "in-process" and r["messages"] == 5 and r["errors"] == 0 for r in runs)
    assert median["median"]["messages"] == 5
    assert set(median["median"]) == set(runs[0])


@pytest.mark.usefixtures("isolated_env")
def test_bench_with_a_corpus_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_env: Path
) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    for i, raw in enumerate(generate_corpus(3)):
        (corpus / ("sub" if i else ".") / f"{i}.eml").write_bytes(raw)
    code = main(
        [
            "bench",
            "--config-dir",
            str(isolated_env),
            "--in-process",
            "--corpus",
            str(corpus),
            "--runs",
            "1",
        ]
    )
    assert code == 0
    assert " 3 msgs " in capsys.readouterr().out


@pytest.mark.usefixtures("isolated_env")
def test_bench_with_an_empty_corpus(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_env: Path
) -> None:
    (tmp_path / "empty").mkdir()
    code = main(
        [
            "bench",
            "--config-dir",
            str(isolated_env),
            "--in-process",
            "--corpus",
            str(tmp_path / "empty"),
        ]
    )
    assert code == 1
    assert capsys.readouterr().err == "milterd bench: no messages\n"


async def test_milter_driver_against_a_daemon(tmp_path: Path, nursery: trio.Nursery) -> None:
    modules = (Gtube, MilterHeaders)
    config = Engine.load_config(
        None,
        {"milter": MILTER_SECTION},
        modules=modules,
        environ={"MILTERD_DATA_DIR": str(tmp_path / "data")},
    )
    engine = Engine.from_config(config, modules=modules)
    listeners = await nursery.start(
        lambda task_status: run_daemon(
            engine, MilterSettings.defaults(), listen=["127.0.0.1:0"], task_status=task_status
        )
    )
    port = listeners[0].socket.getsockname()[1]
    prepared = [split_for_milter(raw) for raw in generate_corpus(12)]
    with trio.fail_after(30):
        latencies, errors = await _drive("127.0.0.1", port, prepared, 4)
    assert errors == 0
    assert len(latencies) == 12
    nursery.cancel_scope.cancel()
    await engine.aclose()


@pytest.mark.slow
@pytest.mark.usefixtures("isolated_env")
def test_bench_spawns_a_daemon_and_measures_it(
    capsys: pytest.CaptureFixture[str], isolated_env: Path
) -> None:
    # The default mode: `python -m milterd run` on a free loopback port, stopped with SIGTERM.
    code = main(
        [
            "bench",
            "--config-dir",
            str(isolated_env),
            "--count",
            "10",
            "--runs",
            "1",
            "--concurrency",
            "2",
            "--json",
        ]
    )
    assert code == 0
    run, median = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (run["mode"], run["messages"], run["errors"]) == ("milter", 10, 0)
    assert run["cpu_ms_per_msg"] is not None  # the daemon's own CPU, read from /proc
    assert median["median"]["errors"] == 0
