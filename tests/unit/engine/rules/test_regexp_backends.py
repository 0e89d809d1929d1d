"""Hyperscan and Python re agree, pattern by pattern, on data chosen to trip them up.

Python ``re`` is the reference: every pattern must compile there. The Hyperscan backend
translates where the dialects differ, prefilters what it cannot express (confirming hits
with re) and leaves to re what even the prefilter refuses.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import hyperscan as hs
import pytest

from engine.rules.cache import DatabaseCache
from engine.rules.hyperscan_db import HyperscanMatcher, to_hyperscan
from engine.rules.patterns import PatternSpec
from engine.rules.re_backend import ReMatcher

if TYPE_CHECKING:
    from engine.rules.patterns import Piece

DATA = [
    b"",
    b"\n",
    b"abc",
    b"ABC def",
    b"foo\nbar\n",
    b"foo\r\nbar\r\n",
    b"line one\nline two",
    b"caf\xc3\xa9 CAF\xc3\x89 na\xc3\xafve",  # UTF-8
    b"caf\xe9 \xff\xfe broken",  # latin-1: not UTF-8
    b"\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xd0\x9c\xd0\x98\xd0\xa0",  # Cyrillic
    b"x" * 300 + b"needle",
    b"aab abab foobar foobaz",
    b"price: $100 / 50%",
    b"http://1.2.3.4/path a/b",
    b"tab\there  spaces",
    b"\xe2\x84\xaaiss \xc5\xbfome \xc4\xb0stanbul",  # Kelvin sign, long s, dotted I
    b"sep\x1c\x1dfs \xe2\x80\x83em space \xd9\xa3 arabic digit",
    b"\x00\x01 nul",
]

PATTERNS = [
    ("abc", ""),
    ("abc", "i"),
    ("^abc$", ""),
    ("^bar$", ""),
    ("^bar$", "m"),
    ("^bar\\r?$", "m"),
    ("foo$", ""),  # $ before a final newline, as in re
    ("\\Aline", ""),
    ("two\\Z", ""),  # Python's \Z is PCRE's \z
    ("bar\\Z", ""),
    ("o.b", ""),
    ("o.b", "s"),
    ("o.{1,2}b", "s"),
    ("a{,2}b", ""),  # Python's {,n} is {0,n}
    ("x{300}", ""),
    ("^$", ""),
    ("^$", "m"),
    ("", ""),
    ("\\bdef\\b", ""),
    ("\\bnaïve\\b", "u"),  # \b with u: Hyperscan prefilters, re confirms
    ("\\w+é", "u"),
    ("caf.\\b", "u"),
    ("caf.\\s", ""),  # without u, . is one byte: é is two
    ("caf..\\s", ""),
    ("CAFÉ", "iu"),  # Unicode case folding
    ("CAFÉ", "i"),  # without u: ASCII folding only, É ≠ é
    ("[é]", "u"),
    ("привет", "u"),
    ("мир", "iu"),
    ("KISS", "iu"),
    ("[a-z]+É", "iu"),
    ("\\xc9", "iu"),
    ("[^\\x00-\\x7f]{3}", ""),
    ("[^\\x00-\\x7f]{3}", "u"),
    ("\\d+%", ""),
    ("\\$\\d+", ""),
    ("^https?:\\/\\/\\d+\\.\\d+\\.\\d+\\.\\d+\\/", ""),
    ("a/b", ""),
    ("tab\\t", ""),
    ("\\s{2}", ""),
    ("\\x00", ""),
    ("[^\\W_]+é", "u"),
    ("\\u00e9", "u"),
    ("\\s\\S\\d\\D\\w\\W", "u"),
    ("[\\s\\d]{2}", "u"),
    ("[^\\s]{3}\\b", "u"),
    ("\\b\u043f\u0440\u0438", "u"),  # Cyrillic after a word boundary
    ("\\B\u0432\u0435\u0442", "u"),  # and inside a word
    ("(?:foo|bar)baz", ""),
    ("(?P<word>abab)", ""),
    ("foo(?=bar)", ""),  # lookahead: prefilter + confirmation
    ("foo(?!bar)", ""),  # negative lookahead
    ("(?<=foo)baz", ""),  # lookbehind
    ("(ab)\\1", ""),  # backreference
    ("(a)\\1b", ""),
    ("a  b  # comment", "x"),
    ("a\\ b", "x"),
    ("[ ]def", "x"),
    ("needle", ""),
]


def pieces() -> list[Piece]:
    return [(data, None) for data in DATA]


@pytest.mark.parametrize(("pattern", "flags"), PATTERNS)
def test_hyperscan_agrees_with_re(pattern: str, flags: str) -> None:
    spec = PatternSpec(0, pattern, flags, f"/{pattern}/{flags}")
    reference = ReMatcher([spec])
    hyperscan = HyperscanMatcher([spec], DatabaseCache(None), "mime")
    for data in DATA:
        expected = reference.scan([(data, None)])
        assert hyperscan.scan([(data, None)]) == expected, (pattern, flags, data)


def test_one_database_agrees_with_re_on_the_whole_table() -> None:
    specs = [PatternSpec(n, p, f) for n, (p, f) in enumerate(PATTERNS)]
    hyperscan = HyperscanMatcher(specs, DatabaseCache(None), "mime")
    reference = ReMatcher(specs)
    for data in DATA:
        assert hyperscan.scan([(data, None)]) == reference.scan([(data, None)]), data
    assert hyperscan.scan(pieces()) == reference.scan(pieces())


def test_allowed_ids_restrict_each_piece() -> None:
    specs = [PatternSpec(0, "abc", ""), PatternSpec(1, "def", "i")]
    data: list[Piece] = [(b"abc def", frozenset({1})), (b"xyz", None)]
    for matcher in (ReMatcher(specs), HyperscanMatcher(specs, DatabaseCache(None), "header")):
        assert matcher.scan(data) == {1}
        assert matcher.scan([(b"abc def", frozenset())]) == set()


@pytest.mark.parametrize(
    ("pattern", "flags", "expected"),
    [
        ("a{,3}", "", (b"a{0,3}", 0)),
        ("\\Z", "", (b"\\z", 0)),
        ("[\\Z]", "", (b"[\\Z]", 0)),  # inside a class it is left alone
        ("\\\\Z", "", (b"\\\\Z", 0)),  # an escaped backslash then Z
        ("a{,x}", "", (b"a{,x}", 0)),
        ("a # c", "x", (b"(?x)a # c\n", 0)),
    ],
)
def test_translation(pattern: str, flags: str, expected: tuple[bytes, int]) -> None:
    text, _, approximate = to_hyperscan(pattern, flags)
    assert not approximate
    assert text == expected[0]


@pytest.mark.parametrize(
    ("pattern", "flags", "expected"),
    [
        ("\\bcafé\\b", "u", b"(?:)caf\xc3\xa9(?:)"),
        (
            "\\w+\\d\\s",
            "u",
            b"[\\w\\x{80}-\\x{10FFFF}]+[\\d\\x{80}-\\x{10FFFF}][\\s\\x1c-\\x1f\\x{80}-\\x{10FFFF}]",
        ),
        ("[_\\w-]\\W[^\\w]", "u", b"[_\\w\\x{80}-\\x{10FFFF}-]\\W[^\\w]"),
        ("[\\b]", "u", b"[\\b]"),  # a backspace in a class
        ("\\u00e9", "u", b"\\x{00e9}"),
        ("CAFE", "iu", b"CAFE"),  # ASCII: Hyperscan folds it
        ("CAFÉ", "iu", b"CAF[^\\x00-\\x7f]"),  # only UCP folds É: any non-ASCII
        ("kiss", "iu", b"[kK\\x{212A}][iI\\x{130}\\x{131}][sS\\x{17F}][sS\\x{17F}]"),
        ("[a-c][^é](?:x)", "iu", b"[a-c\\x{80}-\\x{10FFFF}][^\xc3\xa9](?:x)"),
        ("\\xe9\\x41", "iu", b"[^\\x00-\\x7f]\\x{41}"),
    ],
)
def test_unicode_patterns_are_widened(pattern: str, flags: str, expected: bytes) -> None:
    text, _, approximate = to_hyperscan(pattern, flags)
    assert (text, approximate) == (expected, True)


@pytest.mark.parametrize(
    ("pattern", "flags"),
    [
        ("[^\\W_]", "u"),
        ("a b", "xu"),
        ("\\N{EM DASH}", "u"),
        ("(?P<kiss>a)", "iu"),
        ("\u017f", "iu"),  # the long s folds to an ASCII s
        ("(a)\\1", "u"),
    ],
)
def test_what_cannot_be_widened_keeps_unicode_properties(pattern: str, flags: str) -> None:
    _, bits, approximate = to_hyperscan(pattern, flags)
    assert not approximate
    assert bits & hs.HS_FLAG_UCP


def test_refused_and_prefiltered_patterns_are_logged_at_build(
    caplog: pytest.LogCaptureFixture,
) -> None:
    specs = [
        PatternSpec(0, "plain", "", "rule A: /plain/"),
        PatternSpec(1, "foo(?=bar)", "", "rule B: /foo(?=bar)/"),
    ]
    with caplog.at_level(logging.INFO, logger="engine.rules.hyperscan_db"):
        matcher = HyperscanMatcher(specs, DatabaseCache(None), "mime")
    assert matcher.hyperscan_ids == {0, 1}
    assert [r.getMessage() for r in caplog.records] == [
        "rule B: /foo(?=bar)/: Hyperscan runs it as a prefilter, confirmed by Python re "
        "(Zero-width assertions are not supported.)"
    ]


def test_invalid_utf8_does_not_confuse_unicode_patterns() -> None:
    # Hyperscan's UTF-8 mode is undefined on invalid input; such pieces are rescanned
    # with the invalid bytes replaced, for the u patterns only.
    specs = [PatternSpec(0, "\\w+é", "u"), PatternSpec(1, "\\xff", "")]
    matcher = HyperscanMatcher(specs, DatabaseCache(None), "body")
    assert matcher.scan([(b"caf\xc3\xa9 \xff", None)]) == {0, 1}
    assert ReMatcher(specs).scan([(b"caf\xc3\xa9 \xff", None)]) == {0, 1}


# Widened (``u``) patterns report every match end, and re confirms a candidate by trying
# only the starts a real match could have (within the pattern's width before an end):
# the answer must still be re's own, on ASCII and non-ASCII data, with many ends or few.
WINDOWED = [
    ("\\b(?:cialis|levitra|sildenafil)\\b", "iu"),
    ("(?:\\$|€|£|USD)\\s?\\d{1,3}(?:[,.]\\d{3}){1,3}", "iu"),
    ("(?:\\bv|\\\\/)[_\\W]{0,2}[i1!|lìíîï][_\\W]{0,2}[a@4à-æ]g(?:[^a-z]|$)", "iu"),
    ("\\bcafé\\b", "u"),
]
WINDOWED_DATA = [
    "Socialism and specialists, no pills",
    "buy cialis now",
    "CIALIS.",
    "\u017fildenafil",  # the long s folds to s: a match that starts with a non-ASCII letter
    "cost: €1,000 and $2.500.000",
    "1,000 1,000 1,000 " * 300 + "£12,345",  # many candidate ends: a plain search wins
    "€ 12,34",
    "v-i-ag!",
    "évi@g.",
    "naïve café, CAFÉ cafés",
    "x" * 5000 + " v1ag\n",
]
# In a long piece the windows are small beside it, so they are what re tries.
WINDOWED_DATA += [
    f"{filler}{text}{filler}"
    for text in WINDOWED_DATA[:5] + WINDOWED_DATA[6:10]
    for filler in ("Lorem ipsum dolor. " * 50, "Ünïcödé tëxt hérë. " * 50)
]


@pytest.mark.parametrize(("pattern", "flags"), WINDOWED)
def test_widened_patterns_are_confirmed_near_their_ends(pattern: str, flags: str) -> None:
    spec = PatternSpec(0, pattern, flags)
    hyperscan = HyperscanMatcher([spec], DatabaseCache(None), "mime")
    assert hyperscan._windowed, "expected a widened pattern of bounded width"
    reference = ReMatcher([spec])
    for text in WINDOWED_DATA:
        pieces: list[Piece] = [(text.encode(), None)]
        assert hyperscan.scan(pieces) == reference.scan(pieces), text
