"""Bayes classifier math: Robinson's f(w), Fisher's inverse chi-square, Rspamd's gates.

Theory of operation, for one message with tokens t and per-token counts (s_t, h_t) of
spam and ham messages that contained t, out of S spam and H ham learned messages:

1. **Per-token probability.** Counts are first rescaled to the smaller class's learn
   count m = min(S, H), so both classes count in the same units (normalisation by the
   learn counts)::

       ŝ = s_t · m / S        ĥ = h_t · m / H
       p(t) = ŝ / (ŝ + ĥ)     (= (s_t/S) / (s_t/S + h_t/H))
       n(t) = ŝ + ĥ

   and p is pulled towards a prior ``x`` by Robinson's f(w), with a strength ``s`` worth
   that many observations::

       f(t) = (s · x + n · p) / (s + n)  =  (s · x + ŝ) / (s + ŝ + ĥ)

   ``x = 0.5`` (no prior opinion) and ``s = 1`` (a token seen once in the smaller class
   moves only halfway from 0.5). Rescaling matters when one class was learned much more:
   with raw counts (n = s_t + h_t) a common phrase seen in 52 of 1,650 hams and none of
   300 spams gets f = 0.01 although 300 spams would be expected to show it only ~9
   times; rescaled, n = 9.5 and f = 0.05. On the SpamAssassin 2002 corpus (5.5 ham per
   spam) this raised the ROC AUC from 0.968 to 0.983. SpamBayes uses s = 0.45 and
   SpamAssassin 0.1 on raw counts; s = 1 measured best on rescaled ones (0.5: -0.002,
   3: -0.01).
2. **Skipping.** Tokens with ``s_t + h_t < min_token_hits`` raw observations (Rspamd's
   2) or ``|f(t) - 0.5| < min_prob_strength`` (no opinion, Rspamd's 0.05) are not used.
   Unknown tokens (never learned) are never used: they say nothing either way.
3. **Combination** (Fisher's method as Robinson applied it, as Rspamd and SpamBayes do):
   for the N tokens used::

       spam_signal = C⁻¹(-2 Σ ln f(t),       2N)   → 1 when the f(t) are near 1
       ham_signal  = C⁻¹(-2 Σ ln (1 - f(t)), 2N)   → 1 when the f(t) are near 0
       P(spam)     = (1 + spam_signal - ham_signal) / 2

   where C⁻¹(χ², 2N) is the chi-square survival function with even degrees of freedom,
   the Poisson sum e^(-m) Σ_{i<N} m^i / i! with m = χ²/2 (``chi2_survival``). Both
   signals near 1 (strong evidence both ways) give 0.5, "unsure", by design.
4. **Gates.** Silent (no probability) when either class has fewer than ``min_learns``
   learned messages, the message has fewer than ``min_tokens`` tokens, or no token was
   significant.
5. **Symbols.** ``BAYES_SPAM`` when P > 0.5 + ``symbol_margin``, ``BAYES_HAM`` when
   P < 0.5 - margin, with Rspamd's dynamic weight: the class probability q = max(P, 1-P)
   through y = 32u⁴ - 6u³ - 7u² + 3u with u = q - 0.5, which climbs from 0 at q = 0.5 to
   1 at q = 1, slowly at first (a 75% opinion weighs 0.34, a 95% one 0.70, a 99% one
   0.93), plus a **sureness bonus** of up to ``sure_bonus`` (0.4) for overwhelming
   evidence. P saturates: a message whose ham signal is 10⁻³ and one whose ham signal is
   10⁻⁴⁰ both have P = 99.9+%, though the second rejects the ham hypothesis 37 orders of
   magnitude more decisively. The classification keeps that as ``evidence`` =
   log10(spam_signal / ham_signal) (positive for spam), and the weight grows linearly
   from ``sure_from`` (4: one chance in 10,000 that the tokens are that spammy by
   chance) to ``sure_full`` (12) decades. On the SpamAssassin 2002 corpus no ham reached
   3.4 decades, while 60% of the test spam passed 4 and 36% passed 12: the bonus raised
   the whole engine's spam detection at "add header" from 89.0% to 90.5% with no more
   false positives (on a second, smaller split it changed neither). It lets Bayes alone
   reach the add-header rung (5.1 * 1.4 = 7.1) when the evidence is past about 7.5
   decades.

Everything here is pure and deterministic (sums are ``math.fsum``, so token order does
not matter); counts come from a ``StatBackend``.
"""

from __future__ import annotations

import heapq
import math
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "BAYES_HAM",
    "BAYES_SPAM",
    "BayesParams",
    "Classification",
    "TokenInfluence",
    "bayes_symbol",
    "chi2_survival",
    "classify",
    "combine",
    "dynamic_weight",
    "robinson_f",
    "sureness_bonus",
]

BAYES_SPAM: Final = "BAYES_SPAM"
BAYES_HAM: Final = "BAYES_HAM"


