"""Layered configuration: defaults, milterd.toml, local.d, override.d, environment; errors
that point at file, line and dotted key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from engine import ConfigError, ConfigProblem, Engine
from engine.config import DEFAULT_DATA_DIR, DEFAULT_SOURCE, Config, Key, Section, load_config
from engine.modules.gtube import Gtube
from engine.modules.milter_headers import MilterHeaders

if TYPE_CHECKING:
    from collections.abc import Callable

MODULES = (Gtube, MilterHeaders)
MILTER = Section({"listen": Key((str,), "inet:127.0.0.1:11332")})


def load(
    config_dir: Path | None,
    environ: dict[str, str] | None = None,
    extra: dict[str, Section] | None = None,
) -> Config:
    # These tests are about the config directory's layers: no shipped policy under them.
    no_policy = (config_dir or Path("/nonexistent")) / "no-shipped-policy"
    return Engine.load_config(
        config_dir, extra, environ=environ or {}, modules=MODULES, rules_dir=no_policy
    )


def problems_of(config_dir: Path, environ: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load(config_dir, environ)
    return info.value.problems


# -- defaults and layering -----------------------------------------------------------------


def test_no_config_dir_gives_the_schema_defaults() -> None:
    config = load(None)
    assert config.section("options") == {
        "data_dir": DEFAULT_DATA_DIR,
        "gtube_patterns": "reject",
        "task_timeout": 8.0,
        "check_timeout": 5.0,
    }
    assert config.section("actions") == {
        "greylist": 4.0,
        "add_header": 6.0,
        "rewrite_subject": False,
        "soft_reject": False,
        "reject": 15.0,
        "subject": "*** SPAM *** %s",
    }
    assert config.section("symbols") == {}
    assert config.section("groups") == {}
    assert config.section("composites") == {}
    assert config.section("logging") == {
        "level": "info",
        "target": "stderr",
        "file": "",
        "format": "text",
        "syslog_facility": "mail",
    }
    assert config.section("gtube") == {"enabled": True}
    assert config.section("milter_headers") == {
        "use": ["x-spamd-result", "x-spam-status"],
        "remove_upstream": True,
        "enabled": True,
    }
    assert config.sources == {}
    assert config.config_dir is None
    assert config.source_of(("options", "task_timeout")) == DEFAULT_SOURCE


def test_missing_config_dir_means_defaults(tmp_path: Path) -> None:
    config = load(tmp_path / "absent")
    assert config.section("options")["task_timeout"] == 8.0
    assert config.sources == {}


def test_config_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "milterd.toml"
    path.write_text("")
    assert problems_of(path) == [ConfigProblem(str(path), None, "", "is not a directory")]


def test_milterd_toml_overrides_defaults_and_int_becomes_float(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    main = write_config("milterd.toml", "[options]\ntask_timeout = 3\n\n[actions]\nreject = 20\n")
    config = load(config_dir)
    assert config.section("options")["task_timeout"] == 3.0
    assert isinstance(config.section("options")["task_timeout"], float)
    assert config.section("options")["check_timeout"] == 5.0
    assert config.section("actions")["reject"] == 20.0
    assert config.section("actions")["greylist"] == 4.0
    assert config.source_of(("options", "task_timeout")) == str(main)
    assert config.source_of(("actions", "reject")) == str(main)
    # The file touched [actions] but not this key: the value in force is the default.
    assert config.source_of(("actions", "greylist")) == DEFAULT_SOURCE
    assert config.source_of(("logging", "level")) == DEFAULT_SOURCE
    assert config.config_dir == config_dir


def test_local_d_deep_merges_in_file_name_order(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    main = write_config(
        "milterd.toml",
        "[options]\ntask_timeout = 3.0\ncheck_timeout = 2.0\n\n"
        '[milter_headers]\nuse = ["x-spamd-result", "x-spam-status", "x-spamd-bar"]\n',
    )
    # Written out of order: 20 must win over 10 because of its name, not its age.
    late = write_config("local.d/20-late.toml", "[options]\ncheck_timeout = 1.5\n")
    early = write_config(
        "local.d/10-early.toml",
        '[options]\ncheck_timeout = 0.5\ngtube_patterns = "all"\n\n'
        '[milter_headers]\nuse = ["x-spam-level"]\n',
    )
    write_config("local.d/README", "not toml: ignored")
    config = load(config_dir)
    assert config.section("options") == {
        "data_dir": DEFAULT_DATA_DIR,
        "gtube_patterns": "all",
        "task_timeout": 3.0,
        "check_timeout": 1.5,
    }
    assert config.section("milter_headers")["use"] == ["x-spam-level"]  # lists replace
    assert config.source_of(("options", "task_timeout")) == str(main)
    assert config.source_of(("options", "check_timeout")) == str(late)
    assert config.source_of(("options", "gtube_patterns")) == str(early)
    assert config.source_of(("milter_headers", "use")) == str(early)


def test_local_d_merges_named_tables(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    write_config("milterd.toml", '[groups.abc]\nmax_score = 3.0\ndescription = "first"\n')
    write_config(
        "local.d/groups.toml", "[groups.abc]\nmax_score = 5.0\n\n[groups.xyz]\nmax_score = 1.0\n"
    )
    config = load(config_dir)
    assert config.section("groups") == {
        "abc": {"max_score": 5.0, "description": "first"},
        "xyz": {"max_score": 1.0, "description": ""},
    }


def test_override_d_replaces_the_whole_table(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    write_config("milterd.toml", "[actions]\ngreylist = 5.0\nreject = 20.0\n")
    write_config("local.d/actions.toml", "[actions]\nadd_header = 7.0\n")
    override = write_config("override.d/actions.toml", "[actions]\nreject = 30.0\n")
    config = load(config_dir)
    # greylist and add_header fall back to the defaults: the table was replaced, not merged.
    assert config.section("actions") == {
        "greylist": 4.0,
        "add_header": 6.0,
        "rewrite_subject": False,
        "soft_reject": False,
        "reject": 30.0,
        "subject": "*** SPAM *** %s",
    }
    assert config.source_of(("actions", "reject")) == str(override)
    # Replaced, not merged: keys the override file leaves out go back to their defaults.
    assert config.source_of(("actions", "greylist")) == DEFAULT_SOURCE
    assert ("actions", "greylist") not in config.sources


def test_override_d_replaces_one_named_table_and_keeps_its_siblings(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    local = write_config(
        "local.d/groups.toml",
        '[groups.abc]\nmax_score = 3.0\ndescription = "abc"\n\n[groups.xyz]\nmax_score = 1.0\n',
    )
    override = write_config("override.d/groups.toml", '[groups.abc]\ndescription = "replaced"\n')
    config = load(config_dir)
    assert config.section("groups") == {
        "abc": {"max_score": False, "description": "replaced"},
        "xyz": {"max_score": 1.0, "description": ""},
    }
    assert config.source_of(("groups", "abc", "description")) == str(override)
    assert ("groups", "abc", "max_score") not in config.sources
    assert config.source_of(("groups", "xyz", "max_score")) == str(local)


def test_override_d_with_an_empty_table_resets_it(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    write_config("milterd.toml", "[options]\ntask_timeout = 3.0\n")
    write_config("override.d/options.toml", "[options]\n")
    assert load(config_dir).section("options")["task_timeout"] == 8.0


def test_env_overrides_only_keys_the_schema_has(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    write_config("milterd.toml", '[options]\ndata_dir = "/srv/from-file"\n')
    environ = {"MILTERD_MILTER_LISTEN": "unix:/run/m.sock", "MILTERD_DATA_DIR": "/srv/from-env"}
    # The engine alone has no [milter] section: the variable is not for it.
    engine_only = load(config_dir, environ)
    assert "milter" not in engine_only.data
    assert engine_only.section("options")["data_dir"] == "/srv/from-env"
    assert engine_only.source_of(("options", "data_dir")) == "$MILTERD_DATA_DIR"
    # With the daemon's section in the schema, it applies.
    with_milter = load(config_dir, environ, extra={"milter": MILTER})
    assert with_milter.section("milter") == {"listen": "unix:/run/m.sock"}
    assert with_milter.source_of(("milter", "listen")) == "$MILTERD_MILTER_LISTEN"
    assert load(config_dir, extra={"milter": MILTER}).section("milter") == {
        "listen": "inet:127.0.0.1:11332"
    }


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILTERD_DATA_DIR", "/srv/os-environ")
    config = load_config(None, Engine.config_schema(modules=MODULES))
    assert config.section("options")["data_dir"] == "/srv/os-environ"


def test_env_override_of_a_bad_value_is_reported_against_the_variable(
    config_dir: Path,
) -> None:
    schema_extra = {"milter": Section({"listen": Key((str,), "", choices=("a", "b"))})}
    with pytest.raises(ConfigError) as info:
        load(config_dir, {"MILTERD_MILTER_LISTEN": "c"}, extra=schema_extra)
    assert info.value.problems == [
        ConfigProblem("$MILTERD_MILTER_LISTEN", None, "milter.listen", "'c' is not one of 'a', 'b'")
    ]


# -- errors with file, line and key -------------------------------------------------------


def test_unknown_key_has_file_line_and_dotted_key(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    path = write_config(
        "milterd.toml", "# comment\n[options]\ntask_timeout = 3.0\ntask_timout = 4.0\n"
    )
    [problem] = problems_of(config_dir)
    assert (problem.file, problem.line, problem.key) == (str(path), 4, "options.task_timout")
    assert problem.message.startswith("unknown key (known here: check_timeout, data_dir, ")


def test_unknown_section_is_located_at_its_header(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    path = write_config("milterd.toml", "[options]\ntask_timeout = 3.0\n\n[optoins]\nx = 1\n")
    [problem] = problems_of(config_dir)
    assert (problem.file, problem.line, problem.key) == (str(path), 4, "optoins")


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (
            '[options]\ntask_timeout = "8"\n',
            2,
            "options.task_timeout",
            "must be a number, not str '8'",
        ),
        (
            "[options]\ntask_timeout = true\n",
            2,
            "options.task_timeout",
            "must be a number, not true",
        ),
        (
            '[options]\ngtube_patterns = "some"\n',
            2,
            "options.gtube_patterns",
            "'some' is not one of 'reject', 'all', 'disabled'",
        ),
        ("[options]\ncheck_timeout = 0.0\n", 2, "options.check_timeout", "must be ≥ 0.001"),
        ("[options]\ntask_timeout = inf\n", 2, "options.task_timeout", "must be a finite number"),
        (
            "\n[actions]\n\nreject = true\n",
            4,
            "actions.reject",
            "must be a score, or false to switch this rung off",
        ),
        (
            '[actions]\nreject = "high"\n',
            2,
            "actions.reject",
            "must be a number or true/false, not str 'high'",
        ),
        ("options = 5\n", 1, "options", "must be a table, not int"),
        (
            "actions.reject = true\n",
            1,
            "actions.reject",
            "must be a score, or false to switch this rung off",
        ),
        (
            '[logging]\nlevel = ["info"]\n',
            2,
            "logging.level",
            "must be a string, not list ['info']",
        ),
        (
            "[milter_headers]\nenabled = 1\n",
            2,
            "milter_headers.enabled",
            "must be true/false, not int 1",
        ),
        (
            '[milter_headers]\nuse = ["x-spamd-result", "x-bogus"]\n',
            2,
            "milter_headers.use",
            "unknown routines ['x-bogus']; known: x-spamd-result, x-spam-status, x-spamd-bar, x-spam-level",
        ),
        (
            '[milter_headers]\nuse = "x-spamd-result"\n',
            2,
            "milter_headers.use",
            "must be a list, not str 'x-spamd-result'",
        ),
        ("[symbols.GTUBE]\nscore = true\n", 2, "symbols.GTUBE.score", "must be a number, not true"),
        ("[symbols]\nGTUBE = 5\n", 2, "symbols.GTUBE", "must be a table"),
        (
            '[groups."my group"]\nmax_score = true\n',
            2,
            "groups.my group.max_score",
            "must be a score, or false to switch this rung off",
        ),
        ("[composites.X]\nscore = 1.0\n", 1, "composites.X.expression", "is required"),
        (
            '[composites.X]\nexpression = "A"\npolicy = "remove"\n',
            3,
            "composites.X.policy",
            "'remove' is not one of 'remove_all', 'remove_weight', 'remove_symbol', 'leave'",
        ),
    ],
)
def test_bad_value_is_located(
    config_dir: Path,
    write_config: Callable[[str, str], Path],
    text: str,
    line: int,
    key: str,
    message: str,
) -> None:
    path = write_config("milterd.toml", text)
    assert problems_of(config_dir) == [ConfigProblem(str(path), line, key, message)]


def test_problem_in_local_d_points_at_that_file(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    write_config("milterd.toml", "[options]\ntask_timeout = 3.0\n")
    local = write_config("local.d/50-x.toml", "[options]\n\n\ncheck_timeout = -1.0\n")
    assert problems_of(config_dir) == [
        ConfigProblem(str(local), 4, "options.check_timeout", "must be ≥ 0.001")
    ]


def test_toml_syntax_error_has_file_and_line(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    path = write_config("milterd.toml", "[options]\ntask_timeout = 3.0\nthis is not toml\n")
    [problem] = problems_of(config_dir)
    assert (problem.file, problem.line, problem.key) == (str(path), 3, "")
    assert "line 3" in problem.message
    assert str(problem).startswith(f"{path}:3: ")


def test_toml_error_without_a_line_number(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    path = write_config("milterd.toml", "a = ")
    [problem] = problems_of(config_dir)
    assert (problem.file, problem.line, problem.key) == (str(path), None, "")
    assert str(problem) == f"{path}: {problem.message}"


def test_file_that_is_not_utf8_is_a_config_error(config_dir: Path) -> None:
    path = config_dir / "milterd.toml"
    path.write_bytes(b"[options]\n# caf\xe9\n")
    [problem] = problems_of(config_dir)
    assert (problem.file, problem.line, problem.key) == (str(path), None, "")
    assert problem.message.startswith("not UTF-8: ")


def test_unreadable_file_is_a_config_error(config_dir: Path) -> None:
    (config_dir / "local.d" / "dir.toml").mkdir(parents=True)
    [problem] = problems_of(config_dir)
    assert problem.file == str(config_dir / "local.d" / "dir.toml")
    assert problem.message.startswith("cannot read: ")


def test_several_problems_are_reported_at_once(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    main = write_config(
        "milterd.toml",
        '[options]\ntask_timeout = "slow"\nbogus = 1\n\n[actions]\nreject = true\n',
    )
    broken = write_config("local.d/10-broken.toml", "[x\n")
    error_text = ""
    with pytest.raises(ConfigError) as info:
        load(config_dir)
    error_text = str(info.value)
    assert [(p.file, p.line, p.key) for p in info.value.problems] == [
        (str(broken), 1, ""),
        (str(main), 2, "options.task_timeout"),
        (str(main), 3, "options.bogus"),
        (str(main), 6, "actions.reject"),
    ]
    assert error_text.splitlines()[1] == (
        f"{main}:2: options.task_timeout: must be a number, not str 'slow'"
    )


def test_problem_for_a_key_in_a_file_without_its_line_falls_back_to_the_table(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    # The default of a required key has no line of its own: the table's header is the place.
    path = write_config("milterd.toml", "[actions]\nreject = 9.0\n\n[composites.X]\nscore = 1.0\n")
    assert problems_of(config_dir) == [
        ConfigProblem(str(path), 4, "composites.X.expression", "is required")
    ]


def test_problem_located_after_the_file_vanished(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    path = write_config("milterd.toml", "[actions]\nreject = 9.0\n")
    config = load(config_dir)
    path.unlink()
    assert config.problem(("actions", "reject"), "gone") == ConfigProblem(
        str(path), None, "actions.reject", "gone"
    )


def test_problem_for_a_key_the_file_does_not_mention(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    path = write_config("milterd.toml", "[actions]\nreject = 9.0\n")
    config = load(config_dir)
    config.sources[("options", "data_dir")] = str(path)  # as if the file had set it
    assert config.problem(("options", "data_dir"), "no") == ConfigProblem(
        str(path), None, "options.data_dir", "no"
    )
    assert config.problem((), "general") == ConfigProblem(DEFAULT_SOURCE, None, "", "general")
    assert str(config.problem((), "general")) == "(default): general"


def test_dotted_and_quoted_keys_are_located(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    path = write_config(
        "milterd.toml",
        '[symbols]\n"GTUBE".score = 1.0\nGTUBE.description = "x"\nGTUBE.group = 5\n',
    )
    assert problems_of(config_dir) == [
        ConfigProblem(str(path), 4, "symbols.GTUBE.group", "must be a string, not int 5")
    ]


def test_override_d_table_over_a_scalar_replaces_it(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    write_config("milterd.toml", "symbols = 5\n")
    override = write_config("override.d/s.toml", "[symbols.GTUBE]\nscore = 1.0\n")
    config = load(config_dir)
    assert config.section("symbols") == {"GTUBE": {"score": 1.0, "description": "", "group": ""}}
    assert config.source_of(("symbols",)) == str(override)


def test_env_override_below_a_scalar_in_a_file(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    write_config("milterd.toml", "milter = 5\n")
    config = load(config_dir, {"MILTERD_MILTER_LISTEN": "unix:/x"}, extra={"milter": MILTER})
    assert config.section("milter") == {"listen": "unix:/x"}


def test_shipped_policy_lies_under_the_config_dir(
    config_dir: Path, write_config: Callable[[str, str], Path], tmp_path: Path
) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    shipped = policy / "groups.toml"
    shipped.write_text('[groups.abc]\nmax_score = 3.0\ndescription = "shipped"\n')
    local = write_config("local.d/groups.toml", "[groups.abc]\nmax_score = 5.0\n")
    config = Engine.load_config(config_dir, environ={}, modules=MODULES, rules_dir=policy)
    assert config.section("groups") == {"abc": {"max_score": 5.0, "description": "shipped"}}
    assert config.source_of(("groups", "abc", "description")) == str(shipped)
    assert config.source_of(("groups", "abc", "max_score")) == str(local)


def test_a_list_key_marked_extend_grows_across_layers(
    config_dir: Path, write_config: Callable[[str, str], Path]
) -> None:
    extra = {"nets": Section({"trusted": Key((list,), ["127.0.0.1"], extend=True)})}
    write_config("milterd.toml", '[nets]\ntrusted = ["10.0.0.0/8"]\n')
    write_config("local.d/nets.toml", '[nets]\ntrusted = ["192.0.2.0/24", "10.0.0.0/8"]\n')
    assert load(config_dir, extra=extra).section("nets")["trusted"] == [
        "10.0.0.0/8",
        "192.0.2.0/24",
    ]
    write_config("override.d/nets.toml", '[nets]\ntrusted = ["::1"]\n')
    assert load(config_dir, extra=extra).section("nets")["trusted"] == ["::1"]


def test_dns_nameservers_from_the_environment_are_a_list(config_dir: Path) -> None:
    config = load(config_dir, environ={"MILTERD_DNS_NAMESERVERS": "127.0.0.1:5301, [::1]:53"})
    assert config.section("dns")["nameservers"] == ["127.0.0.1:5301", "[::1]:53"]
    assert config.source_of(("dns", "nameservers")) == "$MILTERD_DNS_NAMESERVERS"
