"""Positive-vs-positive terms of the ranking losses (float64), without a P x P matrix.

Every positive-pair quantity the losses need is a sum of the smoothed step
H_delta(s_j - s_i) = clamp((s_j - s_i + delta) / (2 delta), 0, 1) times per-positive weights.
As a function of s_j it is 0 up to s_i - delta, 1 from s_i + delta on and linear in between, so
with the positives sorted by logit (score rank r) a sum over j splits into

* the entries above the window (r >= B_i, H = 1): a sum of w, and
* the entries inside it (A_i <= r < B_i): (sum of w*s - (s_i - delta) * sum of w) / (2 delta),

where A_i = #{j : s_j <= s_i - delta} and B_i = #{j : s_j <= s_i + delta} (binary searches in
the sorted logits).  Entries on a window boundary get the exact value by continuity of H.  For
delta = 0 (hard step, H(0) = 1) there is no window and "above" is s_j >= s_i.

Plain sums (:meth:`PositivePairs.relation_sums`; AP and aLRP need nothing else) read prefix
sums in score order: O(P log P).  RS's sorting terms (the sorting pmfs p_S of supplementary
Eq. S4 and the positive gradient, Eq. S16) also restrict j by label (y_j < y_i for the
mis-sorted mass, y_j >= y_i for the target sorting error; y_i > y_j in the sorting pmf a
positive receives).  That is a two-dimensional
prefix sum over (label rank, score rank): F(L, R) = sum of w_j over the positives with label
rank < L and score rank < R.  :class:`Dominance` answers a batch of such queries exactly with a
chunk decomposition: a (P/K)^2 table of chunk-aligned prefix sums plus, per query, the K
positives of the one partial label chunk and the K of the one partial score chunk (boolean
masks).  With K ~ P^(1/3) that is O(P^(4/3)) work in a fixed number of vectorised operations
(no Python loop over positives, no data-dependent shapes).  The pmf mass a positive receives is
the transpose of the mis-sorted sums (same label limits, same windows), so it reuses their masks
(:meth:`Dominance.spread`).  Up to :data:`DENSE_MAX` positives one dense P x P matrix is
cheaper.  With the numba CPU kernels (:mod:`rsdet.losses._kernel`) the sorting terms use
Fenwick trees instead, O(P log P).  See docs/losses.md ("Positive pairs", "Compiled CPU
kernels").
"""

from __future__ import annotations

import numpy as np
import torch

from rsdet.losses._kernel import numba_kernels


def self_relation(delta: float) -> float:
    """H_delta(0): 0.5 for delta > 0, 1 for the hard step (delta = 0)."""
    return 0.5 if delta > 0 else 1.0


# Up to this many positives the sorting terms use the dense P x P matrix (fewer operations;
# above ~450 its P x P buffers fall out of cache: 0.2 ms at P = 400, 1.7 ms at 500, 4.1 ms at
# 768 against 0.6-0.85 ms for the chunked sums, one core of the 2-core development box).
DENSE_MAX = 448


def chunk_size(p: int) -> int:
    """Chunk length K of :class:`Dominance`: balances the (P/K)^2 table against 2K per query."""
    return max(4, min(64, round(0.95 * p ** (1.0 / 3.0))))


