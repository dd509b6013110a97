"""Compiled CPU kernels (numba) for the ranking losses' hot loops; see :mod:`rsdet.losses._kernel`.

Importing this module imports numba; :mod:`rsdet.losses._kernel` does that lazily and falls back to
the torch code when it fails.  Every kernel computes exactly what the torch path computes (same
tie semantics, float64 accumulation); docs/losses.md ("Compiled CPU kernels") describes them.

* :func:`dominance_sums` / :func:`dominance_spread`: the 2-D dominance sums of
  :class:`rsdet.losses._pairs.Dominance` and their transpose with a Fenwick (binary indexed) tree
  over score ranks, sweeping the points by label rank: O((P + Q T) log P) instead of O(P^(4/3)).
* :func:`sorting_terms`: RS's per-positive sorting quantities
  (:meth:`rsdet.losses._pairs.PositivePairs.sorting_terms`) in one call, built on the two above.
* :func:`bin_entries`: bucketing of all N entries between the sorted window edges plus the
  per-bin negative counts and logit sums (:class:`rsdet.losses._intervals.NegativeIntervals`)
  in one pass.
* :func:`gather_gradient`: backward's per-entry gradient from the interval tables.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(cache=True, nogil=True)


@numba.njit(**_JIT)
def _bucket_by_limit(lab_lim, p):
    """Counting sort of the queries by label limit: queries with limit L are
    ``order[start[L]:start[L + 1]]``."""
    start = np.zeros(p + 2, dtype=np.int64)
    for q in range(lab_lim.size):
        start[lab_lim[q] + 1] += 1
    for v in range(1, p + 2):
        start[v] += start[v - 1]
    fill = start[:-1].copy()
    order = np.empty(lab_lim.size, dtype=np.int64)
    for q in range(lab_lim.size):
        order[fill[lab_lim[q]]] = q
        fill[lab_lim[q]] += 1
    return start, order


@numba.njit(**_JIT)
def dominance_sums(label_rank, score_rank, weights, lab_lim, score_lim):
    """(Q, T, m) F[q, t] = sum_j weights[j] [label_rank_j < lab_lim_q] [score_rank_j < score_lim_qt].

    Points are inserted into a Fenwick tree over score ranks in label order; the queries with
    label limit L are answered (prefix sums up to each score limit) just before the point of
    label rank L goes in.
    """
    p = label_rank.size
    m = weights.shape[1]
    nq, nt = score_lim.shape
    point_at = np.empty(p, dtype=np.int64)
    for j in range(p):
        point_at[label_rank[j]] = j
    start, order = _bucket_by_limit(lab_lim, p)
    tree = np.zeros((p + 1, m), dtype=np.float64)
    out = np.zeros((nq, nt, m), dtype=np.float64)
    for lab in range(p + 1):
        for k in range(start[lab], start[lab + 1]):
            q = order[k]
            for t in range(nt):
                i = score_lim[q, t]
                while i > 0:
                    for c in range(m):
                        out[q, t, c] += tree[i, c]
                    i -= i & (-i)
        if lab < p:
            j = point_at[lab]
            i = score_rank[j] + 1
            while i <= p:
                for c in range(m):
                    tree[i, c] += weights[j, c]
                i += i & (-i)
    return out


@numba.njit(**_JIT)
def dominance_spread(label_rank, score_rank, lab_lim, score_lim, u):
    """(P, m) G[j] = sum_{q, t} [label_rank_j < lab_lim_q] [score_rank_j < score_lim_qt] u[q, t].

    The transpose of :func:`dominance_sums`: the points are visited by descending label rank;
    before point j (label rank l) every query with limit > l is in a Fenwick tree indexed by
    reversed score limit, so G[j] is its prefix sum over the limits > score_rank_j.
    """
    p = label_rank.size
    nq, nt, m = u.shape
    point_at = np.empty(p, dtype=np.int64)
    for j in range(p):
        point_at[label_rank[j]] = j
    start, order = _bucket_by_limit(lab_lim, p)
    tree = np.zeros((p + 2, m), dtype=np.float64)   # position p + 1 - R holds limit R
    out = np.zeros((p, m), dtype=np.float64)
    for lab in range(p - 1, -1, -1):
        for k in range(start[lab + 1], start[lab + 2]):      # the queries with limit lab + 1
            q = order[k]
            for t in range(nt):
                i = p + 1 - score_lim[q, t]
                while i <= p + 1:
                    for c in range(m):
                        tree[i, c] += u[q, t, c]
                    i += i & (-i)
        j = point_at[lab]
        i = p - score_rank[j]                                # limits R > score rank
        while i > 0:
            for c in range(m):
                out[j, c] += tree[i, c]
            i -= i & (-i)
    return out


@numba.njit(**_JIT)
def sorting_terms(s, y, order, lo, hi, delta, eps):
    """RS sorting quantities (rank_plus, sort_loss, mis_mass, received), each (P,) float64.

    Same definitions and the same arithmetic as
    :meth:`rsdet.losses._pairs.PositivePairs.sorting_terms`: ``order`` is the stable ascending
    argsort of ``s``, ``lo``/``hi`` the window limits A_i, B_i in score ranks (for delta = 0
    both #{s_j < s_i}).
    """
    p = s.size
    rank = np.empty(p, dtype=np.int64)
    for r in range(p):
        rank[order[r]] = r
    label_order = np.argsort(y, kind="mergesort")
    label_rank = np.empty(p, dtype=np.int64)
    for r in range(p):
        label_rank[label_order[r]] = r
    lab_lt = np.empty(p, dtype=np.int64)                    # #{y_j < y_i}
    first = 0
    for r in range(p):
        if r > 0 and y[label_order[r]] != y[label_order[r - 1]]:
            first = r
        lab_lt[label_order[r]] = first
    cols = np.empty((p, 4), dtype=np.float64)
    for j in range(p):
        cols[j, 0] = 1.0
        cols[j, 1] = s[j]
        cols[j, 2] = 1.0 - y[j]
        cols[j, 3] = (1.0 - y[j]) * s[j]
    # 1-D prefix sums in score order and in label order.
    cum = np.zeros((p + 1, 4), dtype=np.float64)
    by_label = np.zeros((p + 1, 4), dtype=np.float64)
    for r in range(p):
        for c in range(4):
            cum[r + 1, c] = cum[r, c] + cols[order[r], c]
            by_label[r + 1, c] = by_label[r, c] + cols[label_order[r], c]
    nt = 1 if delta == 0 else 2
    limits = np.empty((p, nt), dtype=np.int64)
    for i in range(p):
        limits[i, 0] = lo[i]
        if nt == 2:
            limits[i, 1] = hi[i]
    low = dominance_sums(label_rank, rank, cols, lab_lt, limits)
    rank_plus = np.empty(p)
    sort_loss = np.empty(p)
    mis_mass = np.empty(p)
    coef = np.empty(p)
    for i in range(p):
        a, b, lt = lo[i], hi[i], lab_lt[i]
        if delta == 0:
            rp = cum[p, 0] - cum[a, 0]
            cs = cum[p, 2] - cum[a, 2]
            mm = by_label[lt, 0] - low[i, 0, 0]
            ms = by_label[lt, 2] - low[i, 0, 2]
        else:
            edge = s[i] - delta
            rp = (cum[p, 0] - cum[b, 0]) + (
                (cum[b, 1] - cum[a, 1]) - edge * (cum[b, 0] - cum[a, 0])) / (2 * delta)
            cs = (cum[p, 2] - cum[b, 2]) + (
                (cum[b, 3] - cum[a, 3]) - edge * (cum[b, 2] - cum[a, 2])) / (2 * delta)
            mm = (by_label[lt, 0] - low[i, 1, 0]) + (
                (low[i, 1, 1] - low[i, 0, 1]) - edge * (low[i, 1, 0] - low[i, 0, 0])) / (2 * delta)
            ms = (by_label[lt, 2] - low[i, 1, 2]) + (
                (low[i, 1, 3] - low[i, 0, 3]) - edge * (low[i, 1, 2] - low[i, 0, 2])) / (2 * delta)
        rank_plus[i] = rp
        mis_mass[i] = mm
        sort_loss[i] = cs / rp - (cs - ms) / (rp - mm)
        coef[i] = sort_loss[i] / mm if mm > eps else 0.0
    # received_j = sum_i c_i [y_j < y_i] H(s_j - s_i): the transpose (docs/losses.md).
    above = np.zeros(p + 1)
    for i in range(p):
        above[p - lab_lt[i]] += coef[i]
    for v in range(1, p + 1):
        above[v] += above[v - 1]
    received = np.empty(p)
    if delta == 0:
        u = np.empty((p, 1, 1))
        for i in range(p):
            u[i, 0, 0] = coef[i]
        g = dominance_spread(label_rank, rank, lab_lt, limits, u)
        for j in range(p):
            received[j] = above[p - 1 - label_rank[j]] - g[j, 0]
    else:
        u = np.empty((p, 2, 3))
        for i in range(p):
            c, cs = coef[i], coef[i] * s[i]
            u[i, 0, 0], u[i, 0, 1], u[i, 0, 2] = 0.0, -c, -cs
            u[i, 1, 0], u[i, 1, 1], u[i, 1, 2] = c, c, cs
        g = dominance_spread(label_rank, rank, lab_lt, limits, u)
        for j in range(p):
            total = above[p - 1 - label_rank[j]]
            received[j] = (total - g[j, 0]) + ((s[j] + delta) * g[j, 1] - g[j, 2]) / (2 * delta)
    return rank_plus, sort_loss, mis_mass, received


@numba.njit(**_JIT)
def bin_entries(x, negative, edges, right, with_sums):
    """Bin of every entry, plus per-bin negative counts and logit sums.

    ``bins[k]`` = #{e < x_k} (``right`` False) or #{e <= x_k} (``right`` True) for negatives,
    ``len(edges) + 1`` (the extra, all-zero bin) for every other entry; NaN negatives go to bin 0.
    Returns (bins int32, counts int64 (E + 2,), sums float64 (E + 2,), zero where not
    ``with_sums``).  Comparisons are exact (float64); a uniform grid over the edges' range gives
    each entry the run of edges it has to compare with (all edges in lower cells are below it,
    all in higher cells above it, as the cell map is monotone and computed the same way for
    edges and entries).
    """
    n, ne = x.size, edges.size
    nb = ne + 1
    ncell = max(64, min(4 * ne, 1 << 20))
    e_min, e_max = edges[0], edges[ne - 1]
    width = (e_max - e_min) / (ncell - 4)
    if not width > 1e-6 * max(1.0, abs(e_min), abs(e_max)):
        width = 1.0
    base = e_min - 2 * width
    inv_width = 1.0 / width
    start = np.zeros(ncell + 1, dtype=np.int64)             # #{edges with cell < c}
    for k in range(ne):
        v = (edges[k] - base) * inv_width
        c = 0 if not v > 0.0 else (ncell - 1 if v > ncell - 1 else int(v))
        start[c + 1] += 1
    for c in range(1, ncell + 1):
        start[c] += start[c - 1]
    bins = np.empty(n, dtype=np.int32)
    counts = np.zeros(nb + 1, dtype=np.int64)
    sums = np.zeros(nb + 1, dtype=np.float64)
    for k in range(n):
        if not negative[k]:
            bins[k] = nb
            continue
        xv = np.float64(x[k])
        if xv != xv:                                       # NaN: bin 0
            b = 0
        else:
            v = (xv - base) * inv_width
            c = 0 if not v > 0.0 else (ncell - 1 if v > ncell - 1 else int(v))
            b, end = start[c], start[c + 1]
            if end - b > 16:                               # long run (tied edges): bisect
                lo_, hi_ = b, end
                while lo_ < hi_:
                    mid = (lo_ + hi_) >> 1
                    if edges[mid] < xv or (right and edges[mid] == xv):
                        lo_ = mid + 1
                    else:
                        hi_ = mid
                b = lo_
            elif right:
                while b < end and edges[b] <= xv:
                    b += 1
            else:
                while b < end and edges[b] < xv:
                    b += 1
        bins[k] = b
        counts[b] += 1
        if with_sums:
            sums[b] += xv
    return bins, counts, sums


@numba.njit(**_JIT)
def gather_gradient(bins, x, value, slope, left, has_slope):
    """grad[k] = value[b] + slope[b] (x_k - left[b]) for b = bins[k] (value[b] alone without a
    slope), in the tables' dtype, as backward's gathers compute it."""
    n = bins.size
    out = np.empty(n, dtype=value.dtype)
    if has_slope:
        for k in range(n):
            b = bins[k]
            out[k] = value[b] + slope[b] * (x[k] - left[b])
    else:
        for k in range(n):
            out[k] = value[bins[k]]
    return out
