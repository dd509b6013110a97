"""Exact positive-vs-negative sums of the smoothed step in O(N log P) — core of the ranking losses.

Every ranking loss here (RS, AP, aLRP) needs two positive-vs-negative quantities:

* for every positive i, its false-positive count  N_FP(i) = sum_k H_delta(s_k - s_i), and
* for every negative k, its gradient  G(s_k) = sum_i c_i * H_delta(s_k - s_i)  for per-positive
  coefficients c_i (the ranking pmf of RS Loss, supplementary Eq. S7; the AP/aLRP analogues).

The official code forms both with a Python loop over positives, i.e. O(P * N).  The smoothed step
H_delta(x) = clamp(x / (2 delta) + 1/2, 0, 1) is piecewise linear with kinks at x = -delta and
x = +delta, so as a function of a negative's logit t, H_delta(t - s_i) is 0 below the window edge
s_i - delta, 1 above s_i + delta and linear in between.  Sorting the 2P window edges cuts the real
line into 2P + 1 intervals inside which *every* H_delta(t - s_i) is linear in t.  Hence

* N_FP(i) only needs, per interval, the number of negatives and the sum of their logits
  (prefix sums over intervals give window counts/sums for every positive in O(1)), and
* G(t) is a single piecewise-linear function with 2P kinks: inside an interval it is
  G(left edge) + slope * (t - left edge), with slopes and edge values from prefix sums of c_i.

For delta = 0 (hard step, H_0(0) = 1, ties count as "above") the edges are the positive logits
themselves and G is piecewise constant.

Finding every negative's interval is the only O(N log P) step.  ``torch.searchsorted`` costs
~30 ns per element on CPU, so a uniform grid lookup is used first: a grid cell that contains no
edge determines the interval exactly, and only the few entries in cells holding an edge go through
``searchsorted``.  The grid mapping applies the *same* monotone floating-point operations to the
edges and to the logits (in the logits' own precision; an edge that float32 cannot represent marks
the cells of both neighbouring float32 values), so cell(x) outside an edge's cells already proves
the order of x and that edge: the lookup is exact, not approximate.  Counts are int64 and logit
sums float64, so N_FP has no float32 accumulation error even for millions of negatives.

All entries are binned; positives and ignored entries (few) are then subtracted from the per-bin
counts/sums, which is cheaper than masking the N-sized arrays.
"""

from __future__ import annotations

import torch

from rsdet.losses._pairs import inverse_permutation, stable_argsort, tie_bounds

# Grid cells per edge: more cells = fewer entries needing the binary search, bigger table.
_CELLS_PER_EDGE = 64
_MAX_CELLS = 1 << 21
# Entries in a cell that edges map into compare with those edges one by one when no cell holds
# more than this many edges (else one binary search; tied logits can stack many edges).
_MAX_SCAN = 8


def _index_dtype(n: int) -> torch.dtype:
    return torch.int32 if n < 2**31 - 1 else torch.int64


def _grid_cells(values: torch.Tensor, lo: float, inv_width: float, num_cells: int,
                index_dtype: torch.dtype) -> torch.Tensor:
    """Monotone non-decreasing map values -> cell index in [0, num_cells - 1].

    Separate IEEE operations (never fused) make the map identical for edges and logits of the same
    dtype.  NaN goes to cell 0 (a NaN negative is "irrelevant", as ``nan >= threshold`` is False
    in the official code).
    """
    cells = values - lo
    cells.mul_(inv_width).nan_to_num_(nan=0.0).clamp_(0.0, num_cells - 1)
    return cells.to(index_dtype)


def _neighbours(edges: torch.Tensor, dtype: torch.dtype):
    """Largest value <= e and smallest value >= e representable in ``dtype``, for each edge."""
    rounded = edges.to(dtype)
    if dtype == edges.dtype:
        return rounded, rounded
    back = rounded.to(edges.dtype)
    down = torch.where(back > edges, torch.nextafter(rounded, rounded.new_tensor(-float("inf"))),
                       rounded)
    up = torch.where(back < edges, torch.nextafter(rounded, rounded.new_tensor(float("inf"))),
                     rounded)
    return down, up