@dataclass(slots=True, frozen=True)
class BayesParams:
    """Classifier constants (module docstring, steps 1-5); the gates are Rspamd's defaults."""

    robinson_s: float = 1.0
    robinson_x: float = 0.5
    min_token_hits: int = 1
    min_prob_strength: float = 0.05
    min_tokens: int = 11
    min_learns: int = 200
    symbol_margin: float = 0.05
    sure_bonus: float = 0.4
    sure_from: float = 4.0
    sure_full: float = 12.0

    def __post_init__(self) -> None:
        if not (self.robinson_s > 0 and 0.0 < self.robinson_x < 1.0):
            raise ValueError("robinson_s must be > 0 and robinson_x in (0, 1)")
        if not (0.0 <= self.min_prob_strength < 0.5 and 0.0 <= self.symbol_margin < 0.5):
            raise ValueError("min_prob_strength and symbol_margin must be in [0, 0.5)")
        if not (self.sure_bonus >= 0.0 and 0.0 <= self.sure_from < self.sure_full):
            raise ValueError("need sure_bonus >= 0 and 0 <= sure_from < sure_full")
        if min(self.min_token_hits, self.min_tokens, self.min_learns) < 0:
            raise ValueError("min_token_hits, min_tokens and min_learns must not be negative")


@dataclass(slots=True, frozen=True)
class TokenInfluence:
    """One token's part in a verdict: its counts and f(t)."""

    token: int
    spam: int
    ham: int
    probability: float


@dataclass(slots=True, frozen=True)
class Classification:
    """The classifier's answer for one message.

    ``probability`` is P(spam) in [0, 1], or None when a gate kept the classifier silent
    (``silent`` then names it: ``min_learns``, ``min_tokens`` or ``no_evidence``).
    ``tokens_used`` of ``tokens_total`` tokens were significant; ``top(n)`` names the
    most influential ones, for the "why" display. ``evidence`` is log10(spam_signal /
    ham_signal) (module docstring, step 5): positive for spam, in decades, within ±300.
    """

    probability: float | None
    tokens_used: int
    tokens_total: int
    silent: str | None = None
    evidence: float = 0.0
    _tokens: Sequence[int] = field(default=(), repr=False, compare=False)
    _counts: Sequence[tuple[int, int]] = field(default=(), repr=False, compare=False)
    _f: Sequence[float] = field(default=(), repr=False, compare=False)

    def top(self, n: int = 10) -> list[TokenInfluence]:
        """The ``n`` used tokens whose f(t) is farthest from 0.5, strongest first."""
        order = heapq.nlargest(n, range(len(self._f)), key=lambda i: abs(self._f[i] - 0.5))
        return [TokenInfluence(self._tokens[i], *self._counts[i], self._f[i]) for i in order]


def robinson_f(
    spam: int, ham: int, spam_learns: int, ham_learns: int, s: float = 1.0, x: float = 0.5
) -> float:
    """Robinson's f(w) for one token on rescaled counts (step 1); ``x`` when never seen.

    ``classify`` computes the same expression inline for speed.
    """
    if spam + ham == 0:
        return x
    spam_learns, ham_learns = max(spam_learns, 1), max(ham_learns, 1)
    smaller = min(spam_learns, ham_learns)
    spam_hat = spam * (smaller / spam_learns)
    ham_hat = ham * (smaller / ham_learns)
    return (s * x + spam_hat) / (s + spam_hat + ham_hat)


def chi2_survival(chi2: float, dof: int) -> float:
    """P(X ≥ chi2) for X ~ χ² with ``dof`` (even, > 0) degrees of freedom.

    For even dof = 2N this is P(Poisson(m) < N) with m = chi2 / 2: the sum of the Poisson
    terms i = 0..N-1. The sum starts at its largest term (the mode, or N-1 if the mode is
    past the range) computed in log space, and walks outwards until terms stop mattering,
    so neither e^(-m) underflowing at large m nor thousands of tokens cost accuracy or
    a long loop.
    """
    if dof <= 0 or dof % 2:
        raise ValueError("dof must be even and positive")
    if chi2 <= 0.0:
        return 1.0
    m = chi2 / 2.0
    n = dof // 2
    start = min(n - 1, int(m))
    log_term = -m + start * math.log(m) - math.lgamma(start + 1)
    if log_term < -745.0:  # the largest term underflows: the whole sum is below 1e-300
        return 0.0
    first = math.exp(log_term)
    total = first
    term = first
    for i in range(start, 0, -1):  # downwards: term(i-1) = term(i) * i / m
        term *= i / m
        total += term
        if term < total * 1e-17:
            break
    term = first
    for i in range(start + 1, n):  # upwards: term(i) = term(i-1) * m / i
        term *= m / i
        total += term
        if term < total * 1e-17:
            break
    return min(total, 1.0)


