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
    """(Q, T, m) F[q, t] = sum_j weights[j] [label_rank_j < lab_lim_q] [score_rank_j < score_lim_qt]

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
def sorting_terms(s, y, order, label_order, lo, hi, delta, eps):
    """RS sorting quantities (rank_plus, sort_loss, mis_mass, received), each (P,) float64.

    Same definitions and the same arithmetic as
    :meth:`rsdet.losses._pairs.PositivePairs.sorting_terms`: ``order`` / ``label_order`` are
    ascending argsorts of ``s`` (stable) and ``y`` (any tie order), ``lo``/``hi`` the window
    limits A_i, B_i in score ranks (for delta = 0 both #{s_j < s_i}).
    """
    p = s.size
    rank = np.empty(p, dtype=np.int64)
    for r in range(p):
        rank[order[r]] = r
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


# Grid cells per window edge in :func:`bin_entries` (measured best at 8 for N = 1e5, 2P = 1e4:
# finer grids miss the cache, coarser ones send more entries to the multi-edge scan).
_CELLS_PER_EDGE = 8


@numba.njit(**_JIT)
def bin_entries(x, negative, edges, right, with_sums):
    """Bin of every entry, plus per-bin negative counts and logit sums.

    ``bins[k]`` = #{e < x_k} (``right`` False) or #{e <= x_k} (``right`` True) for negatives,
    ``len(edges) + 1`` (the extra, all-zero bin) for every other entry; NaN negatives go to bin 0.
    Returns (bins int32, counts int64 (E + 2,), sums float64 (E + 2,), zero where not
    ``with_sums``) over the negatives only (the extra bin's count and sum stay 0).
    Comparisons are exact (float64).  A uniform grid over the edges' range gives each entry the
    edges it has to compare with: the cell map is monotone and computed the same way for edges
    and entries, so every edge in a lower cell is below the entry and every edge
    in a higher cell above it.  A cell holds no edge (the bin is the number of edges below it),
    one edge (one comparison, without a branch) or several (a short scan, a binary search for
    long runs of tied edges).
    """
    n, ne = x.size, edges.size
    nb = ne + 1
    ncell = max(64, min(_CELLS_PER_EDGE * ne, max(1024, 2 * n), 1 << 21))   # ~13 bytes a cell
    e_min, e_max = edges[0], edges[ne - 1]
    width = (e_max - e_min) / (ncell - 4)
    if not width > 1e-6 * max(1.0, abs(e_min), abs(e_max)):
        width = 1.0   # (nearly) equal edges: any positive width keeps the map monotone
    base = e_min - 2 * width
    inv_width = 1.0 / width
    # start[c]: edges in cells below c; negative (-1 - start) for cells holding several edges.
    start = np.zeros(ncell + 1, dtype=np.int32)
    cell_edge = np.full(ncell, np.nan)     # the one edge of the cell; NaN (never <=) if none
    for k in range(ne):
        v = (edges[k] - base) * inv_width
        c = 0 if not v > 0.0 else (ncell - 1 if v > ncell - 1 else int(v))
        start[c + 1] += 1
        cell_edge[c] = edges[k]
    several = np.empty(ncell, dtype=np.bool_)
    for c in range(ncell):
        several[c] = start[c + 1] > 1
        start[c + 1] += start[c]
    for c in range(ncell):
        if several[c]:
            start[c] = -1 - start[c]
    bins = np.empty(n, dtype=np.int32)
    counts = np.zeros(nb + 1, dtype=np.int64)
    sums = np.zeros(nb + 1, dtype=np.float64)
    for k in range(n):
        if not negative[k]:
            bins[k] = nb
            continue
        xv = np.float64(x[k])
        v = (xv - base) * inv_width                        # NaN: cell 0, no edge, bin 0
        c = 0 if not v > 0.0 else (ncell - 1 if v > ncell - 1 else int(v))
        b = start[c]
        if b >= 0:
            if right:
                b += cell_edge[c] <= xv
            else:
                b += cell_edge[c] < xv
        else:
            # Edges past the cell's run are above xv, so the comparison alone stops the scan.
            b = -1 - b
            stop = min(b + 8, ne)
            while b < stop and (edges[b] < xv or (right and edges[b] == xv)):
                b += 1
            if b == stop and stop < ne:                    # long run: binary search the rest
                hi = ne
                while b < hi:
                    mid = (b + hi) >> 1
                    if edges[mid] < xv or (right and edges[mid] == xv):
                        b = mid + 1
                    else:
                        hi = mid
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


@numba.njit(**_JIT)
def window_limits(sorted_s, order, delta):
    """A_i = #{s_j <= s_i - delta} and B_i = #{s_j <= s_i + delta} in the caller's order (for
    delta = 0 both #{s_j < s_i}), as :class:`rsdet.losses._pairs.PositivePairs` finds them;
    the queries ascend with the sorted logits, so one forward pointer each replaces the
    binary searches."""
    p = sorted_s.size
    lo = np.empty(p, dtype=np.int64)
    hi = np.empty(p, dtype=np.int64)
    if delta == 0:
        first = 0
        for r in range(p):
            if r > 0 and sorted_s[r] != sorted_s[r - 1]:
                first = r
            lo[order[r]] = first
            hi[order[r]] = first
        return lo, hi
    a = 0
    b = 0
    for r in range(p):
        low, high = sorted_s[r] - delta, sorted_s[r] + delta
        while a < p and sorted_s[a] <= low:
            a += 1
        while b < p and sorted_s[b] <= high:
            b += 1
        lo[order[r]] = a
        hi[order[r]] = b
    return lo, hi


@numba.njit(**_JIT)
def window_edges(sorted_s, order, delta):
    """The 2P sorted window edges and each positive's edge positions (caller's order), as
    :class:`rsdet.losses._intervals.NegativeIntervals` builds them for delta > 0: the merge of
    the ascending runs s - delta and s + delta, lower edges first on ties."""
    p = sorted_s.size
    edges = np.empty(2 * p)
    lo_pos = np.empty(p, dtype=np.int64)
    hi_pos = np.empty(p, dtype=np.int64)
    i = 0
    j = 0
    while i < p or j < p:
        if j == p or (i < p and sorted_s[i] - delta <= sorted_s[j] + delta):
            edges[i + j] = sorted_s[i] - delta
            lo_pos[order[i]] = i + j
            i += 1
        else:
            edges[i + j] = sorted_s[j] + delta
            hi_pos[order[j]] = i + j
            j += 1
    return edges, lo_pos, hi_pos


@numba.njit(**_JIT)
def _round_to_single(v):
    return np.float64(np.float32(v))


@numba.njit(**_JIT)
def rank_sort_forward(x, negative, s, y, order, label_order, delta, eps, single):
    """The whole RS forward pass on the CPU, exactly as the torch code computes it.

    ``x``: (N,) logits (float32 or float64), ``negative``: (N,) bool, ``s``/``y``: (P,) float64
    logits and labels of the positives, ``order``/``label_order``: their ascending argsorts
    (stable for ``s``); ``single``: the gradient tables are used in float32 (``left`` is then
    rounded to float32 as in :meth:`NegativeIntervals.gradient_tables`).

    Returns (ranking loss, sorting loss, pos_grad (P,), bins (N,) int32, value, slope, left
    (2P + 2,) float64 tables; for delta = 0 slope and left are empty).
    """
    p = s.size
    sorted_s = np.empty(p)
    for r in range(p):
        sorted_s[r] = s[order[r]]
    lo, hi = window_limits(sorted_s, order, delta)
    if delta == 0:
        edges = sorted_s
        lo_pos = lo                  # first position of each positive's tie group
        hi_pos = lo
    else:
        edges, lo_pos, hi_pos = window_edges(sorted_s, order, delta)
    nb = edges.size + 1
    bins, counts, sums = bin_entries(x, negative, edges, delta == 0, delta > 0)
    count_cum = np.zeros(nb + 1, dtype=np.int64)
    sum_cum = np.zeros(nb + 1)
    for b in range(nb):
        count_cum[b + 1] = count_cum[b] + counts[b]
        sum_cum[b + 1] = sum_cum[b] + sums[b]
    total = count_cum[nb]
    # N_FP(i), as NegativeIntervals.false_positives.
    n_fp = np.empty(p)
    for i in range(p):
        if delta == 0:
            n_fp[i] = np.float64(total - count_cum[lo_pos[i] + 1])
        else:
            a, b = lo_pos[i] + 1, hi_pos[i] + 1
            n_win = np.float64(count_cum[b] - count_cum[a])
            inside = ((sum_cum[b] - sum_cum[a]) - edges[lo_pos[i]] * n_win) / (2 * delta)
            n_fp[i] = np.float64(total - count_cum[b]) + min(max(inside, 0.0), n_win)
    rank_plus, sort_loss, mis_mass, received = sorting_terms(s, y, order, label_order, lo, hi,
                                                             delta, eps)
    coef = np.empty(p)
    pos_grad = np.empty(p)
    rank_sum = 0.0
    sort_sum = 0.0
    for i in range(p):
        rank_loss = n_fp[i] / (rank_plus[i] + n_fp[i])
        has_fp = n_fp[i] > eps
        coef[i] = (rank_loss / n_fp[i] if has_fp else 0.0) / p
        pos_grad[i] = (received[i] - (rank_loss if has_fp else 0.0)
                       - (sort_loss[i] if mis_mass[i] > eps else 0.0)) / p
        rank_sum += rank_loss
        sort_sum += sort_loss[i]
    # Gradient tables, as NegativeIntervals.gradient_tables.
    value = np.zeros(nb + 1)
    if delta == 0:
        acc = 0.0
        for r in range(p):
            acc += coef[order[r]]
            value[r + 1] = max(acc, 0.0)
        return rank_sum / p, sort_sum / p, pos_grad, bins, value, np.empty(0), np.empty(0)
    inv = 1.0 / (2 * delta)
    d_slope = np.zeros(nb + 1)
    d_inter = np.zeros(nb + 1)
    d_full = np.zeros(nb + 1)
    for i in range(p):
        c = coef[i]
        edge = edges[lo_pos[i]]
        a, b = lo_pos[i] + 1, hi_pos[i] + 1
        d_slope[a] += c * inv
        d_slope[b] += -c * inv
        d_inter[a] += c * edge * inv
        d_inter[b] += -c * edge * inv
        d_full[b] += c
    slope = np.zeros(nb + 1)
    left = np.empty(nb + 1)
    run_slope = 0.0
    run_inter = 0.0
    run_full = 0.0
    for b in range(nb + 1):
        run_slope += d_slope[b]
        run_inter += d_inter[b]
        run_full += d_full[b]
        sl = max(run_slope, 0.0) if 0 < b < nb - 1 else 0.0
        le = edges[min(max(b - 1, 0), nb - 2)]
        if single:
            le = _round_to_single(le)
        slope[b] = sl
        left[b] = le
        if 0 < b < nb:
            value[b] = max(run_full + sl * le - run_inter, 0.0)
    return rank_sum / p, sort_sum / p, pos_grad, bins, value, slope, left


@numba.njit(**_JIT)
def split_targets(t, greater_than_zero):
    """(negative mask, positive indices) of flat targets: negatives are ``t == 0``, positives
    ``t > 0`` (``greater_than_zero``, RS) or ``t == 1`` (AP/aLRP); NaN is neither."""
    n = t.size
    negative = np.empty(n, dtype=np.bool_)
    count = 0
    for k in range(n):
        v = t[k]
        negative[k] = v == 0
        count += (v > 0) if greater_than_zero else (v == 1)
    positive = np.empty(count, dtype=np.int64)
    j = 0
    for k in range(n):
        v = t[k]
        if (v > 0) if greater_than_zero else (v == 1):
            positive[j] = k
            j += 1
    return negative, positive
