"""numba kernels composed of the block kernels: a whole loss in one call on one thread, and the
per-loss finishing steps shared with the multithreaded path.

:mod:`rsdet.losses._compiled` calls ``*_serial`` on one thread (one call instead of a dozen:
the Python and dispatch overhead is a fair share of a loss at N = 1e5) and otherwise runs the
same block kernels, in the same blocks, on several threads; both paths call the same kernels
in the same order per block, so their results are the same bits (docs/losses.md, "Threads and
determinism").
"""

from __future__ import annotations

import numba
import numpy as np

from rsdet.losses._numba_entries import bin_block, gather_block, grid_table, merge_bins
from rsdet.losses._numba_positives import (alrp_terms, ap_terms, false_positives, gradient_l1,
                                           gradient_tables, positive_ranks, positive_windows,
                                           rs_terms, scale_tables, stable_argsort)
from rsdet.losses._numba_sorting import (sorting_prepare, spread_block, spread_finish,
                                         sums_block, sums_finish)

_JIT = dict(cache=True, nogil=True)


@numba.njit(**_JIT)
def positives_side(s, delta, n):
    """Sort the positives, their windows and edges, and the binning grid for ``n`` entries:
    (order, rank, lo, hi, edges, lo_pos, hi_pos, base, inv_width, start, cell_edge)."""
    order = stable_argsort(s)
    rank, lo, hi, edges, lo_pos, hi_pos = positive_windows(s, order, delta)
    base, inv_width, start, cell_edge = grid_table(edges, n)
    return order, rank, lo, hi, edges, lo_pos, hi_pos, base, inv_width, start, cell_edge


@numba.njit(**_JIT)
def bin_outputs(n, num_edges, blocks, with_sums):
    """Zeroless outputs of :func:`bin_block` for ``blocks`` blocks: (bins, counts, sums)."""
    bins = np.empty(n, dtype=np.int32)
    counts = np.empty((blocks, num_edges + 2), dtype=np.int64)
    sums = np.empty((blocks, num_edges + 2) if with_sums else (blocks, 1))
    return bins, counts, sums