def combine(probabilities: Sequence[float]) -> float:
    """Fisher/Robinson combination of token f(t) values into P(spam) (step 3)."""
    if not probabilities:
        return 0.5
    log_f = math.fsum(map(math.log, probabilities))
    log_not_f = math.fsum(map(math.log1p, map(operator.neg, probabilities)))
    return _combine_logs(log_f, log_not_f, len(probabilities))


def _combine_logs(log_f: float, log_not_f: float, used: int) -> float:
    return _signals(log_f, log_not_f, used)[0]


def _signals(log_f: float, log_not_f: float, used: int) -> tuple[float, float]:
    """P(spam) and the evidence in decades (module docstring, steps 3 and 5)."""
    # Robinson's H and S: -2 Σ ln f is small when every f is near 1, so its chi-square
    # survival is near 1: the f(t) are too close to 1 to be chance.
    spam_signal = chi2_survival(-2.0 * log_f, 2 * used)
    ham_signal = chi2_survival(-2.0 * log_not_f, 2 * used)
    evidence = math.log10(max(spam_signal, _TINY)) - math.log10(max(ham_signal, _TINY))
    return (1.0 + spam_signal - ham_signal) / 2.0, evidence


def classify(
    tokens: Sequence[int],
    counts: Sequence[tuple[int, int]],
    spam_learns: int,
    ham_learns: int,
    params: BayesParams | None = None,
) -> Classification:
    """P(spam) of one message from its tokens' (spam, ham) counts (steps 1-4).

    Args:
        tokens: the message's distinct tokens.
        counts: ``(spam, ham)`` for each token, in the same order (0, 0 when unknown);
            a list of another length is a backend bug (``ValueError``).
        spam_learns: spam messages learned so far; ``ham_learns`` likewise.
        params: constants and gates.

    Returns:
        The probability (or why the classifier stays silent) and the tokens used.
    """
    params = params or _DEFAULTS
    total = len(tokens)
    if spam_learns < max(params.min_learns, 1) or ham_learns < max(params.min_learns, 1):
        return Classification(None, 0, total, "min_learns")
    if total < params.min_tokens:
        return Classification(None, 0, total, "min_tokens")
    smaller = min(spam_learns, ham_learns)
    k_spam, k_ham = smaller / spam_learns, smaller / ham_learns
    s, sx = params.robinson_s, params.robinson_s * params.robinson_x
    min_hits = max(params.min_token_hits, 1)
    low, high = 0.5 - params.min_prob_strength, 0.5 + params.min_prob_strength
    # One plain loop: callgrind counts fewer instructions for it than for map/compress
    # chains (which build a list per step) on real messages, most of whose tokens are
    # unknown and leave at the first test.
    f: list[float] = []
    used_tokens: list[int] = []
    used_counts: list[tuple[int, int]] = []
    for token, pair in zip(tokens, counts, strict=True):
        spam, ham = pair
        if spam + ham < min_hits:
            continue
        spam_hat = spam * k_spam
        prob = (sx + spam_hat) / (s + spam_hat + ham * k_ham)
        if low < prob < high:
            continue
        f.append(prob)
        used_tokens.append(token)
        used_counts.append(pair)
    if not f:
        return Classification(None, 0, total, "no_evidence")
    log_f = math.fsum(map(math.log, f))
    log_not_f = math.fsum(map(math.log1p, map(operator.neg, f)))
    probability, evidence = _signals(log_f, log_not_f, len(f))
    return Classification(probability, len(f), total, None, evidence, used_tokens, used_counts, f)


def dynamic_weight(probability: float) -> float:
    """Rspamd's weight for a class probability q in [0.5, 1] (step 5); 0 at 0.5, 1 at 1."""
    u = min(max(probability, 0.5), 1.0) - 0.5
    return min(max(32 * u**4 - 6 * u**3 - 7 * u**2 + 3 * u, 0.0), 1.0)


def sureness_bonus(evidence: float, params: BayesParams | None = None) -> float:
    """The weight added for ``evidence`` decades in the verdict's direction (step 5)."""
    params = params or _DEFAULTS
    share = (evidence - params.sure_from) / (params.sure_full - params.sure_from)
    return params.sure_bonus * min(max(share, 0.0), 1.0)


def bayes_symbol(
    result: Classification, params: BayesParams | None = None
) -> tuple[str, float, str] | None:
    """``(symbol, weight, option)`` for a classification, or None when it has no opinion.

    The option is the class probability as a percentage (``"97.25%"``), as Rspamd shows.
    """
    params = params or _DEFAULTS
    p = result.probability
    if p is None or abs(p - 0.5) <= params.symbol_margin:
        return None
    if p > 0.5:
        symbol, q, evidence = BAYES_SPAM, p, result.evidence
    else:
        symbol, q, evidence = BAYES_HAM, 1.0 - p, -result.evidence
    weight = dynamic_weight(q) + sureness_bonus(evidence, params)
    return symbol, weight, f"{q * 100:.2f}%"


_DEFAULTS: Final = BayesParams()
_TINY: Final = 1e-300  # signals below count as this: evidence stays finite
