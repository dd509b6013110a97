"""numba kernels for RS Loss's sorting terms: 2-D dominance sums and their transpose with Fenwick
(binary indexed) trees, by label blocks that can run on different threads.

The quantities are those of :meth:`rsdet.losses._pairs.PositivePairs.sorting_terms` (supplementary
Eq. S4, S16; docs/losses.md, "Positive pairs"); their 2-D part is

    F[i, t] = sum_j w_j [label_rank_j < L_i] [score_rank_j < R_it]          (sums)
    G[j]    = sum_{i, t} u_it [label_rank_j < L_i] [score_rank_j < R_it]    (spread)

with L_i = #{y_j < y_i} and the window limits R_i = (A_i, B_i).  Both are answered offline by
sweeps over label ranks with a Fenwick tree over score ranks.  The label ranks are cut into T
blocks (T from P alone, rsdet.losses._parallel.pair_blocks); a query with label limit L < P
belongs to the block holding rank L, one with L = P to "block T".  Sums: the points of the
blocks below a query's block come from per-block prefix sums over score ranks (``rows``), those
of its own block below L from that block's sweep (``part``).  Spread: the queries of the
blocks above a point's block come from per-block suffix sums over score limits, those of its
own block with L above the point's label rank from that block's sweep.  Each block is one
call writing only its own outputs; the ``*_finish`` kernels combine the blocks in block order,
so the result is the same for any number of threads.  Indices are unsigned in the hot loops
(numba then emits no negative-index wraparound; about 1.7x faster).
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(cache=True, nogil=True, error_model="numpy")   # IEEE results, no raise checks
_U0 = np.uint64(0)
_U1 = np.uint64(1)


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
def block_starts(p, blocks):
    """First label rank of every block and p at the end: block k spans
    [starts[k], starts[k + 1]) with starts[k] = p k // blocks."""
    starts = np.empty(blocks + 1, dtype=np.int64)
    for k in range(blocks + 1):
        starts[k] = (p * k) // blocks
    return starts


@numba.njit(**_JIT)
def _block_of(lab, starts):
    """The block holding label rank (or limit) ``lab``; ``blocks`` for lab >= p (a short scan:
    no integer division in the per-positive loops)."""
    k = 0
    while k < starts.size - 1 and starts[k + 1] <= lab:
        k += 1
    return k


@numba.njit(**_JIT)
def sums_block(k, blocks, rank, label_order, cols, q_start, q_order, limits, rows, part):
    """Block ``k`` of the sums: ``part[q]`` for the queries whose label limit L lies in this
    block (its points of label rank < L; a prefix of the tree swept in label order) and, if
    k < blocks - 1, ``rows[k][R]`` = this block's weights with score rank < R."""
    p = rank.size
    m = cols.shape[1]
    nt = limits.shape[1]
    lo = (p * k) // blocks
    hi = (p * (k + 1)) // blocks
    up = np.uint64(p)
    tree = np.zeros((p + 1, 4))
    for lab in range(lo, hi):
        for qq in range(q_start[lab], q_start[lab + 1]):      # queries with limit lab: read
            q = np.uint64(q_order[qq])
            for t in range(nt):
                i = np.uint64(limits[q, t])
                a0 = a1 = a2 = a3 = 0.0
                while i != _U0:
                    a0 += tree[i, 0]
                    a1 += tree[i, 1]
                    if m > 2:
                        a2 += tree[i, 2]
                        a3 += tree[i, 3]
                    i &= i - _U1                                # drop the lowest set bit
                part[q, t, 0] = a0
                part[q, t, 1] = a1
                if m > 2:
                    part[q, t, 2] = a2
                    part[q, t, 3] = a3
        j = np.uint64(label_order[lab])                       # then insert that positive
        w0, w1 = cols[j, 0], cols[j, 1]
        w2 = cols[j, 2] if m > 2 else 0.0
        w3 = cols[j, 3] if m > 2 else 0.0
        i = np.uint64(rank[j]) + _U1
        while i <= up:
            tree[i, 0] += w0
            tree[i, 1] += w1
            if m > 2:
                tree[i, 2] += w2
                tree[i, 3] += w3
            i += i & (~i + _U1)                                 # add the lowest set bit
    if k < blocks - 1:
        row = rows[k]
        for lab in range(lo, hi):                              # scatter by score rank ...
            j = np.uint64(label_order[lab])
            r = np.uint64(rank[j]) + _U1
            for c in range(m):
                row[r, c] = cols[j, c]
        for r in range(1, p + 1):                              # ... and prefix sums
            for c in range(m):
                row[r, c] += row[r - 1, c]


