"""paper-mini's statistics: the Student-t interval, paired differences and factors, and the verdict rules."""

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsdet.report.stats import (FAILS, HOLDS, INCONCLUSIVE, NOT_TESTED, Paired, ci95_halfwidth, combine, judge,
                                overall, paired, paired_ratio, summarize, t_cdf, t_quantile)


@pytest.mark.parametrize("df, q", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042),
                                   (120, 1.980)])
def test_t_quantile_matches_the_printed_table(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-3)
    assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-4)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.55, 0.999), st.integers(1, 60))
def test_t_quantile_inverts_the_cdf(p, df):
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)


def test_ci_of_a_known_sample():
    s = summarize([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert s.mean == 2.0 and s.n == 3 and s.ci95 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert (s.lo, s.hi) == pytest.approx((2 - 2.484138, 2 + 2.484138), rel=1e-5)
    one = summarize([5.0])
    assert one.mean == 5.0 and one.ci95 is None and one.lo is None
    assert summarize([]).mean is None and summarize([float("nan"), 2.0]).values == [2.0]
    assert ci95_halfwidth([4.0, 4.0, 4.0]) == 0.0


def test_paired_difference_uses_the_common_seeds_only():
    a = {0: 40.0, 1: 42.0, 2: 41.0, 3: 50.0}
    b = {0: 38.0, 1: 41.0, 2: 38.0}            # seed 3 has no partner
    d = paired(a, b)                           # differences 2, 1, 3
    assert d.n == 3 and d.seeds == [0, 1, 2] and d.mean == pytest.approx(2.0)
    half = t_quantile(0.975, 2) * statistics.stdev([2, 1, 3]) / math.sqrt(3)
    assert (d.lo, d.hi) == pytest.approx((2 - half, 2 + half))
    assert "+2.0 AP [" in d.text() and d.text().endswith("n=3")
    # pairing removes the seed-to-seed offset an unpaired comparison would carry
    shifted = {k: v + 10 * k for k, v in b.items()}
    assert paired({k: v + 10 * k for k, v in a.items()}, shifted).mean == pytest.approx(2.0)
    assert paired({0: 1.0}, {1: 1.0}).mean is None and "no common seeds" in paired({}, {}).text()


def test_paired_ratio_is_a_geometric_factor():
    d = paired_ratio({0: 100.0, 1: 400.0, 2: 200.0}, {0: 10.0, 1: 20.0, 2: 20.0})  # factors 10, 20, 10
    assert d.log and d.mean == pytest.approx(math.exp(statistics.fmean(map(math.log, (10, 20, 10)))))
    assert d.lo < d.mean < d.hi and d.text().startswith("×")
    assert paired_ratio({0: 0.0, 1: 1.0}, {0: 1.0, 1: 1.0}).n == 1  # a non-positive value is left out


def _d(lo, hi, n=3, log=False):
    return Paired((lo + hi) / 2, lo, hi, n, list(range(n)), log=log)


@pytest.mark.parametrize("lo, hi, claim, want", [
    (0.2, 3.0, "greater", HOLDS), (-3.0, -0.1, "greater", FAILS), (-1.0, 2.0, "greater", INCONCLUSIVE),
    (-3.0, -0.1, "less", HOLDS), (0.1, 3.0, "less", FAILS), (-1.0, 2.0, "less", INCONCLUSIVE),
    (-0.8, 0.9, "similar", HOLDS), (1.0, 3.0, "similar", FAILS), (-4.0, -1.2, "similar", FAILS),
    (-0.5, 1.5, "similar", INCONCLUSIVE), (0.2, 0.9, "similar", HOLDS),
    (-0.9, 5.0, "not_worse", HOLDS), (-3.0, -1.1, "not_worse", FAILS), (-2.0, 1.0, "not_worse", INCONCLUSIVE),
])
def test_verdict_rules(lo, hi, claim, want):
    assert judge(_d(lo, hi), claim, margin=1.0) == want


def test_verdicts_of_factors_missing_runs_and_one_seed():
    assert judge(_d(1.5, 40.0, log=True), "greater") == HOLDS       # a factor is judged against ×1
    assert judge(_d(0.5, 3.0, log=True), "greater") == INCONCLUSIVE
    assert judge(Paired(None, None, None, 0), "greater") == NOT_TESTED
    assert judge(Paired(2.0, None, None, 1, [0]), "greater") == INCONCLUSIVE  # no CI with one seed
    with pytest.raises(ValueError, match="unknown claim"):
        judge(_d(0, 1), "beats")


def test_a_finding_of_several_comparisons():
    assert overall([HOLDS, HOLDS]) == HOLDS
    assert overall([HOLDS, FAILS, INCONCLUSIVE]) == FAILS
    assert overall([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert overall([HOLDS, NOT_TESTED]) == HOLDS            # a comparison without runs does not count
    assert overall([NOT_TESTED]) == NOT_TESTED and overall([]) == NOT_TESTED


def test_combine_averages_per_seed_over_the_maps_every_seed_is_in():
    assert combine([{0: 1.0, 1: 3.0, 2: 5.0}, {0: 3.0, 1: 5.0}]) == {0: 2.0, 1: 4.0}
    assert combine([]) == {} and combine([{}, {0: 1.0}]) == {0: 1.0}
