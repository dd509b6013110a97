"""numba kernels over the N entries, one block of entries per call (see rsdet.losses._parallel).

* :func:`count_positives` / :func:`fill_positives`: the positives' indices, logits and labels
  (two passes per block, so that blocks can run on different threads).
* :func:`grid_table` + :func:`bin_block`: the interval (bin) of every entry between the sorted
  window edges, and per block the negatives' count and logit sum in every bin;
  :func:`merge_bins` adds the blocks' histograms in block order and takes prefix sums.
* :func:`gather_block`: backward's per-entry gradient from the interval tables.

Negatives are the entries with target exactly 0 for every loss; positives are target > 0 (RS)
or == 1 (AP, aLRP); everything else (NaN included) is ignored.  docs/losses.md ("Compiled CPU
kernels") describes the layout.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(cache=True, nogil=True, error_model="numpy")   # IEEE results, no raise checks


@numba.njit(**_JIT)
def count_positives(t, greater_than_zero, lo, hi):
    """#{k in [lo, hi) : t_k > 0} (``greater_than_zero``, RS) or #{t_k == 1} (AP/aLRP)."""
    ts = t[lo:hi]          # 0-based loops: numba then needs no negative-index wraparound
    count = 0
    if greater_than_zero:
        for k in range(ts.size):
            count += ts[k] > 0
    else:
        for k in range(ts.size):
            count += ts[k] == 1
    return count


@numba.njit(**_JIT)
def fill_positives(x, t, greater_than_zero, lo, hi, at, pos_index, s, y):
    """Write the positives of [lo, hi) from slot ``at`` on: index, logit (float64), label."""
    ts = t[lo:hi]
    j = at
    for k in range(ts.size):
        v = ts[k]
        if (v > 0) if greater_than_zero else (v == 1):
            pos_index[j] = lo + k
            s[j] = x[lo + k]
            y[j] = v
            j += 1


@numba.njit(**_JIT)
def split_positives(x, t, greater_than_zero):
    """(pos_index int64, s float64, y float64) of all positives: both passes in one call."""
    n = t.size
    p = count_positives(t, greater_than_zero, 0, n)
    pos_index = np.empty(p, dtype=np.int64)
    s = np.empty(p)
    y = np.empty(p)
    fill_positives(x, t, greater_than_zero, 0, n, 0, pos_index, s, y)
    return pos_index, s, y


# Grid cells per window edge (measured best at 8 for N = 1e5, 2P = 1e4: finer grids miss the
# cache, coarser ones send more entries to the multi-edge scan).
_CELLS_PER_EDGE = 8


@numba.njit(**_JIT)
def grid_table(edges, n):
    """The lookup grid of :func:`bin_block` for the sorted ``edges`` and ``n`` entries.

    A uniform grid over the edges' range; the cell map (x - base) * inv_width, clamped, is
    monotone and computed the same way for edges and entries, so an entry only compares with
    the edges of its own cell.  ``start[c]``: edges in lower cells, or ``-1 - that`` when the
    cell holds several edges; ``cell_edge[c]``: the cell's one edge (NaN, which compares
    false, when it holds none).  Returns (base, inv_width, start, cell_edge).
    """
    ne = edges.size
    ncell = max(64, min(_CELLS_PER_EDGE * ne, max(1024, 2 * n), 1 << 21))   # ~13 bytes a cell
    e_min, e_max = edges[0], edges[ne - 1]
    width = (e_max - e_min) / (ncell - 4)
    if not width > 1e-6 * max(1.0, abs(e_min), abs(e_max)):
        width = 1.0   # (nearly) equal edges: any positive width keeps the map monotone
    base = e_min - 2 * width
    inv_width = 1.0 / width
    start = np.zeros(ncell + 1, dtype=np.int32)
    cell_edge = np.full(ncell, np.nan)
    for k in range(ne):
        v = (edges[k] - base) * inv_width
        c = 0 if not v > 0.0 else (ncell - 1 if v > ncell - 1 else int(v))
        start[c + 1] += 1                   # edges in cell c, for now
        cell_edge[c] = edges[k]
    below = 0
    for c in range(ncell):                  # -> edges below cell c (negative: several in c)
        count = start[c + 1]
        start[c] = below if count <= 1 else -1 - below
        below += count
    start[ncell] = below
    return base, inv_width, start, cell_edge


