"""numba kernels over the P positives: sorting, window limits and edges, N_FP, 1-D relation sums,
the per-positive loss terms and the gradient tables of RS, AP and aLRP Loss.

Same definitions, tie semantics and float64 accumulation as the torch code
(:mod:`rsdet.losses._intervals`, :mod:`rsdet.losses._pairs`, :mod:`rsdet.losses._ranking_impl`);
RS's sorting terms live in :mod:`rsdet.losses._numba_sorting`.  docs/losses.md ("Compiled CPU
kernels").
"""

from __future__ import annotations

import numba
import numpy as np

from rsdet.losses._numba_entries import merge_bins

_JIT = dict(cache=True, nogil=True, error_model="numpy")   # IEEE results, no raise checks

_DIGIT = 11
_BUCKETS = 1 << _DIGIT
_SIGN = np.uint64(1) << np.uint64(63)


@numba.njit(**_JIT)
def sort_keys(values):
    """Order-preserving uint64 keys of float64 values: -0.0 -> +0.0 (they tie), every NaN one
    key above +inf (NaNs tie and sort last, as in ``torch.sort``)."""
    n = values.size
    canon = np.empty(n, dtype=np.float64)
    for i in range(n):
        v = values[i]
        canon[i] = np.nan if v != v else v + 0.0
    bits = canon.view(np.uint64)
    keys = np.empty(n, dtype=np.uint64)
    for i in range(n):
        b = bits[i]
        keys[i] = ~b if b & _SIGN else b | _SIGN
    return keys


@numba.njit(**_JIT)
def stable_argsort(values):
    """Ascending stable argsort (int64) of a float64 array, as ``torch.sort(stable=True)``:
    ties keep index order, -0.0 ties with +0.0, NaN after +inf.

    LSD radix sort of the order-preserving 64-bit keys (:func:`sort_keys`) in 11-bit digits; a
    digit every key shares is skipped (float64 copies of float32 values leave the low 29 bits
    zero, so two to four of the six passes remain).  (numba's own merge sort would be cheaper
    for a few dozen values, but compiling it took longer than all the other kernels.)
    """
    n = values.size
    keys = sort_keys(values)
    passes = (64 + _DIGIT - 1) // _DIGIT
    hist = np.zeros((passes, _BUCKETS), dtype=np.int32)
    for i in range(n):
        k = keys[i]
        for d in range(passes):
            hist[d, (k >> np.uint64(d * _DIGIT)) & np.uint64(_BUCKETS - 1)] += 1
    order = np.arange(n, dtype=np.int64)
    other = np.empty(n, dtype=np.int64)
    key_other = np.empty(n, dtype=np.uint64)
    offset = np.empty(_BUCKETS, dtype=np.int64)
    for d in range(passes):
        shared = False
        acc = 0
        for v in range(_BUCKETS):
            shared |= hist[d, v] == n
            offset[v] = acc
            acc += hist[d, v]
        if shared:
            continue
        shift = np.uint64(d * _DIGIT)
        for i in range(n):
            k = keys[i]
            v = (k >> shift) & np.uint64(_BUCKETS - 1)
            at = offset[v]
            offset[v] = at + 1
            other[at] = order[i]
            key_other[at] = k
        order, other = other, order
        keys, key_other = key_other, keys
    return order