@numba.njit(**_JIT)
def sums_finish(s, order, label_order, lab_lt, limits, cols, rows, part, delta, eps, blocks):
    """Combine the blocks and compute the per-positive sorting quantities; returns (rank_plus,
    sort_loss, mis_mass, coef, u): coef_i = sort_loss_i / mis_mass_i (0 where mis_mass <= eps)
    and u the spread's weights per limit (delta > 0: limit A: (0, -c, -c s), limit B: (c, c,
    c s); delta = 0: (c)).  A query of block k adds the rows of blocks 0 .. k - 1 (summed in
    block order); block T's (L = P) reads the 1-D prefix sums over all points."""
    p = s.size
    half_inv = 1.0 / (2 * delta) if delta > 0 else 0.0   # multiply: a division costs ~4x
    mc = cols.shape[1]
    for k in range(1, blocks - 1):                 # rows[k] <- sum of the blocks 0 .. k
        for r in range(p + 1):
            for c in range(mc):
                rows[k, r, c] += rows[k - 1, r, c]
    cum = np.zeros((p + 1, mc))                 # 1-D prefix sums in score order, label order
    by_label = np.zeros((p + 1, mc))
    for r in range(p):
        o, lo = np.uint64(order[r]), np.uint64(label_order[r])
        for c in range(mc):
            cum[r + 1, c] = cum[r, c] + cols[o, c]
            by_label[r + 1, c] = by_label[r, c] + cols[lo, c]
    nt = limits.shape[1]
    low = np.empty((nt, mc))
    rank_plus = np.empty(p)
    sort_loss = np.empty(p)
    mis_mass = np.empty(p)
    coef = np.empty(p)
    u = np.zeros((p, 1, 1)) if delta == 0 else np.zeros((p, 2, 3))
    starts = block_starts(p, blocks)
    for i in range(p):
        a, lt = np.uint64(limits[i, 0]), np.uint64(lab_lt[i])
        kq = _block_of(lab_lt[i], starts)
        for t in range(nt):
            lim = np.uint64(limits[i, t])
            if kq == 0:
                for c in range(mc):
                    low[t, c] = part[i, t, c]
            elif kq == blocks:
                for c in range(mc):
                    low[t, c] = cum[lim, c]
            else:
                row = np.uint64(kq - 1)
                for c in range(mc):
                    low[t, c] = rows[row, lim, c] + part[i, t, c]
        if delta == 0:
            rp = cum[p, 0] - cum[a, 0]
            cs = cum[p, 1] - cum[a, 1]
            mm = by_label[lt, 0] - low[0, 0]
            ms = by_label[lt, 1] - low[0, 1]
        else:
            b = np.uint64(limits[i, 1])
            edge = s[i] - delta
            rp = (cum[p, 0] - cum[b, 0]) + (
                (cum[b, 1] - cum[a, 1]) - edge * (cum[b, 0] - cum[a, 0])) * half_inv
            cs = (cum[p, 2] - cum[b, 2]) + (
                (cum[b, 3] - cum[a, 3]) - edge * (cum[b, 2] - cum[a, 2])) * half_inv
            mm = (by_label[lt, 0] - low[1, 0]) + (
                (low[1, 1] - low[0, 1]) - edge * (low[1, 0] - low[0, 0])) * half_inv
            ms = (by_label[lt, 2] - low[1, 2]) + (
                (low[1, 3] - low[0, 3]) - edge * (low[1, 2] - low[0, 2])) * half_inv
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
def _suffix_row(row, m):
    """row[r] <- sum of row[R] over R > r (per column)."""
    for c in range(m):
        acc = 0.0
        for r in range(row.shape[0] - 1, -1, -1):
            v = row[r, c]
            row[r, c] = acc
            acc += v


