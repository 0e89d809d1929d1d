"""Per-message settings through a real engine and the real modules, and through the milter.

The engine is built from a config directory like an administrator's, with the shipped
modules listed explicitly (so modules added later cannot change the symbol sets pinned
here) and no shipped rule files. The base message lacks Date and Message-ID, so without
settings it scores MISSING_DATE (1), MISSING_MID (2.5) and a few small ones: 3.5 in all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from engine import Action, ConfigError, Engine, Envelope, ScanRequest
from engine.modules.greylist import Greylist
from engine.modules.gtube import Gtube
from engine.modules.headers import Headers
from engine.modules.hfilter import Hfilter
from engine.modules.milter_headers import MilterHeaders
from engine.modules.mime_types import MimeTypes
from engine.modules.received import Received
from milterd.protocol import (
    NEED_DATA,
    Accept,
    ActionFlag,
    AddHeader,
    BodyChunk,
    Command,
    Connect,
    EndOfHeaders,
    EndOfMessage,
    Family,
    Header,
    Helo,
    Macros,
    MailFrom,
    MilterConnection,
    Negotiate,
    NegotiateReply,
    ProtocolFlag,
    Quit,
    RcptTo,
    ReplyCode,
    Role,
)
from milterd.protocol.codec import COMMAND_OF
from milterd.session import MilterSession
from milterd.settings import MILTER_SECTION, MilterSettings

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from engine import ScanResult
    from milterd.protocol import Action as MilterAction
    from milterd.protocol import Event

MODULES = (Gtube, Greylist, Headers, MimeTypes, Received, Hfilter, MilterHeaders)
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HEADERS = (("From", "Alice <alice@sender.test>"), ("To", "bob@example.test"), ("Subject", "Hi"))
RAW = b"".join(f"{n}: {v}\r\n".encode() for n, v in HEADERS) + b"\r\nHello\r\n"
HEADER_SYMBOLS = {"MISSING_DATE", "MISSING_MID"}

SETTINGS_TOML = """\
[actions]
greylist = false

# The issue's case: mail that our own users send through submission skips the checks
# (GTUBE stays on, to test the path).
[settings.outbound]
priority = 10
authenticated = true
symbols_enabled = ["GTUBE"]

# One account is trusted less: its mail is checked, and rejected early.
[settings.shared_account]
priority = 20
user = ["shared"]
actions = { reject = 3.0 }

[settings.internal]
ip = ["10.0.0.0/8", "fd00::/8"]
scores = { MISSING_MID = 0.0 }

[settings.partner]
from = ["@partner.test", "/^alerts-[0-9]+@monitoring\\\\.test$/"]
groups_disabled = ["headers"]

[settings.postmaster]
priority = 5
rcpt = ["postmaster@example.test"]
symbols_disabled = ["GTUBE"]
actions = { add_header = false, reject = false }

# Only by Settings-ID: a table without conditions never matches by itself.
[settings.headers_only]
groups_enabled = ["headers"]
"""


@pytest.fixture
async def make_engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``make_engine(toml)`` → a real engine from a config dir holding ``toml``, closed at
    teardown."""
    engines: list[Engine] = []
    rules = tmp_path / "rules"
    rules.mkdir()

    def make(toml: str = SETTINGS_TOML) -> Engine:
        etc = tmp_path / f"etc{len(engines)}"
        etc.mkdir()
        (etc / "milterd.toml").write_text(toml, encoding="utf-8")
        config = Engine.load_config(
            etc,
            {"milter": MILTER_SECTION},
            environ={"MILTERD_DATA_DIR": str(tmp_path / "data")},
            modules=MODULES,
            rules_dir=rules,
        )
        engine = Engine.from_config(config, modules=MODULES)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    return make_engine()


async def scan(
    engine: Engine,
    raw: bytes = RAW,
    settings_id: str | None = None,
    *,
    client_addr: str = "198.51.100.7",
    mail_from: str = "alice@sender.test",
    rcpts: tuple[str, ...] = ("bob@example.test",),
    auth_user: str | None = None,
) -> ScanResult:
    envelope = Envelope(
        client_addr=client_addr,
        client_name="mail.sender.test",
        helo="mail.sender.test",
        mail_from=mail_from,
        rcpts=rcpts,
        auth_user=auth_user,
    )
    return await engine.scan(ScanRequest(envelope=envelope, raw=raw, settings_id=settings_id))


async def test_without_settings_the_global_policy_holds(engine: Engine) -> None:
    result = await scan(engine)
    assert result.settings_id is None
    assert set(result.symbols) >= HEADER_SYMBOLS
    assert result.score == 3.5
    assert "settings_id" not in result.to_json()


async def test_authenticated_outbound_mail_skips_the_checks(engine: Engine) -> None:
    result = await scan(engine, auth_user="alice")
    assert result.settings_id == "outbound"
    assert result.symbols == {}
    assert (result.score, result.action) == (0.0, Action.NO_ACTION)
    assert result.to_json()["settings_id"] == "outbound"
    # GTUBE, the one symbol left on, still works for a deployment test.
    gtube = await scan(engine, RAW + f"{GTUBE}\r\n".encode(), auth_user="alice")
    assert gtube.action is Action.REJECT
    assert set(gtube.symbols) == {"GTUBE"}


async def test_a_named_user_beats_authenticated_by_priority(engine: Engine) -> None:
    result = await scan(engine, auth_user="shared")
    assert result.settings_id == "shared_account"
    assert set(result.symbols) >= HEADER_SYMBOLS
    assert (result.score, result.action, result.required_score) == (3.5, Action.REJECT, 3.0)


async def test_client_network_changes_a_score(engine: Engine) -> None:
    for address in ("10.20.30.40", "fd12::1"):
        result = await scan(engine, client_addr=address)
        assert result.settings_id == "internal"
        assert result.symbols["MISSING_MID"].score == 0.0
        assert result.score == 1.0


