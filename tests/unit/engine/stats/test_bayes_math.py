"""engine.stats.classifier: f(w), the chi-square combination, gates, symbols and weights.

Every expected number is worked out by hand in the comment above it from the formulas
in the classifier's docstring; the code must agree to float precision.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from engine.stats.classifier import (
    BAYES_HAM,
    BAYES_SPAM,
    BayesParams,
    Classification,
    bayes_symbol,
    chi2_survival,
    classify,
    combine,
    dynamic_weight,
    robinson_f,
    sureness_bonus,
)

# -- f(w) ---------------------------------------------------------------------------------


def test_robinson_f_with_balanced_learns() -> None:
    # S = H = 200, so m = 200 and the counts are not rescaled: ŝ = 3, ĥ = 1.
    # f = (s·x + ŝ) / (s + ŝ + ĥ) = (1·0.5 + 3) / (1 + 3 + 1) = 3.5 / 5 = 0.7
    assert robinson_f(3, 1, 200, 200) == pytest.approx(0.7, abs=1e-15)
    # spam only, 9 sightings: (0.5 + 9) / (1 + 9) = 0.95
    assert robinson_f(9, 0, 200, 200) == pytest.approx(0.95, abs=1e-15)
    # one ham sighting: 0.5 / (1 + 1) = 0.25
    assert robinson_f(0, 1, 200, 200) == pytest.approx(0.25, abs=1e-15)


def test_robinson_f_normalises_by_the_learn_counts() -> None:
    # 10 of 100 spams and 40 of 400 hams: the same 10% in both classes.
    # m = 100: ŝ = 10, ĥ = 40 · 100/400 = 10; f = (0.5 + 10) / (1 + 20) = 0.5 exactly.
    assert robinson_f(10, 40, 100, 400) == 0.5


def test_robinson_f_rescales_the_bigger_class() -> None:
    # In 52 of 1,650 hams and none of 300 spams. m = 300: ĥ = 52 · 300/1650 = 9.4545…
    # f = 0.5 / (1 + 9.4545…) = 0.5 · 1650 / 17250 = 825 / 17250 = 0.0478260869…
    # (raw counts would give 0.5 / 53 = 0.0094: five times the confidence.)
    assert robinson_f(0, 52, 300, 1650) == pytest.approx(825 / 17250, rel=1e-12)


def test_robinson_f_strength_and_prior() -> None:
    # Unknown: the prior itself.
    assert robinson_f(0, 0, 200, 200, s=1.0, x=0.4) == 0.4
    # s = 3, x = 0.5, 2 spam sightings: (1.5 + 2) / (3 + 2) = 0.7
    assert robinson_f(2, 0, 200, 200, s=3.0) == pytest.approx(0.7, abs=1e-15)


# -- chi-square ---------------------------------------------------------------------------


def test_chi2_survival_small_cases() -> None:
    # dof 2: Q = e^(-χ²/2).                       χ² = 2: e^-1 = 0.36787944117144233
    assert chi2_survival(2.0, 2) == pytest.approx(math.exp(-1), rel=1e-15)
    # dof 4: Q = e^-m (1 + m), m = χ²/2 = 2:       3 e^-2 = 0.4060058497098381
    assert chi2_survival(4.0, 4) == pytest.approx(3 * math.exp(-2), rel=1e-15)
    # dof 6: Q = e^-m (1 + m + m²/2), m = 3:       8.5 e^-3 = 0.42319008112684353
    assert chi2_survival(6.0, 6) == pytest.approx(8.5 * math.exp(-3), rel=1e-14)
    assert chi2_survival(0.0, 10) == 1.0


def test_chi2_survival_matches_the_plain_series_for_many_tokens() -> None:
    # The plain Poisson sum e^-m Σ_{i<N} m^i / i!, term by term in log space.
    for dof, chi2 in [(200, 190.0), (200, 260.0), (2000, 2000.0), (600, 20.0), (40, 900.0)]:
        m, n = chi2 / 2, dof // 2
        plain = math.fsum(math.exp(-m + i * math.log(m) - math.lgamma(i + 1)) for i in range(n))
        assert chi2_survival(chi2, dof) == pytest.approx(plain, rel=1e-12, abs=1e-300)


def test_chi2_survival_extremes() -> None:
    assert chi2_survival(1e6, 2) == 0.0  # e^-500000 underflows: no evidence is that weak
    assert chi2_survival(1e-9, 20000) == 1.0
    with pytest.raises(ValueError, match="even"):
        chi2_survival(1.0, 3)
    with pytest.raises(ValueError, match="even"):
        chi2_survival(1.0, 0)


# -- combination --------------------------------------------------------------------------


def test_one_token_gives_its_own_probability() -> None:
    # N = 1, dof 2: spam_signal = e^(ln 0.9) = 0.9, ham_signal = e^(ln 0.1) = 0.1;
    # P = (1 + 0.9 - 0.1) / 2 = 0.9
    assert combine([0.9]) == pytest.approx(0.9, abs=1e-15)


def test_two_agreeing_tokens_strengthen_each_other() -> None:
    # N = 2, dof 4, Q = e^-m (1 + m) with m = -Σ ln:
    # spam: m = -2 ln 0.9 = 0.21072103, Q = 0.81 · 1.21072103 = 0.98068404
    # ham:  m = -2 ln 0.1 = 4.60517019, Q = 0.01 · 5.60517019 = 0.05605170
    # P = (1 + 0.98068404 - 0.05605170) / 2 = 0.96231617
    assert combine([0.9, 0.9]) == pytest.approx(0.96231617, abs=1e-8)


def test_opposite_tokens_cancel() -> None:
    # Σ ln f = Σ ln (1 - f) = ln 0.09: both signals are equal, P = 0.5 exactly.
    assert combine([0.9, 0.1]) == 0.5
    assert combine([]) == 0.5


# -- classify -----------------------------------------------------------------------------

TOKENS = list(range(1, 12))  # eleven tokens: exactly min_tokens


def test_classify_uses_known_tokens_only() -> None:
    # S = H = 200. Two tokens seen in 9 spams each (f = 0.95), nine never seen.
    # As combine([0.95, 0.95]), N = 2:
    # spam: m = -2 ln 0.95 = 0.10258659, Q = 0.9025 · 1.10258659 = 0.99508440
    # ham:  m = -2 ln 0.05 = 5.99146455, Q = 0.0025 · 6.99146455 = 0.01747866
    # P = (1 + 0.99508440 - 0.01747866) / 2 = 0.98880287
    counts = [(9, 0), (9, 0)] + [(0, 0)] * 9
    result = classify(TOKENS, counts, 200, 200)
    assert result.probability == pytest.approx(0.98880287, abs=1e-8)
    assert (result.tokens_used, result.tokens_total, result.silent) == (2, 11, None)


def test_tokens_near_one_half_and_rare_tokens_are_skipped() -> None:
    # (11, 10): f = 11.5 / 22 = 0.5227, within min_prob_strength 0.05 of 0.5: skipped.
    # (1, 0): f = 0.75 but 1 observation < min_token_hits 2: skipped.
    # What is left is one token at f = 0.95, and one token gives its own probability.
    counts = [(9, 0), (11, 10), (1, 0)] + [(0, 0)] * 8
    params = BayesParams(min_token_hits=2)
    result = classify(TOKENS, counts, 200, 200, params)
    assert result.tokens_used == 1
    assert result.probability == pytest.approx(0.95, abs=1e-12)
    # With the default min_token_hits (1), the single sighting counts too.
    assert classify(TOKENS, counts, 200, 200).tokens_used == 2


def test_gates_keep_the_classifier_silent() -> None:
    counts = [(9, 0)] * 11
    assert classify(TOKENS, counts, 199, 5000).silent == "min_learns"
    assert classify(TOKENS, counts, 5000, 199).silent == "min_learns"
    assert classify(TOKENS[:10], counts[:10], 200, 200).silent == "min_tokens"
    assert classify(TOKENS, [(0, 0)] * 11, 200, 200).silent == "no_evidence"
    silent = classify(TOKENS, [(10, 10)] * 11, 200, 200)  # every f is exactly 0.5
    assert (silent.probability, silent.silent) == (None, "no_evidence")
    lenient = BayesParams(min_learns=1, min_tokens=1)
    assert classify([1], [(1, 0)], 1, 1, lenient).probability == pytest.approx(0.75)


def test_classify_is_independent_of_token_order() -> None:
    rng = random.Random(7)
    counts = [(rng.randrange(40), rng.randrange(40)) for _ in range(500)]
    tokens = list(range(500))
    first = classify(tokens, counts, 300, 1650).probability
    pairs = list(zip(tokens, counts, strict=True))
    rng.shuffle(pairs)
    shuffled = classify([t for t, _ in pairs], [c for _, c in pairs], 300, 1650).probability
    assert first == shuffled  # exactly: sums are math.fsum


def test_mismatched_counts_are_a_backend_bug() -> None:
    with pytest.raises(ValueError, match="zip"):
        classify(TOKENS, [(0, 0)] * 10, 200, 200)


def test_top_tokens_strongest_first() -> None:
    counts = [(9, 0), (0, 9), (3, 1), (30, 0)] + [(0, 0)] * 7
    result = classify(TOKENS, counts, 200, 200)
    top = result.top(3)
    # f: token 4 → 30.5/31 = 0.984, token 1 → 0.95, token 2 → 0.05 (tie, |0.45|), token 3 → 0.7
    assert top[0].token == 4
    assert {t.token for t in top[1:]} == {1, 2}
    assert (top[0].spam, top[0].ham) == (30, 0)
    assert top[0].probability == pytest.approx(30.5 / 31)
    assert len(result.top(10)) == 4
    assert Classification(None, 0, 0).top() == []


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="robinson"):
        BayesParams(robinson_s=0)
    with pytest.raises(ValueError, match="robinson"):
        BayesParams(robinson_x=1.0)
    with pytest.raises(ValueError, match="min_prob_strength"):
        BayesParams(min_prob_strength=0.5)
    with pytest.raises(ValueError, match="negative"):
        BayesParams(min_learns=-1)
    with pytest.raises(ValueError, match="sure_from"):
        BayesParams(sure_from=12.0, sure_full=12.0)
    with pytest.raises(ValueError, match="sure_bonus"):
        BayesParams(sure_bonus=-0.1)


# -- symbols and weights ------------------------------------------------------------------


def test_dynamic_weight_by_hand() -> None:
    # y = 32u⁴ - 6u³ - 7u² + 3u, u = q - 0.5
    assert dynamic_weight(0.5) == 0.0
    # u = 0.5: 32/16 - 6/8 - 7/4 + 3/2 = 2 - 0.75 - 1.75 + 1.5 = 1
    assert dynamic_weight(1.0) == pytest.approx(1.0, abs=1e-15)
    # u = 0.25: 0.125 - 0.09375 - 0.4375 + 0.75 = 0.34375
    assert dynamic_weight(0.75) == pytest.approx(0.34375, abs=1e-15)
    # u = 0.49: 1.84473632 - 0.705894 - 1.6807 + 1.47 = 0.92814232
    assert dynamic_weight(0.99) == pytest.approx(0.92814232, abs=1e-12)
    assert dynamic_weight(0.2) == 0.0  # below 0.5: no opinion for this class
    assert dynamic_weight(1.5) == pytest.approx(1.0)


def test_dynamic_weight_grows_steadily() -> None:
    grid = [0.5 + i / 1000 for i in range(501)]
    weights = [dynamic_weight(q) for q in grid]
    assert all(a < b for a, b in itertools.pairwise(weights))


def _result(p: float | None, evidence: float = 0.0) -> Classification:
    return Classification(p, 20 if p is not None else 0, 40, evidence=evidence)


def test_bayes_symbol_by_probability() -> None:
    # P = 0.97: BAYES_SPAM, u = 0.47: 32·0.04879681 - 6·0.103823 - 7·0.2209 + 1.41 = 0.80225992
    symbol, weight, option = bayes_symbol(_result(0.97)) or ("", 0.0, "")
    assert (symbol, option) == (BAYES_SPAM, "97.00%")
    assert weight == pytest.approx(0.80225992, abs=1e-12)
    # P = 0.02: BAYES_HAM with the ham probability q = 0.98 (u = 0.48):
    # 32·0.05308416 - 6·0.110592 - 7·0.2304 + 1.44 = 0.86234112
    symbol, weight, option = bayes_symbol(_result(0.02)) or ("", 0.0, "")
    assert (symbol, option) == (BAYES_HAM, "98.00%")
    assert weight == pytest.approx(0.86234112, abs=1e-12)


def test_no_symbol_without_an_opinion() -> None:
    assert bayes_symbol(_result(None)) is None
    assert bayes_symbol(_result(0.54)) is None  # within symbol_margin 0.05 of 0.5
    assert bayes_symbol(_result(0.46)) is None
    assert bayes_symbol(_result(0.56)) is not None
    assert bayes_symbol(_result(0.56), BayesParams(symbol_margin=0.1)) is None


def test_evidence_keeps_growing_where_the_probability_saturates() -> None:
    # 11 tokens at f = 0.95 and 30 at f = 0.99: P rounds to 1 in both, the evidence (the
    # decades by which the ham hypothesis is rejected) does not.
    few = classify(TOKENS, [(9, 0)] * 11, 200, 200)
    many = classify(list(range(60)), [(99, 0)] * 60, 200, 200)
    assert few.probability is not None
    assert many.probability is not None
    assert few.probability > 0.9999
    assert many.probability > 0.9999
    assert 5.0 < few.evidence < many.evidence
    hammy = classify(TOKENS, [(0, 9)] * 11, 200, 200)
    assert hammy.evidence == pytest.approx(-few.evidence)


def test_sureness_bonus_ramps_between_sure_from_and_sure_full() -> None:
    # Defaults: 0.4 · (evidence - 4) / (12 - 4), clamped to [0, 0.4].
    assert sureness_bonus(-20.0) == 0.0
    assert sureness_bonus(4.0) == 0.0
    assert sureness_bonus(8.0) == pytest.approx(0.2)
    assert sureness_bonus(12.0) == pytest.approx(0.4)
    assert sureness_bonus(300.0) == pytest.approx(0.4)
    assert sureness_bonus(8.0, BayesParams(sure_bonus=0.0)) == 0.0


def test_bayes_symbol_adds_the_bonus_in_the_verdicts_direction() -> None:
    base = dynamic_weight(0.9999)
    _, weight, _ = bayes_symbol(_result(0.9999, evidence=10.0)) or ("", 0.0, "")
    assert weight == pytest.approx(base + 0.3)  # 0.4 · (10 - 4) / 8
    # A ham verdict counts the evidence the other way round.
    symbol, weight, _ = bayes_symbol(_result(0.0001, evidence=-16.0)) or ("", 0.0, "")
    assert symbol == BAYES_HAM
    assert weight == pytest.approx(base + 0.4)
    # Evidence against the verdict (impossible from classify) never adds.
    _, weight, _ = bayes_symbol(_result(0.9999, evidence=-16.0)) or ("", 0.0, "")
    assert weight == pytest.approx(base)
