"""DMARC record parsing, From domains, organisational domains and alignment (pure)."""

from __future__ import annotations

import pytest

from engine.auth.dmarc import DmarcRecord, RecordError, header_from_domain, parse_record
from engine.auth.psl import aligned, normalize_domain, organizational_domain
from engine.mime import HeaderList


@pytest.mark.parametrize(
    ("text", "record"),
    [
        ("v=DMARC1; p=reject", DmarcRecord("reject")),
        (
            "v=DMARC1;p=Quarantine;sp=none;adkim=s;aspf=S;pct=20",
            DmarcRecord("quarantine", "none", adkim_strict=True, aspf_strict=True, pct=20),
        ),
        ("v=DMARC1; p=none; pct=abc; fo=1; unknown=x", DmarcRecord("none")),
        ("v=DMARC1; p=none; pct=101", DmarcRecord("none")),
        ("v=DMARC1; rua=mailto:r@example.test", DmarcRecord("none", rua="mailto:r@example.test")),
        ("v=DMARC1; p=bogus; rua=mailto:r@x.test", DmarcRecord("none", rua="mailto:r@x.test")),
    ],
)
def test_records_parse(text: str, record: DmarcRecord) -> None:
    assert parse_record(text) == record


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("v=DMARC1", "no p tag"),
        ("v=DMARC1; p=bogus", "p tag has invalid value: bogus"),
        ("v=DMARC1; p=none; sp=maybe", "sp tag has invalid value: maybe"),
        ("v=DMARC1; p=none; adkim=x", "adkim tag has invalid value: x"),
        ("v=DMARC1; p=none; aspf=", "aspf tag has invalid value: "),
    ],
)
def test_unusable_records_say_why(text: str, why: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_record(text)
    assert str(caught.value) == why


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        ([("From", "A <a@Example.TEST>")], ("example.test", "")),
        ([("From", '"x@evil.test" <a@b.example.test>')], ("b.example.test", "")),
        ([("From", "a@bücher.example")], ("xn--bcher-kva.example", "")),
        ([], ("", "No From header")),
        ([("From", "a@x.test"), ("from", "b@x.test")], ("", "Duplicate From header")),
        ([("From", "a@x.test, b@x.test")], ("x.test", "")),
        ([("From", "a@x.test, b@y.test")], ("", "Several From domains")),
        ([("From", "nobody")], ("", "No domain in From header")),
        ([("From", "")], ("", "No domain in From header")),
    ],
)
def test_the_from_domain(headers: list[tuple[str, str]], found: tuple[str, str]) -> None:
    assert header_from_domain(HeaderList(headers)) == found


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("mail.example.com", "example.com"),
        ("a.b.example.co.uk.", "example.co.uk"),
        ("co.uk", "co.uk"),
        ("user.github.io", "user.github.io"),  # the private section counts
        ("x.y.example.test", "example.test"),  # unknown TLD: the default rule
        ("MAIL.Bücher.de", "xn--bcher-kva.de"),
        ("", ""),
    ],
)
def test_organizational_domains(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("identifier", "from_domain", "relaxed", "strict"),
    [
        ("example.com", "example.com", True, True),
        ("mail.example.com", "example.com", True, False),
        ("example.com", "news.example.com", True, False),
        ("example.net", "example.com", False, False),
        ("a.github.io", "b.github.io", False, False),
        ("EXAMPLE.com.", "example.COM", True, True),
        ("", "example.com", False, False),
    ],
)
def test_alignment(identifier: str, from_domain: str, relaxed: bool, strict: bool) -> None:
    assert aligned(identifier, from_domain, strict=False) is relaxed
    assert aligned(identifier, from_domain, strict=True) is strict


def test_normalized_domains() -> None:
    assert normalize_domain(" Example.COM. ") == "example.com"
    assert normalize_domain("bücher.de") == "xn--bcher-kva.de"
