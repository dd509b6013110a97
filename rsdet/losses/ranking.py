"""Ranking-based classification losses: Rank & Sort (RS), AP and aLRP Loss.

Public entry points (RS paper Sec. 3-4 and supplementary S1; conventions in docs/losses.md):

* :func:`rank_sort_loss` — RS Loss, paper Eq. 9/10, gradients supplementary Eq. S7 and S16.
* :func:`ap_loss` — AP Loss with interpolated precision (as in the aLRP/RS repositories).
* :func:`alrp_loss`, :func:`alrp_loc_loss`, :func:`alrp_loc_errors` — aLRP Loss classification
  and localisation components (supplementary Eq. S19/S20); the epoch-based self-balance lives in
  :class:`rsdet.losses.balance.ALRPSelfBalance`.
* :func:`positive_ranks` — smoothed rank of every positive (needed by ranking-based instance
  weights, Eq. S21).

How the exact O(N log P + P^(4/3)) computation works is described in :mod:`rsdet.losses._intervals`
and docs/losses.md.
"""

from __future__ import annotations

import torch

from rsdet.losses._checks import LossInputError, check_delta, check_pair
from rsdet.losses._ranking_impl import (ALRP_EPS, RS_EPS, ALRPOutput, RankSortOutput, _ALRP, _AP,
                                        _RankSort, positive_ranks_forward)

__all__ = ["rank_sort_loss", "ap_loss", "alrp_loss", "alrp_loc_loss", "alrp_loc_errors",
           "positive_ranks", "ranking_gradient_l1", "RankSortOutput", "ALRPOutput", "RS_EPS", "ALRP_EPS"]


def rank_sort_loss(logits: torch.Tensor, targets: torch.Tensor, delta: float = 0.5) -> RankSortOutput:
    """Rank & Sort Loss (Oksuz et al., ICCV 2021), returned as ``(ranking_loss, sorting_loss)``.

    All entries of ``logits`` form ONE ranking list (flattened; class-agnostic, docs/losses.md).
    With H = H_delta the smoothed step clamp(x / (2 delta) + 1/2, 0, 1) (hard step, H(0) = 1, for
    ``delta = 0``), for every positive i:

    * ranking error l_R(i) = N_FP(i) / rank(i), N_FP(i) = sum_{k neg} H(s_k - s_i),
      rank(i) = rank+(i) + N_FP(i), rank+(i) = sum_{j pos} H(s_j - s_i) — the self term is
      H(0) = 0.5 for delta > 0 (official code; 1 for delta = 0);
    * sorting error l_S(i) = sum_j H(s_j - s_i)(1 - y_j) / rank+(i), its target l*_S(i) the same
      ratio restricted to positives with y_j >= y_i; sorting loss Delta_S(i) = l_S(i) - l*_S(i).

    ``ranking_loss`` = mean_i l_R(i) and ``sorting_loss`` = mean_i Delta_S(i) (paper Eq. 10: their
    sum is L_RS).  The gradient is the identity update: negatives get supplementary Eq. S7,
    (1/|P|) sum_i l_R(i) p_R(k|i) with p_R(k|i) = H(s_k - s_i)/N_FP(i); positives get Eq. S16,
    (1/|P|)(-l_R(i) - Delta_S(i) + sum_j Delta_S(j) p_S(i|j)), with the official guards
    (terms dropped when N_FP or the mis-sorted mass is <= 1e-10; docs/losses.md).

    Gradient contract (official; docs/losses.md): ONE autograd Function computes the full RS gradient
    g (ranking + sorting parts) and attaches it to ``ranking_loss``; ``sorting_loss`` is a value
    whose gradient is ignored.  So for ``w_r * ranking_loss + w_s * sorting_loss`` the logits
    receive ``w_r * g`` whatever ``w_s`` is: ``(ranking_loss + sorting_loss).backward()`` gives
    g, ``2 * ranking_loss`` gives 2g, ``sorting_loss`` alone gives zero.  Apply a common weight
    (e.g. the RPN's 0.2) to both terms or to their sum.

    Args:
        logits: raw scores, any shape, any float dtype, any device (must be finite).
        targets: same shape. ``> 0`` positive with continuous label y in (0, 1] (e.g. IoU),
            ``== 0`` negative, ``< 0`` ignored (zero gradient).  A positive whose label is
            exactly 0 is therefore a negative (official behaviour; clamp labels to keep it).
        delta: smoothing of the step, >= 0 (paper default 0.5).

    Returns:
        RankSortOutput(ranking_loss, sorting_loss): 0-dim tensors, float64 for float64 logits,
        float32 otherwise (also for float16/bfloat16).  With no positive both are 0 and the
        gradient is all zero (the official code raises).  Internal sums are float64.

    Complexity: O(N log P + P^(4/3)) time (RS; AP and aLRP O(N log P + P log P); RS also
        O(N log P + P log P) with the numba CPU kernels, docs/losses.md), O(N) extra memory (an
        int32 bin index per entry; int64 beyond 2^31 entries).
    """
    check_pair("rank_sort_loss", logits, targets)
    delta = check_delta("rank_sort_loss", delta)
    return RankSortOutput(*_RankSort.apply(logits, targets, delta))