@numba.njit(**_JIT)
def positive_windows(s, order, delta):
    """Everything the positives' windows define, in the caller's order of ``s``.

    Returns (rank, lo, hi, edges, lo_pos, hi_pos): score rank of each positive; window limits
    A_i = #{s_j <= s_i - delta}, B_i = #{s_j <= s_i + delta} (delta = 0: both #{s_j < s_i});
    the sorted window edges (the merge of s - delta and s + delta, lower edges first on ties,
    as :class:`rsdet.losses._intervals.NegativeIntervals`; delta = 0: the sorted logits) and
    each positive's edge positions (delta = 0: the first position of its tie group).
    Forward pointers over the sorted logits replace the binary searches.
    """
    p = s.size
    sorted_s = np.empty(p)
    rank = np.empty(p, dtype=np.int64)
    for r in range(p):
        sorted_s[r] = s[order[r]]
        rank[order[r]] = r
    lo = np.empty(p, dtype=np.int64)
    hi = np.empty(p, dtype=np.int64)
    if delta == 0:
        first = 0
        for r in range(p):
            if r > 0 and sorted_s[r] != sorted_s[r - 1]:
                first = r
            lo[order[r]] = first
            hi[order[r]] = first
        return rank, lo, hi, sorted_s, lo, hi
    # Window limits A, B and the merged edges' positions by forward pointers: the lower edge of
    # sorted positive r sits after r lower edges and #{s_j + delta < s_r - delta} upper ones
    # (lower edges first on ties), its upper edge after r upper edges and
    # #{s_j - delta <= s_r + delta} lower ones.  No data-dependent branch but the pointers'.
    edges = np.empty(2 * p)
    lo_pos = np.empty(p, dtype=np.int64)
    hi_pos = np.empty(p, dtype=np.int64)
    a = b = c = d = 0
    last = p - 1
    for r in range(p):
        low, high = sorted_s[r] - delta, sorted_s[r] + delta
        # Pointers move by 0-2 steps per positive: two steps without branches, then a loop
        # that rarely runs (an unpredictable loop exit per pointer cost ~2x).
        for _ in range(2):
            a += (a < p) & (sorted_s[min(a, last)] <= low)
            b += (b < p) & (sorted_s[min(b, last)] <= high)
            c += (c < p) & (sorted_s[min(c, last)] + delta < low)
            d += (d < p) & (sorted_s[min(d, last)] - delta <= high)
        while a < p and sorted_s[a] <= low:
            a += 1
        while b < p and sorted_s[b] <= high:
            b += 1
        while c < p and sorted_s[c] + delta < low:
            c += 1
        while d < p and sorted_s[d] - delta <= high:
            d += 1
        i = np.uint64(order[r])
        lo[i] = a
        hi[i] = b
        lo_pos[i] = r + c
        hi_pos[i] = r + d
        edges[np.uint64(r + c)] = low
        edges[np.uint64(r + d)] = high
    return rank, lo, hi, edges, lo_pos, hi_pos


@numba.njit(**_JIT)
def false_positives(count_cum, sum_cum, edges, lo_pos, hi_pos, delta):
    """(P,) N_FP(i) = sum over negatives k of H_delta(s_k - s_i), from the bins' prefix sums
    (as :meth:`rsdet.losses._intervals.NegativeIntervals.false_positives`)."""
    p = lo_pos.size
    half_inv = 1.0 / (2 * delta) if delta > 0 else 0.0   # multiply: a division costs ~4x
    total = count_cum[count_cum.size - 1]
    n_fp = np.empty(p)
    for i in range(p):
        if delta == 0:
            n_fp[i] = np.float64(total - count_cum[lo_pos[i] + 1])
        else:
            a, b = lo_pos[i] + 1, hi_pos[i] + 1
            n_win = np.float64(count_cum[b] - count_cum[a])
            inside = ((sum_cum[b] - sum_cum[a]) - edges[lo_pos[i]] * n_win) * half_inv
            n_fp[i] = np.float64(total - count_cum[b]) + min(max(inside, 0.0), n_win)
    return n_fp


@numba.njit(**_JIT)
def n_false_positives(counts, sums, edges, lo_pos, hi_pos, delta):
    """N_FP of every positive from the blocks' histograms (:func:`merge_bins`, then
    :func:`false_positives`)."""
    count_cum, sum_cum = merge_bins(counts, sums, delta > 0)
    return false_positives(count_cum, sum_cum, edges, lo_pos, hi_pos, delta)


