"""Exact statistics for forced-choice reader studies, in pure Python so that they also run inside Slicer.

The binomial test follows the same two-sided rule as scipy.stats.binomtest (outcomes no likelier than the
observed one), and its confidence interval is the exact Clopper-Pearson interval; the tests compare both.
"""

from __future__ import annotations

import functools
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


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Exact two-sided p-value of the 2x2 table [[a, b], [c, d]] with its margins fixed (Fisher), by the same rule as
    scipy.stats.fisher_exact: tables no likelier than the observed one."""
    if min(a, b, c, d) < 0:
        raise ValueError(f"a 2x2 table needs counts >= 0, got {[[a, b], [c, d]]}")
    row, col, n = a + b, a + c, a + b + c + d
    if n == 0 or row in (0, n) or col in (0, n):
        return 1.0

    def log_pmf(x: int) -> float:
        return (math.lgamma(row + 1) - math.lgamma(x + 1) - math.lgamma(row - x + 1) + math.lgamma(n - row + 1)
                - math.lgamma(col - x + 1) - math.lgamma(n - row - col + x + 1) - math.lgamma(n + 1)
                + math.lgamma(col + 1) + math.lgamma(n - col + 1))

    observed = log_pmf(a)
    support = range(max(0, col - (n - row)), min(row, col) + 1)
    total = sum(math.exp(q) for q in (log_pmf(x) for x in support) if q <= observed + math.log(RELATIVE_TIE))
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


def _tail_from(start: int, n: int, p: float, step: int) -> float:
    """Sum of P(X = i) from i = start onwards in direction `step` (+1 or -1), where the terms only shrink;
    stops once they no longer change the sum, so a tail costs O(sqrt(n)) terms instead of O(n)."""
    if p <= 0.0 or p >= 1.0:
        return sum(binom_pmf(i, n, p) for i in range(start, -1 if step < 0 else n + 1, step))
    total, i, term = 0.0, start, binom_pmf(start, n, p)
    odds = p / (1.0 - p)
    while 0 <= i <= n and term > 0.0:
        total += term
        if term < total * 1e-17:
            break
        term *= (i / (n - i + 1) / odds) if step < 0 else ((n - i) / (i + 1) * odds)
        i += step
    return total


def _at_most(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed from the smaller side of the mode."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    mode = int((n + 1) * p)
    if k <= mode:
        return min(1.0, _tail_from(k, n, p, -1))
    return max(0.0, 1.0 - _tail_from(k + 1, n, p, +1))


def _half_p_value(k: int, n: int) -> float:
    """binom_test(k, n, 0.5) for the symmetric null: twice the smaller tail (1 at the centre)."""
    if 2 * k == n:
        return 1.0
    return min(1.0, 2.0 * _at_most(min(k, n - k), n, 0.5))


def _critical_low(n: int, alpha: float) -> int:
    """Largest k <= n // 2 whose two-sided p-value against 50% is below alpha (-1 if none)."""
    k = min(n // 2, max(-1, int(n / 2 - 1.96 * math.sqrt(n) / 2)))
    while k >= 0 and 2 * _at_most(k, n, 0.5) >= alpha:
        k -= 1
    while k + 1 <= n // 2 and 2 * _at_most(k + 1, n, 0.5) < alpha:
        k += 1
    return k


def chance_band(n: int, alpha: float = ALPHA) -> Tuple[float, float]:
    """The accuracies that n readings cannot tell from guessing (two-sided exact test at alpha)."""
    low = _critical_low(n, alpha)
    return (low + 1) / n, (n - low - 1) / n


def _first_n(start: int, hit) -> Optional[int]:
    """Fewest n >= start with hit(n), found by a linear scan (the exact criteria are saw-toothed in n)."""
    n = max(1, start)
    while n <= MAX_READINGS:
        if hit(n):
            return n
        n += 1
    return None


def _scan_start(normal_n: float, slack: float) -> int:
    """Where the linear scan starts: far below the normal approximation for small n, closer for large n,
    where the exact criterion follows the approximation within a fraction of a standard error."""
    return int(normal_n * (0.5 if normal_n < 1000 else slack))


def readings_to_significance(accuracy: float, alpha: float = ALPHA) -> Optional[int]:
    """Fewest readings at which this accuracy, observed, would differ from 50% at alpha (None at exactly 50%
    and beyond MAX_READINGS)."""
    effect = abs(accuracy - 0.5)
    if effect < 1e-9:
        return None
    normal_n = (1.96 * 0.5 / effect) ** 2
    return _first_n(_scan_start(normal_n, 0.8), lambda n: all(
        _half_p_value(int(round(accuracy * m)), m) < alpha for m in range(n, n + 5)))


def readings_for_power(accuracy: float, power: float = 0.8, alpha: float = ALPHA) -> Optional[int]:
    """Fewest readings from which on a reader whose true accuracy is `accuracy` is detected with `power`
    (None at exactly 50% and beyond MAX_READINGS).

    Exact power is saw-toothed in n: it first reaches 80% at a true 70% with 49 readings but falls below again
    until 54. A study needs the n it can rely on, so power must hold over the next 4 sqrt(n) readings too (the
    last dip lies about sqrt(n) past the first crossing: 5 at 30 readings, 233 at 78,600)."""
    effect = abs(accuracy - 0.5)
    if effect < 1e-9:
        return None
    sd = math.sqrt(accuracy * (1.0 - accuracy))
    normal_n = ((1.96 * 0.5 + 0.8416 * sd) / effect) ** 2
    if normal_n * 0.8 > MAX_READINGS:
        return None
    powered = functools.lru_cache(maxsize=None)(lambda n: exact_power(accuracy, n, alpha) >= power)
    low, high = 1, max(5, int(normal_n))  # one reading never reaches p < alpha; bisect to a crossing of `power`
    while not powered(high):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if powered(middle) else (middle, high)
    return _first_n(high, lambda n: all(powered(m) for m in range(n, n + max(20, int(4 * math.sqrt(n))))))


def exact_power(accuracy: float, n: int, alpha: float = ALPHA) -> float:
    """Probability that n readings at true accuracy reach p < alpha in the two-sided exact test."""
    lower = _critical_low(n, alpha)
    if lower < 0:
        return 0.0
    return _at_most(lower, n, accuracy) + (1.0 - _at_most(n - lower - 1, n, accuracy))


def format_p_value(p: float) -> str:
    """A p-value for a table: four decimals, or "< 0.0001" where four decimals would show a misleading 0."""
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def p_value_text(p: float) -> str:
    """A p-value for running text: "p = 0.0123" or "p < 0.0001"."""
    shown = format_p_value(p)
    return f"p {shown}" if shown.startswith("<") else f"p = {shown}"


def sample_size_note(correct: int, n: int, alpha: float = ALPHA) -> str:
    """One paragraph on what the observed accuracy can and cannot show, and how many readings it would need."""
    if n == 0:
        return "No readings yet."
    accuracy = correct / n
    lo, hi = chance_band(n, alpha)
    text = (f"With {n} readings, any accuracy from {lo:.0%} to {hi:.0%} cannot be told from guessing "
            f"(exact two-sided binomial test, alpha {alpha:g}). ")
    if 2 * correct == n:
        return text + (f"The observed accuracy of {accuracy:.1%} is at chance: no number of readings would make it "
                       "significant.")
    needed = readings_to_significance(accuracy, alpha)
    powered = readings_for_power(accuracy, 0.8, alpha)
    significant = (f"would be significant from about {needed} readings" if needed is not None
                   else f"would need more than {MAX_READINGS:,} readings to be significant")
    return text + (f"An accuracy of {accuracy:.1%} {significant}; to detect a reader whose true accuracy is "
                   f"{accuracy:.1%} with 80% power needs {_readings(powered)} readings.")


def _readings(n: Optional[int]) -> str:
    """A number of readings the search found, or the bound it gave up at (None: more than MAX_READINGS)."""
    return f"about {n}" if n is not None else f"more than {MAX_READINGS:,}"


def agreement_table(calls_by_rater: Dict[str, Dict[str, str]], categories: Sequence[str]) -> Tuple[List[str], List[List[int]]]:
    """Cases every rater answered, and for each the count of raters per category (Fleiss' table)."""
    raters = list(calls_by_rater)
    common = sorted(set.intersection(*(set(calls_by_rater[r]) for r in raters))) if raters else []
    table = [[sum(calls_by_rater[r][case] == c for r in raters) for c in categories] for case in common]
    return common, table