def bucketize(x: torch.Tensor, edges: torch.Tensor, right: bool) -> torch.Tensor:
    """Bin of every entry: #{e < x} (``right=False``) or #{e <= x} (``right=True``), exactly.

    Args:
        x: (N,) float32 or float64 logits (the grid runs in this precision).
        edges: (E,) float64, sorted ascending, E >= 1.

    Returns:
        (N,) int32 (int64 for N >= 2^31) bin indices in [0, E]; NaN goes to bin 0.

    Off the CPU this is one ``torch.searchsorted`` (fast there, and free of host-device
    synchronisation); on the CPU the grid below avoids the binary search for most entries.
    """
    index_dtype = _index_dtype(x.numel())
    if x.device.type != "cpu":
        return torch.searchsorted(edges, x.to(edges.dtype), right=right,
                                  out_int32=index_dtype == torch.int32)
    num_edges = edges.numel()
    # The table costs O(cells) to build (in several fresh int64 buffers, i.e. page faults), the
    # scan O(entries in occupied cells): at most N/4 cells (measured best between N/8 and N/6).
    # ... but at least 8 per edge while that stays <= N: with few entries per edge (N = 1e5,
    # 2P = 1e4) a coarser grid sends most entries to the scan (measured 1.8 -> 1.2 ms).
    num_cells = int(min(max(64, _CELLS_PER_EDGE * num_edges), _MAX_CELLS,
                        max(1024, x.numel() // 4, min(x.numel(), 8 * num_edges))))
    e_min, e_max = float(edges[0]), float(edges[-1])
    width = (e_max - e_min) / (num_cells - 4)
    if not width > 1e-6 * max(1.0, abs(e_min), abs(e_max)):
        width = 1.0  # (nearly) equal edges: any positive width keeps the map monotone
    lo = e_min - 2 * width  # edge-free cells below the first edge: low logits resolve directly
    inv_width = 1.0 / width

    down, up = _neighbours(edges, x.dtype)
    cell_dn = _grid_cells(down, lo, inv_width, num_cells, torch.int64)
    cell_up = _grid_cells(up, lo, inv_width, num_cells, torch.int64)
    # Edges that may map into cell c form the contiguous run [first[c], first[c] + count[c]) of
    # the sorted edges (both cell maps are monotone); every edge before the run is < all x of
    # the cell, every edge after it is > all of them.
    marks = torch.zeros(num_cells + 1, dtype=torch.int64, device=x.device)
    marks.index_add_(0, cell_dn, torch.ones_like(cell_dn))
    marks.index_add_(0, cell_up + 1, -torch.ones_like(cell_up))
    count = torch.cumsum(marks, 0)[:num_cells]
    below = torch.bincount(cell_up, minlength=num_cells)
    first = torch.cumsum(below, 0) - below   # edges whose cells all lie below the cell
    table = torch.where(count > 0, -1 - first, first).to(index_dtype)  # < 0: run to scan

    cells = _grid_cells(x, lo, inv_width, num_cells, index_dtype)
    bins = table.index_select(0, cells)
    need = (bins < 0).nonzero().squeeze(1)
    if need.numel() == 0:
        return bins
    xs = x.index_select(0, need)
    longest = int(count.max())
    if longest <= _MAX_SCAN:
        # Short runs (the common case): compare with each edge of the run, vectorised, in x's
        # own precision: for x of that dtype, e < x <=> down(e) < x and e <= x <=> up(e) <= x
        # (no value of the dtype lies strictly between down(e) and up(e)).  Past the end of a
        # run the edges are > every x of the cell, and the NaN padding compares False, so the
        # steps beyond an entry's own run add nothing.
        base = bins.index_select(0, need).bitwise_not_()             # -1 - b: run start
        padded = torch.cat([up if right else down, xs.new_full((longest,), float("nan"))])
        compare = torch.le if right else torch.lt
        exact = base.clone()
        for k in range(longest):
            exact += compare(padded.index_select(0, base + k if k else base), xs)
    else:   # long runs (tied logits stack many edges in one cell): binary searches
        exact = torch.searchsorted(edges, xs.to(edges.dtype), right=right)
    bins.index_copy_(0, need, exact.to(index_dtype))
    return bins


class NegativeIntervals:
    """All entries bucketed between the positives' window edges; answers N_FP and builds G.

    Args:
        x: (N,) float32/float64 flat logits (all entries).
        negative: (N,) bool, True for the negatives (target 0).
        pos_logits: (P,) float64, P >= 1, positive logits in the caller's fixed order.
        delta: smoothing delta >= 0 (0 = hard step with H(0) = 1).

    Positives and ignored entries are sent to an extra bin (index ``num_bins``) whose count,
    sum and gradient are zero, so nothing N-sized is ever indexed by a data-dependent count.
    """

    def __init__(self, x: torch.Tensor, negative: torch.Tensor, pos_logits: torch.Tensor,
                 delta: float, order: torch.Tensor | None = None) -> None:
        self.delta = float(delta)
        if order is None:   # ascending stable argsort of pos_logits (callers usually have it)
            order = stable_argsort(pos_logits)
        rank = inverse_permutation(order)
        sorted_s = pos_logits.index_select(0, order)
        if self.delta > 0:
            # The sorted window edges are the merge of two ascending runs, sorted_s - delta and
            # sorted_s + delta: the same order as a stable sort of cat([s - delta, s + delta])
            # (lower edges first on ties), found with two binary searches of sorted queries.
            low, high = sorted_s - self.delta, sorted_s + self.delta
            r = torch.arange(low.numel(), device=x.device)
            at_low = torch.searchsorted(high, low).add_(r)                 # r + #{high < low_r}
            at_high = torch.searchsorted(low, high, right=True).add_(r)    # r + #{low <= high_r}
            self.edges = torch.empty(2 * low.numel(), dtype=low.dtype, device=x.device)
            self.edges.index_copy_(0, at_low, low).index_copy_(0, at_high, high)
            # Edge positions of each positive's window, in the caller's order.
            self.lo_pos, self.hi_pos = at_low.index_select(0, rank), at_high.index_select(0, rank)
        else:
            self.edges, self.perm = sorted_s, order
            # First position of each positive's tie group: x >= s_i  <=>  bin(x) >= first_i + 1.
            self.first = tie_bounds(self.edges, rank)[0]
        self.num_bins = nb = self.edges.numel() + 1
        binned = bucketize(x, self.edges, right=self.delta == 0)
        self.bin = torch.where(negative, binned, binned.new_full((), nb), out=binned)
        if x.device.type == "cpu":   # bincount is ~2x cheaper than index_add_ on the CPU
            counts = torch.bincount(self.bin, minlength=nb + 1)
        else:   # index_add_, not bincount: CUDA's bincount reads the maximum back to the host.
            counts = torch.zeros(nb + 1, dtype=torch.int64, device=x.device)
            counts.index_add_(0, self.bin, counts.new_ones(()).expand(x.numel()))
        sums = None
        if self.delta > 0:
            if x.device.type == "cpu":
                sums = torch.bincount(self.bin, weights=x.to(torch.float64), minlength=nb + 1)
            else:
                sums = torch.zeros(nb + 1, dtype=torch.float64, device=x.device)
                sums.index_add_(0, self.bin, x.to(torch.float64))
        self._cumulate(counts, sums)

    def _cumulate(self, counts: torch.Tensor, sums: torch.Tensor | None) -> None:
        """Prefix sums of the per-bin negative counts (int64, exact) and logit sums (float64);
        the last entry of each (the extra bin) is dropped."""
        nb = self.num_bins
        counts = counts[:nb]
        self.count_cum = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])  # exact
        self.total = self.count_cum[-1]
        if self.delta > 0:
            self.sum_cum = torch.cat([sums.new_zeros(1), torch.cumsum(sums[:nb], 0)])

    def false_positives(self) -> torch.Tensor:
        """(P,) float64 N_FP(i) = sum over negatives k of H_delta(s_k - s_i) (exact)."""
        if self.delta == 0:
            return (self.total - self.count_cum[self.first + 1]).to(torch.float64)
        lo_i, hi_i = self.lo_pos + 1, self.hi_pos + 1
        above = (self.total - self.count_cum[hi_i]).to(torch.float64)
        n_win = (self.count_cum[hi_i] - self.count_cum[lo_i]).to(torch.float64)
        s_win = self.sum_cum[hi_i] - self.sum_cum[lo_i]
        lo_edge = self.edges[self.lo_pos]
        # sum over the window of (s_k - (s_i - delta)) / (2 delta); clamps remove float residue.
        inside = ((s_win - lo_edge * n_win) / (2 * self.delta)).clamp_(min=0.0)
        return above + torch.minimum(inside, n_win)

    def gradient_tables(self, coef: torch.Tensor, dtype: torch.dtype):
        """Tables that evaluate G(t) = sum_i coef_i H_delta(t - s_i) for every binned entry.

        Returns (value, slope, left) in ``dtype``, each with ``num_bins + 1`` entries (the last,
        for positives and ignored entries, is 0): G(t) = value[b] + slope[b] * (t - left[b]) for
        t in bin b (both terms >= 0: no cancellation).  For delta = 0 slope and left are None.
        """
        nb = self.num_bins
        if self.delta == 0:
            step = torch.zeros(nb + 1, dtype=torch.float64, device=coef.device)
            step[1:nb] = torch.cumsum(coef[self.perm], 0).clamp_(min=0.0)
            return step.to(dtype), None, None
        inv = 1.0 / (2 * self.delta)
        lo_edge = self.edges[self.lo_pos]
        open_at, close_at = self.lo_pos + 1, self.hi_pos + 1
        diffs = torch.zeros(3, nb + 1, dtype=torch.float64, device=coef.device)
        for row, at, val in ((0, open_at, coef * inv), (0, close_at, -coef * inv),
                             (1, open_at, coef * lo_edge * inv),
                             (1, close_at, -coef * lo_edge * inv), (2, close_at, coef)):
            diffs[row].index_add_(0, at, val)
        # slope: open windows; intercept: sum coef*lo over open windows; full: windows passed.
        slope, intercept, full = torch.cumsum(diffs, 1)
        slope.clamp_(min=0.0)  # closed windows leave float residue; a true slope is >= 0
        slope[0] = 0.0
        slope[nb - 1:] = 0.0
        left = torch.cat([self.edges[:1], self.edges, self.edges[-1:]])
        # The value is taken at the left edge *rounded to dtype*, so value + slope * (t - left)
        # is exact in real arithmetic for every t of the bin, and t - left >= 0.
        left_out = left.to(dtype)
        value = (full + slope * left_out.to(torch.float64) - intercept).clamp_(min=0.0)
        value[0] = 0.0
        value[nb] = 0.0
        return value.to(dtype), slope.to(dtype), left_out
