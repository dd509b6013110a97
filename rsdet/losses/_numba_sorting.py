"""numba kernels for RS Loss's sorting terms: 2-D dominance sums and their transpose with Fenwick
(binary indexed) trees, one pass per group of weight columns.

The quantities are those of :meth:`rsdet.losses._pairs.PositivePairs.sorting_terms` (supplementary
Eq. S4, S16; docs/losses.md, "Positive pairs"); their 2-D part is

    F[i, t] = sum_j w_j [label_rank_j < L_i] [score_rank_j < R_it]          (sums_pass)
    G[j]    = sum_{i, t} u_it [label_rank_j < L_i] [score_rank_j < R_it]    (spread_pass)

with L_i = #{y_j < y_i} and the window limits R_i = (A_i, B_i).  Both are answered offline: the
sums sweep the positives by label rank, inserting w_j into a tree over score ranks, and read
every query with label limit L just before the positive of label rank L goes in; the spread
sweeps the other way, inserting the queries' weights into a tree over reversed score limits.
Every weight column is summed on its own, in an order fixed by the data alone, so running the
columns as one pass or as several (on several threads, :mod:`rsdet.losses._compiled`) gives
the same bits.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(cache=True, nogil=True)


@numba.njit(**_JIT)
def sorting_prepare(s, y, order, label_order, rank, lo, hi, delta):
    """Ranks, limits, weights and query buckets shared by the passes.

    Returns (label_rank, lab_lt, limits, cols, q_start, q_order): the label rank of every
    positive (``label_order`` inverted), lab_lt = #{y_j < y_i} (its label limit), its score
    limits (A, B; delta = 0: A only), the weight columns (1, s, 1 - y, (1 - y) s; delta = 0:
    1, 1 - y) and the queries bucketed by label limit (``q_order[q_start[L]:q_start[L + 1]]``).
    """
    p = s.size
    label_rank = np.empty(p, dtype=np.int64)
    lab_lt = np.empty(p, dtype=np.int64)
    first = 0
    for r in range(p):
        j = label_order[r]
        label_rank[j] = r
        if r > 0 and y[j] != y[label_order[r - 1]]:
            first = r
        lab_lt[j] = first
    nt = 1 if delta == 0 else 2
    limits = np.empty((p, nt), dtype=np.int64)
    cols = np.empty((p, 2 * nt))
    for i in range(p):
        limits[i, 0] = lo[i]
        if nt == 2:
            limits[i, 1] = hi[i]
            cols[i, 0] = 1.0
            cols[i, 1] = s[i]
            cols[i, 2] = 1.0 - y[i]
            cols[i, 3] = (1.0 - y[i]) * s[i]
        else:
            cols[i, 0] = 1.0
            cols[i, 1] = 1.0 - y[i]
    q_start = np.zeros(p + 2, dtype=np.int64)          # counting sort by label limit
    for q in range(p):
        q_start[lab_lt[q] + 1] += 1
    for v in range(1, p + 2):
        q_start[v] += q_start[v - 1]
    fill = q_start[:-1].copy()
    q_order = np.empty(p, dtype=np.int64)
    for q in range(p):
        q_order[fill[lab_lt[q]]] = q
        fill[lab_lt[q]] += 1
    return label_rank, lab_lt, limits, cols, q_start, q_order


@numba.njit(**_JIT)
def sums_pass(rank, label_order, cols, q_start, q_order, limits, c0, c1, out):
    """out[i, t, c] = F[i, t] for the weight columns c in [c0, c1) (``out``: (P, T, m))."""
    p = rank.size
    m = c1 - c0
    nt = limits.shape[1]
    tree = np.zeros((p + 1, m))
    for lab in range(p + 1):
        for qq in range(q_start[lab], q_start[lab + 1]):      # queries with limit lab: read
            q = q_order[qq]
            for t in range(nt):
                i = limits[q, t]
                while i > 0:
                    for c in range(m):
                        out[q, t, c0 + c] += tree[i, c]
                    i -= i & (-i)
        if lab < p:                                            # then insert that positive
            j = label_order[lab]
            i = rank[j] + 1
            while i <= p:
                for c in range(m):
                    tree[i, c] += cols[j, c0 + c]
                i += i & (-i)


@numba.njit(**_JIT)
def sums_finish(s, order, label_order, lab_lt, limits, cols, low, delta, eps):
    """The per-positive sorting quantities from the dominance sums ``low`` (:func:`sums_pass`);
    returns (rank_plus, sort_loss, mis_mass, coef, u): coef_i = sort_loss_i / mis_mass_i (0
    where mis_mass <= eps) and u the spread's weights per limit (delta > 0: limit A: (0, -c,
    -c s), limit B: (c, c, c s); delta = 0: (c))."""
    p = s.size
    mc = cols.shape[1]
    cum = np.zeros((p + 1, mc))                 # 1-D prefix sums in score order, label order
    by_label = np.zeros((p + 1, mc))
    for r in range(p):
        for c in range(mc):
            cum[r + 1, c] = cum[r, c] + cols[order[r], c]
            by_label[r + 1, c] = by_label[r, c] + cols[label_order[r], c]
    rank_plus = np.empty(p)
    sort_loss = np.empty(p)
    mis_mass = np.empty(p)
    coef = np.empty(p)
    u = np.zeros((p, 1, 1)) if delta == 0 else np.zeros((p, 2, 3))
    for i in range(p):
        a, lt = limits[i, 0], lab_lt[i]
        if delta == 0:
            rp = cum[p, 0] - cum[a, 0]
            cs = cum[p, 1] - cum[a, 1]
            mm = by_label[lt, 0] - low[i, 0, 0]
            ms = by_label[lt, 1] - low[i, 0, 1]
        else:
            b = limits[i, 1]
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
        c = sort_loss[i] / mm if mm > eps else 0.0
        coef[i] = c
        if delta == 0:
            u[i, 0, 0] = c
        else:
            u[i, 0, 1], u[i, 0, 2] = -c, -c * s[i]
            u[i, 1, 0], u[i, 1, 1], u[i, 1, 2] = c, c, c * s[i]
    return rank_plus, sort_loss, mis_mass, coef, u


@numba.njit(**_JIT)
def spread_pass(rank, label_order, q_start, q_order, limits, u, c0, c1, out):
    """out[j, c] = G[j] for the weight columns c in [c0, c1) (``out``: (P, m)).

    Positives by descending label rank; before positive j (label rank l) the weights of every
    query with limit > l are in a tree indexed by reversed score limit (position P + 1 - R
    holds limit R), so G[j] is its prefix sum over the limits > score rank_j.
    """
    p = rank.size
    m = c1 - c0
    nt = limits.shape[1]
    tree = np.zeros((p + 2, m))
    for lab in range(p - 1, -1, -1):
        for qq in range(q_start[lab + 1], q_start[lab + 2]):  # the queries with limit lab + 1
            q = q_order[qq]
            for t in range(nt):
                i = p + 1 - limits[q, t]
                while i <= p + 1:
                    for c in range(m):
                        tree[i, c] += u[q, t, c0 + c]
                    i += i & (-i)
        j = label_order[lab]
        i = p - rank[j]                                        # limits R > score rank
        while i > 0:
            for c in range(m):
                out[j, c0 + c] += tree[i, c]
            i -= i & (-i)


@numba.njit(**_JIT)
def spread_finish(s, label_rank, lab_lt, coef, g, delta):
    """received_j = sum_i coef_i [y_j < y_i] H(s_j - s_i) (docs/losses.md) from the spread
    ``g`` (:func:`spread_pass`) and the "1" term sum_i coef_i [label_j < L_i] (a cumulative sum
    in label order)."""
    p = s.size
    above = np.zeros(p + 1)
    for i in range(p):
        above[p - lab_lt[i]] += coef[i]
    for v in range(1, p + 1):
        above[v] += above[v - 1]
    received = np.empty(p)
    for j in range(p):
        total = above[p - 1 - label_rank[j]]
        if delta == 0:
            received[j] = total - g[j, 0]
        else:
            received[j] = (total - g[j, 0]) + ((s[j] + delta) * g[j, 1] - g[j, 2]) / (2 * delta)
    return received
