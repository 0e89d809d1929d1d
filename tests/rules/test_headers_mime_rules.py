"""Header, MIME, Received and HELO symbols: each fixture in ``fixtures/`` must raise its
symbol through the real engine, and the clean messages must raise none that score.

``NOW`` pins the headers module's clock one hour after the fixtures' Date, so the date
checks never depend on when the suite runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from engine import Engine, ScanRequest
from engine.mime.dates import parse_date
from engine.mime.message import ParsedMessage
from engine.modules.headers import Headers
from engine.modules.hfilter import Hfilter
from engine.modules.mime_types import MimeTypes
from engine.modules.received import Received
from engine.task.envelope import Envelope

if TYPE_CHECKING:
    from engine import ScanResult

FIXTURES = Path(__file__).parent / "fixtures"
MODULES = (Headers, MimeTypes, Received, Hfilter)
NOW = parse_date("Mon, 15 Jan 2024 12:00:00 +0000")
# A public client that names itself properly: the hfilter checks stay quiet.
GOOD_CLIENT = {
    "client_addr": "1.2.3.4",
    "client_name": "mail.example.org",
    "helo": "mail.example.org",
    "mail_from": "alice@example.org",
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    data = tmp_path_factory.mktemp("data")
    config = Engine.load_config(None, environ={"MILTERD_DATA_DIR": str(data)}, modules=MODULES)
    built = Engine.from_config(config, modules=MODULES)
    headers = next(m for m in built.modules if isinstance(m, Headers))
    assert NOW is not None
    headers.clock = lambda: NOW
    return built


async def scan(engine: Engine, fixture: str, **envelope: object) -> ScanResult:
    raw = (FIXTURES / fixture).read_bytes()
    return await engine.scan(ScanRequest(raw=raw, envelope=Envelope(**envelope)))  # type: ignore[arg-type]


CASES = [
    ("missing_date.eml", "MISSING_DATE", {}),
    ("invalid_date.eml", "INVALID_DATE", {}),
    ("date_in_future.eml", "DATE_IN_FUTURE", {}),
    ("date_in_past.eml", "DATE_IN_PAST", {}),
    ("missing_mid.eml", "MISSING_MID", {}),
    ("invalid_msgid.eml", "INVALID_MSGID", {}),
    ("mid_missing_brackets.eml", "MID_MISSING_BRACKETS", {}),
    ("mid_rhs_not_fqdn.eml", "MID_RHS_NOT_FQDN", {}),
    ("missing_from.eml", "MISSING_FROM", {}),
    ("multiple_from.eml", "MULTIPLE_FROM", {}),
    ("from_invalid.eml", "FROM_INVALID", {}),
    ("from_dn_eq_addr.eml", "FROM_DN_EQ_ADDR", {}),
    ("clean.eml", "FROM_NEQ_ENVFROM", {"mail_from": "bounces+123@mailer.example.com"}),
    ("clean.eml", "FORGED_SENDER", {"mail_from": "bounces+123@mailer.example.com"}),
    ("missing_to.eml", "MISSING_TO", {}),
    ("missing_subject.eml", "MISSING_SUBJECT", {}),
    ("empty_subject.eml", "EMPTY_SUBJECT", {}),
    ("subj_all_caps.eml", "SUBJ_ALL_CAPS", {}),
    ("multiple_unique_headers.eml", "MULTIPLE_UNIQUE_HEADERS", {}),
    ("broken_headers.eml", "BROKEN_HEADERS", {}),
    ("clean.eml", "RCPT_COUNT_ONE", {}),
    ("rcpt_count_twelve.eml", "RCPT_COUNT_TWELVE", {}),
    ("rcvd_count_zero.eml", "RCVD_COUNT_ZERO", {}),
    ("clean.eml", "RCVD_COUNT_TWO", {}),
    ("once_received.eml", "ONCE_RECEIVED", {}),
    ("rcvd_chain_too_long.eml", "RCVD_CHAIN_TOO_LONG", {}),
    ("rcvd_illegal_chars.eml", "RCVD_ILLEGAL_CHARS", {}),
    ("clean.eml", "RCVD_VIA_SMTP_AUTH", {}),
    ("previously_delivered.eml", "PREVIOUSLY_DELIVERED", {}),
    ("clean.eml", "MIME_GOOD", {}),
    ("mime_bad.eml", "MIME_BAD", {}),
    ("broken_content_type.eml", "BROKEN_CONTENT_TYPE", {}),
    ("broken_content_type_garbage.eml", "BROKEN_CONTENT_TYPE", {}),
    ("mime_broken_structure.eml", "MIME_BROKEN_STRUCTURE", {}),
    ("missing_mime_version.eml", "MISSING_MIME_VERSION", {}),
    ("mime_html_only.eml", "MIME_HTML_ONLY", {}),
    ("mime_ma_missing_text.eml", "MIME_MA_MISSING_TEXT", {}),
    ("mime_ma_missing_html.eml", "MIME_MA_MISSING_HTML", {}),
    ("r_parts_differ.eml", "R_PARTS_DIFFER", {}),
    ("r_bad_cte_7bit.eml", "R_BAD_CTE_7BIT", {}),
    ("mime_unknown_cte.eml", "MIME_UNKNOWN_CTE", {}),
    ("r_missing_charset.eml", "R_MISSING_CHARSET", {}),
    ("mime_bad_extension.eml", "MIME_BAD_EXTENSION", {}),
    ("mime_double_bad_extension.eml", "MIME_DOUBLE_BAD_EXTENSION", {}),
    ("mime_bad_attachment.eml", "MIME_BAD_ATTACHMENT", {}),
    ("mime_bad_attachment_type.eml", "MIME_BAD_ATTACHMENT", {}),
    ("clean.eml", "HFILTER_HELO_BAREIP", {**GOOD_CLIENT, "helo": "[1.2.3.4]"}),
    ("clean.eml", "HFILTER_HELO_BAREIP", {**GOOD_CLIENT, "helo": "1.2.3.4"}),
    ("clean.eml", "HFILTER_HELO_NOT_FQDN", {**GOOD_CLIENT, "helo": "DESKTOP-7"}),
    ("clean.eml", "HFILTER_HOSTNAME_UNKNOWN", {**GOOD_CLIENT, "client_name": None}),
]


@pytest.mark.parametrize(
    ("fixture", "symbol", "envelope"),
    CASES,
    ids=[f"{s}-{f.removesuffix('.eml')}" for f, s, _ in CASES],
)
async def test_fixture_raises_symbol(
    engine: Engine, fixture: str, symbol: str, envelope: dict[str, object]
) -> None:
    result = await scan(engine, fixture, **envelope)
    assert symbol in result.symbols
    assert "ENGINE_MODULE_ERROR" not in result.symbols


def test_every_symbol_has_a_fixture_group_and_description() -> None:
    declared = {s.name: s for module in MODULES for s in module.symbols}
    informational = {n for n in declared if n.startswith(("RCPT_COUNT_", "RCVD_COUNT_"))}
    covered = {symbol for _, symbol, _ in CASES}
    assert set(declared) - informational - covered == set()
    assert all(s.group and s.description for s in declared.values())


def scored(result: ScanResult) -> set[str]:
    """Symbols that move the score, less MIME_GOOD (a bonus)."""
    return {name for name, sym in result.symbols.items() if sym.score != 0 and name != "MIME_GOOD"}


@pytest.mark.parametrize("fixture", ["clean.eml", "clean_with_pdf.eml"])
async def test_clean_messages_score_nothing(engine: Engine, fixture: str) -> None:
    result = await scan(engine, fixture, **GOOD_CLIENT)
    assert scored(result) == set()


@pytest.mark.parametrize(
    "envelope",
    [
        pytest.param(
            {**GOOD_CLIENT, "client_addr": "127.0.0.1", "client_name": None, "helo": "[127.0.0.1]"},
            id="loopback",
        ),
        pytest.param(
            {**GOOD_CLIENT, "client_addr": "10.0.0.7", "client_name": None, "helo": "printer"},
            id="private",
        ),
        pytest.param(
            {**GOOD_CLIENT, "client_name": None, "helo": "laptop", "auth_user": "alice"},
            id="authenticated",
        ),
        pytest.param({"helo": "laptop"}, id="content-only scan"),
    ],
)
async def test_hfilter_skips_local_authenticated_and_content_only(
    engine: Engine, envelope: dict[str, object]
) -> None:
    result = await scan(engine, "clean.eml", **envelope)
    assert not {n for n in result.symbols if n.startswith("HFILTER_")}


async def test_mailing_list_is_no_forged_sender(engine: Engine, tmp_path: Path) -> None:
    raw = b"List-Id: <lunch.lists.example.org>\n" + (FIXTURES / "clean.eml").read_bytes()
    result = await engine.scan(
        ScanRequest(raw=raw, envelope=Envelope(mail_from="lunch-bounces@lists.example.org"))
    )
    assert "FROM_NEQ_ENVFROM" in result.symbols
    assert "FORGED_SENDER" not in result.symbols


async def test_milter_input_counts_the_mtas_own_hop(engine: Engine) -> None:
    """A milter sees the headers before Postfix adds its Received line: count it anyway."""
    raw = (FIXTURES / "once_received.eml").read_bytes().decode()
    head, _, body = raw.partition("\n\n")
    fields: list[tuple[str, str]] = []
    for line in head.split("\n"):
        if line[:1] in " \t":
            fields[-1] = (fields[-1][0], fields[-1][1] + "\n" + line)
        else:
            name, _, value = line.partition(": ")
            fields.append((name, value))
    request = ScanRequest(
        headers=tuple(fields),
        body=body.replace("\n", "\r\n").encode(),
        envelope=Envelope(**GOOD_CLIENT),
    )  # type: ignore[arg-type]
    result = await engine.scan(request)
    assert "RCVD_COUNT_TWO" in result.symbols
    assert "ONCE_RECEIVED" not in result.symbols
    # The same message as a file, with the MTA's own header on top, counts the same.
    top = "Received: from mail.example.org (mail.example.org [1.2.3.4]) by mx.example.net; Mon, 15 Jan 2024 11:00:06 +0000\n"
    result = await engine.scan(
        ScanRequest(raw=(top + raw).encode(), envelope=Envelope(**GOOD_CLIENT))
    )  # type: ignore[arg-type]
    assert "RCVD_COUNT_TWO" in result.symbols


async def test_truncated_milter_body_is_no_broken_structure(engine: Engine) -> None:
    raw = (FIXTURES / "mime_broken_structure.eml").read_bytes().decode()
    head, _, body = raw.partition("\n\n")
    fields = tuple(
        (n, v)
        for n, _, v in (line.partition(": ") for line in head.split("\n") if line[:1] not in " \t")
    )
    result = await engine.scan(ScanRequest(headers=fields, body=body.encode(), body_truncated=True))
    assert "MIME_BROKEN_STRUCTURE" not in result.symbols


async def test_a_replayed_message_is_judged_as_of_its_arrival(engine: Engine) -> None:
    raw = (FIXTURES / "date_in_past.eml").read_bytes()
    sent = parse_date(ParsedMessage.from_bytes(raw).headers.get("date") or "")
    assert sent is not None
    request = ScanRequest(raw=raw, received_at=sent + 60)
    assert "DATE_IN_PAST" not in (await engine.scan(request)).symbols
