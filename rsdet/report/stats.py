"""Means with 95% confidence intervals and paired comparisons: how paper-mini states its numbers.

A cell of a paper-mini table is the mean over its seeds with a two-sided 95% Student-t interval
(n − 1 degrees of freedom). A comparison between two arms (e.g. RS with and without samplers) uses the
*paired* differences: the arms share their seeds, so seed k of one arm is compared with seed k of the
other and the interval is that of the mean difference. A ratio (pos:neg ratios, timings) is compared on
the log scale and reported as a factor. What a finding concludes from an interval is in
:func:`judge` (docs/paper-mini.md, "How the verdicts are decided").

The t quantile is computed here (regularised incomplete beta by its continued fraction, then
bisection) instead of pulling in scipy for one function; tests/report/test_stats.py checks it against
the printed table values.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Verdicts of a finding (docs/paper-mini.md)
HOLDS, FAILS, INCONCLUSIVE, NOT_TESTED = "holds", "does not hold", "inconclusive", "not tested"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (``t_quantile(0.975, 2)`` = 4.303)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def ci95_halfwidth(values: Sequence[float]) -> float | None:
    """Half-width of the two-sided 95% t interval of the mean; None with fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    return t_quantile(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)


@dataclass
class Summary:
    """Mean ± 95% CI half-width over ``n`` replicates (seeds, or timing rounds)."""

    mean: float | None
    ci95: float | None
    n: int
    values: list[float] = field(default_factory=list)

    @property
    def lo(self) -> float | None:
        return None if self.mean is None or self.ci95 is None else self.mean - self.ci95

    @property
    def hi(self) -> float | None:
        return None if self.mean is None or self.ci95 is None else self.mean + self.ci95


def summarize(values: Sequence[float]) -> Summary:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return Summary(None, None, 0, [])
    return Summary(statistics.fmean(vals), ci95_halfwidth(vals), len(vals), vals)


@dataclass
class Paired:
    """Mean of the per-seed differences ``a − b`` (or, ``log``, the factor ``a / b``) with its 95% CI."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    seeds: list = field(default_factory=list)
    log: bool = False              # mean/lo/hi are factors (geometric mean of a/b)

    def text(self, unit: str = "AP", digits: int = 1) -> str:
        """``+3.2 AP [+1.1, +5.3], n=3`` or ``×36 [×20, ×64], n=3``."""
        if self.mean is None:
            return "no common seeds"
        if self.log:
            def f(x):
                return f"×{x:.3g}"
        else:
            def f(x):
                return f"{x:+.{digits}f}"
        ci = f" [{f(self.lo)}, {f(self.hi)}], n={self.n}" if self.lo is not None else f", n={self.n} (no CI)"
        return f"{f(self.mean)}{' ' + unit if unit and not self.log else ''}{ci}"


def _common(a: Mapping, b: Mapping) -> list:
    return sorted((k for k in a if k in b and a[k] is not None and b[k] is not None), key=str)


def paired(a: Mapping, b: Mapping) -> Paired:
    """Paired difference ``a − b`` over the seeds both have ({seed: value} each)."""
    seeds = _common(a, b)
    diffs = [float(a[k]) - float(b[k]) for k in seeds]
    s = summarize(diffs)
    return Paired(s.mean, s.lo, s.hi, s.n, seeds)


def paired_ratio(a: Mapping, b: Mapping) -> Paired:
    """Paired factor ``a / b``: the t interval of the mean log ratio, exponentiated (values must be > 0)."""
    seeds = [k for k in _common(a, b) if float(a[k]) > 0 and float(b[k]) > 0]
    logs = [math.log(float(a[k]) / float(b[k])) for k in seeds]
    s = summarize(logs)
    exp = (lambda x: None if x is None else math.exp(x))
    return Paired(exp(s.mean), exp(s.lo), exp(s.hi), s.n, seeds, log=True)


def combine(parts: Sequence[Mapping]) -> dict:
    """Per seed, the mean over several {seed: difference} maps (a seed counts where every map has it):
    e.g. Table S1's weighting difference averaged over its five balancing columns."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    seeds = set(parts[0])
    for p in parts[1:]:
        seeds &= set(p)
    return {k: statistics.fmean(float(p[k]) for p in parts) for k in seeds}


def judge(d: Paired, claim: str, margin: float = 0.0) -> str:
    """The verdict of one paired comparison against what the paper claims about it.

    ``greater``: holds when the CI lies above 0 (above 1 for a factor), does not hold when it lies below;
    ``less``: the mirror image; ``similar``: holds when the CI lies inside ±``margin``, does not hold when it
    lies entirely outside (beyond +margin or below −margin); ``not_worse``: holds when the CI's lower end
    is above −``margin``, does not hold when its upper end is below −``margin``. Everything else — and
    fewer than two seeds — is inconclusive."""
    if d.mean is None:
        return NOT_TESTED
    if d.lo is None or d.hi is None:
        return INCONCLUSIVE
    zero = 1.0 if d.log else 0.0
    lo, hi = d.lo, d.hi
    if claim == "greater":
        return HOLDS if lo > zero else FAILS if hi < zero else INCONCLUSIVE
    if claim == "less":
        return HOLDS if hi < zero else FAILS if lo > zero else INCONCLUSIVE
    if claim == "similar":
        if -margin < lo and hi < margin:
            return HOLDS
        return FAILS if lo >= margin or hi <= -margin else INCONCLUSIVE
    if claim == "not_worse":
        return HOLDS if lo > -margin else FAILS if hi < -margin else INCONCLUSIVE
    raise ValueError(f"unknown claim {claim!r}")


def overall(verdicts: Sequence[str]) -> str:
    """A finding made of several comparisons: it holds when every one holds, does not hold when any
    does not, is not tested when none could be, and is inconclusive otherwise."""
    tested = [v for v in verdicts if v != NOT_TESTED]
    if not tested:
        return NOT_TESTED
    if any(v == FAILS for v in tested):
        return FAILS
    if all(v == HOLDS for v in tested):
        return HOLDS
    return INCONCLUSIVE