@numba.njit(**_JIT)
def bin_all(x, t, edges, delta, base, inv_width, start, cell_edge, blocks):
    """Every entry block of :func:`bin_block`, one after the other."""
    n = x.size
    bins, counts, sums = bin_outputs(n, edges.size, blocks, delta > 0)
    for b in range(blocks):
        bin_block(x, t, edges, delta == 0, delta > 0, base, inv_width, start, cell_edge,
                  (n * b) // blocks, (n * (b + 1)) // blocks, bins, counts, sums, b)
    return bins, counts, sums


@numba.njit(**_JIT)
def sorting_all(s, y, order, label_order, rank, lo, hi, delta, eps, blocks):
    """RS's sorting quantities (rank_plus, sort_loss, mis_mass, received) with every label block
    one after the other (the multithreaded path: rsdet.losses._compiled.sorting_terms)."""
    p = s.size
    label_rank, lab_lt, limits, cols, q_start, q_order = sorting_prepare(
        s, y, order, label_order, rank, lo, hi, delta)
    part = np.empty((p, limits.shape[1], cols.shape[1]))
    rows = np.zeros((blocks - 1, p + 1, cols.shape[1]))
    for k in range(blocks):
        sums_block(k, blocks, rank, label_order, cols, q_start, q_order, limits, rows, part)
    rank_plus, sort_loss, mis_mass, coef, u = sums_finish(
        s, order, label_order, lab_lt, limits, cols, rows, part, delta, eps, blocks)
    out = np.empty((p, u.shape[2]))
    rows = np.zeros((blocks, p + 1, u.shape[2]))
    for k in range(blocks):
        spread_block(k, blocks, rank, label_order, q_start, q_order, limits, u, rows, out)
    received = spread_finish(s, rank, label_rank, lab_lt, coef, rows, out, delta, blocks)
    return rank_plus, sort_loss, mis_mass, received


@numba.njit(**_JIT)
def _n_fp(counts, sums, edges, lo_pos, hi_pos, delta):
    count_cum, sum_cum = merge_bins(counts, sums, delta > 0)
    return false_positives(count_cum, sum_cum, edges, lo_pos, hi_pos, delta)


@numba.njit(**_JIT)
def _tables(coef, pos_grad, order, edges, lo_pos, hi_pos, delta, like):
    """(pos_grad in like's dtype, gradient tables, ||g||_1)."""
    tables = gradient_tables(coef, order, edges, lo_pos, hi_pos, delta, like)
    pos_grad_c = pos_grad.astype(like.dtype)
    return pos_grad_c, tables, gradient_l1(pos_grad_c)


@numba.njit(**_JIT)
def rs_finish(counts, sums, edges, lo_pos, hi_pos, order, delta, eps, rank_plus, sort_loss,
              mis_mass, received, like):
    """(ranking loss, sorting loss, pos_grad, tables, ||g||_1) from the bins and the sorting
    terms."""
    n_fp = _n_fp(counts, sums, edges, lo_pos, hi_pos, delta)
    rank_loss, sort_mean, coef, pos_grad = rs_terms(n_fp, rank_plus, sort_loss, mis_mass,
                                                    received, eps)
    pos_grad_c, tables, l1 = _tables(coef, pos_grad, order, edges, lo_pos, hi_pos, delta, like)
    return rank_loss, sort_mean, pos_grad_c, tables, l1


@numba.njit(**_JIT)
def ap_finish(counts, sums, edges, lo_pos, hi_pos, s, order, lo, hi, delta, like):
    """(loss, pos_grad, tables, ||g||_1) of AP Loss from the bins."""
    n_fp = _n_fp(counts, sums, edges, lo_pos, hi_pos, delta)
    loss, coef, pos_grad = ap_terms(s, order, lo, hi, n_fp, delta)
    pos_grad_c, tables, l1 = _tables(coef, pos_grad, order, edges, lo_pos, hi_pos, delta, like)
    return loss, pos_grad_c, tables, l1


@numba.njit(**_JIT)
def alrp_finish(counts, sums, edges, lo_pos, hi_pos, s, order, lo, hi, err, delta, eps, like):
    """(loss, rank, pos_grad, tables, ||g||_1) of aLRP Loss from the bins."""
    n_fp = _n_fp(counts, sums, edges, lo_pos, hi_pos, delta)
    loss, rank, coef, pos_grad = alrp_terms(s, order, lo, hi, n_fp, err, delta, eps)
    pos_grad_c, tables, l1 = _tables(coef, pos_grad, order, edges, lo_pos, hi_pos, delta, like)
    return loss, rank, pos_grad_c, tables, l1


@numba.njit(**_JIT)
def ranks_finish(counts, sums, edges, lo_pos, hi_pos, s, order, lo, hi, delta):
    return positive_ranks(s, order, lo, hi, _n_fp(counts, sums, edges, lo_pos, hi_pos, delta),
                          delta)


@numba.njit(**_JIT)
def rs_serial(x, t, s, y, delta, eps, entry_blocks, pair_blocks):
    """The whole RS forward on one thread: (ranking loss, sorting loss, pos_grad, bins, tables,
    ||g||_1)."""
    order, rank, lo, hi, edges, lo_pos, hi_pos, base, inv_width, start, cell_edge = \
        positives_side(s, delta, x.size)
    label_order = stable_argsort(y)
    bins, counts, sums = bin_all(x, t, edges, delta, base, inv_width, start, cell_edge,
                                 entry_blocks)
    rank_plus, sort_loss, mis_mass, received = sorting_all(s, y, order, label_order, rank, lo,
                                                           hi, delta, eps, pair_blocks)
    rank_loss, sort_mean, pos_grad, tables, l1 = rs_finish(
        counts, sums, edges, lo_pos, hi_pos, order, delta, eps, rank_plus, sort_loss, mis_mass,
        received, x)
    return rank_loss, sort_mean, pos_grad, bins, tables, l1


@numba.njit(**_JIT)
def ap_serial(x, t, s, delta, entry_blocks):
    """The whole AP forward on one thread: (loss, pos_grad, bins, tables, ||g||_1)."""
    order, rank, lo, hi, edges, lo_pos, hi_pos, base, inv_width, start, cell_edge = \
        positives_side(s, delta, x.size)
    bins, counts, sums = bin_all(x, t, edges, delta, base, inv_width, start, cell_edge,
                                 entry_blocks)
    loss, pos_grad, tables, l1 = ap_finish(counts, sums, edges, lo_pos, hi_pos, s, order, lo,
                                           hi, delta, x)
    return loss, pos_grad, bins, tables, l1


@numba.njit(**_JIT)
def alrp_serial(x, t, s, err, delta, eps, entry_blocks):
    """The whole aLRP forward on one thread: (loss, rank, order, pos_grad, bins, tables,
    ||g||_1)."""
    order, rank, lo, hi, edges, lo_pos, hi_pos, base, inv_width, start, cell_edge = \
        positives_side(s, delta, x.size)
    bins, counts, sums = bin_all(x, t, edges, delta, base, inv_width, start, cell_edge,
                                 entry_blocks)
    loss, ranks, pos_grad, tables, l1 = alrp_finish(counts, sums, edges, lo_pos, hi_pos, s,
                                                    order, lo, hi, err, delta, eps, x)
    return loss, ranks, order, pos_grad, bins, tables, l1


@numba.njit(**_JIT)
def ranks_serial(x, t, s, delta, entry_blocks):
    """rank(i) of every positive on one thread."""
    order, rank, lo, hi, edges, lo_pos, hi_pos, base, inv_width, start, cell_edge = \
        positives_side(s, delta, x.size)
    bins, counts, sums = bin_all(x, t, edges, delta, base, inv_width, start, cell_edge,
                                 entry_blocks)
    return ranks_finish(counts, sums, edges, lo_pos, hi_pos, s, order, lo, hi, delta)


@numba.njit(**_JIT)
def gather_all(bins, x, tables, has_slope, pos_index, pos_grad, g):
    """Backward on one thread: tables scaled by ``g`` (in their dtype), then every entry."""
    scaled, pos_scaled = scale_tables(tables, pos_grad, g)
    out = np.empty(bins.size, dtype=tables.dtype)
    gather_block(bins, x, scaled, has_slope, pos_index, pos_scaled, 0, bins.size, out)
    return out
