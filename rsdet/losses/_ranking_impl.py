"""Forward computations and autograd Functions behind :mod:`rsdet.losses.ranking`.

Rank & Sort, AP and aLRP Loss: exact values and identity-update gradients, O(N log P + P^(4/3)).

All three follow the official implementations (docs/losses.md): one flat list per call,
positives/negatives/ignored chosen by the target value, the smoothed step
H_delta(x) = clamp(x / (2 delta) + 1/2, 0, 1), and an autograd Function that computes the whole
gradient in the forward pass ("identity update", RS paper Sec. 3.2 / supplementary Eq. S1-S2)
and returns ``stored gradient x upstream gradient of the first output`` in backward.

Differences from the official code, all deliberate (docs/losses.md):
* no Python loop: negatives are handled by :mod:`rsdet.losses._intervals` (exact piecewise-linear
  sums), positive pairs by prefix sums over the sorted positives (:mod:`rsdet.losses._pairs`);
  on the CPU every forward and backward runs as numba kernels on torch's threads when numba is
  available (:mod:`rsdet.losses._compiled`, :mod:`rsdet.losses._kernel`, ``RSDET_LOSS_KERNEL``);
* zero positives give zero-valued outputs with an all-zero gradient instead of an exception;
* any device, any float dtype; internal sums are float64 (see ``compute_dtype``);
* AP/aLRP also accept delta = 0 (hard step); the official code divides by zero there.

The relevant-negative threshold of the official code (min positive logit - delta) needs no
special treatment: negatives below it fall in the interval below every window and contribute 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rsdet.losses import _compiled
from rsdet.losses._checks import LossInputError, compute_dtype
from rsdet.losses._intervals import NegativeIntervals
from rsdet.losses._kernel import numba_kernels
from rsdet.losses._pairs import PositivePairs, self_relation
from rsdet.losses._plan import GradientPlan
from rsdet.losses._plan import restore as _restore
from rsdet.losses._plan import save as _save
from rsdet.losses._plan import zero_plan as _zero_plan

RS_EPS = 1e-10     # official guard on N_FP and on the mis-sorted mass D (docs/losses.md)
ALRP_EPS = 1e-5    # official guard on N_FP in aLRP Loss (docs/losses.md)


class RankSortOutput(NamedTuple):
    ranking_loss: torch.Tensor
    sorting_loss: torch.Tensor


class ALRPOutput(NamedTuple):
    cls_loss: torch.Tensor   # 1 - mean precision (value only; see alrp_loss)
    rank: torch.Tensor       # (P,) smoothed rank of each positive, flattened-positive order
    order: torch.Tensor      # (P,) int64, ascending (stable) argsort of the positive logits


def _prepare(logits: torch.Tensor, targets: torch.Tensor, positive: str):
    """Flatten and split the entries (torch code).

    Returns (x, negative, pos_index): x the flat logits in the compute dtype, ``negative`` the
    (N,) mask of targets == 0 and ``pos_index`` the indices of the positives (``targets > 0``
    for RS, ``== 1`` for AP/aLRP); everything else (NaN included) is ignored.  The ``nonzero``
    that finds the positives is the one host-device synchronisation of a ranking loss: every
    later shape is the number of positives.
    """
    x = logits.detach().reshape(-1).to(compute_dtype(logits.dtype))
    t = targets.detach().reshape(-1)
    positive_mask = t > 0 if positive == "gt0" else t == 1
    return x, t == 0, positive_mask.nonzero().squeeze(1)


def _compiled_kernels(logits: torch.Tensor):
    """The numba kernels when this call runs compiled (CPU tensors, < 2^31 entries), else None."""
    return numba_kernels(logits) if logits.numel() < 2**31 - 1 else None


def _finish_plan(logits, pos_index, pos_grad, intervals, coef) -> GradientPlan:
    cdtype = compute_dtype(logits.dtype)
    tables = intervals.gradient_tables(coef, cdtype)
    return GradientPlan(logits.shape, logits.dtype, cdtype, pos_index, pos_grad.to(cdtype),
                         intervals.bin, tables)


def _rank_sort_forward(logits, targets, delta):
    kernels = _compiled_kernels(logits)
    if kernels is not None:   # CPU: the numba kernels, on torch's threads
        out = _compiled.rank_sort(kernels, logits, targets, delta, RS_EPS)
        if out is None:
            zero = torch.zeros((), dtype=compute_dtype(logits.dtype))
            return (zero, zero.clone()), _zero_plan(logits)
        return out
    x, negative, pos_index = _prepare(logits, targets, "gt0")
    cdtype = compute_dtype(logits.dtype)
    p = pos_index.numel()
    if p == 0:
        zero = torch.zeros((), dtype=cdtype, device=logits.device)
        return (zero, zero.clone()), _zero_plan(logits)
    s = x.index_select(0, pos_index).to(torch.float64)
    y = targets.detach().reshape(-1).index_select(0, pos_index).to(torch.float64)
    pairs = PositivePairs(s, delta)
    intervals = NegativeIntervals(x, negative, s, delta, pairs.order)
    n_fp = intervals.false_positives()
    rank_plus, sort_loss, mis_mass, received = pairs.sorting_terms(y, RS_EPS)
    rank_loss = n_fp / (rank_plus + n_fp)                            # l_R(i), target 0
    has_fp = n_fp > RS_EPS
    zero = torch.zeros_like(n_fp)
    coef = torch.where(has_fp, rank_loss / n_fp, zero) / p           # p_R(k|i) = H / N_FP(i)
    pos_grad = (received - torch.where(has_fp, rank_loss, zero)
                - torch.where(mis_mass > RS_EPS, sort_loss, zero)) / p   # Eq. S16
    plan = _finish_plan(logits, pos_index, pos_grad, intervals, coef)
    return (rank_loss.mean().to(cdtype), sort_loss.mean().to(cdtype)), plan


def positive_ranks_forward(logits, targets, delta):
    """rank(i) of every positive (``targets > 0``), in x's dtype (see ranking.positive_ranks)."""
    cdtype = compute_dtype(logits.dtype)
    kernels = _compiled_kernels(logits)
    if kernels is not None:
        return torch.from_numpy(_compiled.positive_ranks(kernels, logits, targets, delta)
                                ).to(cdtype)
    x, negative, pos_index = _prepare(logits, targets, "gt0")
    if pos_index.numel() == 0:
        return torch.zeros(0, dtype=x.dtype, device=logits.device)
    s = x.index_select(0, pos_index).to(torch.float64)
    rank_plus, n_fp, _, _ = _positive_ranks(s, x, negative, delta)
    return (rank_plus + n_fp).to(x.dtype)