async def test_sender_domain_or_regex_disables_a_group(engine: Engine) -> None:
    for sender in ("news@partner.test", "alerts-7@monitoring.test"):
        result = await scan(engine, mail_from=sender)
        assert result.settings_id == "partner", sender
        assert not HEADER_SYMBOLS & set(result.symbols)
        assert not any(s.group == "headers" for s in result.symbols.values())
    assert (await scan(engine, mail_from="alerts-7@monitoringXtest")).settings_id is None


async def test_postmaster_gets_everything_even_gtube(engine: Engine) -> None:
    """GTUBE switched off means its check does not run at all: had it run, its forced
    reject would stand even with the symbol dropped."""
    spam = RAW + f"{GTUBE}\r\n".encode()
    result = await scan(engine, spam, rcpts=("bob@example.test", "postmaster@example.test"))
    assert result.settings_id == "postmaster"
    assert "GTUBE" not in result.symbols
    assert result.forced is None
    assert result.action is Action.NO_ACTION
    assert result.thresholds == {}
    assert (await scan(engine, spam)).action is Action.REJECT


async def test_settings_id_names_a_table(engine: Engine) -> None:
    result = await scan(engine, settings_id="headers_only", auth_user="alice")
    assert result.settings_id == "headers_only"
    assert set(result.symbols) == {"MISSING_DATE", "MISSING_MID", "RCPT_COUNT_ONE"}
    assert result.score == 3.5


async def test_bad_settings_are_refused_with_file_line_and_key(
    make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    toml = (
        "[settings.outbound]\n"
        "authenticated = true\n"
        'symbols_disabled = ["MISSING_DATE", "MISING_MID"]\n'
        'groups_enabled = ["header"]\n'
        'ip = "10.0.0.0/33"\n'
        'rcpt = "/[/"\n'
    )
    with pytest.raises(ConfigError) as info:
        make_engine(toml)
    file = tmp_path / "etc0" / "milterd.toml"
    assert [str(p) for p in info.value.problems] == [
        f"{file}:5: settings.outbound.ip: '10.0.0.0/33' is not an IP address or CIDR network",
        f"{file}:6: settings.outbound.rcpt: '/[/' is not a valid regular expression: "
        "unterminated character set at position 0",
        f"{file}:3: settings.outbound.symbols_disabled: unknown symbol MISING_MID "
        "(no enabled module declares it)",
        f"{file}:4: settings.outbound.groups_enabled: unknown group header",
    ]


# -- through the milter ---------------------------------------------------------------------


def milter_events(client: str, auth: str | None) -> list[Event]:
    mail_macros: tuple[tuple[str, str], ...] = (("{mail_addr}", "alice@sender.test"),)
    if auth is not None:
        mail_macros = (("{auth_type}", "PLAIN"), ("{auth_authen}", auth), *mail_macros)
    return [
        Macros(Command.CONNECT, (("j", "mx.example.test"), ("{client_addr}", client))),
        Connect("mail.sender.test", Family.INET6 if ":" in client else Family.INET, 4000, client),
        Helo("mail.sender.test"),
        Macros(Command.MAIL, mail_macros),
        MailFrom("<alice@sender.test>"),
        Macros(Command.RCPT, (("i", "4ABC"),)),
        RcptTo("<bob@example.test>"),
        *(Header(name, value) for name, value in HEADERS),
        EndOfHeaders(),
        BodyChunk(b"Hello\r\n"),
        EndOfMessage(),
    ]


async def milter_scan(engine: Engine, client: str, auth: str | None) -> list[MilterAction]:
    """Play one message as Postfix would; return the end-of-message replies."""
    mta_end, filter_end = trio.testing.memory_stream_pair()
    conn = MilterConnection(Role.MTA)
    replies: list[MilterAction] = []

    async def next_action() -> MilterAction:
        while (item := conn.next_event()) is NEED_DATA:
            conn.receive_data(await mta_end.receive_some(65536))
        return item  # type: ignore[return-value]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(MilterSession(filter_end, engine, MilterSettings.defaults()).run)
        await mta_end.send_all(conn.send(Negotiate(6, ActionFlag(0x1FF), ProtocolFlag(0x1FFFFF))))
        assert isinstance(await next_action(), NegotiateReply)
        negotiated = conn.negotiated
        assert negotiated is not None
        for event in milter_events(client, auth):
            if not negotiated.sends(COMMAND_OF[type(event)]):
                continue
            await mta_end.send_all(conn.send(event))
            while conn.reply_owed is not None:
                action = await next_action()
                if isinstance(event, EndOfMessage):
                    replies.append(action)
        await mta_end.send_all(conn.send(Quit()))
    return replies


def spamd_result(replies: list[MilterAction]) -> str:
    [value] = [a.value for a in replies if isinstance(a, AddHeader) and a.name == "X-Spamd-Result"]
    return value


async def test_the_milter_session_chooses_settings_per_message(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="milterd.scan")
    outbound = await milter_scan(engine, "198.51.100.7", auth="alice")
    assert outbound[-1] == Accept()
    assert "MISSING_MID" not in spamd_result(outbound)
    assert "settings=outbound" in caplog.text

    shared = await milter_scan(engine, "198.51.100.7", auth="shared")
    assert shared[-1] == ReplyCode(554, "5.7.1 Spam message rejected")

    internal = await milter_scan(engine, "10.1.1.1", auth=None)
    assert "MISSING_MID(0.00)" in spamd_result(internal)
    assert "settings=internal" in caplog.text

    inbound = await milter_scan(engine, "198.51.100.7", auth=None)
    assert "MISSING_MID(2.50)" in spamd_result(inbound)
