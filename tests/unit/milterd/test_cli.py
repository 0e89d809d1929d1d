"""The ``milterd`` command, called in-process through ``milterd.cli.main``.

The engine's built-in module list grows over time, so these tests pin the CLI's shapes
and the GTUBE verdict (forced, whatever else runs), not the exact symbols of ordinary mail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from milterd.cli import main

pytestmark = pytest.mark.usefixtures("isolated_env")

GTUBE_MESSAGE = (
    b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: test\r\n"
    b"Message-ID: <g1@sender.test>\r\n\r\n"
    b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
)
HAM_MESSAGE = (
    b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: lunch\r\n"
    b"Date: Fri, 20 Nov 2026 10:00:00 +0000\r\nMessage-ID: <h1@sender.test>\r\n\r\n"
    b"Noon?\r\n"
)
CHECKV2_KEYS = {"action", "score", "required_score", "symbols", "milter"}


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        *([cmd, "--help"] for cmd in ("run", "scan", "configtest", "configdump", "bench")),
    ],
)
def test_help_exits_zero(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: milterd")


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_console_script() -> None:
    script = Path(sys.executable).parent / "milterd"
    proc = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: milterd")
    for command in ("run", "scan", "configtest", "configdump", "bench"):
        assert command in proc.stdout


# -- configtest -------------------------------------------------------------------------------


def test_configtest_without_a_config_dir(
    capsys: pytest.CaptureFixture[str], isolated_env: Path
) -> None:
    code, out, err = run(capsys, "configtest", "--config-dir", str(isolated_env))
    assert (code, out, err) == (0, "milterd: configuration OK (shipped defaults)\n", "")


def test_configtest_with_a_good_dir(capsys: pytest.CaptureFixture[str], etc: Path) -> None:
    write(etc / "milterd.toml", '[milter]\nlisten = ["127.0.0.1:11332", "unix:/run/m.sock"]\n')
    write(etc / "local.d" / "actions.toml", "[actions]\nreject = 20.0\n")
    code, out, _ = run(capsys, "configtest", "--config-dir", str(etc))
    assert (code, out) == (0, f"milterd: configuration OK ({etc})\n")


def test_configtest_prints_every_problem_with_file_line_and_key(
    capsys: pytest.CaptureFixture[str], etc: Path
) -> None:
    main_toml = write(
        etc / "milterd.toml",
        '[milter]\nlisten = "nowhere"\non_error = "bounce"\n\n[options]\ntask_timeout = -1.0\n',
    )
    local = write(etc / "local.d" / "20-actions.toml", '# thresholds\n[actions]\nreject = "high"\n')
    broken = write(etc / "override.d" / "30-broken.toml", "[milter]\nlisten = \n")
    code, out, err = run(capsys, "configtest", "--config-dir", str(etc))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "milterd: configuration refused:"
    problems = lines[1:]
    assert all(line.startswith("  ") for line in problems)
    assert len(problems) == 5
    expected_prefixes = [
        f"  {main_toml}:2: milter.listen: ",
        f"  {main_toml}:3: milter.on_error: ",
        f"  {main_toml}:6: options.task_timeout: ",
        f"  {local}:3: actions.reject: ",
        f"  {broken}:2: ",
    ]
    for prefix in expected_prefixes:
        assert any(line.startswith(prefix) for line in problems), (prefix, problems)


def test_configtest_reports_problems_found_while_building_the_engine(
    capsys: pytest.CaptureFixture[str], etc: Path
) -> None:
    path = write(etc / "milterd.toml", '[composites.MY_COMBO]\nexpression = "NO_SUCH_SYMBOL"\n')
    code, _, err = run(capsys, "configtest", "--config-dir", str(etc))
    assert code == 1
    assert (
        f"  {path}:2: composites.MY_COMBO.expression: refers to unknown symbol NO_SUCH_SYMBOL"
        in err
    )


def test_other_commands_refuse_a_bad_config_too(
    capsys: pytest.CaptureFixture[str], etc: Path
) -> None:
    path = write(etc / "milterd.toml", '[milter]\nlisten = "nowhere"\n')
    message = write(etc.parent / "m.eml", HAM_MESSAGE)
    code, out, err = run(capsys, "scan", "--config-dir", str(etc), str(message))
    assert (code, out) == (1, "")
    assert f"  {path}:2: milter.listen: " in err


def test_scan_refuses_a_config_the_engine_cannot_build(
    capsys: pytest.CaptureFixture[str], etc: Path
) -> None:
    path = write(etc / "milterd.toml", '[composites.MY_COMBO]\nexpression = "NO_SUCH_SYMBOL"\n')
    message = write(etc.parent / "m.eml", HAM_MESSAGE)
    code, out, err = run(capsys, "scan", "--config-dir", str(etc), str(message))
    assert (code, out) == (1, "")
    assert f"  {path}:2: composites.MY_COMBO.expression: " in err


# -- configdump --------------------------------------------------------------------------------


def test_configdump_prints_every_section(
    capsys: pytest.CaptureFixture[str], isolated_env: Path
) -> None:
    code, out, _ = run(capsys, "configdump", "--config-dir", str(isolated_env))
    assert code == 0
    lines = out.splitlines()
    for section in (
        "[options]",
        "[actions]",
        "[logging]",
        "[milter]",
        "[gtube]",
        "[milter_headers]",
    ):
        assert section in lines
    assert 'listen = "127.0.0.1:11332"' in lines
    assert 'on_error = "accept"' in lines
    assert "remove_upstream_spam_header = true" in lines


def test_configdump_one_section(capsys: pytest.CaptureFixture[str], isolated_env: Path) -> None:
    code, out, _ = run(capsys, "configdump", "milter", "--config-dir", str(isolated_env))
    assert code == 0
    assert out.splitlines()[:3] == ["", "[milter]", 'listen = "127.0.0.1:11332"']
    assert "[options]" not in out


def test_configdump_unknown_section(capsys: pytest.CaptureFixture[str], isolated_env: Path) -> None:
    code, out, err = run(capsys, "configdump", "nope", "--config-dir", str(isolated_env))
    assert (code, out) == (1, "")
    assert err.startswith("milterd: no section 'nope'; sections: ")
    assert "milter" in err


def test_configdump_sources_name_the_file(capsys: pytest.CaptureFixture[str], etc: Path) -> None:
    path = write(etc / "milterd.toml", '[milter]\nlisten = "127.0.0.1:2525"\n')
    code, out, _ = run(capsys, "configdump", "--sources", "--config-dir", str(etc))
    assert code == 0
    lines = out.splitlines()
    assert f'listen = "127.0.0.1:2525"  # {path}' in lines
    assert "task_timeout = 8.0  # default" in lines


# -- scan ---------------------------------------------------------------------------------------


def test_scan_json_is_checkv2_shaped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_env: Path
) -> None:
    gtube = write(tmp_path / "gtube.eml", GTUBE_MESSAGE)
    ham = write(tmp_path / "ham.eml", HAM_MESSAGE)
    code, out, err = run(
        capsys, "scan", "--json", "--config-dir", str(isolated_env), str(gtube), str(ham)
    )
    assert code == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    for obj, path in ((first, gtube), (second, ham)):
        assert obj.keys() >= CHECKV2_KEYS
        assert obj["file"] == str(path)
        assert isinstance(obj["score"], float)
        assert obj["required_score"] == 15.0
        assert set(obj["milter"]) == {"add_headers", "remove_headers"}
        assert "X-Spamd-Result" in obj["milter"]["add_headers"]
    assert first["action"] == "reject"
    assert first["symbols"]["GTUBE"]["options"] == ["reject"]
    assert first["messages"] == {"smtp_message": "Gtube pattern"}
    assert first["message-id"] == "g1@sender.test"
    assert second["action"] in ("no action", "greylist", "add header")
    assert "GTUBE" not in second["symbols"]


def test_scan_envelope_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_env: Path
) -> None:
    ham = write(tmp_path / "ham.eml", HAM_MESSAGE)
    code, out, _ = run(
        capsys,
        "scan",
        "--json",
        "--config-dir",
        str(isolated_env),
        "--ip",
        "198.51.100.7",
        "--helo",
        "mail.sender.test",
        "--hostname",
        "mail.sender.test",
        "--from",
        "alice@sender.test",
        "--rcpt",
        "bob@example.test",
        str(ham),
    )
    assert code == 0
    assert json.loads(out).keys() >= CHECKV2_KEYS


def test_scan_plain_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_env: Path
) -> None:
    gtube = write(tmp_path / "gtube.eml", GTUBE_MESSAGE)
    code, out, _ = run(capsys, "scan", "--config-dir", str(isolated_env), str(gtube))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{gtube}: reject (score 0.00 / 15.00)"
    assert any(
        line.split()[:2] == ["GTUBE", "0.00"] and line.endswith("[reject]") for line in lines[1:]
    )
    assert all(line.startswith("  ") for line in lines[1:])


def test_scan_a_directory_scans_every_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_env: Path
) -> None:
    corpus = tmp_path / "corpus"
    paths = [
        write(corpus / "b.eml", HAM_MESSAGE),
        write(corpus / "a.eml", GTUBE_MESSAGE),
        write(corpus / "sub" / "c.eml", HAM_MESSAGE),
    ]
    code, out, _ = run(capsys, "scan", "--json", "--config-dir", str(isolated_env), str(corpus))
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in results] == [str(p) for p in sorted(paths)]
    assert [r["action"] == "reject" for r in results] == [True, False, False]


def test_scan_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    class Stdin:
        class buffer:
            @staticmethod
            def read() -> bytes:
                return GTUBE_MESSAGE

    monkeypatch.setattr(sys, "stdin", Stdin)
    code, out, _ = run(capsys, "scan", "--json", "--config-dir", str(isolated_env), "-")
    assert code == 0
    result = json.loads(out)
    assert (result["file"], result["action"]) == ("-", "reject")


def test_scan_missing_file_is_reported_and_the_rest_scanned(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_env: Path
) -> None:
    gtube = write(tmp_path / "gtube.eml", GTUBE_MESSAGE)
    missing = tmp_path / "missing.eml"
    code, out, err = run(
        capsys, "scan", "--json", "--config-dir", str(isolated_env), str(missing), str(gtube)
    )
    assert code == 1
    assert err == f"milterd: {missing}: No such file or directory\n"
    assert json.loads(out)["file"] == str(gtube)


# -- run ------------------------------------------------------------------------------------------


def test_run_refuses_a_bad_listen_argument(
    capsys: pytest.CaptureFixture[str], isolated_env: Path
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--config-dir", str(isolated_env), "--listen", "bogus"])
    assert info.value.code == 2
    assert "argument --listen: 'bogus': expected HOST:PORT" in capsys.readouterr().err


def test_run_reports_an_address_it_cannot_bind(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_env: Path
) -> None:
    blocker = write(tmp_path / "file", "a regular file where a directory should be")
    code, out, err = run(
        capsys, "run", "--config-dir", str(isolated_env), "--listen", f"unix:{blocker}/m.sock"
    )
    assert (code, out) == (1, "")
    assert err.startswith("milterd: cannot listen: ")
