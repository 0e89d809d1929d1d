"""``milterd learn``, the Bayes "why" of ``milterd scan``, and ``corpustest --train-*``,
called in-process through ``milterd.cli.main`` with the whole engine."""

from __future__ import annotations

import io
import json
import random
import socket
from typing import TYPE_CHECKING

import pytest

from milterd.cli import main

if TYPE_CHECKING:
    from pathlib import Path

SPAM_WORDS = [
    "cheap",
    "pills",
    "discount",
    "pharmacy",
    "offer",
    "click",
    "buy",
    "viagra",
    "winner",
    "prize",
    "casino",
]
HAM_WORDS = [
    "meeting",
    "agenda",
    "project",
    "report",
    "review",
    "schedule",
    "team",
    "lunch",
    "notes",
    "release",
]


def message(words: list[str], seed: int) -> bytes:
    rnd = random.Random(seed)
    return (
        f"From: Sender <s{seed}@sender.test>\r\nTo: bob@example.test\r\n"
        f"Subject: {' '.join(rnd.choice(words) for _ in range(3))}\r\n"
        f"Date: Fri, 20 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{words[0]}{seed}@sender.test>\r\n"
        f"\r\n{' '.join(rnd.choice(words) for _ in range(40))}\r\n"
    ).encode()


def corpus(root: Path, words: list[str], seeds: range) -> Path:
    root.mkdir(parents=True)
    for seed in seeds:
        (root / f"{seed}.eml").write_bytes(message(words, seed))
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def etc(tmp_path: Path, isolated_env: Path) -> Path:
    """Bayes speaking after two learns of each class; a message needs 30 tokens."""
    path = tmp_path / "etc"
    path.mkdir()
    (path / "milterd.toml").write_text("[bayes]\nmin_learns = 2\nmin_tokens = 30\n")
    return path


def test_learn_files_and_directories_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, etc: Path
) -> None:
    spam = corpus(tmp_path / "spam", SPAM_WORDS, range(3))
    first = str(spam / "0.eml")
    code, out, err = run(capsys, "learn", "--config-dir", str(etc), "spam", str(spam))
    assert code == 0
    assert out.splitlines() == [f"{spam / f'{i}.eml'}: learned as spam" for i in range(3)]
    assert "3 learned, 0 already, 0 refused, 0 failed" in err
    code, out, _ = run(capsys, "learn", "--config-dir", str(etc), "spam", first)
    assert (code, out) == (0, f"{first}: already learned as spam\n")
    code, out, _ = run(capsys, "learn", "--config-dir", str(etc), "--json", "ham", first)
    assert code == 0
    assert json.loads(out) == {
        "file": first,
        "learned": True,
        "message": "relearned as ham (was spam)",
    }


def test_learn_from_stdin_and_what_fails(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    etc: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(message(HAM_WORDS, 5)))
    monkeypatch.setattr("sys.stdin", stdin)
    code, out, _ = run(capsys, "learn", "--config-dir", str(etc), "ham", "-")
    assert (code, out) == (0, "-: learned as ham\n")
    short = tmp_path / "short.eml"
    short.write_bytes(b"Subject: hi\r\n\r\nhi\r\n")
    missing = tmp_path / "missing.eml"
    code, out, err = run(
        capsys, "learn", "--config-dir", str(etc), "spam", str(short), str(missing)
    )
    assert code == 1
    assert out.startswith(f"{short}: not learned: too few tokens")
    assert f"milterd: {missing}: No such file or directory" in err