@numba.njit(**_JIT)
def relation_sums(s, order, lo, hi, weights, delta):
    """(P, m) sum_j H_delta(s_j - s_i) weights[j] (self term included), as
    :meth:`rsdet.losses._pairs.PositivePairs.relation_sums`: prefix sums of w and w s in score
    order read at the window limits."""
    p, m = weights.shape
    half_inv = 1.0 / (2 * delta) if delta > 0 else 0.0   # multiply: a division costs ~4x
    cum = np.zeros((p + 1, 2 * m))
    for r in range(p):
        j = order[r]
        for c in range(m):
            cum[r + 1, c] = cum[r, c] + weights[j, c]
            cum[r + 1, m + c] = cum[r, m + c] + weights[j, c] * s[j]
    out = np.empty((p, m))
    for i in range(p):
        a, b = lo[i], hi[i]
        for c in range(m):
            if delta == 0:
                out[i, c] = cum[p, c] - cum[a, c]
            else:
                inside = (cum[b, m + c] - cum[a, m + c]) - (s[i] - delta) * (cum[b, c] - cum[a, c])
                out[i, c] = (cum[p, c] - cum[b, c]) + inside * half_inv
    return out


@numba.njit(**_JIT)
def gradient_tables(coef, order, edges, lo_pos, hi_pos, delta, like):
    """(3, E + 2) tables (value, slope, left) in ``like``'s dtype that evaluate
    G(t) = sum_i coef_i H_delta(t - s_i) for an entry t of bin b as value[b] + slope[b] (t -
    left[b]), as :meth:`rsdet.losses._intervals.NegativeIntervals.gradient_tables` (computed in
    float64; ``left`` rounded to the output dtype first; delta = 0: value only)."""
    p = coef.size
    nb = edges.size + 1
    out = np.zeros((3, nb + 1), dtype=like.dtype)
    cast = like.dtype.type
    if delta == 0:
        acc = 0.0
        for r in range(p):
            acc += coef[order[r]]
            out[0, r + 1] = max(acc, 0.0)
        return out
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
    run_slope = 0.0
    run_inter = 0.0
    run_full = 0.0
    for b in range(nb + 1):
        run_slope += d_slope[b]
        run_inter += d_inter[b]
        run_full += d_full[b]
        sl = max(run_slope, 0.0) if 0 < b < nb - 1 else 0.0
        le = np.float64(cast(edges[min(max(b - 1, 0), nb - 2)]))   # left in the output dtype
        out[1, b] = sl
        out[2, b] = le
        if 0 < b < nb:
            out[0, b] = max(run_full + sl * le - run_inter, 0.0)
    return out


@numba.njit(**_JIT)
def finish_tables(coef, pos_grad, order, edges, lo_pos, hi_pos, delta, like):
    """What the plan stores: (pos_grad in ``like``'s dtype, gradient tables, ||g||_1)."""
    tables = gradient_tables(coef, order, edges, lo_pos, hi_pos, delta, like)
    pos_grad_c = pos_grad.astype(like.dtype)
    return pos_grad_c, tables, gradient_l1(pos_grad_c)


@numba.njit(**_JIT)
def scale_tables(tables, pos_grad, g):
    """Backward's tables and positive gradients times the upstream gradient ``g``, in their own
    dtype (as the torch code multiplies them by ``upstream.to(dtype)``)."""
    gs = tables.dtype.type(g)
    scaled = tables.copy()
    scaled[0, :] = tables[0] * gs
    scaled[1, :] = tables[1] * gs
    return scaled, pos_grad * gs


@numba.njit(**_JIT)
def gradient_l1(pos_grad):
    """||g||_1 of the whole gradient from the positives' part: negatives only receive >= 0 and
    the gradient sums to zero, so the negatives' part is -sum over positives."""
    acc = 0.0
    for v in pos_grad:
        acc += abs(v) - v
    return acc


