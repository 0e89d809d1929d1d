"""engine.stats.osb: word hashes, OSB pairs with their distance, single features.

The pinned numbers are stored in every Bayes database: if one of these tests fails, the
change orphans every learned token and needs a migration, not a new expected value.
"""

from __future__ import annotations

import mmh3
import pytest

from engine.stats.osb import (
    BODY_SEED,
    FEATURE_SEED,
    MAX_WINDOW,
    SUBJECT_SEED,
    feature_tokens,
    osb_names,
    osb_tokens,
    word_hashes,
)


def test_word_hash_is_unsigned_murmur3_x64_first_half() -> None:
    # mmh3.hash64 with keyword signed=False is the reference; a positional signed
    # argument is ignored by mmh3 5.x, which is why osb.py does not use hash64.
    assert word_hashes(["abc"]) == [mmh3.hash64("abc", signed=False)[0]]
    assert word_hashes(["abc"]) == [13012657714217449575]


def test_word_hashes_keep_order_and_repeats() -> None:
    hashes = word_hashes(["free", "money", "free"])
    assert hashes[0] == hashes[2] != hashes[1]
    assert word_hashes([]) == []


def test_seeds_separate_body_subject_and_features() -> None:
    assert len({BODY_SEED, SUBJECT_SEED, FEATURE_SEED}) == 3
    assert word_hashes(["abc"], SUBJECT_SEED) == [1606280741486469113]
    assert word_hashes(["abc"], SUBJECT_SEED) != word_hashes(["abc"], BODY_SEED)
    assert feature_tokens(["abc"]).isdisjoint(word_hashes(["abc"]))


def test_pinned_tokens() -> None:
    hashes = word_hashes(["free", "money", "now"])
    assert hashes == [5975276713273882897, 18308799175215961724, 6523639255622298466]
    # free·1·money, money·1·now, free·2·now
    assert osb_tokens(hashes) == {
        9149438885481998337,
        11108986842968004438,
        16884753317620906238,
    }
    assert feature_tokens(["from:dom:example.org"]) == {14842597384771940773}


def test_every_word_pairs_with_the_next_four() -> None:
    words = [f"w{i}" for i in range(10)]
    tokens = osb_tokens(word_hashes(words))
    # distance 1..4 pairs: 9 + 8 + 7 + 6, all distinct for distinct words
    assert len(tokens) == 30
    assert all(0 <= t < 1 << 64 for t in tokens)
    assert len(osb_tokens(word_hashes(words), window=2)) == 9


def test_order_and_distance_are_part_of_the_token() -> None:
    free, money, x = word_hashes(["free", "money", "x"])
    adjacent = osb_tokens([free, money])
    assert adjacent != osb_tokens([money, free])
    # "free x money": free·2·money must differ from free·1·money
    gapped = osb_tokens([free, x, money])
    assert adjacent.isdisjoint(gapped - osb_tokens([free, x]) - osb_tokens([x, money]))
    assert len(gapped) == 3


def test_tokens_are_deduplicated_per_message() -> None:
    hashes = word_hashes(["buy", "now"] * 50)
    # buy·1·now, now·1·buy, buy·2·buy, now·2·now, buy·3·now, now·3·buy, buy·4·buy, now·4·now
    assert len(osb_tokens(hashes)) == 8


def test_streams_add_to_one_set() -> None:
    out: set[int] = set()
    osb_tokens(word_hashes(["a1", "b1"]), out=out)
    osb_tokens(word_hashes(["a1", "b1"], SUBJECT_SEED), out=out)
    feature_tokens(["meta:size:12"], out=out)
    assert len(out) == 3


def test_short_streams() -> None:
    assert osb_tokens([]) == set()
    assert osb_tokens(word_hashes(["alone"])) == set()


@pytest.mark.parametrize("window", [0, 1, MAX_WINDOW + 1])
def test_window_is_checked(window: int) -> None:
    with pytest.raises(ValueError, match="window"):
        osb_tokens(word_hashes(["a1", "b1"]), window)


def test_names_cover_every_token() -> None:
    words = ["cheap", "pills", "online", "now", "click", "here"]
    names = osb_names(words)
    assert set(names) == osb_tokens(word_hashes(words))
    token = next(iter(osb_tokens(word_hashes(["cheap", "pills"]))))
    assert names[token] == "cheap ·1· pills"