def test_learn_through_a_daemon_that_is_not_there(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, etc: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    raw = tmp_path / "m.eml"
    raw.write_bytes(message(SPAM_WORDS, 1))
    connect = f"127.0.0.1:{port}"
    code, out, err = run(
        capsys, "learn", "--config-dir", str(etc), "--connect", connect, "spam", str(raw)
    )
    assert code == 1
    assert out == ""
    assert err.startswith("milterd: ")


def test_scan_says_why_bayes_thinks_what_it_thinks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, etc: Path
) -> None:
    new = tmp_path / "new.eml"
    new.write_bytes(message(SPAM_WORDS, 99))
    code, out, _ = run(capsys, "scan", "--config-dir", str(etc), str(new))
    assert code == 0
    assert "  bayes: silent, too few messages learned (learned 0 spam, 0 ham)" in out
    spam = corpus(tmp_path / "spam", SPAM_WORDS, range(3))
    ham = corpus(tmp_path / "ham", HAM_WORDS, range(3))
    assert main(["learn", "--config-dir", str(etc), "spam", str(spam)]) == 0
    assert main(["learn", "--config-dir", str(etc), "ham", str(ham)]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "scan", "--config-dir", str(etc), str(new))
    assert code == 0
    assert "BAYES_SPAM" in out
    why = out[out.index("  bayes: ") :].splitlines()
    assert why[0].startswith("  bayes: ")
    assert "% spam (" in why[0]
    assert "learned 3 spam, 3 ham" in why[0]
    assert why[1].split() == ["token", "spam", "ham", "f(t)"]
    assert len(why) > 3
    code, out, _ = run(capsys, "scan", "--config-dir", str(etc), "--json", str(new))
    bayes = json.loads(out)["bayes"]
    assert bayes["probability"] > 0.9
    assert bayes["evidence"] > 0  # decades by which the ham hypothesis was rejected
    assert bayes["learns"] == {"spam": 3, "ham": 3}
    top = bayes["top_tokens"][0]
    assert set(top) == {"token", "spam", "ham", "probability"}
    assert top["spam"] > 0


def test_corpustest_trains_a_throwaway_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, etc: Path
) -> None:
    train_spam = corpus(tmp_path / "train-spam", SPAM_WORDS, range(4))
    train_ham = corpus(tmp_path / "train-ham", HAM_WORDS, range(4))
    spam = corpus(tmp_path / "spam", SPAM_WORDS, range(10, 13))
    ham = corpus(tmp_path / "ham", HAM_WORDS, range(10, 13))
    argv = ["corpustest", "--config-dir", str(etc), "--json"]
    argv += ["--train-spam", str(train_spam), "--train-ham", str(train_ham)]
    code, out, _ = run(capsys, *argv, "--spam", str(spam), "--ham", str(ham))
    assert code == 0
    report = json.loads(out)
    assert report["trained"] == {"ham": 4, "spam": 4}
    assert report["spam"]["top_symbols"]["BAYES_SPAM"] == 3
    assert report["ham"]["top_symbols"]["BAYES_HAM"] == 3
    assert report["auc"] == 1.0
    # The deployment's own store was not touched.
    code, out, _ = run(capsys, "learn", "--config-dir", str(etc), "spam", str(train_spam / "0.eml"))
    assert out.endswith(": learned as spam\n")


def test_bench_bayes_learns_classifies_and_sizes_a_throwaway_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, etc: Path
) -> None:
    corpus(tmp_path / "corpus" / "spam", SPAM_WORDS, range(5))
    corpus(tmp_path / "corpus" / "ham", HAM_WORDS, range(5))
    argv = ["bench", "--config-dir", str(etc), "--bayes", "--corpus", str(tmp_path / "corpus")]
    code, out, _ = run(capsys, *argv, "--runs", "1", "--json")
    assert code == 0
    figures = json.loads(out)
    assert figures["backend"] == "sqlite"
    assert (figures["learned"], figures["classified"]) == (6, 4)
    assert figures["classify_cpu_ms_median"] > 0
    assert figures["store_mb_per_1000_learned"] > 0
    # Nothing of it stayed in the configured store.
    code, out, _ = run(
        capsys,
        "learn",
        "--config-dir",
        str(etc),
        "spam",
        str(tmp_path / "corpus" / "spam" / "0.eml"),
    )
    assert out.endswith(": learned as spam\n")