@numba.njit(**_JIT)
def bin_block(x, t, edges, right, with_sums, base, inv_width, start, cell_edge, lo, hi, bins,
              counts, sums, row):
    """Bins of the entries [lo, hi) and this block's histogram (row ``row`` of counts/sums).

    ``bins[k]`` = #{e < x_k} (``right`` False) or #{e <= x_k} (``right`` True) for negatives
    (t_k == 0), ``len(edges) + 1`` (the extra, all-zero bin) for every other entry; a NaN
    negative goes to bin 0.  ``counts[row]`` / ``sums[row]`` (E + 2 columns) receive the
    negatives' count and float64 logit sum per bin, summed in entry order (the extra bin's
    stay 0; sums only when ``with_sums``).  Comparisons are exact (float64).
    """
    ne = edges.size
    nb = ne + 1
    ncell = cell_edge.size
    count = np.zeros(nb + 1, dtype=np.int64)
    total = np.zeros(nb + 1, dtype=np.float64)
    xs, ts, out = x[lo:hi], t[lo:hi], bins[lo:hi]   # 0-based: no negative-index wraparound
    # First every entry's cell (a branch-free loop that vectorises; NaN and -inf go to cell 0,
    # +inf to the last), kept in ``out`` until the bin replaces it: ~20% faster than one loop.
    top = np.float64(ncell - 1)
    for k in range(xs.size):
        v = (np.float64(xs[k]) - base) * inv_width
        v = v if v > 0.0 else 0.0
        out[k] = np.int32(v if v < top else top)
    for k in range(xs.size):
        if ts[k] != 0:
            out[k] = nb
            continue
        xv = np.float64(xs[k])
        # Unsigned indices (here and below) spare numba's negative-index wraparound.
        c = np.uint64(out[k])
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
                top = ne
                while b < top:
                    mid = (b + top) >> 1
                    if edges[mid] < xv or (right and edges[mid] == xv):
                        b = mid + 1
                    else:
                        top = mid
        out[k] = b
        ub = np.uint64(b)
        count[ub] += 1
        if with_sums:
            total[ub] += xv
    counts[row, :] = count
    if with_sums:
        sums[row, :] = total


@numba.njit(**_JIT)
def bin_outputs(n, num_edges, blocks, with_sums):
    """Uninitialised outputs of :func:`bin_block` for ``blocks`` blocks: (bins, counts, sums)."""
    bins = np.empty(n, dtype=np.int32)
    counts = np.empty((blocks, num_edges + 2), dtype=np.int64)
    sums = np.empty((blocks, num_edges + 2) if with_sums else (blocks, 1))
    return bins, counts, sums


@numba.njit(**_JIT)
def merge_bins(counts, sums, with_sums):
    """(count_cum int64, sum_cum float64), each (E + 2,): prefix sums over the bins of the
    blocks' histograms, added in block order (the extra last bin dropped)."""
    blocks, width = counts.shape
    nb = width - 1
    count_cum = np.zeros(nb + 1, dtype=np.int64)
    sum_cum = np.zeros(nb + 1, dtype=np.float64)
    run_count = 0
    run_sum = 0.0
    for b in range(nb):
        c = 0
        v = 0.0
        for blk in range(blocks):
            c += counts[blk, b]
            if with_sums:
                v += sums[blk, b]
        run_count += c
        run_sum += v
        count_cum[b + 1] = run_count
        sum_cum[b + 1] = run_sum
    return count_cum, sum_cum


@numba.njit(**_JIT)
def gather_block(bins, x, tables, has_slope, pos_index, pos_grad, lo, hi, out):
    """Backward for the entries [lo, hi): out[k] = value[b] + slope[b] (x_k - left[b]) with
    b = bins[k] (value[b] alone without a slope), ``tables`` = (value, slope, left) already
    scaled by the upstream gradient, in ``out``'s dtype; positives then get ``pos_grad``."""
    value = tables[0]
    bs, xs, os = bins[lo:hi], x[lo:hi], out[lo:hi]
    if has_slope:
        slope = tables[1]
        left = tables[2]
        for k in range(bs.size):
            b = np.uint64(bs[k])          # unsigned: no negative-index wraparound
            os[k] = value[b] + slope[b] * (xs[k] - left[b])
    else:
        for k in range(bs.size):
            os[k] = value[np.uint64(bs[k])]
    first = np.searchsorted(pos_index, lo)
    stop = np.searchsorted(pos_index, hi)
    for i in range(first, stop):
        out[pos_index[i]] = pos_grad[i]
