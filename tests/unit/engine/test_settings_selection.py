"""Per-message settings: which ``[settings.NAME]`` table applies to a message, what it
switches off, and how bad tables are refused (file, line, key)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from engine import Action, ConfigError, ConfigProblem, Engine, Envelope, ScanRequest
from engine.modules import Module, check
from engine.pipeline.stages import Stage
from engine.symbols import SymbolSpec

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import TypeAlias

    from engine.task import Task

    Build: TypeAlias = Callable[..., Engine]
    Write: TypeAlias = Callable[[str, str], Path]


class Probe(Module):
    """Three checks: ``probe.base`` (PROBE_BASE) feeds ``probe.uses_base`` (PROBE_USES);
    ``probe.other`` (PROBE_OTHER, PROBE_OTHER_2) stands alone. Each records that it ran."""

    name = "probe"
    symbols = (
        SymbolSpec("PROBE_BASE", 1.0, "probe_base"),
        SymbolSpec("PROBE_USES", 2.0, "probe"),
        SymbolSpec("PROBE_OTHER", 4.0, "probe"),
        SymbolSpec("PROBE_OTHER_2", 8.0, "probe_two"),
    )

    def setup(self) -> None:
        self.ran: list[str] = []

    @check(produces=("PROBE_BASE",))
    def base(self, task: Task) -> None:
        self.ran.append("base")
        task.insert_result("PROBE_BASE")

    @check(produces=("PROBE_USES",), depends_on=("probe.base",))
    def uses_base(self, task: Task) -> None:
        self.ran.append("uses_base")
        task.insert_result("PROBE_USES")

    @check(produces=("PROBE_OTHER", "PROBE_OTHER_2"))
    def other(self, task: Task) -> None:
        self.ran.append("other")
        task.insert_result("PROBE_OTHER")
        task.insert_result("PROBE_OTHER_2")


def request(settings_id: str | None = None, **envelope: object) -> ScanRequest:
    return ScanRequest(
        envelope=Envelope(**envelope),  # type: ignore[arg-type]
        raw=b"Subject: x\r\n\r\nbody\r\n",
        settings_id=settings_id,
    )


def chosen(engine: Engine, settings_id: str | None = None, **envelope: object) -> str | None:
    return engine.settings.select(request(settings_id, **envelope)).name


def problems_of(build: Callable[[], object]) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        build()
    return info.value.problems


# -- choosing ---------------------------------------------------------------------------------


def test_ip_networks_v4_v6_and_mapped(build_engine: Build, write_config: Write) -> None:
    write_config(
        "milterd.toml",
        '[settings.internal]\nip = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]\n'
        'symbols_disabled = ["PROBE_OTHER"]\n',
    )
    engine = build_engine(Probe)
    for inside in ("10.1.2.3", "192.0.2.7", "2001:db8::25", "::ffff:10.9.9.9", "IPv6:2001:db8::1"):
        assert chosen(engine, client_addr=inside) == "internal", inside
    for outside in ("11.0.0.1", "192.0.2.8", "2001:db9::1", "not-an-ip", None):
        assert chosen(engine, client_addr=outside) is None, outside


def test_sender_exact_domain_regex_and_null(build_engine: Build, write_config: Write) -> None:
    write_config(
        "milterd.toml",
        "[settings.senders]\n"
        'from = ["Boss@Example.org", "@partner.test", "/^alerts-[0-9]+@/", "<>"]\n'
        'symbols_disabled = ["PROBE_OTHER"]\n',
    )
    engine = build_engine(Probe)
    for sender in ("boss@example.org", "x@PARTNER.test", "alerts-42@anywhere.test", ""):
        assert chosen(engine, mail_from=sender) == "senders", sender
    for other in ("other@example.org", "x@sub.partner.test", "alerts-x@a.test", None):
        assert chosen(engine, mail_from=other) is None, other


def test_any_recipient_matching_is_enough(build_engine: Build, write_config: Write) -> None:
    write_config(
        "milterd.toml",
        '[settings.abuse]\nrcpt = ["abuse@example.net", "@abuse.example.net"]\n'
        'symbols_disabled = ["PROBE_OTHER"]\n',
    )
    engine = build_engine(Probe)
    assert chosen(engine, rcpts=("bob@example.net", "ABUSE@example.net")) == "abuse"
    assert chosen(engine, rcpts=("x@abuse.example.net",)) == "abuse"
    assert chosen(engine, rcpts=("bob@example.net",)) is None
    assert chosen(engine, rcpts=()) is None


def test_user_and_authenticated(build_engine: Build, write_config: Write) -> None:
    write_config(
        "milterd.toml",
        '[settings.staff]\npriority = 2\nuser = ["alice", "/^svc-/"]\n'
        'symbols_disabled = ["PROBE_OTHER"]\n'
        "[settings.outbound]\npriority = 1\nauthenticated = true\n"
        'symbols_disabled = ["PROBE_BASE"]\n'
        '[settings.inbound]\nauthenticated = false\nsymbols_disabled = ["PROBE_USES"]\n',
    )
    engine = build_engine(Probe)
    assert chosen(engine, auth_user="alice") == "staff"
    assert chosen(engine, auth_user="svc-backup") == "staff"
    assert chosen(engine, auth_user="Alice") == "outbound"  # a login is matched exactly
    assert chosen(engine, auth_user="bob") == "outbound"
    assert chosen(engine, auth_user=None) == "inbound"
    assert chosen(engine, auth_user="") == "inbound"


def test_every_condition_given_must_hold(build_engine: Build, write_config: Write) -> None:
    write_config(
        "milterd.toml",
        '[settings.relay]\nip = "192.0.2.0/24"\nauthenticated = true\nfrom = "@example.org"\n'
        'symbols_disabled = ["PROBE_OTHER"]\n',
    )
    engine = build_engine(Probe)
    ok = {"client_addr": "192.0.2.1", "auth_user": "a", "mail_from": "a@example.org"}
    assert chosen(engine, **ok) == "relay"
    for key, wrong in (("client_addr", "198.51.100.1"), ("auth_user", None), ("mail_from", "a@x")):
        assert chosen(engine, **{**ok, key: wrong}) is None, key


def test_highest_priority_first_then_name(build_engine: Build, write_config: Write) -> None:
    write_config(
        "milterd.toml",
        '[settings.b_low]\nip = "10.0.0.0/8"\nsymbols_disabled = ["PROBE_OTHER"]\n'
        '[settings.z_high]\npriority = 10\nip = "10.1.0.0/16"\nsymbols_disabled = ["PROBE_OTHER"]\n'
        '[settings.a_low]\nip = "10.0.0.0/8"\nsymbols_disabled = ["PROBE_OTHER"]\n',
    )
    engine = build_engine(Probe)
    assert [r.name for r in engine.settings.rules] == ["z_high", "a_low", "b_low"]
    assert chosen(engine, client_addr="10.1.2.3") == "z_high"
    assert chosen(engine, client_addr="10.2.2.3") == "a_low"


def test_settings_id_wins_and_tables_without_conditions_need_it(
    build_engine: Build, write_config: Write, caplog: pytest.LogCaptureFixture
) -> None:
    write_config(
        "milterd.toml",
        '[settings.by_ip]\nip = "10.0.0.0/8"\nsymbols_disabled = ["PROBE_OTHER"]\n'
        '[settings.learn_only]\nsymbols_enabled = ["PROBE_BASE"]\n',
    )
    engine = build_engine(Probe)
    assert [r.name for r in engine.settings.rules] == ["by_ip"]  # no conditions: id only
    assert chosen(engine) is None
    assert chosen(engine, "learn_only", client_addr="10.0.0.1") == "learn_only"
    assert chosen(engine, "by_ip") == "by_ip"  # by id, even though the IP does not match
    with caplog.at_level(logging.WARNING):
        assert chosen(engine, "nope", client_addr="10.0.0.1") == "by_ip"
    assert "no [settings.nope]; choosing settings by the envelope" in caplog.text


# -- what a profile switches off --------------------------------------------------------------


def test_enabled_lists_switch_off_the_rest_but_not_engine_symbols(
    build_engine: Build, write_config: Write
) -> None:
    write_config(
        "milterd.toml",
        '[settings.only]\nsymbols_enabled = ["PROBE_OTHER"]\ngroups_enabled = ["probe_base"]\n'
        '[settings.off]\ngroups_disabled = ["probe"]\nsymbols_disabled = ["PROBE_BASE"]\n'
        '[settings.both]\nsymbols_enabled = ["PROBE_BASE", "PROBE_USES"]\n'
        'symbols_disabled = ["PROBE_USES"]\n',
    )
    engine = build_engine(Probe)
    profiles = {name: rule.profile for name, rule in engine.settings.by_name.items()}
    assert profiles["only"].disabled == {"PROBE_USES", "PROBE_OTHER_2"}
    assert profiles["off"].disabled == {"PROBE_BASE", "PROBE_USES", "PROBE_OTHER"}
    assert profiles["both"].disabled == {"PROBE_USES", "PROBE_OTHER", "PROBE_OTHER_2"}
    assert engine.settings.default.disabled == frozenset()


def stage_checks(engine: Engine, name: str) -> list[str]:
    return [c.name for c in engine.settings.by_name[name].profile.stages[Stage.FILTER]]


def test_a_check_runs_while_any_of_its_symbols_or_a_dependant_does(
    build_engine: Build, write_config: Write
) -> None:
    write_config(
        "milterd.toml",
        '[settings.no_other]\nsymbols_disabled = ["PROBE_OTHER", "PROBE_OTHER_2"]\n'
        '[settings.half_other]\nsymbols_disabled = ["PROBE_OTHER"]\n'
        '[settings.no_base]\nsymbols_disabled = ["PROBE_BASE"]\n'
        '[settings.no_chain]\nsymbols_disabled = ["PROBE_BASE", "PROBE_USES"]\n',
    )
    engine = build_engine(Probe)
    everything = ["probe.base", "probe.other", "probe.uses_base"]
    assert sorted(c.name for c in engine.settings.default.stages[Stage.FILTER]) == everything
    assert sorted(stage_checks(engine, "no_other")) == ["probe.base", "probe.uses_base"]
    assert sorted(stage_checks(engine, "half_other")) == everything
    # probe.uses_base still runs and needs what probe.base finds: base runs, unseen.
    assert sorted(stage_checks(engine, "no_base")) == everything
    assert stage_checks(engine, "no_chain") == ["probe.other"]


async def test_disabled_symbols_are_dropped_and_disabled_checks_skipped(
    build_engine: Build, write_config: Write
) -> None:
    write_config(
        "milterd.toml",
        '[settings.quiet]\nip = "10.0.0.0/8"\nsymbols_disabled = ["PROBE_BASE", "PROBE_OTHER"]\n'
        '[settings.silent]\nip = "10.9.0.0/16"\npriority = 1\n'
        'symbols_disabled = ["PROBE_OTHER", "PROBE_OTHER_2"]\n',
    )
    engine = build_engine(Probe)
    [probe] = engine.modules
    assert isinstance(probe, Probe)
    result = await engine.scan(request(client_addr="10.1.1.1"))
    assert set(result.symbols) == {"PROBE_USES", "PROBE_OTHER_2"}
    assert result.score == 10.0
    assert result.settings_id == "quiet"
    # probe.base runs for its dependant; its own symbol is dropped.
    assert sorted(probe.ran) == ["base", "other", "uses_base"]
    probe.ran.clear()
    result = await engine.scan(request(client_addr="10.9.1.1"))
    assert set(result.symbols) == {"PROBE_BASE", "PROBE_USES"}
    assert sorted(probe.ran) == ["base", "uses_base"]  # probe.other did not run at all
    assert result.settings_id == "silent"
    assert result.to_json()["settings_id"] == "silent"
    default = await engine.scan(request(client_addr="192.0.2.1"))
    assert default.settings_id is None
    assert "settings_id" not in default.to_json()


async def test_thresholds_and_scores_of_the_applied_settings(
    build_engine: Build, write_config: Write
) -> None:
    write_config(
        "milterd.toml",
        "[actions]\nreject = 100.0\ngreylist = false\n"
        '[settings.strict]\nip = "10.0.0.0/8"\n'
        'actions = { reject = 14.0, "add header" = false }\nscores = { PROBE_OTHER = 0 }\n',
    )
    engine = build_engine(Probe)
    default = await engine.scan(request(client_addr="192.0.2.1"))
    assert (default.score, default.action, default.required_score) == (15.0, Action.ADD_HEADER, 100)
    strict = await engine.scan(request(client_addr="10.0.0.1"))
    assert strict.score == 11.0
    assert strict.symbols["PROBE_OTHER"].score == 0.0
    assert strict.action is Action.NO_ACTION
    assert strict.required_score == 14.0
    assert strict.thresholds == {"reject": 14.0}
    # The global policy is untouched by the table.
    assert engine.registry.symbols["PROBE_OTHER"].score == 4.0


# -- refusing bad tables ----------------------------------------------------------------------


def test_bad_tables_are_refused_with_file_line_and_key(
    build_engine: Build, write_config: Write
) -> None:
    path = write_config(
        "local.d/settings.toml",
        "[settings.bad]\n"  # 1
        'ip = ["10.0.0.0/8", "10.0.0.300/8"]\n'  # 2
        'from = ["/([/"]\n'  # 3
        'symbols_enabled = ["PROBE_BASE", "NO_SUCH_SYMBOL"]\n'  # 4
        'groups_disabled = ["nogroup"]\n'  # 5
        "\n"
        "[settings.bad.actions]\n"  # 7
        "reject = true\n"  # 8
        "spam = 5.0\n"  # 9
        "\n"
        "[settings.bad.scores]\n"  # 11
        "PROBE_BASE = 'high'\n"  # 12
        "NOPE = 1.0\n",  # 13
    )
    file = str(path)
    problems = problems_of(lambda: build_engine(Probe))
    assert problems == [
        ConfigProblem(
            file, 2, "settings.bad.ip", "'10.0.0.300/8' is not an IP address or CIDR network"
        ),
        ConfigProblem(
            file,
            3,
            "settings.bad.from",
            "'/([/' is not a valid regular expression: unterminated character set at position 1",
        ),
        ConfigProblem(
            file,
            4,
            "settings.bad.symbols_enabled",
            "unknown symbol NO_SUCH_SYMBOL (no enabled module declares it)",
        ),
        ConfigProblem(file, 5, "settings.bad.groups_disabled", "unknown group nogroup"),
        ConfigProblem(
            file,
            8,
            "settings.bad.actions.reject",
            "must be a score, or false to switch this rung off",
        ),
        ConfigProblem(
            file,
            9,
            "settings.bad.actions.spam",
            "not a rung with a threshold (one of: greylist, add_header, rewrite_subject, "
            "soft_reject, reject)",
        ),
        ConfigProblem(file, 12, "settings.bad.scores.PROBE_BASE", "must be a number, not 'high'"),
        ConfigProblem(
            file,
            13,
            "settings.bad.scores.NOPE",
            "unknown symbol (no enabled module declares it)",
        ),
    ]


def test_shape_errors_come_from_the_schema(
    build_engine: Build, write_config: Write, config_dir: Path
) -> None:
    path = write_config(
        "milterd.toml",
        '[settings.x]\nip = 10\nuser = ["ok", ""]\nauthenticated = "yes"\nwhen = 1\n',
    )
    problems = problems_of(lambda: build_engine(Probe))
    assert [(p.file, p.line, p.key) for p in problems] == [
        (str(path), 2, "settings.x.ip"),
        (str(path), 3, "settings.x.user"),
        (str(path), 4, "settings.x.authenticated"),
        (str(path), 5, "settings.x.when"),
    ]
    assert problems[1].message == "must be a non-empty string or a list of them"


def test_settings_problems_are_reported_with_the_others(
    build_engine: Build, write_config: Write
) -> None:
    path = write_config(
        "milterd.toml",
        '[symbols.TYPO]\nscore = 1.0\n[settings.x]\nsymbols_disabled = ["TYPO"]\n',
    )
    problems = problems_of(lambda: build_engine(Probe))
    assert [(p.line, p.key) for p in problems] == [
        (1, "symbols.TYPO"),
        (4, "settings.x.symbols_disabled"),
    ]
    assert all(p.file == str(path) for p in problems)


def test_task_says_what_is_enabled(build_engine: Build, write_config: Write) -> None:
    write_config("milterd.toml", '[settings.x]\nsymbols_disabled = ["PROBE_OTHER"]\n')
    engine = build_engine(Probe)
    from engine.mime import ParsedMessage
    from engine.task import Task

    profile = engine.settings.by_name["x"].profile
    task = Task(
        request(),
        ParsedMessage.from_bytes(b"\r\n"),
        profile.symbols,
        disabled=profile.disabled,
        settings_id=profile.name,
    )
    assert task.settings_id == "x"
    assert task.is_enabled("PROBE_BASE")
    assert not task.is_enabled("PROBE_OTHER")
    assert not task.is_enabled("NOT_DECLARED")
    task.insert_result("PROBE_OTHER")
    assert not task.has("PROBE_OTHER")
