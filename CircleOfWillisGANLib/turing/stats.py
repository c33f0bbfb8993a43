"""Exact statistics for forced-choice reader studies, in pure Python so that they also run inside Slicer.

The binomial test follows the same two-sided rule as scipy.stats.binomtest (outcomes no likelier than the
observed one), and its confidence interval is the exact Clopper-Pearson interval; the tests compare both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

ALPHA = 0.05
RELATIVE_TIE = 1 + 1e-7
MAX_READINGS = 100000


def binom_pmf(k: int, n: int, p: float) -> float:
    """P(X = k) for X ~ Binomial(n, p)."""
    if k < 0 or k > n:
        return 0.0
    if p <= 0.0 or p >= 1.0:
        return float(k == (n if p >= 1.0 else 0))
    log = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
    return math.exp(log)


def binom_test(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided p-value of k successes in n trials against success probability p."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    observed = binom_pmf(k, n, p)
    total = sum(q for q in (binom_pmf(i, n, p) for i in range(n + 1)) if q <= observed * RELATIVE_TIE)
    return min(1.0, total)


def _tail_at_least(k: int, n: int, p: float) -> float:
    return sum(binom_pmf(i, n, p) for i in range(k, n + 1))


def _solve_increasing(f, target: float) -> float:
    """The p in [0, 1] where an increasing function f(p) crosses target, by bisection."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> Tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval for a binomial proportion k / n."""
    if n < 1:
        return (0.0, 1.0)
    half = (1.0 - confidence) / 2
    lower = 0.0 if k == 0 else _solve_increasing(lambda p: _tail_at_least(k, n, p), half)
    upper = 1.0 if k == n else _solve_increasing(lambda p: _tail_at_least(k + 1, n, p), 1.0 - half)
    return lower, upper


@dataclass(frozen=True)
class Proportion:
    """k of n, with its exact 95% interval."""

    k: int
    n: int

    @property
    def value(self) -> Optional[float]:
        return self.k / self.n if self.n else None

    @property
    def ci(self) -> Tuple[float, float]:
        return clopper_pearson(self.k, self.n)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> Optional[float]:
    """Cohen's kappa of two raters' calls on the same cases; None when chance agreement is total."""
    if len(a) != len(b) or not a:
        raise ValueError("Cohen's kappa needs two equally long, non-empty lists of calls")
    n = len(a)
    categories = sorted(set(a) | set(b))
    observed = sum(x == y for x, y in zip(a, b)) / n
    expected = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in categories)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> Optional[float]:
    """Fleiss' kappa from a subjects x categories table of counts, every row summing to the rater count."""
    rows = [list(map(int, r)) for r in table]
    if not rows:
        raise ValueError("Fleiss' kappa needs at least one subject")
    m = sum(rows[0])
    if m < 2 or any(sum(r) != m for r in rows):
        raise ValueError("every subject needs the same number (>= 2) of ratings for Fleiss' kappa")
    n_subjects = len(rows)
    per_subject = [(sum(c * c for c in r) - m) / (m * (m - 1)) for r in rows]
    p_bar = sum(per_subject) / n_subjects
    shares = [sum(r[j] for r in rows) / (n_subjects * m) for j in range(len(rows[0]))]
    p_e = sum(s * s for s in shares)
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def chance_band(n: int, alpha: float = ALPHA) -> Tuple[float, float]:
    """The accuracies that n readings cannot tell from guessing (two-sided exact test at alpha)."""
    ks = [k for k in range(n + 1) if binom_test(k, n) >= alpha]
    return ks[0] / n, ks[-1] / n


def readings_to_significance(accuracy: float, alpha: float = ALPHA) -> Optional[int]:
    """Fewest readings at which this accuracy, observed, would differ from 50% at alpha (None at exactly 50%)."""
    effect = abs(accuracy - 0.5)
    if effect < 1e-9:
        return None
    n = max(1, int(0.5 * (1.96 * 0.5 / effect) ** 2))
    while n <= MAX_READINGS:
        if all(binom_test(int(round(accuracy * m)), m) < alpha for m in range(n, n + 5)):
            return n
        n += 1
    return None


def readings_for_power(accuracy: float, power: float = 0.8, alpha: float = ALPHA) -> Optional[int]:
    """Fewest readings for which a reader whose true accuracy is `accuracy` is detected with `power`."""
    effect = abs(accuracy - 0.5)
    if effect < 1e-9:
        return None
    n = max(5, int(0.5 * ((1.96 + 0.84) * 0.5 / effect) ** 2))
    while n <= MAX_READINGS:
        if exact_power(accuracy, n, alpha) >= power:
            return n
        n += 1
    return None


def exact_power(accuracy: float, n: int, alpha: float = ALPHA) -> float:
    """Probability that n readings at true accuracy reach p < alpha in the two-sided exact test."""
    lower = -1
    for k in range(n // 2 + 1):
        if 2 * sum(binom_pmf(i, n, 0.5) for i in range(k + 1)) < alpha:
            lower = k
        else:
            break
    if lower < 0:
        return 0.0
    return sum(binom_pmf(i, n, accuracy) for i in range(lower + 1)) + _tail_at_least(n - lower, n, accuracy)


def sample_size_note(correct: int, n: int, alpha: float = ALPHA) -> str:
    """One paragraph on what the observed accuracy can and cannot show, and how many readings it would need."""
    if n == 0:
        return "No readings yet."
    accuracy = correct / n
    lo, hi = chance_band(n, alpha)
    text = (f"With {n} readings, any accuracy from {lo:.0%} to {hi:.0%} cannot be told from guessing "
            f"(exact two-sided binomial test, alpha {alpha:g}). ")
    needed = readings_to_significance(accuracy, alpha)
    powered = readings_for_power(accuracy, 0.8, alpha)
    if needed is None or powered is None:
        return text + f"The observed accuracy of {accuracy:.1%} is at chance: no number of readings would make it significant."
    return text + (f"An accuracy of {accuracy:.1%} would be significant from about {needed} readings; to detect a reader "
                   f"whose true accuracy is {accuracy:.1%} with 80% power needs about {powered} readings.")


def agreement_table(calls_by_rater: Dict[str, Dict[str, str]], categories: Sequence[str]) -> Tuple[List[str], List[List[int]]]:
    """Cases every rater answered, and for each the count of raters per category (Fleiss' table)."""
    raters = list(calls_by_rater)
    common = sorted(set.intersection(*(set(calls_by_rater[r]) for r in raters))) if raters else []
    table = [[sum(calls_by_rater[r][case] == c for r in raters) for c in categories] for case in common]
    return common, table
