"""pyspf's RFC 7208 test suite, through our SPF module, our resolver and a real DNS server.

The suite (``rfc7208-tests.yml``, from the SPF project via pyspf's source distribution) is
not kept in this repository: ``make test-deps`` downloads pyspf's sdist for the installed
version and extracts it into ``.venv/cache/pyspf/`` (``MILTERD_SPF_SUITE`` points
elsewhere). Each scenario's zone data is served by the loopback DNS server; each case is a
scan through an engine holding only the SPF module, and the verdict (the R_SPF_* symbol)
must be one the suite allows.

The suite's zone data mirrors pyspf's own test driver (``test/testspf.py``):

- a ``TIMEOUT`` entry makes every query for that name time out, except for the record
  types listed before it; served here as SERVFAIL, which our resolver classifies as the
  same temporary failure as a timeout (both are temperror in RFC 7208 §2.6.6) without
  making the suite wait;
- a name's ``SPF`` (type 99) records are also served as TXT when it has no TXT at all;
- ``NONE`` is "no such record", and a TXT record of no strings is left out (pyspf's
  driver drops it as well: RFC 1035 has no such record).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
import yaml
from dnsserver import DnsServer

from engine import Engine, Envelope, ScanRequest
from engine.dns import ZoneData
from engine.modules.spf import Spf

if TYPE_CHECKING:
    from collections.abc import Iterator

_ROOT = Path(__file__).resolve().parents[3]
SUITE = Path(
    os.environ.get("MILTERD_SPF_SUITE", _ROOT / ".venv" / "cache" / "pyspf" / "rfc7208-tests.yml")
)
_SYMBOLS = {
    "R_SPF_ALLOW": "pass",
    "R_SPF_FAIL": "fail",
    "R_SPF_SOFTFAIL": "softfail",
    "R_SPF_NEUTRAL": "neutral",
    "R_SPF_NA": "none",
    "R_SPF_DNSFAIL": "temperror",
    "R_SPF_PERMFAIL": "permerror",
}
MESSAGE = b"From: someone@example.com\r\nSubject: spf\r\n\r\nbody\r\n"


class SuiteZones:
    """ZoneData plus the suite's per-type timeouts, answering as the server's ``zones``."""

    def __init__(self, zones: ZoneData, timeouts: dict[str, frozenset[str]]) -> None:
        self.zones = zones
        self.timeouts = timeouts  # name → the record types that still answer

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        answering = self.timeouts.get(name)
        if answering is not None and dns.rdatatype.to_text(question.rdtype) not in answering:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        return self.zones.answer(query)


@dataclass
class Scenario:
    description: str
    zones: SuiteZones
    cases: dict[str, dict[str, object]] = field(default_factory=dict)


def _txt(strings: list[str]) -> str:
    """Zone-file text for a TXT record of these strings, every byte exact (UTF-8)."""
    out = []
    for text in strings:
        data = text.encode("utf-8")
        chars = (chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\{b:03d}" for b in data)
        out.append('"' + "".join(chars) + '"')
    return " ".join(out)


def _absolute(name: str) -> str:
    return name.rstrip(".") + "."


def _records(
    name: str, entries: list[object]
) -> tuple[dict[str, list[str]], frozenset[str] | None]:
    records: dict[str, list[str]] = {}
    answering: set[str] = set()
    spf: list[str] = []
    timeout: frozenset[str] | None = None
    has_txt = False
    for entry in entries:
        if entry == "TIMEOUT":
            timeout = frozenset(answering)
            break
        assert isinstance(entry, dict)
        ((rtype, value),) = entry.items()
        if rtype == "TXT":
            has_txt = True
        if value == "NONE":
            continue  # "no such record", which still stops SPF records standing in for TXT
        answering.add(rtype)
        if rtype in ("TXT", "SPF"):
            strings = [value] if isinstance(value, str) else list(value)
            if not strings:
                continue  # a TXT record with no strings cannot exist (RFC 1035 §3.3.14)
            text = _txt(strings)
            if rtype == "SPF":
                spf.append(text)
            records.setdefault(rtype, []).append(text)
        elif rtype == "MX":
            preference, exchange = value  # type: ignore[misc]
            records.setdefault("MX", []).append(f"{preference} {_absolute(str(exchange))}")
        elif rtype in ("CNAME", "PTR"):
            records.setdefault(rtype, []).append(_absolute(str(value)))
        else:
            records.setdefault(rtype, []).append(str(value))
    if spf and not has_txt:
        records["TXT"] = spf
        if timeout is not None:
            timeout = timeout | {"TXT"}
    return records, timeout


def _scenario(data: dict[str, object]) -> Scenario:
    table: dict[str, dict[str, list[str]]] = {}
    timeouts: dict[str, frozenset[str]] = {}
    zonedata = data.get("zonedata") or {}
    assert isinstance(zonedata, dict)
    for owner, entries in zonedata.items():
        name = str(owner).lower().rstrip(".")
        try:
            dns.name.from_text(name)
        except dns.name.LabelTooLong:
            continue  # no DNS can hold this name; the cases using it never look it up
        records, timeout = _records(name, entries or [])
        table[name + "."] = records
        if timeout is not None:
            timeouts[name] = timeout
    zones = ZoneData().add_records(".", table)
    cases = data["tests"]
    assert isinstance(cases, dict)
    return Scenario(str(data.get("description", "")), SuiteZones(zones, timeouts), cases)


@functools.cache
def _load() -> list[Scenario]:
    with SUITE.open("rb") as stream:
        return [_scenario(doc) for doc in yaml.safe_load_all(stream) if doc]


FOUND = SUITE.is_file()


def _cases() -> Iterator[object]:
    if not FOUND:
        reason = f"{SUITE} not found: `make test-deps` fetches it from pyspf's sdist"
        # In CI the suite must run: a missing file is a broken set-up, not a skip.
        marks = [] if os.environ.get("CI") else [pytest.mark.skip(reason=reason)]
        yield pytest.param(None, None, "", id="suite-missing", marks=marks)
        return
    for index, scenario in enumerate(_load()):
        for case_id in scenario.cases:
            yield pytest.param(index, scenario, case_id, id=case_id)


def _engine(tmp: Path, server: DnsServer) -> Engine:
    (tmp / "milterd.toml").write_text(
        f'[options]\ndata_dir = "{tmp / "data"}"\n'
        f'[dns]\nnameservers = ["{server.nameserver}"]\ntimeout = 0.5\nattempts = 1\n'
        # The suite's clients are in private and loopback networks too.
        "[spf]\ncheck_local = true\n"
    )
    config = Engine.load_config(tmp, modules=[Spf])
    return Engine.from_config(config, modules=[Spf])


@pytest.fixture(scope="module")
def suite_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


async def _verdict(engine: Engine, case: dict[str, object]) -> str:
    envelope = Envelope(
        client_addr=str(case["host"]),
        mail_from=str(case.get("mailfrom") or ""),
        helo=str(case.get("helo") or ""),
    )
    result = await engine.scan(ScanRequest(envelope=envelope, raw=MESSAGE))
    verdicts = [_SYMBOLS[name] for name in result.symbols if name in _SYMBOLS]
    assert len(verdicts) == 1, result.symbols
    return verdicts[0]


def _allowed(case: dict[str, object]) -> list[str]:
    expected = case["result"]
    return [str(r) for r in expected] if isinstance(expected, list) else [str(expected)]


@pytest.mark.parametrize(("index", "scenario", "case_id"), list(_cases()))
async def test_rfc7208_case(
    index: int | None,
    scenario: Scenario | None,
    case_id: str,
    suite_server: DnsServer,
    tmp_path: Path,
) -> None:
    if scenario is None:
        pytest.fail(f"{SUITE} not found; `make test-deps` fetches it (pyspf's sdist)")
    case = scenario.cases[case_id]
    suite_server.reset()
    suite_server.zones = scenario.zones  # type: ignore[assignment]
    async with _engine(tmp_path, suite_server) as engine:
        verdict = await _verdict(engine, case)
    assert verdict in _allowed(case), f"{case_id} (RFC 7208 §{case.get('spec')}): {case}"


async def test_rfc7208_suite_through_one_engine(suite_server: DnsServer, tmp_path: Path) -> None:
    """Every scenario's cases through one engine, so later cases meet the per-(IP, domain)
    result cache the earlier ones filled: cached verdicts must be as right as fresh ones."""
    if not FOUND:
        if os.environ.get("CI"):
            pytest.fail(f"{SUITE} not found; `make test-deps` fetches it (pyspf's sdist)")
        pytest.skip(f"{SUITE} not found: `make test-deps` fetches it from pyspf's sdist")
    wrong = []
    for number, scenario in enumerate(_load()):
        suite_server.reset()
        suite_server.zones = scenario.zones  # type: ignore[assignment]
        directory = tmp_path / str(number)
        directory.mkdir()
        async with _engine(directory, suite_server) as engine:
            for case_id, case in scenario.cases.items():
                for _ in range(2):  # the second time from the cache
                    verdict = await _verdict(engine, case)
                    if verdict not in _allowed(case):
                        wrong.append(f"{case_id}: {verdict} not in {_allowed(case)}")
    assert not wrong
