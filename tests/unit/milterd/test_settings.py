"""The ``[milter]`` section through the real config loader: defaults, listen addresses,
reply texts, and errors that name file, line and key."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from engine import ConfigError, ConfigProblem, Engine
from engine.config import DEFAULT_SOURCE
from milterd.settings import DEFAULT_LISTEN, MILTER_SECTION, MilterSettings

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

EXTRA = {"milter": MILTER_SECTION}


def load(config_dir: Path | None, environ: Mapping[str, str] | None = None) -> MilterSettings:
    config = Engine.load_config(config_dir, EXTRA, environ=environ or {})
    return MilterSettings.from_section(config.section("milter"))


def problems(config_dir: Path, environ: Mapping[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        Engine.load_config(config_dir, EXTRA, environ=environ or {})
    return info.value.problems


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_config() -> None:
    settings = load(None)
    assert settings == MilterSettings.defaults()
    assert settings.listen == (DEFAULT_LISTEN,) == ("127.0.0.1:11332",)
    assert settings.on_error == "accept"
    assert settings.reject_action == "reject"


def test_every_schema_key_becomes_a_setting() -> None:
    assert set(MILTER_SECTION.keys) == set(MilterSettings.__dataclass_fields__)


@pytest.mark.parametrize(
    ("toml", "listen"),
    [
        ('"127.0.0.1:11332"', ("127.0.0.1:11332",)),
        ('"localhost:0"', ("localhost:0",)),
        ('"[::1]:11332"', ("[::1]:11332",)),
        ('"unix:/run/milterd/milter.sock"', ("unix:/run/milterd/milter.sock",)),
        (
            '["127.0.0.1:11332", "[::1]:11332", "unix:/run/m.sock"]',
            ("127.0.0.1:11332", "[::1]:11332", "unix:/run/m.sock"),
        ),
        ('"127.0.0.1:65535"', ("127.0.0.1:65535",)),
    ],
)
def test_good_listen_values(etc: Path, toml: str, listen: tuple[str, ...]) -> None:
    write(etc / "milterd.toml", f"[milter]\nlisten = {toml}\n")
    assert load(etc).listen == listen


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('"localhost"', "expected HOST:PORT"),
        ('"127.0.0.1:"', "expected HOST:PORT"),
        ('":11332"', "expected HOST:PORT"),
        ('"127.0.0.1:65536"', "expected HOST:PORT"),
        ('"127.0.0.1:smtp"', "expected HOST:PORT"),
        ('"127.0.0.1:-1"', "expected HOST:PORT"),
        ('"unix:run/m.sock"', "absolute path"),
        ('"unix:"', "absolute path"),
        ('""', "address string"),
        ("[1]", "address string"),
        ('["127.0.0.1:1", "nope"]', "'nope'"),
        ("11332", ""),  # wrong type: the schema's own message
    ],
)
def test_bad_listen_values_name_file_line_and_key(etc: Path, toml: str, fragment: str) -> None:
    path = write(
        etc / "milterd.toml", f"# milterd\n\n[milter]\nsocket_mode = 0o600\nlisten = {toml}\n"
    )
    [problem] = problems(etc)
    assert problem.file == str(path)
    assert problem.line == 5
    assert problem.key == "milter.listen"
    assert fragment in problem.message
    assert str(problem).startswith(f"{path}:5: milter.listen: ")


def test_bad_listen_in_local_d_points_at_that_file(etc: Path) -> None:
    write(etc / "milterd.toml", '[milter]\nlisten = "127.0.0.1:11332"\n')
    path = write(
        etc / "local.d" / "10-milter.toml", '[milter]\n\nlisten = ["127.0.0.1:25", "bad"]\n'
    )
    [problem] = problems(etc)
    assert (problem.file, problem.line, problem.key) == (str(path), 3, "milter.listen")


def test_bad_listen_from_the_environment(etc: Path) -> None:
    [problem] = problems(etc, {"MILTERD_MILTER_LISTEN": "nowhere"})
    assert (problem.file, problem.line, problem.key) == (
        "$MILTERD_MILTER_LISTEN",
        None,
        "milter.listen",
    )


def test_listen_from_the_environment_wins(etc: Path) -> None:
    write(etc / "milterd.toml", '[milter]\nlisten = "127.0.0.1:11332"\n')
    config = Engine.load_config(etc, EXTRA, environ={"MILTERD_MILTER_LISTEN": "unix:/run/m.sock"})
    assert MilterSettings.from_section(config.section("milter")).listen == ("unix:/run/m.sock",)
    assert config.source_of(("milter", "listen")) == "$MILTERD_MILTER_LISTEN"
    assert config.source_of(("options", "task_timeout")) == DEFAULT_SOURCE


def test_every_problem_is_reported_at_once(etc: Path) -> None:
    path = write(
        etc / "milterd.toml",
        "[milter]\n"
        'listen = "nope"\n'
        'reject_message = "two\\nlines"\n'
        'on_error = "bounce"\n'
        "scan_timeout = 0.0\n"
        "max_message_size = 10\n"
        "colour = 1\n",
    )
    found = {(p.key, p.line) for p in problems(etc)}
    assert found == {
        ("milter.listen", 2),
        ("milter.reject_message", 3),
        ("milter.on_error", 4),
        ("milter.scan_timeout", 5),
        ("milter.max_message_size", 6),
        ("milter.colour", 7),
    }
    assert all(p.file == str(path) for p in problems(etc))


@pytest.mark.parametrize(
    "key",
    [
        "reject_message",
        "greylist_message",
        "soft_reject_message",
        "tempfail_message",
        "quarantine_reason",
    ],
)
def test_reply_texts_must_be_one_line(etc: Path, key: str) -> None:
    write(etc / "milterd.toml", f'[milter]\n{key} = "a\\r\\nb"\n')
    [problem] = problems(etc)
    assert (problem.key, problem.line, problem.message) == (f"milter.{key}", 2, "must be one line")


def test_settings_from_a_file(etc: Path) -> None:
    write(
        etc / "milterd.toml",
        "[milter]\n"
        'listen = ["[::1]:11332", "unix:/run/m.sock"]\n'
        "socket_mode = 0o600\n"
        "scan_timeout = 3.5\n"
        "progress_interval = 1.0\n"
        'on_error = "tempfail"\n'
        'reject_action = "quarantine"\n'
        'spam_header = ""\n'
        "remove_upstream_spam_header = false\n",
    )
    assert load(etc) == replace(
        MilterSettings.defaults(),
        listen=("[::1]:11332", "unix:/run/m.sock"),
        socket_mode=0o600,
        scan_timeout=3.5,
        progress_interval=1.0,
        on_error="tempfail",
        reject_action="quarantine",
        spam_header="",
        remove_upstream_spam_header=False,
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('spam_header = "X Spam"', "must be a header name"),
        ('spam_header = "X-Spam:"', "must be a header name"),
        ('incomplete_header = "X-Scan\\tState"', "must be a header name"),
        ('spam_header_value = "Yes\\nNo"', "must be one line"),
        ('quarantine_reason = ""', "must not be empty"),
    ],
)
def test_values_the_codec_would_refuse_are_config_errors(
    etc: Path, toml: str, message: str
) -> None:
    # Caught here, at load, instead of as a failed reply on every spam message.
    write(etc / "milterd.toml", f"[milter]\n{toml}\n")
    [problem] = problems(etc)
    assert problem.line == 2
    assert message in problem.message


def test_empty_header_names_mean_no_header(etc: Path) -> None:
    write(etc / "milterd.toml", '[milter]\nspam_header = ""\nincomplete_header = ""\n')
    settings = load(etc)
    assert (settings.spam_header, settings.incomplete_header) == ("", "")
