"""Is a difference between two variants real? Welch's t over the seeds (scipy's, not a t table of
our own): the 95% interval of the difference of the means, a verdict, and for an undecided
comparison how many seeds would settle it at the spread seen so far."""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

LEVEL = 0.95
MAX_SEEDS = 10_000  # past this, "more seeds" is no answer: say so instead of a number


@dataclass(frozen=True)
class Difference:
    delta: float
    ci95: tuple[float, float] | None  # of row - baseline; None when no interval can be given
    verdict: str | None  # better | worse | within noise; None with no interval
    seeds_needed: int | None = None  # per side, for a "within noise" verdict
    reason: str | None = None  # why there is no interval

    @property
    def undecided(self) -> bool:
        return self.verdict == "within noise"


def difference(values: list[float], baseline: list[float]) -> Difference:
    """Row minus baseline, for a metric where lower is better (every compare metric is a loss)."""
    if not all(math.isfinite(v) for v in [*values, *baseline]):
        return Difference(math.nan, None, None, reason="a value is not finite: no interval")
    delta = statistics.fmean(values) - statistics.fmean(baseline)
    if len(values) < 2 or len(baseline) < 2:
        return Difference(delta, None, None, reason="one seed on a side: no interval can be given")
    var_a, var_b = statistics.variance(values), statistics.variance(baseline)
    if var_a == 0 and var_b == 0:
        return Difference(delta, None, None, reason="no spread between seeds: no interval")
    from scipy import stats

    with warnings.catch_warnings():
        # One side with no spread (identical seeds) makes scipy warn of "catastrophic
        # cancellation" in that side's variance; the interval is still right (the tests check
        # it by hand), and a user's terminal should not show the warning.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(values, baseline, equal_var=False)
        interval = result.confidence_interval(LEVEL)
    low, high = float(interval.low), float(interval.high)
    if high < 0:
        return Difference(delta, (low, high), "better")
    if low > 0:
        return Difference(delta, (low, high), "worse")
    needed = seeds_to_resolve(delta, var_a, var_b)
    return Difference(delta, (low, high), "within noise", needed)


def seeds_to_resolve(delta: float, var_a: float, var_b: float) -> int | None:
    """The fewest seeds per side (the same number on both) whose 95% interval would exclude zero
    if the means and variances stayed as observed (Welch's degrees of freedom at equal n); None
    when no count up to MAX_SEEDS would."""
    if delta == 0:
        return None
    from scipy import stats

    spread = var_a + var_b

    def half_width(n: int) -> float:
        df = spread**2 / ((var_a**2 + var_b**2) / (n - 1))
        return float(stats.t.ppf(0.5 + LEVEL / 2, df)) * math.sqrt(spread / n)

    if half_width(MAX_SEEDS) >= abs(delta):
        return None
    low, high = 2, MAX_SEEDS  # half_width falls as n grows: bisect for the first n that resolves
    while low < high:
        mid = (low + high) // 2
        if half_width(mid) < abs(delta):
            high = mid
        else:
            low = mid + 1
    return low
