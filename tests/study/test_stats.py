"""Welch intervals, verdicts and the seeds a comparison would need, against the formulas
worked by hand (t quantiles from scipy, which compare itself also uses)."""

import math
import statistics

import pytest
from scipy import stats as scipy_stats

from gptcli.study.stats import difference, seeds_to_resolve


def welch_by_hand(a, b, level=0.95):
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = scipy_stats.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    d = statistics.fmean(a) - statistics.fmean(b)
    return d - half, d + half


@pytest.mark.parametrize(
    "a, b, verdict",
    [
        ([1.50, 1.52, 1.51], [1.70, 1.69, 1.72], "better"),
        ([1.90, 1.91], [1.70, 1.705], "worse"),
        ([1.70, 1.74], [1.71, 1.69, 1.75], "within noise"),
        ([2.10, 2.12, 2.09, 2.11], [2.11, 2.13], "within noise"),
    ],
)
def test_interval_is_welchs_and_the_verdict_follows_it(a, b, verdict):
    d = difference(a, b)
    low, high = welch_by_hand(a, b)
    assert d.delta == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert d.ci95 == pytest.approx((low, high), rel=1e-9)
    assert d.verdict == verdict and d.reason is None
    assert (d.seeds_needed is not None) == (verdict == "within noise")


def test_no_spread_on_one_side_leaves_the_other_sides_degrees_of_freedom():
    a, b = [1.5, 1.5, 1.5], [1.6, 1.7, 1.65]
    d = difference(a, b)
    half = scipy_stats.t.ppf(0.975, 2) * statistics.stdev(b) / math.sqrt(3)
    assert d.ci95 == pytest.approx((d.delta - half, d.delta + half))
    assert d.verdict == "better"


def test_a_value_that_is_not_finite_gives_no_interval():
    d = difference([1.5, math.nan], [1.6, 1.7])
    assert d.ci95 is None and d.verdict is None and "not finite" in d.reason


def test_no_interval_with_one_seed_or_no_spread():
    one = difference([1.5], [1.6, 1.7])
    assert one.ci95 is None and one.verdict is None and "one seed" in one.reason
    assert one.delta == pytest.approx(-0.15)
    flat = difference([1.5, 1.5], [1.6, 1.6])
    assert flat.ci95 is None and flat.verdict is None and "no spread" in flat.reason


def test_seeds_needed_is_the_first_count_whose_interval_excludes_zero():
    a, b = [1.70, 1.74], [1.71, 1.69, 1.75]
    d = difference(a, b)
    n = d.seeds_needed
    assert n is not None and n > 3
    va, vb = statistics.variance(a), statistics.variance(b)

    def resolves(n):  # n seeds a side at the observed means and variances
        low, high = welch_by_hand(_sample(va, n), _sample(vb, n))
        return abs(d.delta) > (high - low) / 2

    assert resolves(n) and not resolves(n - 1)


def _sample(variance, n):
    """n values with sample variance exactly `variance` (mean 0)."""
    spread = math.sqrt(variance * (n - 1) / 2)
    return [spread, -spread, *[0.0] * (n - 2)]


def test_seeds_needed_is_none_for_no_difference_or_a_hopeless_one():
    assert seeds_to_resolve(0.0, 0.01, 0.01) is None
    assert seeds_to_resolve(1e-9, 1.0, 1.0) is None  # more than MAX_SEEDS would be needed
    assert seeds_to_resolve(1.0, 1e-6, 1e-6) == 2