@numba.njit(**_JIT)
def spread_block(k, blocks, rank, label_order, q_start, q_order, limits, u, rows, out):
    """Block ``k`` of the spread: ``out[j]`` for this block's points (the queries of this block
    whose label limit is above the point's label rank: the tree over reversed score limits,
    position P + 1 - R holding limit R, swept downwards) and, for k >= 1, ``rows[k - 1][r]`` =
    weights of this block's queries with a score limit > r (the last block also fills
    ``rows[blocks - 1]`` with block T's queries, L = P)."""
    p = rank.size
    m = u.shape[2]
    nt = limits.shape[1]
    lo = (p * k) // blocks
    hi = (p * (k + 1)) // blocks
    top = np.uint64(p + 1)
    tree = np.zeros((p + 2, 3))
    for lab in range(hi - 1, lo - 1, -1):
        if lab + 1 < hi:                           # insert the queries with limit lab + 1
            for qq in range(q_start[lab + 1], q_start[lab + 2]):
                q = np.uint64(q_order[qq])
                for t in range(nt):
                    v0 = u[q, t, 0]
                    v1 = u[q, t, 1] if m > 1 else 0.0
                    v2 = u[q, t, 2] if m > 1 else 0.0
                    i = top - np.uint64(limits[q, t])
                    while i <= top:
                        tree[i, 0] += v0
                        if m > 1:
                            tree[i, 1] += v1
                            tree[i, 2] += v2
                        i += i & (~i + _U1)
        j = np.uint64(label_order[lab])
        i = np.uint64(p) - np.uint64(rank[j])      # limits R > score rank
        a0 = a1 = a2 = 0.0
        while i != _U0:
            a0 += tree[i, 0]
            if m > 1:
                a1 += tree[i, 1]
                a2 += tree[i, 2]
            i &= i - _U1
        out[j, 0] = a0
        if m > 1:
            out[j, 1] = a1
            out[j, 2] = a2
    first = lo if k >= 1 else hi                  # block 0's queries are nobody's full part
    stop = hi if k < blocks - 1 else p + 1        # the last block also takes L = P
    for lab in range(first, stop):
        row = rows[k - 1] if lab < hi else rows[blocks - 1]
        for qq in range(q_start[lab], q_start[lab + 1]):
            q = np.uint64(q_order[qq])
            for t in range(nt):
                r = np.uint64(limits[q, t])
                for c in range(m):
                    row[r, c] += u[q, t, c]
    if k >= 1:
        _suffix_row(rows[k - 1], m)
    if k == blocks - 1:
        _suffix_row(rows[blocks - 1], m)


@numba.njit(**_JIT)
def spread_finish(s, rank, label_rank, lab_lt, coef, rows, out, delta, blocks):
    """received_j = sum_i coef_i [y_j < y_i] H(s_j - s_i) (docs/losses.md): the point's own
    block (``out``) plus the blocks above it (suffix over ``rows`` in block order), and the "1"
    term sum_i coef_i [label_j < L_i] (a cumulative sum in label order)."""
    p = s.size
    half_inv = 1.0 / (2 * delta) if delta > 0 else 0.0   # multiply: a division costs ~4x
    m = rows.shape[2]
    for k in range(blocks - 2, -1, -1):            # rows[k] <- blocks k + 1 .. T
        for r in range(p + 1):
            for c in range(m):
                rows[k, r, c] += rows[k + 1, r, c]
    above = np.zeros(p + 1)
    for i in range(p):
        above[np.uint64(p - lab_lt[i])] += coef[i]
    for v in range(1, p + 1):
        above[v] += above[v - 1]
    received = np.empty(p)
    g = np.empty(3)
    starts = block_starts(p, blocks)
    for j in range(p):
        kj = np.uint64(_block_of(label_rank[j], starts))
        r = np.uint64(rank[j])
        for c in range(m):
            g[c] = out[j, c] + rows[kj, r, c]
        total = above[np.uint64(p - 1 - label_rank[j])]
        if delta == 0:
            received[j] = total - g[0]
        else:
            received[j] = (total - g[0]) + ((s[j] + delta) * g[1] - g[2]) * half_inv
    return received
