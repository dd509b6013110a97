"""RS, AP and aLRP Loss on the CPU through the numba kernels, on torch's threads.

The same quantities as the torch code in :mod:`rsdet.losses._ranking_impl` (docs/losses.md,
"Compiled CPU kernels"); this module only orchestrates.  The work is cut into blocks fixed by
the problem sizes (:mod:`rsdet.losses._parallel`); the block kernels run in parallel batches
on several threads, or one after the other on one — the same kernels in the same blocks, so
every result is the same bits for any thread count.  (Kernels are not fused into bigger ones
for the one-thread case: a numba call costs ~1 us, and every fused copy of a kernel is
compiled again, which had made the first call in a fresh environment several times slower.)
``kernels`` is the module :func:`rsdet.losses._kernel.numba_kernels` returned.
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


class _Call:
    """One loss call: the flat inputs, the positives, their windows and the binning tasks."""

    def __init__(self, kernels, logits, targets, delta, greater_than_zero, sort_labels=False):
        self.kernels = k = kernels
        self.logits = logits
        self.cdtype = compute_dtype(logits.dtype)
        self.threads = _parallel.num_threads()
        self.x, self.t = _flat(logits, targets)
        self.n = n = self.x.size
        self.delta = delta = float(delta)
        self.pos_index, self.s, self.y = _positives(kernels, self.x, self.t, greater_than_zero,
                                                    self.threads)
        self.p = self.s.size
        if self.p == 0:
            return

        def windows():
            self.order = k.stable_argsort(self.s)
            (self.rank, self.lo, self.hi, self.edges, self.lo_pos,
             self.hi_pos) = k.positive_windows(self.s, self.order, delta)
            base, inv_width, start, cell_edge = k.grid_table(self.edges, n)
            blocks = _parallel.entry_blocks(n, self.edges.size + 1)
            self.bins, self.counts, self.sums = k.bin_outputs(n, self.edges.size, blocks,
                                                              delta > 0)
            self.bin_tasks = [partial(
                k.bin_block, self.x, self.t, self.edges, delta == 0, delta > 0, base, inv_width,
                start, cell_edge, *_parallel.block_bounds(n, blocks, b), self.bins,
                self.counts, self.sums, b) for b in range(blocks)]

        def labels():
            self.label_order = k.stable_argsort(self.y)

        _parallel.run([windows, labels] if sort_labels else [windows], self.threads,
                      self.p * 8)

    def bin(self):
        _parallel.run(self.bin_tasks, self.threads, self.n)

    def false_positives(self):
        return self.kernels.n_false_positives(self.counts, self.sums, self.edges, self.lo_pos,
                                              self.hi_pos, self.delta)

    def plan(self, coef, pos_grad) -> GradientPlan:
        pos_grad, tables, grad_l1 = self.kernels.finish_tables(
            coef, pos_grad, self.order, self.edges, self.lo_pos, self.hi_pos, self.delta, self.x)
        tables = torch.from_numpy(tables)
        value, slope, left = tables.unbind(0) if self.delta > 0 else (tables[0], None, None)
        logits = self.logits
        return GradientPlan(logits.shape, logits.dtype, self.cdtype,
                            torch.from_numpy(self.pos_index), torch.from_numpy(pos_grad),
                            torch.from_numpy(self.bins), (value, slope, left),
                            torch.tensor(grad_l1, dtype=self.cdtype))

    def scalar(self, value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=self.cdtype)


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
    c = _Call(kernels, logits, targets, delta, True, sort_labels=True)
    if c.p == 0:
        return None
    # The entries are binned in the first batch of the sorting terms, next to the sums.
    rank_plus, sort_loss, mis_mass, received = sorting_terms(
        kernels, c.s, c.y, c.order, c.label_order, c.rank, c.lo, c.hi, c.delta, eps, c.threads,
        c.bin_tasks, c.n)
    rank_loss, sort_mean, coef, pos_grad = kernels.rs_terms(
        c.false_positives(), rank_plus, sort_loss, mis_mass, received, eps)
    return (c.scalar(rank_loss), c.scalar(sort_mean)), c.plan(coef, pos_grad)


def ap(kernels, logits, targets, delta):
    """AP forward: (loss, plan), or None without positives."""
    c = _Call(kernels, logits, targets, delta, False)
    if c.p == 0:
        return None
    c.bin()
    loss, coef, pos_grad = kernels.ap_terms(c.s, c.order, c.lo, c.hi, c.false_positives(),
                                            c.delta)
    return c.scalar(loss), c.plan(coef, pos_grad)


def alrp(kernels, logits, targets, loc_errors, delta, eps, check):
    """aLRP forward: ((loss, rank, order), plan), or None without positives; ``check(loc_errors,
    P)`` validates the localisation errors (one per positive) once P is known."""
    c = _Call(kernels, logits, targets, delta, False)
    check(loc_errors, c.p)
    if c.p == 0:
        return None
    err = loc_errors.detach().reshape(-1).to(torch.float64).contiguous().numpy()
    c.bin()
    loss, rank, coef, pos_grad = kernels.alrp_terms(c.s, c.order, c.lo, c.hi,
                                                    c.false_positives(), err, c.delta, eps)
    outs = (c.scalar(loss), torch.from_numpy(rank).to(c.cdtype), torch.from_numpy(c.order))
    return outs, c.plan(coef, pos_grad)


def positive_ranks(kernels, logits, targets, delta):
    """rank(i) of every positive (targets > 0), float64 numpy; empty without positives."""
    c = _Call(kernels, logits, targets, delta, True)
    if c.p == 0:
        return np.zeros(0)
    c.bin()
    return kernels.positive_ranks(c.s, c.order, c.lo, c.hi, c.false_positives(), c.delta)


def gather(kernels, plan: GradientPlan, logits: torch.Tensor, upstream: torch.Tensor):
    """Backward on the CPU: the flat gradient (compute dtype) of a plan made by this module or
    by the torch code (same tables)."""
    x = _flat(logits)
    n = x.size
    slope = plan.slope
    tables = torch.stack([plan.value, plan.value if slope is None else slope,
                          plan.value if slope is None else plan.left]).numpy()
    pos_grad = plan.pos_grad.contiguous().numpy()
    g = tables.dtype.type(float(upstream))
    bins = plan.bins.numpy()
    pos_index = plan.pos_index.numpy()
    threads = _parallel.num_threads()
    scaled, pos_scaled = kernels.scale_tables(tables, pos_grad, g)
    out = np.empty(n, dtype=tables.dtype)
    blocks = _parallel.entry_blocks(n, 0) if threads > 1 else 1   # each entry on its own
    _parallel.run([partial(kernels.gather_block, bins, x, scaled, slope is not None, pos_index,
                           pos_scaled, *_parallel.block_bounds(n, blocks, b), out)
                   for b in range(blocks)], threads, n)
    return torch.from_numpy(out)