def _positive_ranks(s, x, negative, delta):
    """rank(i) = 1 + sum_{j != i} H(s_j - s_i) + N_FP(i) (self counted exactly once), and parts."""
    pairs = PositivePairs(s, delta)
    intervals = NegativeIntervals(x, negative, s, delta, pairs.order)
    n_fp = intervals.false_positives()
    rank_plus = 1.0 + pairs.relation_sums(torch.ones_like(s)) - self_relation(delta)
    return rank_plus, n_fp, intervals, pairs


def _ap_forward(logits, targets, delta):
    kernels = _compiled_kernels(logits)
    if kernels is not None:
        out = _compiled.ap(kernels, logits, targets, delta)
        if out is None:
            return torch.zeros((), dtype=compute_dtype(logits.dtype)), _zero_plan(logits)
        return out
    x, negative, pos_index = _prepare(logits, targets, "eq1")
    cdtype = compute_dtype(logits.dtype)
    p = pos_index.numel()
    if p == 0:
        return torch.zeros((), dtype=cdtype, device=logits.device), _zero_plan(logits)
    s = x.index_select(0, pos_index).to(torch.float64)
    rank_plus, n_fp, intervals, pairs = _positive_ranks(s, x, negative, delta)
    rank = rank_plus + n_fp
    prec = rank_plus / rank
    # Interpolated precision: running max while visiting positives from the lowest logit up.
    order = pairs.order
    prec_max = torch.empty_like(prec)
    prec_max[order] = torch.cummax(prec[order], 0).values
    updated = prec_max <= prec  # the official "p_max <= p(i)" branch (ties update)
    scale = torch.where(updated, torch.ones_like(prec), (1.0 - prec_max) / (1.0 - prec))
    coef = scale / rank / p
    pos_grad = -(1.0 - prec_max) / p
    plan = _finish_plan(logits, pos_index, pos_grad, intervals, coef)
    return (1.0 - prec_max.mean()).to(cdtype), plan