def ap_loss(logits: torch.Tensor, targets: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """AP Loss (Chen et al.) with interpolated precision, as in the aLRP/RS repositories (docs/losses.md).

    Positives are the entries ``== 1``, negatives ``== 0``; every other value (e.g. -1) is ignored.
    For each positive i: rank+(i) = 1 + sum_{j pos, j != i} H(s_j - s_i) (self counts exactly 1),
    rank(i) = rank+(i) + N_FP(i), precision p(i) = rank+(i) / rank(i).  Visiting positives from the
    lowest logit upwards, p_max(i) is the running maximum of p (interpolated precision: best
    precision at equal or higher recall).  Value: 1 - mean_i p_max(i).

    Gradient (identity update, divided by |P|): positive i gets -(1 - p_max(i)); each negative k
    gets H(s_k - s_i) / rank(i) from i, scaled by (1 - p_max(i)) / (1 - p(i)) when i's
    precision was interpolated, so the total mass handed to negatives equals 1 - p_max(i) and the
    gradient sums to zero.  No epsilon guard (as in the official code).

    Args:
        logits: raw scores, any shape / float dtype / device.
        targets: same shape, binary 1 / 0 / -1.
        delta: smoothing (default 1.0, the AP Loss authors' value).  ``delta = 0`` (hard step) is an
            extension; the official code divides by zero there.

    Returns:
        0-dim loss (float64 for float64 logits, else float32); 0 with zero gradient when there is
        no positive.
    """
    check_pair("ap_loss", logits, targets)
    delta = check_delta("ap_loss", delta)
    return _AP.apply(logits, targets, delta)


def alrp_loss(logits: torch.Tensor, targets: torch.Tensor, loc_errors: torch.Tensor,
              delta: float = 1.0) -> ALRPOutput:
    """aLRP Loss classification component (Oksuz et al., NeurIPS 2020).

    Positives are entries ``== 1``, negatives ``== 0``, others ignored.  For positive i:
    rank+(i) = 1 + sum_{j != i} H(s_j - s_i), rank(i) = rank+(i) + N_FP(i).  If N_FP(i) > 1e-5,
    i receives u_i = -(sum_{j != i} H(s_j - s_i) E_loc(j) + N_FP(i)) / rank(i) — the aLRP error
    l(i) = (N_FP(i) + sum of localisation errors of positives above i) / rank(i) minus its target
    E_loc(i)/rank(i) (supplementary Eq. S19) — and each negative k receives
    |u_i| H(s_k - s_i) / N_FP(i); all divided by |P|.

    The returned value is ``1 - mean precision = mean_i N_FP(i)/rank(i)``: as in the official code
    it EXCLUDES the localisation terms that the gradient includes (docs/losses.md).  Combine with
    :func:`alrp_loc_loss` and :class:`~rsdet.losses.balance.ALRPSelfBalance`::

        out = alrp_loss(flat_logits, flat_targets, alrp_loc_errors(giou.detach(), tau=0.5))
        loc = alrp_loc_loss(alrp_loc_errors(giou, tau=0.5), out.rank, out.order)
        total = out.cls_loss + balance(out.cls_loss, loc) * loc

    Args:
        logits: raw scores, any shape / float dtype / device.
        targets: same shape, binary 1 / 0 / -1.
        loc_errors: (P,) localisation error E_loc of each positive in flattened order (treated
            as constants; see :func:`alrp_loc_errors`).
        delta: smoothing (default 1.0); 0 = hard step (extension).

    Returns:
        ALRPOutput(cls_loss, rank, order): 0-dim value (differentiable, the gradient above),
        (P,) smoothed ranks and (P,) int64 ascending stable argsort of the positive logits (both
        without gradient).  No positive: 0, empty, empty, zero gradient.
    """
    check_pair("alrp_loss", logits, targets)
    delta = check_delta("alrp_loss", delta)
    if not isinstance(loc_errors, torch.Tensor):
        raise LossInputError(f"alrp_loss: loc_errors must be a tensor, got {type(loc_errors).__name__}")
    return ALRPOutput(*_ALRP.apply(logits, targets, loc_errors, delta))


def alrp_loc_errors(giou_losses: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """E_loc(i) = L_GIoU(i) / (2 (1 - tau)) — the code's form of supplementary Eq. S20.

    Eq. S20 states (1 - IoU)/(1 - tau); the official code uses GIoU/2 in place of 1 - IoU
    (docs/losses.md).  ``tau`` is the assigner's positive IoU threshold (0.5 RetinaNet/R-CNN,
    0.7 RPN).  Keeps the gradient of ``giou_losses``.
    """
    if not 0.0 <= float(tau) < 1.0:
        raise LossInputError(f"alrp_loc_errors: tau must be in [0, 1), got {tau!r}")
    return giou_losses / (2.0 * (1.0 - float(tau)))


def alrp_loc_loss(loc_errors: torch.Tensor, rank: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """aLRP localisation component L_loc (aLRP paper; equivalently the weights of supplementary Eq. S21).

    Positives are sorted by logit, descending (``order`` from :func:`alrp_loss`, flipped; ties
    keep that order); the positive at position p contributes the cumulative sum of E_loc over
    positions 1..p (itself and everything above it) divided by its detached smoothed rank:
    L_loc = mean_p (sum_{q <= p} E_loc(q)) / rank(p).  Equivalently sum_i w_i E_loc(i) with the
    aLRP "default" ranking-based weights (supplementary Eq. S21).

    Args:
        loc_errors: (P,) E_loc per positive in flattened order, WITH gradient (box branch).
        rank, order: from :func:`alrp_loss` (rank is detached here).

    Returns:
        0-dim tensor; ``loc_errors.sum() * 0`` (still differentiable) when P = 0.
    """
    loc_errors = loc_errors.reshape(-1)
    if not (loc_errors.numel() == rank.numel() == order.numel()):
        raise LossInputError(
            f"alrp_loc_loss: loc_errors ({loc_errors.numel()}), rank ({rank.numel()}) and order "
            f"({order.numel()}) must all have one entry per positive")
    if loc_errors.numel() == 0:
        return loc_errors.sum() * 0.0
    descending = order.flip(0)
    cumulative = torch.cumsum(loc_errors[descending], 0)
    return (cumulative / rank.detach()[descending].to(cumulative.dtype)).mean()


def positive_ranks(logits: torch.Tensor, targets: torch.Tensor, delta: float = 0.5) -> torch.Tensor:
    """Smoothed rank of each positive among positives and negatives, self counted 1 (no gradient).

    rank(i) = 1 + sum_{j pos, j != i} H_delta(s_j - s_i) + N_FP(i), positives ``targets > 0``,
    negatives ``== 0`` (RS convention), in flattened order; float64 for float64 logits, else
    float32.  This is the rank(k) of the ranking-based instance weights (Eq. S21); for
    binary targets it equals the ``rank`` returned by :func:`alrp_loss`.
    """
    check_pair("positive_ranks", logits, targets)
    delta = check_delta("positive_ranks", delta)
    with torch.no_grad():
        return positive_ranks_forward(logits, targets, delta)


def ranking_gradient_l1(output: torch.Tensor) -> torch.Tensor:
    """L1 norm of the closed-form gradient stored by a ranking loss, in O(P), without backward.

    ``output`` must be a raw output of :func:`rank_sort_loss` (either of its two outputs),
    :func:`ap_loss` or :func:`alrp_loss` (``cls_loss``), before any arithmetic, computed from
    logits that require grad (the gradient is found through ``output.grad_fn``).  Because negatives
    only receive non-negative gradient and the gradient sums to zero, ||g||_1 = sum over
    positives of (|g_i| - g_i).  This is the numerator of the magnitude-based self-balance
    (supplementary S2.1): lambda = ||dL_RS/ds||_1 / ||dL_box/db||_1.
    """
    plan = getattr(output.grad_fn, "plan", None)
    if plan is None:
        raise LossInputError(
            "ranking_gradient_l1: pass the tensor returned by rank_sort_loss/ap_loss/alrp_loss "
            "itself (not a sum or a scaled copy), or use torch.autograd.grad on the logits")
    return plan.grad_l1.to(device=output.device, dtype=output.dtype)