@numba.njit(**_JIT)
def ap_terms(s, order, lo, hi, n_fp, delta):
    """AP Loss per positive (as rsdet.losses._ranking_impl._ap_forward): returns (loss,
    coef (P,), pos_grad (P,)) with coef the negatives' coefficients of the gradient tables."""
    p = s.size
    inv_p = 1.0 / p
    h0 = 0.5 if delta > 0 else 1.0
    ones = np.ones((p, 1))
    above = relation_sums(s, order, lo, hi, ones, delta)
    prec = np.empty(p)
    rank = np.empty(p)
    for i in range(p):
        rank_plus = 1.0 + above[i, 0] - h0
        rank[i] = rank_plus + n_fp[i]
        prec[i] = rank_plus / rank[i]
    prec_max = np.empty(p)
    run = prec[order[0]]
    for r in range(p):          # interpolation: running max from the lowest logit up (NaN sticks)
        i = order[r]
        if prec[i] > run or prec[i] != prec[i]:
            run = prec[i]
        prec_max[i] = run
    coef = np.empty(p)
    pos_grad = np.empty(p)
    total = 0.0
    for i in range(p):
        scale = 1.0 if prec_max[i] <= prec[i] else (1.0 - prec_max[i]) / (1.0 - prec[i])
        coef[i] = scale / rank[i] * inv_p
        pos_grad[i] = -(1.0 - prec_max[i]) * inv_p
        total += prec_max[i]
    return 1.0 - total / p, coef, pos_grad


@numba.njit(**_JIT)
def alrp_terms(s, order, lo, hi, n_fp, err, delta, eps):
    """aLRP Loss per positive (as rsdet.losses._ranking_impl._alrp_forward): returns (loss,
    rank (P,), coef (P,), pos_grad (P,))."""
    p = s.size
    inv_p = 1.0 / p
    h0 = 0.5 if delta > 0 else 1.0
    w = np.empty((p, 2))
    for i in range(p):
        w[i, 0] = 1.0
        w[i, 1] = err[i]
    both = relation_sums(s, order, lo, hi, w, delta)
    rank = np.empty(p)
    coef = np.empty(p)
    pos_grad = np.empty(p)
    total = 0.0
    for i in range(p):
        rank[i] = 1.0 + both[i, 0] - h0 + n_fp[i]
        loc_above = both[i, 1] - h0 * err[i]
        active = n_fp[i] > eps
        update = (loc_above + n_fp[i]) / rank[i] if active else 0.0
        coef[i] = (update / n_fp[i] if active else 0.0) * inv_p
        pos_grad[i] = -update * inv_p
        total += n_fp[i] / rank[i]
    return total / p, rank, coef, pos_grad


@numba.njit(**_JIT)
def positive_ranks(s, order, lo, hi, n_fp, delta):
    """rank(i) = 1 + sum_{j != i} H(s_j - s_i) + N_FP(i) (self counted once)."""
    p = s.size
    h0 = 0.5 if delta > 0 else 1.0
    above = relation_sums(s, order, lo, hi, np.ones((p, 1)), delta)
    out = np.empty(p)
    for i in range(p):
        out[i] = 1.0 + above[i, 0] - h0 + n_fp[i]
    return out


@numba.njit(**_JIT)
def rs_terms(n_fp, rank_plus, sort_loss, mis_mass, received, eps):
    """RS Loss per positive from N_FP and the sorting terms (as _rank_sort_forward): returns
    (ranking loss, sorting loss, coef (P,), pos_grad (P,)) — Eq. S7 (coef) and Eq. S16."""
    p = n_fp.size
    inv_p = 1.0 / p
    coef = np.empty(p)
    pos_grad = np.empty(p)
    rank_sum = 0.0
    sort_sum = 0.0
    for i in range(p):
        rank_loss = n_fp[i] / (rank_plus[i] + n_fp[i])
        has_fp = n_fp[i] > eps
        coef[i] = (rank_loss / n_fp[i] if has_fp else 0.0) * inv_p
        pos_grad[i] = (received[i] - (rank_loss if has_fp else 0.0)
                       - (sort_loss[i] if mis_mass[i] > eps else 0.0)) * inv_p
        rank_sum += rank_loss
        sort_sum += sort_loss[i]
    return rank_sum / p, sort_sum / p, coef, pos_grad
