"""RS, AP and aLRP Loss on the CPU through the numba kernels, on torch's threads.

The same quantities as the torch code in :mod:`rsdet.losses._ranking_impl` (docs/losses.md,
"Compiled CPU kernels"); this module only orchestrates: it cuts the work into the fixed blocks
of :mod:`rsdet.losses._parallel`, runs them on up to ``torch.get_num_threads()`` threads and
wraps the results.  ``kernels`` is the module :func:`rsdet.losses._kernel.numba_kernels`
returned.  Results are bit-for-bit the same for every thread count.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from rsdet.losses import _parallel
from rsdet.losses._checks import compute_dtype
from rsdet.losses._plan import GradientPlan

_PASS = (torch.float32, torch.float64)


def _flat(logits: torch.Tensor, targets: torch.Tensor | None = None):
    """Flat numpy views: logits in the compute dtype, targets as float32/float64."""
    x = logits.detach().reshape(-1)
    if x.dtype != compute_dtype(x.dtype):
        x = x.to(compute_dtype(x.dtype))
    x = x.contiguous().numpy()
    if targets is None:
        return x
    t = targets.detach().reshape(-1)
    if t.dtype not in _PASS:
        t = t.to(torch.float64)
    return x, t.contiguous().numpy()


def _positives(kernels, x, t, greater_than_zero: bool, threads: int):
    """(pos_index int64, s float64, y float64) of the positives, in entry order."""
    n = x.size
    blocks = _parallel.entry_blocks(n, 0)
    if blocks == 1 or threads == 1 or n < _parallel.SPLIT_PARALLEL_MIN:
        return kernels.split_positives(x, t, greater_than_zero)
    bounds = [_parallel.block_bounds(n, blocks, b) for b in range(blocks)]
    counts = [0] * len(bounds)

    def count(b):
        counts[b] = kernels.count_positives(t, greater_than_zero, *bounds[b])

    _parallel.run([partial(count, b) for b in range(len(bounds))], threads, n)
    p = sum(counts)
    pos_index = np.empty(p, dtype=np.int64)
    s = np.empty(p)
    y = np.empty(p)
    starts = np.cumsum([0] + counts[:-1]).tolist()
    _parallel.run([partial(kernels.fill_positives, x, t, greater_than_zero, lo, hi, at,
                           pos_index, s, y) for (lo, hi), at in zip(bounds, starts)],
                  threads, n)
    return pos_index, s, y


def _bin_tasks(kernels, x, t, edges, delta: float):
    """Tasks that bin every entry (one per entry block) and what they fill:
    (tasks, bins, counts, sums)."""
    n = x.size
    nb = edges.size + 1
    blocks = _parallel.entry_blocks(n, nb)
    with_sums = delta > 0
    base, inv_width, start, cell_edge = kernels.grid_table(edges, n)
    bins = np.empty(n, dtype=np.int32)
    counts = np.empty((blocks, nb + 1), dtype=np.int64)
    sums = np.empty((blocks, nb + 1) if with_sums else (blocks, 1))
    tasks = [partial(kernels.bin_block, x, t, edges, delta == 0, with_sums, base, inv_width,
                     start, cell_edge, *_parallel.block_bounds(n, blocks, b), bins, counts,
                     sums, b) for b in range(blocks)]
    return tasks, bins, counts, sums


class _Positives:
    """The positives' side shared by the three losses: split, sorts, windows, binning tasks
    (and, with ``sort_labels``, the labels' order, next to the logits' on another thread)."""

    def __init__(self, kernels, logits, targets, delta, greater_than_zero, sort_labels=False):
        self.threads = _parallel.num_threads()
        self.x, self.t = _flat(logits, targets)
        self.delta = float(delta)
        self.pos_index, self.s, self.y = _positives(kernels, self.x, self.t, greater_than_zero,
                                                    self.threads)
        self.p = self.s.size
        if self.p == 0:
            return

        def windows():
            self.order = kernels.stable_argsort(self.s)
            (self.rank, self.lo, self.hi, self.edges, self.lo_pos,
             self.hi_pos) = kernels.positive_windows(self.s, self.order, self.delta)
            self.bin_tasks, self.bins, self.counts, self.sums = _bin_tasks(
                kernels, self.x, self.t, self.edges, self.delta)

        def labels():
            self.label_order = kernels.stable_argsort(self.y)

        _parallel.run([windows, labels] if sort_labels else [windows], self.threads,
                      self.p * 8)

    def false_positives(self, kernels):
        count_cum, sum_cum = kernels.merge_bins(self.counts, self.sums, self.delta > 0)
        return kernels.false_positives(count_cum, sum_cum, self.edges, self.lo_pos,
                                       self.hi_pos, self.delta)

    def plan(self, kernels, logits, coef, pos_grad) -> GradientPlan:
        cdtype = compute_dtype(logits.dtype)
        tables = torch.from_numpy(kernels.gradient_tables(coef, self.order, self.edges,
                                                          self.lo_pos, self.hi_pos,
                                                          self.delta, self.x))
        value, slope, left = tables.unbind(0) if self.delta > 0 else (tables[0], None, None)
        grad_l1 = torch.tensor(kernels.gradient_l1(pos_grad), dtype=cdtype)
        return GradientPlan(logits.shape, logits.dtype, cdtype, torch.from_numpy(self.pos_index),
                            torch.from_numpy(pos_grad).to(cdtype), torch.from_numpy(self.bins),
                            (value, slope, left), grad_l1)


def sorting_terms(kernels, s, y, order, label_order, rank, lo, hi, delta, eps, threads=None,
                  extra_tasks=(), extra_work=0):
    """RS's sorting quantities (rank_plus, sort_loss, mis_mass, received), each (P,) float64, as
    :meth:`rsdet.losses._pairs.PositivePairs.sorting_terms` (numpy in, numpy out).

    ``extra_tasks`` (``extra_work`` entries) run in the first parallel batch next to the
    dominance sums: the RS forward bins its entries there.
    """
    threads = _parallel.num_threads() if threads is None else threads
    p = s.size
    delta = float(delta)
    blocks = _parallel.pair_blocks(p)
    work = p * 8              # ~ cost of one pass in units of binning one entry
    label_rank, lab_lt, limits, cols, q_start, q_order = kernels.sorting_prepare(
        s, y, order, label_order, rank, lo, hi, delta)
    part = np.empty((p, limits.shape[1], cols.shape[1]))
    rows = np.zeros((blocks - 1, p + 1, cols.shape[1]))
    _parallel.run(list(extra_tasks) + [
        partial(kernels.sums_block, k, blocks, rank, label_order, cols, q_start, q_order,
                limits, rows, part) for k in range(blocks)], threads, work + extra_work)
    rank_plus, sort_loss, mis_mass, coef, u = kernels.sums_finish(
        s, order, label_order, lab_lt, limits, cols, rows, part, delta, eps, blocks)
    out = np.empty((p, u.shape[2]))
    rows = np.zeros((blocks, p + 1, u.shape[2]))
    _parallel.run([partial(kernels.spread_block, k, blocks, rank, label_order, q_start, q_order,
                           limits, u, rows, out) for k in range(blocks)], threads, work)
    received = kernels.spread_finish(s, rank, label_rank, lab_lt, coef, rows, out, delta,
                                     blocks)
    return rank_plus, sort_loss, mis_mass, received


def rank_sort(kernels, logits, targets, delta, eps):
    """RS forward: ((ranking loss, sorting loss), plan), or None without positives."""
    pos = _Positives(kernels, logits, targets, delta, True, sort_labels=True)
    if pos.p == 0:
        return None
    rank_plus, sort_loss, mis_mass, received = sorting_terms(
        kernels, pos.s, pos.y, pos.order, pos.label_order, pos.rank, pos.lo, pos.hi, pos.delta,
        eps, pos.threads, pos.bin_tasks, pos.x.size)
    n_fp = pos.false_positives(kernels)
    rank_loss, sort_mean, coef, pos_grad = kernels.rs_terms(n_fp, rank_plus, sort_loss,
                                                            mis_mass, received, eps)
    cdtype = compute_dtype(logits.dtype)
    outs = (torch.tensor(rank_loss, dtype=cdtype), torch.tensor(sort_mean, dtype=cdtype))
    return outs, pos.plan(kernels, logits, coef, pos_grad)


def _binned(kernels, logits, targets, delta, greater_than_zero):
    pos = _Positives(kernels, logits, targets, delta, greater_than_zero)
    if pos.p == 0:
        return pos, None
    _parallel.run(pos.bin_tasks, pos.threads, pos.x.size)
    return pos, pos.false_positives(kernels)


def ap(kernels, logits, targets, delta):
    """AP forward: (loss, plan), or None without positives."""
    pos, n_fp = _binned(kernels, logits, targets, delta, False)
    if n_fp is None:
        return None
    loss, coef, pos_grad = kernels.ap_terms(pos.s, pos.order, pos.lo, pos.hi, n_fp, pos.delta)
    return (torch.tensor(loss, dtype=compute_dtype(logits.dtype)),
            pos.plan(kernels, logits, coef, pos_grad))


def alrp(kernels, logits, targets, loc_errors, delta, eps, check):
    """aLRP forward: ((loss, rank, order), plan), or None without positives; ``check(P)``
    validates ``loc_errors`` (one value per positive) once P is known."""
    pos = _Positives(kernels, logits, targets, delta, False)
    check(loc_errors, pos.p)
    if pos.p == 0:
        return None
    _parallel.run(pos.bin_tasks, pos.threads, pos.x.size)
    n_fp = pos.false_positives(kernels)
    err = loc_errors.detach().reshape(-1).to(torch.float64).contiguous().numpy()
    loss, rank, coef, pos_grad = kernels.alrp_terms(pos.s, pos.order, pos.lo, pos.hi, n_fp,
                                                    err, pos.delta, eps)
    cdtype = compute_dtype(logits.dtype)
    outs = (torch.tensor(loss, dtype=cdtype), torch.from_numpy(rank).to(cdtype),
            torch.from_numpy(pos.order))
    return outs, pos.plan(kernels, logits, coef, pos_grad)


def positive_ranks(kernels, logits, targets, delta):
    """rank(i) of every positive (targets > 0), float64 numpy; empty without positives."""
    pos, n_fp = _binned(kernels, logits, targets, delta, True)
    if n_fp is None:
        return np.zeros(0)
    return kernels.positive_ranks(pos.s, pos.order, pos.lo, pos.hi, n_fp, pos.delta)


def gather(kernels, plan: GradientPlan, logits: torch.Tensor, upstream: torch.Tensor):
    """Backward on the CPU: the flat gradient (compute dtype) of a plan made by this module or
    by the torch code (same tables)."""
    x = _flat(logits)
    n = x.size
    slope = plan.slope
    tables = torch.stack([plan.value, plan.value if slope is None else slope,
                          plan.value if slope is None else plan.left]).numpy()
    pos_grad = plan.pos_grad.contiguous().numpy()
    cast = tables.dtype.type
    scaled, pos_scaled = kernels.scale_tables(tables, pos_grad, cast(float(upstream)))
    out = np.empty(n, dtype=tables.dtype)
    threads = _parallel.num_threads()
    blocks = _parallel.entry_blocks(n, 0) if threads > 1 else 1
    bins = plan.bins.numpy()
    pos_index = plan.pos_index.numpy()
    _parallel.run([partial(kernels.gather_block, bins, x, scaled, slope is not None, pos_index,
                           pos_scaled, *_parallel.block_bounds(n, blocks, b), out)
                   for b in range(blocks)], threads, n)
    return torch.from_numpy(out)