class Dominance:
    """2-D dominance sums over the positives, both ways, with one set of chunk masks.

    Points j carry a label rank and a score rank (each a permutation of 0..P-1: ties already
    broken; callers express tie groups through the limits).  Query q has a label limit L_q and
    T score limits R_qt.  With M[q, t, j] = [label_rank_j < L_q] [score_rank_j < R_qt]:

    * :meth:`sums` gives F[q, t] = sum_j M[q, t, j] w_j (weights per point), and
    * :meth:`spread` gives the transpose, G[j] = sum_{q,t} M[q, t, j] u_qt (weights per query).

    Chunk decomposition with chunk length K: with a = L // K and b = R // K the region
    {label < L, score < R} is the disjoint union of the chunk-aligned block {label < aK,
    score < bK}, the partial label chunk {aK <= label < L, score < R} and the partial score
    chunk {label < aK, bK <= score < R} (at most K points each).  The aligned blocks are a
    (P/K + 1)^2 table of 2-D prefix sums (for :meth:`spread`, suffix sums of the query weights
    scattered into the table); the partial chunks are boolean masks (queries x T x K), built
    once here and used by both directions.  With K ~ P^(1/3) everything is O(P^(4/3)) work in
    a fixed number of vectorised operations per block of queries (docs/losses.md).

    Args:
        label_rank, score_rank: (P,) int64 permutations.
        lab_lim: (Q,) int64 in [0, P].  score_lim: (Q, T) int64 in [0, P].
        chunk: K (default :func:`chunk_size`); any K >= 1 gives the same result.
        query_block: about this many queries x T x K x 4 entries are handled at once (bounds
            the temporaries, which the allocator then recycles instead of faulting in afresh).
    """

    def __init__(self, label_rank: torch.Tensor, score_rank: torch.Tensor,
                 lab_lim: torch.Tensor, score_lim: torch.Tensor,
                 chunk: int | None = None, query_block: int = 1 << 17) -> None:
        p = label_rank.numel()
        q, t = score_lim.shape
        k = chunk or chunk_size(p)
        nc = p // k + 1                  # chunks, so that a, b <= p // k are valid rows/columns
        dev = label_rank.device
        self.p, self.q, self.t, self.k, self.nc = p, q, t, k, nc
        self.label_rank, self.score_rank = label_rank, score_rank
        # Table cell of every point (one row and one column in: cell [a, b] sums label chunks
        # < a and score chunks < b) and of every query.
        cl = torch.div(label_rank, k, rounding_mode="floor")
        cs = torch.div(score_rank, k, rounding_mode="floor")
        self.point_cell = cl * (nc + 1) + cs + (nc + 2)
        a = torch.div(lab_lim, k, rounding_mode="floor")                  # (Q,)
        b = torch.div(score_lim, k, rounding_mode="floor")                # (Q, T)
        self.query_cell = (a[:, None] * (nc + 1) + b).view(-1)
        # Points laid out by label rank and by score rank, padded to nc * K.  A padding slot
        # has score / label "p", so no mask ever selects it.
        score_of_label = torch.full((nc * k,), p, dtype=torch.int64, device=dev)
        score_of_label.index_copy_(0, label_rank, score_rank)
        label_of_score = torch.full((nc * k,), p, dtype=torch.int64, device=dev)
        label_of_score.index_copy_(0, score_rank, label_rank)
        score_of_label, label_of_score = score_of_label.view(nc, k), label_of_score.view(nc, k)
        offs = torch.arange(k, device=dev)
        self.blocks = []
        step = max(1, query_block // (t * k * 4))
        for lo in range(0, q, step):
            hi = min(q, lo + step)
            la, lb, lim_l, lim_s = a[lo:hi], b[lo:hi], lab_lim[lo:hi], score_lim[lo:hi]
            # Partial label chunk: label ranks aK .. L-1 whose score rank is < R.
            keep_l = (offs < (lim_l - la * k)[:, None]).unsqueeze(1) & (
                score_of_label.index_select(0, la).unsqueeze(1) < lim_s.unsqueeze(2))
            # Partial score chunk: score ranks bK .. R-1 whose label rank is < aK.
            flat_b = lb.reshape(-1)
            keep_s = (offs < (lim_s.reshape(-1) - flat_b * k)[:, None]) & (
                label_of_score.index_select(0, flat_b)
                < (la * k)[:, None].expand(hi - lo, t).reshape(-1, 1))
            self.blocks.append((lo, hi, la, flat_b, keep_l, keep_s))

    def sums(self, weights: torch.Tensor) -> torch.Tensor:
        """(Q, T, m) F[q, t] = sum_j [label_j < L_q] [score_j < R_qt] weights[j]; weights (P, m)."""
        p, q, t, k, nc = self.p, self.q, self.t, self.k, self.nc
        m, dt = weights.shape[1], weights.dtype
        # Per-chunk sums one row and one column in, then a 2-D prefix sum in place (one
        # buffer: on a VM every fresh large buffer costs page faults that dwarf the arithmetic).
        table = weights.new_zeros((nc + 1) * (nc + 1), m).index_add_(0, self.point_cell, weights)
        table3 = table.view(nc + 1, nc + 1, m)
        table3.cumsum_(0)
        table3.cumsum_(1)
        out = table.index_select(0, self.query_cell).view(q, t, m)
        by_label = weights.new_zeros(nc * k, m).index_copy_(0, self.label_rank, weights)
        by_score = weights.new_zeros(nc * k, m).index_copy_(0, self.score_rank, weights)
        by_label, by_score = by_label.view(nc, k, m), by_score.view(nc, k, m)
        for lo, hi, la, flat_b, keep_l, keep_s in self.blocks:
            part = torch.bmm(keep_l.to(dt), by_label.index_select(0, la))
            part += torch.bmm(keep_s.to(dt).unsqueeze(1),
                              by_score.index_select(0, flat_b)).view(hi - lo, t, m)
            out[lo:hi] += part
        return out

    def spread(self, u: torch.Tensor) -> torch.Tensor:
        """(P, m) G[j] = sum_{q, t} [label_j < L_q] [score_j < R_qt] u[q, t]; u (Q, T, m).

        The transpose of :meth:`sums` (summed over t; give the limits separate columns of u
        to keep them apart).  The aligned-block part scatters u into the table and takes 2-D
        suffix sums (a point in label chunk c and score chunk d lies in the aligned block of
        every query with a > c and b > d); the partial chunks add the masked query weights to
        the slots of the points they select.
        """
        p, q, t, k, nc = self.p, self.q, self.t, self.k, self.nc
        m, dt = u.shape[2], u.dtype
        # Suffix sums as prefix sums in reversed cell coordinates: cell index c -> last - c.
        last = (nc + 1) * (nc + 1) - 1
        table = u.new_zeros((nc + 1) * (nc + 1), m).index_add_(0, last - self.query_cell,
                                                              u.reshape(q * t, m))
        table3 = table.view(nc + 1, nc + 1, m)
        table3.cumsum_(0)
        table3.cumsum_(1)
        # A point in chunks (c, d) reads the suffix sum from cell (c + 1, d + 1), i.e. from its
        # own table cell (point_cell is already one row and one column in).
        out = table.index_select(0, last - self.point_cell)
        by_label = u.new_zeros(nc, k * m)        # slot (chunk, offset) of a label position
        by_score = u.new_zeros(nc, k * m)        # slot (chunk, offset) of a score position
        for lo, hi, la, flat_b, keep_l, keep_s in self.blocks:
            ub = u[lo:hi]
            by_label.index_add_(0, la, torch.bmm(keep_l.transpose(1, 2).to(dt), ub)
                                .view(hi - lo, -1))
            by_score.index_add_(0, flat_b, (keep_s.unsqueeze(2).to(dt)
                                            * ub.reshape(-1, 1, m)).view((hi - lo) * t, -1))
        out += by_label.view(nc * k, m).index_select(0, self.label_rank)
        out += by_score.view(nc * k, m).index_select(0, self.score_rank)
        return out


def dominance_prefix(label_rank: torch.Tensor, score_rank: torch.Tensor, weights: torch.Tensor,
                     lab_lim: torch.Tensor, score_lim: torch.Tensor,
                     chunk: int | None = None, query_block: int = 1 << 17) -> torch.Tensor:
    """F[q, t] = sum_j weights[j] [label_rank_j < lab_lim_q] [score_rank_j < score_lim_qt], exactly.

    (Q, T, m) float64 for weights (P, m); see :class:`Dominance`.
    """
    return Dominance(label_rank, score_rank, lab_lim, score_lim, chunk, query_block).sums(weights)


# Below this many elements torch.sort is as fast (it switches algorithm around 2-4k elements).
_PACKED_SORT_MIN = 2048


def stable_argsort(values: torch.Tensor) -> torch.Tensor:
    """Ascending stable argsort of a 1-D float tensor (ties keep index order), as int64.

    Same result as ``torch.sort(values, stable=True).indices``.  On the CPU, when every value is
    a finite float32 number (float32/16/bfloat16 tensors, or float64 tensors holding float32
    values -- the ranking losses' positive logits and labels), each value is packed with its
    index into one int64 key (order-preserving integer image of the float32 bits in the high
    half, the index in the low half) and the keys are sorted by numpy without indices:
    ~15 us instead of ~200 us for 5000 values on one core of the development box.  -0.0 is
    mapped to +0.0 first so that the two zeros tie, as they do for ``torch.sort``.
    """
    n = values.numel()
    if (values.device.type != "cpu" or n < _PACKED_SORT_MIN or n >= 2**31
            or values.dtype not in (torch.float64, torch.float32, torch.float16, torch.bfloat16)):
        return torch.sort(values, stable=True).indices
    single = values.to(torch.float32) + 0.0                 # + 0.0 turns -0.0 into +0.0
    if values.dtype == torch.float64:
        if not bool(torch.equal(single.to(torch.float64), values)):    # not float32 values
            return torch.sort(values, stable=True).indices
    elif not bool(torch.isfinite(single).all()):
        return torch.sort(values, stable=True).indices
    bits = single.view(torch.int32)
    # Negative floats: flip the magnitude bits so that signed integer order = float order.
    key = torch.bitwise_xor(bits, torch.bitwise_and(bits >> 31, 0x7FFFFFFF)).to(torch.int64)
    packed = (key << 32).add_(torch.arange(n, dtype=torch.int64))
    packed = torch.from_numpy(np.sort(packed.numpy()))   # numpy's SIMD sort: ~10x torch.sort
    return packed.bitwise_and_(0xFFFFFFFF)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """Contiguous numpy view of a CPU tensor (a copy only if it is not contiguous)."""
    return t.detach().contiguous().numpy()


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """inv[perm[k]] = k (``index_copy_``: much cheaper on CPU than ``inv[perm] = arange``)."""
    return torch.empty_like(perm).index_copy_(0, perm, torch.arange(perm.numel(),
                                                                    device=perm.device))


def tie_bounds(sorted_values: torch.Tensor, position: torch.Tensor):
    """#{v < v_i} and #{v <= v_i} for every element, from the sorted values, without searching.

    ``position[i]`` is element i's index in ``sorted_values``; the two counts are the start and
    end of its tie group there (running max / min over the group boundaries).
    """
    n = sorted_values.numel()
    idx = torch.arange(n, device=sorted_values.device)
    differs = sorted_values[1:] != sorted_values[:-1]
    starts = torch.cat([differs.new_ones(1), differs])      # element k opens a tie group
    ends = torch.cat([differs, differs.new_ones(1)])        # element k closes a tie group
    first = torch.cummax(torch.where(starts, idx, 0), 0).values
    stop = torch.cummin(torch.where(ends, idx + 1, n).flip(0), 0).values.flip(0)
    return first.index_select(0, position), stop.index_select(0, position)


class PositivePairs:
    """The positives sorted by logit once; smoothed-step sums over positive pairs.

    Args:
        s: (P,) float64 positive logits, P >= 1, in the caller's order.
        delta: smoothing delta >= 0 (0 = hard step, ties count as "above").

    Attributes:
        order: (P,) int64 stable ascending argsort of ``s`` (also AP's visiting order).
        rank: (P,) int64 score rank of each positive (inverse of ``order``).
        lo, hi: (P,) int64 window limits in score ranks — for delta > 0 A_i = #{s_j <= s_i - delta}
            and B_i = #{s_j <= s_i + delta}; for delta = 0 both #{s_j < s_i} (ties above).
    """

    def __init__(self, s: torch.Tensor, delta: float) -> None:
        self.s, self.delta, self.p = s, float(delta), s.numel()
        self.order = stable_argsort(s)
        self.sorted_s = sorted_s = s.index_select(0, self.order)
        self.rank = inverse_permutation(self.order)
        if self.delta > 0:
            # Queries in ascending order (sorted_s -/+ delta) make the binary searches cheap;
            # the results are then read back in the caller's order.
            bounds = torch.searchsorted(sorted_s, torch.stack([sorted_s - self.delta,
                                                               sorted_s + self.delta]),
                                        right=True)
            self.lo, self.hi = bounds.index_select(1, self.rank)
        else:
            self.lo, self.upper = tie_bounds(sorted_s, self.rank)    # #{s_j < s_i}, #{<=}
            self.hi = self.lo

    def _prefix(self, w: torch.Tensor) -> torch.Tensor:
        """(P + 1, ...) exclusive prefix sums of ``w`` (given in the caller's order) by score rank."""
        w = w[self.order]
        return torch.cat([w.new_zeros((1,) + w.shape[1:]), torch.cumsum(w, 0)])

    def _combine(self, at_lo, at_hi, at_end):
        """sum_j H(s_j - s_i) w_j from prefix sums of (w, w*s) read at A_i, B_i and P.

        ``at_lo``/``at_hi``: (P, ..., 2) prefix sums (last axis: w, w*s) read at each positive's
        limits; ``at_end``: the totals, broadcastable.  Returns (P, ...).
        """
        if self.delta == 0:
            return at_end[..., 0] - at_lo[..., 0]
        lo_edge = (self.s - self.delta).view((-1,) + (1,) * (at_lo.dim() - 2))
        inside = ((at_hi[..., 1] - at_lo[..., 1]) - lo_edge * (at_hi[..., 0] - at_lo[..., 0]))
        return (at_end[..., 0] - at_hi[..., 0]) + inside.div_(2 * self.delta)

    def relation_sums(self, weights: torch.Tensor) -> torch.Tensor:
        """sum_j H(s_j - s_i) weights[j] (self term included), O(P log P).

        ``weights``: (P,) or (P, m) float64 (columns summed separately); result (P,) or (P, m).
        """
        s = self.s.view((-1,) + (1,) * (weights.dim() - 1))
        cum = self._prefix(torch.stack([weights, weights * s], -1))
        return self._combine(cum[self.lo], cum[self.hi], cum[-1])

    def sorting_terms(self, y: torch.Tensor, eps: float):
        """Per-positive RS sorting quantities (supplementary Eq. S4 and S16).

        Args:
            y: (P,) float64 continuous labels of the positives (same order as ``s``).
            eps: guard on the mis-sorted mass D_i (1e-10 in the official code).

        Returns:
            rank_plus (P,): sum_j H(s_j - s_i) over positives incl. self (H(0) = 0.5 or 1).
            sort_loss (P,): Delta_S(i) = l_S(i) - l*_S(i), with l_S(i) = sum_j H_ij (1 - y_j) /
                rank_plus(i) and l*_S(i) the same ratio over {j : y_j >= y_i}.
            mis_mass (P,): D_i = sum_j H_ij [y_j < y_i].
            received (P,): sum_i [D_i > eps] Delta_S(i) H_ij [y_j < y_i] / D_i for each j — what
                positive j receives through the sorting pmfs p_S(j | i) (Eq. S16, second term).
        """
        p, s, delta = self.p, self.s, self.delta
        kernels = numba_kernels(s, y)
        if kernels is not None:   # compiled: Fenwick trees instead of chunks, any P
            from rsdet.losses import _compiled

            y = y.to(torch.float64)
            out = _compiled.sorting_terms(kernels, as_numpy(s), as_numpy(y), as_numpy(self.order),
                                          as_numpy(stable_argsort(y)), as_numpy(self.rank),
                                          as_numpy(self.lo), as_numpy(self.hi), delta, float(eps))
            return tuple(torch.from_numpy(a) for a in out)
        if p <= DENSE_MAX:
            return self._dense_sorting_terms(y, eps)
        order_y = stable_argsort(y)
        sorted_y = y.index_select(0, order_y)
        label_rank = inverse_permutation(order_y)
        lab_lt = tie_bounds(sorted_y, label_rank)[0]                # #{y_j < y_i}
        one_minus_y = 1.0 - y
        cols = torch.stack([torch.ones_like(s), s, one_minus_y, one_minus_y * s], 1)

        # All positives j (1-D prefix sums) and those with y_j < y_i (2-D, label rank < lab_lt).
        cum = self._prefix(cols).view(p + 1, 2, 2)
        cur = self._combine(cum[self.lo], cum[self.hi], cum[-1])     # (P, 2)
        rank_plus, cur_s = cur[:, 0], cur[:, 1]
        # F(lab_lt, P) is a prefix sum in label order; F(lab_lt, A) and F(lab_lt, B) are 2-D.
        by_label = torch.cat([cols.new_zeros(1, 4), torch.cumsum(cols[order_y], 0)])
        limits = self.lo[:, None] if delta == 0 else torch.stack([self.lo, self.hi], 1)
        dom = Dominance(label_rank, self.rank, lab_lt, limits)
        low = dom.sums(cols).view(p, -1, 2, 2)
        mis = self._combine(low[:, 0], low[:, -1], by_label[lab_lt].view(p, 2, 2))  # D_i, sum 1-y
        mis_mass, mis_s = mis[:, 0], mis[:, 1]
        tgt_n = rank_plus - mis_mass                                 # includes the self term > 0
        tgt_s = cur_s - mis_s
        sort_loss = cur_s / rank_plus - tgt_s / tgt_n

        # received_j = sum_i c_i [y_j < y_i] H(s_j - s_i), c_i = Delta_S(i) / D_i: the transpose
        # of the sums above (same label limits and windows), so the same masks serve
        # (Dominance.spread).  As a function of s_j, H(s_j - s_i) = 1 - [rank_j < B_i]
        # + ([rank_j < B_i] - [rank_j < A_i]) (s_j + delta - s_i) / (2 delta); for delta = 0
        # it is 1 - [rank_j < A_i].  The "1" term sums c_i over label limits above label_j.
        coef = torch.where(mis_mass > eps, sort_loss / mis_mass, 0.0)
        above = coef.new_zeros(p + 1).index_add_(0, p - lab_lt, coef).cumsum_(0)
        total = above.index_select(0, (p - 1) - label_rank)          # sum_i c_i [lab_j < L_i]
        if delta == 0:
            received = total - dom.spread(coef.view(p, 1, 1))[:, 0]
        else:
            # Columns: sum c [rank_j < B]; sum c ([rank_j < B] - [rank_j < A]); the same, c*s.
            cs = coef * s
            zero = torch.zeros_like(coef)
            u = torch.stack([torch.stack([zero, -coef, -cs], 1),
                             torch.stack([coef, coef, cs], 1)], 1)
            below_b, win_c, win_cs = dom.spread(u).unbind(1)
            received = (total - below_b) + ((s + delta) * win_c - win_cs) / (2 * delta)
        return rank_plus, sort_loss, mis_mass, received

    def _dense_sorting_terms(self, y: torch.Tensor, eps: float):
        """:meth:`sorting_terms` from the full P x P matrix h_ij = H(s_j - s_i) (small P only:
        a dozen operations beat the prefix-sum machinery's fixed cost)."""
        s, delta = self.s, self.delta
        diff = s[None, :] - s[:, None]
        h = diff.ge_(0.0) if delta == 0 else diff.mul_(0.5 / delta).add_(0.5).clamp_(0.0, 1.0)
        mis = (y[None, :] - y[:, None]).lt_(0.0).mul_(h)              # h_ij [y_j < y_i]
        one_minus_y = 1.0 - y
        rank_plus, cur_s = h.sum(1), h @ one_minus_y
        mis_mass, mis_s = mis.sum(1), mis @ one_minus_y
        sort_loss = cur_s / rank_plus - (cur_s - mis_s) / (rank_plus - mis_mass)
        coef = torch.where(mis_mass > eps, sort_loss / mis_mass, 0.0)
        return rank_plus, sort_loss, mis_mass, mis.t() @ coef


def relation_sums(s: torch.Tensor, delta: float, weights: torch.Tensor) -> torch.Tensor:
    """(P,) sum_j H_delta(s_j - s_i) weights[j] (self term included), O(P log P).

    Convenience wrapper of :meth:`PositivePairs.relation_sums` for one-off use.
    """
    return PositivePairs(s, delta).relation_sums(weights)
