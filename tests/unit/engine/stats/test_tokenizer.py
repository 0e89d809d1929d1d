"""engine.stats.tokenizer: words in many scripts, links, headers, meta facts, noise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from engine.mime import ParsedMessage
from engine.stats.tokenizer import Tokenizer, TokenizerConfig, is_noise_header, text_words
from engine.task import Envelope

CONFIG = TokenizerConfig()


def words(text: str) -> list[str]:
    return text_words(text, CONFIG)


def message(
    body: str, *headers: str, content_type: str = "text/plain; charset=utf-8"
) -> ParsedMessage:
    head = "\n".join(
        [
            "From: Alice Example <alice@example.org>",
            "To: bob@example.net",
            "Subject: Quarterly report",
            "Date: Mon, 2 Sep 2002 10:00:00 +0200",
            "Message-ID: <20020902.1234@mail.example.org>",
            f"Content-Type: {content_type}",
            *headers,
        ]
    )
    return ParsedMessage.from_bytes(f"{head}\n\n{body}".encode())


def features(msg: ParsedMessage, envelope: Envelope | None = None) -> set[str]:
    return set(Tokenizer().explain(msg, envelope).values())


# -- words --------------------------------------------------------------------------------


def test_english_words_are_case_folded_and_length_filtered() -> None:
    assert words("Hello, World! I said: BUY-NOW (a 2nd time).") == [
        "hello",
        "world",
        "said",
        "buy",
        "now",
        "2nd",
        "time",
    ]


def test_german_umlauts_and_sharp_s_fold_alike() -> None:
    # NFKC composes o + U+0308 into ö; casefold turns ß into ss.
    assert words("Größe GRÖSSE Gro\u0308sse Straße") == ["grösse", "grösse", "grösse", "strasse"]


def test_russian() -> None:
    assert words("Привет, МИР! Скидка 50%") == ["привет", "мир", "скидка", "50"]


def test_chinese_becomes_character_bigrams() -> None:
    assert words("我们的产品很好") == ["我们", "们的", "的产", "产品", "品很", "很好"]
    # Latin words in the same text stay words; a two-character run stays whole.
    assert words("iPhone 特价 现在购买") == ["iphone", "特价", "现在", "在购", "购买"]


def test_japanese_kana_and_kanji() -> None:
    assert words("無料でお試し") == ["無料", "料で", "でお", "お試", "試し"]


def test_arabic_keeps_its_marks_inside_words() -> None:
    # Harakat (combining marks) must not split "مَرْحَبًا" into letters.
    assert words("مَرْحَبًا بالعالم") == ["مَرْحَبًا", "بالعالم"]


def test_hindi_vowel_signs_stay_inside_words() -> None:
    assert words("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]


def test_emoji_separate_words_and_are_not_words() -> None:
    assert words("Buy🎉now 🎉🎉 cheap❤️") == ["buy", "now", "cheap"]


def test_nfkc_folds_compatibility_forms() -> None:
    # Full-width FREE, the fi ligature, superscript two.
    assert words("\uff26\uff32\uff25\uff25 \ufb01nance x\u00b2") == ["free", "finance", "x2"]


def test_invisible_characters_do_not_break_words() -> None:
    assert words("fr\u200bee mon\u00adey v\u2060iagra") == ["free", "money", "viagra"]


def test_long_words_share_a_prefix_token() -> None:
    long_word = "a" * 30
    assert words(f"short {long_word} end") == ["short", "\x00long:aaaaaa", "end"]
    assert words("x" * 24) == ["x" * 24]  # the window is inclusive


def test_ascii_and_unicode_paths_agree() -> None:
    text = "Order_now: price $19.99, call 555-0100; café"
    ascii_part = text[: text.index("café")]
    assert words(text)[: len(words(ascii_part))] == words(ascii_part)


def test_word_limit() -> None:
    assert text_words("one two three four", CONFIG, limit=2) == ["one", "two"]
    config = TokenizerConfig(max_words=3)
    assert text_words("one two three four five", config) == ["one", "two", "three"]


# -- links --------------------------------------------------------------------------------


def test_urls_and_addresses_become_host_tokens() -> None:
    links: list[str] = []
    found = text_words(
        "Visit http://www.Example.COM/path?id=42 or www.shop.example.net today, "
        "or write to sales@mail.example.org",
        CONFIG,
        links,
    )
    assert links == ["u:example.com", "u:shop.example.net", "e:mail.example.org"]
    assert not {"path", "com", "www", "example", "id"} & set(found)
    # The scheme and the local part stay behind as words.
    assert found == ["visit", "http", "or", "today", "or", "write", "to", "sales"]


def test_message_links_give_host_and_domain_features() -> None:
    got = features(message("Click http://promo.deals.example.co.uk/x and http://192.0.2.7/y"))
    assert {"u:promo.deals.example.co.uk", "u:dom:example.co.uk", "u:192.0.2.7", "u:ip"} <= got
    assert "meta:links:2" in got


# -- HTML ---------------------------------------------------------------------------------


def test_html_parts_use_the_visible_text() -> None:
    html = (
        "<html><head><title>ignored title</title><style>p {color: red}</style></head>"
        "<body><p>Hello <b>World</b></p><script>var hidden = 1;</script>"
        '<a href="http://spam.example.net/offer">click here</a></body></html>'
    )
    msg = message(html, content_type="text/html; charset=utf-8")
    got = features(msg)
    assert "hello ·1· world" in got
    assert "world ·1· click" in got
    assert not [name for name in got if re.search("hidden|color|ignored|offer", name)]
    assert {"u:spam.example.net", "meta:text:text/html", "html:tag:script"} <= got


# -- headers ------------------------------------------------------------------------------


def test_header_features() -> None:
    msg = message(
        "body text here",
        "Reply-To: <reply@other.example>",
        "X-Mailer: Microsoft Outlook Express 6.00.2600.0000",
    )
    got = features(msg)
    assert {
        "from:dom:example.org",
        "from:dn:alice",
        "from:dn:example",
        "rt:dom:other.example",
        "rt:other",
        "mid:dom:mail.example.org",
        "h:x-mailer:microsoft outlook express 0.0.0.0",
        "h:x-mailer:outlook",
        "ct:text/plain",
        "date:shape:Aa, 9 Aa 9 9:9:9 +9",
        "to:dn:none",
    } <= got


def test_subject_words_are_their_own_stream() -> None:
    got = features(message("body text"))
    assert "subject: quarterly ·1· report" in got
    assert "quarterly ·1· report" not in got
    body_pair = Tokenizer().tokenize(message("quarterly report"))
    subject_pair = Tokenizer().tokenize(message("x"))
    assert body_pair != subject_pair


def test_noise_headers_are_never_tokenised() -> None:
    clean = message("the same body text")
    noisy = message(
        "the same body text",
        "X-Spam-Status: Yes, score=12.3 required=5.0 tests=BAYES_99",
        "X-Spam-Level: ************",
        "X-Virus-Scanned: by amavisd-new",
        "X-Spamd-Result: default: True [15.00 / 15.00]",
        "X-Milterd-Scan: partial",
    )
    assert Tokenizer().tokenize(noisy) == Tokenizer().tokenize(clean)


@pytest.mark.parametrize("name", ["X-Spam-Status", "x-virus-scanned", " X-Spam", "X-Rspamd-Score"])
def test_noise_headers_cannot_be_configured(name: str) -> None:
    assert is_noise_header(name)
    with pytest.raises(ValueError, match="cannot be classified"):
        TokenizerConfig(classify_headers=("from", name))


def test_collector_received_lines_are_skipped() -> None:
    sender = (
        "Received: from mx.example.org (mx.example.org [192.0.2.1]) by mail.example.net with ESMTP"
    )
    collected = message(
        "text",
        "Received: from localhost (localhost [127.0.0.1]) by box.local (Postfix) with ESMTP",
        "Received: from pop.example.net [198.51.100.9] by localhost with POP3 (fetchmail-5.9.0)",
        sender,
    )
    assert Tokenizer().tokenize(collected) == Tokenizer().tokenize(message("text", sender))
    assert {"rcv:count:1", "rcv:0:proto:ESMTP", "rcv:0:helo:rdns", "rcv:0:tld:org"} <= features(
        collected
    )


def test_relay_features_start_at_the_hop_from_a_public_address() -> None:
    msg = message(
        "text",
        # The receiving side's own hop (here a content filter on the loopback): skipped.
        "Received: from localhost (localhost [127.0.0.1]) by mx.example.net (Postfix)",
        # The entry: a public client with a reverse DNS name.
        "Received: from out.example.co.uk (mail-7.out.example.co.uk [64.161.22.236])"
        " by localhost (Postfix) with ESMTP",
        # The sender's relays below it: a named one on a private address, an IPv6 one.
        "Received: from web (relay.lists.example.com [10.1.2.3]) by out.example.co.uk",
        "Received: from client (client [2a00:1450:4001:81c::200e]) by web",
        "Received: from deeper (deeper.example.info [65.1.2.3]) by client",
    )
    got = {f for f in features(msg) if f.startswith(("rcv:dom:", "rcv:net:"))}
    assert got == {
        "rcv:dom:example.co.uk",
        "rcv:net:64.161.0.0/16",
        "rcv:net:64.161.22.0/24",
        "rcv:dom:example.com",
        "rcv:net:2a00:1450::/32",
        "rcv:net:2a00:1450:4001::/48",
    }  # three hops from the entry: the fourth, deeper.example.info, is not read


def test_no_relay_features_without_a_public_hop() -> None:
    msg = message(
        "text",
        "Received: from box (box.internal.example [192.168.1.5]) by mx.internal.example",
    )
    assert not {f for f in features(msg) if f.startswith(("rcv:dom:", "rcv:net:"))}


def test_default_window_pairs_a_word_with_the_next_two() -> None:
    got = features(message("alpha bravo charlie delta echo"))
    assert {"alpha ·1· bravo", "alpha ·2· charlie", "charlie ·2· echo"} <= got
    assert not any("·3·" in name for name in got)
    wide = Tokenizer(TokenizerConfig(window=5)).explain(message("alpha bravo charlie delta echo"))
    assert "alpha ·4· echo" in wide.values()


def test_only_configured_headers_count() -> None:
    msg = message("text", "X-Mailer: SpamBlaster 3000")
    without = Tokenizer(TokenizerConfig(classify_headers=("from",)))
    assert not any(name.startswith("h:x-mailer") for name in without.explain(msg).values())
    assert any(name.startswith("h:x-mailer") for name in Tokenizer().explain(msg).values())


# -- meta ---------------------------------------------------------------------------------


def test_meta_features_of_a_message_with_an_attachment() -> None:
    body = textwrap.dedent(
        """\
        --b1
        Content-Type: text/plain; charset=iso-8859-1

        SEE THE ATTACHED INVOICE NOW
        --b1
        Content-Type: application/pdf; name="invoice.pdf"
        Content-Disposition: attachment; filename="invoice.pdf"
        Content-Transfer-Encoding: base64

        JVBERi0xLjQK
        --b1--
        """
    )
    got = features(message(body, content_type='multipart/mixed; boundary="b1"'))
    assert {
        "meta:ctype:multipart/mixed",
        "meta:att:1",
        "meta:atype:application/pdf",
        "meta:aext:pdf",
        "meta:charset:iso-8859-1",
        "meta:caps:9",
        "meta:text:text/plain",
    } <= got


def test_client_facts_from_the_envelope() -> None:
    msg = message("text")
    assert not any(name.startswith("client:") for name in features(msg))
    envelope = Envelope(client_addr="192.0.2.1", client_name="unknown", helo="[192.0.2.1]")
    assert {"client:rdns:none", "client:helo:ip"} <= features(msg, envelope)
    known = Envelope(
        client_addr="192.0.2.1", client_name="mx.example.org", helo="mx.example.org", auth_user="a"
    )
    assert {"client:rdns:yes", "client:tld:org", "client:helo:rdns", "client:auth"} <= features(
        msg, known
    )


# -- determinism --------------------------------------------------------------------------

_PROBE = """
import sys
from engine.mime import ParsedMessage
from engine.stats.tokenizer import Tokenizer
raw = sys.stdin.buffer.read()
print(sorted(Tokenizer().tokenize(ParsedMessage.from_bytes(raw))))
"""


def test_tokens_are_the_same_in_every_process() -> None:
    raw = (
        "From: Bob <bob@example.org>\nSubject: Größe 我们的产品\n"
        "Content-Type: text/plain; charset=utf-8\n\nHello world, http://example.com/ café Привет"
    ).encode()
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", _PROBE], input=raw, capture_output=True, check=True, env=env
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1
    here = sorted(Tokenizer().tokenize(ParsedMessage.from_bytes(raw)))
    assert outputs.pop().decode().strip() == str(here)


def test_broken_mail_still_tokenises() -> None:
    msg = ParsedMessage.from_bytes(
        b"Content-Type: multipart/mixed\nFrom: <<<\nMessage-ID: no-at-sign\n\n--x\n\xff\xfe junk"
    )
    got = features(msg)
    assert "meta:defect:missing_boundary" in got
    assert "mid:noat:a-a-a" in got
    assert Tokenizer().tokenize(ParsedMessage.from_bytes(b"")) == Tokenizer().tokenize(
        ParsedMessage.from_bytes(b"")
    )