def _check_loc_errors(loc_errors, p):
    if loc_errors.numel() != p:
        raise LossInputError(
            f"alrp_loss: loc_errors has {loc_errors.numel()} entries but targets has {p} "
            "positives (entries == 1); pass one localisation error per positive, in flattened order")


def _alrp_zero(logits):
    cdtype = compute_dtype(logits.dtype)
    zero = torch.zeros((), dtype=cdtype, device=logits.device)
    empty = torch.zeros(0, dtype=cdtype, device=logits.device)
    order = torch.zeros(0, dtype=torch.int64, device=logits.device)
    return (zero, empty, order), _zero_plan(logits)


def _alrp_forward(logits, targets, loc_errors, delta):
    kernels = _compiled_kernels(logits)
    if kernels is not None:
        out = _compiled.alrp(kernels, logits, targets, loc_errors, delta, ALRP_EPS,
                             _check_loc_errors)
        return _alrp_zero(logits) if out is None else out
    x, negative, pos_index = _prepare(logits, targets, "eq1")
    cdtype = compute_dtype(logits.dtype)
    p = pos_index.numel()
    _check_loc_errors(loc_errors, p)
    if p == 0:
        return _alrp_zero(logits)
    s = x.index_select(0, pos_index).to(torch.float64)
    err = loc_errors.detach().reshape(-1).to(device=logits.device, dtype=torch.float64)
    pairs = PositivePairs(s, delta)
    intervals = NegativeIntervals(x, negative, s, delta, pairs.order)
    n_fp = intervals.false_positives()
    h0 = self_relation(delta)
    both = pairs.relation_sums(torch.stack([torch.ones_like(s), err], 1))
    rank = 1.0 + both[:, 0] - h0 + n_fp
    loc_above = both[:, 1] - h0 * err   # sum_{j != i} H(s_j - s_i) E_loc(j)
    active = n_fp > ALRP_EPS
    zero = torch.zeros_like(n_fp)
    update = torch.where(active, (loc_above + n_fp) / rank, zero)   # |u_i|
    coef = torch.where(active, update / n_fp, zero) / p
    pos_grad = -update / p
    plan = _finish_plan(logits, pos_index, pos_grad, intervals, coef)
    order = pairs.order
    return ((n_fp / rank).mean().to(cdtype), rank.to(cdtype), order), plan


class _RankSort(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, delta):
        with torch.autocast(device_type=logits.device.type, enabled=False):
            outs, plan = _rank_sort_forward(logits, targets, delta)
        _save(ctx, logits, plan)
        return outs

    @staticmethod
    def backward(ctx, grad_rank, grad_sort):  # grad_sort ignored: gradient contract, docs/losses.md
        logits, plan = _restore(ctx)
        return plan.gradient(logits, grad_rank), None, None


class _AP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, delta):
        with torch.autocast(device_type=logits.device.type, enabled=False):
            out, plan = _ap_forward(logits, targets, delta)
        _save(ctx, logits, plan)
        return out

    @staticmethod
    def backward(ctx, grad):
        logits, plan = _restore(ctx)
        return plan.gradient(logits, grad), None, None


class _ALRP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, loc_errors, delta):
        with torch.autocast(device_type=logits.device.type, enabled=False):
            (value, rank, order), plan = _alrp_forward(logits, targets, loc_errors, delta)
        ctx.mark_non_differentiable(rank, order)
        _save(ctx, logits, plan)
        return value, rank, order

    @staticmethod
    def backward(ctx, grad, _grad_rank, _grad_order):
        logits, plan = _restore(ctx)
        return plan.gradient(logits, grad), None, None, None
