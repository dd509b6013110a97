"""Probabilistic Anchor Assignment (PAA; Kim & Lee, ECCV 2020, Sec. 3.1-3.2).

The detector first takes as candidates the anchors that a max-IoU assigner matches at IoU 0.1.
Each candidate gets an "anchor score" from the current predictions (focal loss + GIoU loss, low is
good). Per box, the (at most) ``topk`` lowest-scoring candidates of every level are pooled, a
two-component 1-D Gaussian mixture is fitted to their sorted scores, and the candidates of the
low-score component up to its most likely member become positives; every other candidate becomes
a negative. The exact rules, tie breaks and the differences from the paper's description are in
docs/assigners.md.

The mixture is fitted by our own expectation-maximisation in float64, reproducing the
scikit-learn ``GaussianMixture`` fit that the official RS-PAA code runs (means initialised to the
minimum and maximum score, weights 1/2, precisions 1, ``tol`` 1e-3 on the mean log-likelihood,
at most 100 iterations, ``reg_covar`` 1e-5 added to the variances; scikit-learn's own default
would be 1e-6). All boxes given at once (every image of a batch: ``PAA.assign_images``) are fitted
together: every box's EM runs until its own stopping rule fires, exactly as if fitted alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from rsdet.models.assign.atss import AssignerInputError

__all__ = ["paa_anchor_scores", "gmm_split", "paa_reassign", "GMM_REG_COVAR", "GMM_TOL",
           "GMM_MAX_ITER"]

# the official RS-PAA mixture settings: reg_covar set to 1e-5, scikit-learn defaults otherwise
GMM_REG_COVAR = 1e-5
GMM_TOL = 1e-3
GMM_MAX_ITER = 100
_LOG_2PI = math.log(2 * math.pi)
_EPS64 = torch.finfo(torch.float64).eps


def paa_anchor_scores(cls_logits: Tensor, target_classes: Tensor, pred_boxes: Tensor,
                      target_boxes: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                      box_weight: float = 1.0) -> Tensor:
    """Per-anchor PAA score: sigmoid focal loss summed over classes + ``box_weight`` x GIoU loss.

    Low means the anchor already predicts its box well (PAA Eq. 1-2, as the negative
    log-likelihood terms). Computed without gradient, in float32 (float64 for float64 input).

    Args:
        cls_logits: (A, C) raw class logits of the candidate anchors.
        target_classes: (A,) long class index in [0, C) of each candidate's box; the focal-loss
            target is the one-hot vector of that class.
        pred_boxes: (A, 4) decoded predicted boxes, xyxy.
        target_boxes: (A, 4) the candidates' ground-truth boxes, xyxy.
        alpha, gamma: focal-loss parameters (Lin et al., ICCV 2017).
        box_weight: weight of the GIoU term.

    Returns:
        (A,) scores. Pass candidates only; the result can be scattered into a full-length tensor
        for :func:`paa_reassign` (which reads the scores of candidates only).
    """
    if cls_logits.dim() != 2:
        raise AssignerInputError(
            f"paa_anchor_scores: cls_logits must be (A, C), got {tuple(cls_logits.shape)}")
    num, num_classes = cls_logits.shape
    for name, t, shape in (("target_classes", target_classes, (num,)),
                           ("pred_boxes", pred_boxes, (num, 4)),
                           ("target_boxes", target_boxes, (num, 4))):
        if tuple(t.shape) != shape:
            raise AssignerInputError(
                f"paa_anchor_scores: {name} must have shape {shape} (one row per row of "
                f"cls_logits), got {tuple(t.shape)}")
    if num == 0:
        return cls_logits.new_zeros(0)
    if int(target_classes.min()) < 0 or int(target_classes.max()) >= num_classes:
        raise AssignerInputError(
            f"paa_anchor_scores: target_classes must lie in [0, {num_classes}), got values in "
            f"[{int(target_classes.min())}, {int(target_classes.max())}]; pass candidate "
            "anchors only")
    with torch.no_grad():
        dtype = torch.float64 if cls_logits.dtype == torch.float64 else torch.float32
        logits = cls_logits.to(dtype)
        onehot = F.one_hot(target_classes.long(), num_classes).to(dtype)
        focal = torchvision.ops.sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma,
                                                   reduction="none").sum(dim=1)
        giou = torchvision.ops.generalized_box_iou_loss(pred_boxes.to(dtype),
                                                        target_boxes.to(dtype), reduction="none")
        return focal + box_weight * giou


def _weighted_log_prob(x: Tensor, weights: Tensor, means: Tensor, variances: Tensor) -> Tensor:
    """log(w_k) + log N(x | mean_k, var_k) for x (B, n) and parameters (B, 2): (B, n, 2)."""
    x = x[..., None]
    means, variances, weights = means[:, None, :], variances[:, None, :], weights[:, None, :]
    return (weights.log() - 0.5 * (_LOG_2PI + variances.log())
            - 0.5 * (x - means).pow(2) / variances)


def _gmm_fit(x: Tensor, valid: Tensor, reg_covar: float, tol: float,
             max_iter: int) -> tuple[Tensor, Tensor]:
    """Fit one 2-component 1-D mixture per row of ``x`` (B, n) over the entries marked ``valid``.

    Every row needs at least one valid entry. Returns the component with the largest weighted
    likelihood per entry (ties -> component 0) and the mixture's log-likelihood per entry; both
    are meaningless where ``valid`` is False.
    """
    x = x.to(torch.float64)
    valid_f = valid.to(torch.float64)
    count = valid_f.sum(dim=1)
    big = torch.finfo(torch.float64).max
    lo = torch.where(valid, x, torch.full_like(x, big)).min(dim=1).values
    hi = torch.where(valid, x, torch.full_like(x, -big)).max(dim=1).values
    x = torch.where(valid, x, lo[:, None].expand_as(x))  # keep padding finite
    rows = x.shape[0]
    means = torch.stack((lo, hi), dim=1)
    weights = torch.full((rows, 2), 0.5, dtype=torch.float64, device=x.device)
    variances = torch.ones((rows, 2), dtype=torch.float64, device=x.device)  # precision 1
    lower_bound = torch.full((rows,), float("-inf"), dtype=torch.float64, device=x.device)
    active = torch.ones(rows, dtype=torch.bool, device=x.device)

    for _ in range(max_iter):
        # E-step with the current parameters; its mean log-likelihood is the stopping statistic
        wlp = _weighted_log_prob(x, weights, means, variances)
        log_norm = wlp.logsumexp(dim=-1)
        new_bound = (log_norm * valid_f).sum(dim=1) / count
        resp = (wlp - log_norm[..., None]).exp() * valid_f[..., None]
        # M-step (the 10 * eps keeps an emptied component finite, as scikit-learn does)
        nk = resp.sum(dim=1) + 10 * _EPS64
        new_means = (resp * x[..., None]).sum(dim=1) / nk
        new_vars = (resp * (x[..., None] - new_means[:, None, :]).pow(2)).sum(dim=1) / nk
        new_vars = new_vars + reg_covar
        new_weights = nk / nk.sum(dim=1, keepdim=True)

        upd = active[:, None]
        means = torch.where(upd, new_means, means)
        variances = torch.where(upd, new_vars, variances)
        weights = torch.where(upd, new_weights, weights)
        converged = (new_bound - lower_bound).abs() < tol
        lower_bound = torch.where(active, new_bound, lower_bound)
        active = active & ~converged
        if not bool(active.any()):
            break

    wlp = _weighted_log_prob(x, weights, means, variances)
    return wlp.argmax(dim=-1), wlp.logsumexp(dim=-1)


def gmm_split(sorted_scores: Tensor, reg_covar: float = GMM_REG_COVAR, tol: float = GMM_TOL,
              max_iter: int = GMM_MAX_ITER) -> tuple[Tensor, Tensor]:
    """Fit a 2-component 1-D Gaussian mixture to ``sorted_scores`` (n,), n >= 1, by EM.

    Initialisation: means = (min, max) of the scores, weights (1/2, 1/2), variances 1. Each
    iteration does an E-step (whose mean log-likelihood is the stopping statistic) and an M-step
    (``reg_covar`` added to both variances); it stops after the M-step of the first iteration
    whose mean log-likelihood changed by less than ``tol``, or after ``max_iter`` iterations.
    Computed in float64 whatever the input dtype. ``reg_covar`` defaults to 1e-5, the value the
    official RS-PAA code passes to scikit-learn (whose own default is 1e-6).

    Returns:
        ``(component, log_likelihood)``: (n,) long, the component with the highest posterior
        under the final parameters (0 = the one initialised at the minimum; exact ties -> 0),
        and (n,) float64 the log-density of the fitted mixture at each score.
    """
    if sorted_scores.dim() != 1 or sorted_scores.numel() == 0:
        raise AssignerInputError(
            f"gmm_split: expected a non-empty 1-D tensor of scores, got shape "
            f"{tuple(sorted_scores.shape)}")
    if not bool(torch.isfinite(sorted_scores).all()):
        raise AssignerInputError("gmm_split: scores must be finite (got NaN or inf)")
    valid = torch.ones((1, sorted_scores.numel()), dtype=torch.bool, device=sorted_scores.device)
    component, loglik = _gmm_fit(sorted_scores[None], valid, reg_covar, tol, max_iter)
    return component[0], loglik[0]


def _group_rank(keys: Tensor) -> Tensor:
    """Position of each entry within its run of equal ``keys`` (keys sorted, 1-D)."""
    idx = torch.arange(keys.numel(), device=keys.device)
    starts = torch.ones_like(keys, dtype=torch.bool)
    starts[1:] = keys[1:] != keys[:-1]
    first = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=0).values
    return idx - first


def paa_reassign(candidate_gt: Tensor, anchor_scores: Tensor, level_of_anchor: Tensor,
                 num_gts: int, topk: int = 9, reg_covar: float = GMM_REG_COVAR) -> Tensor:
    """Re-assign PAA candidates to positives and negatives (Kim & Lee, ECCV 2020).

    Args:
        candidate_gt: (A,) long, the box each anchor is a candidate for (from a max-IoU assigner
            at IoU 0.1), -1 for anchors that are not candidates.
        anchor_scores: (A,) scores from :func:`paa_anchor_scores` (read at candidates only;
            must be finite there).
        level_of_anchor: (A,) long pyramid level of each anchor.
        num_gts: number of boxes G; candidate_gt must lie in [-1, G).
        topk: candidates kept per box and level.
        reg_covar: added to the mixture variances (see :func:`gmm_split`).

    Returns:
        (A,) long: the box index for positives, -1 for negatives (non-candidates and rejected
        candidates alike; there is no ignore region).

    Rule per box: on every level keep the ``min(topk, n)`` candidates with the lowest score (equal
    scores: lower anchor index first); pool them and sort by (score, anchor index); a box with
    fewer than 2 pooled candidates gets no positive. Fit :func:`gmm_split`; the positives are
    the component-0 members, in sorted order, up to and including the component-0 member with
    the highest log-likelihood (equal log-likelihoods: the first in sorted order). Because each
    anchor is a candidate for one box only, an anchor can never be made positive for two boxes.
    """
    num = candidate_gt.shape[0]
    for name, t in (("anchor_scores", anchor_scores), ("level_of_anchor", level_of_anchor)):
        if tuple(t.shape) != (num,):
            raise AssignerInputError(
                f"paa_reassign: {name} must have shape ({num},) like candidate_gt, got "
                f"{tuple(t.shape)}")
    if int(topk) < 1:
        raise AssignerInputError(f"paa_reassign: topk must be >= 1, got {topk!r}")
    device = candidate_gt.device
    result = torch.full((num,), -1, dtype=torch.long, device=device)
    cand = torch.nonzero(candidate_gt >= 0).flatten()  # ascending anchor index
    if cand.numel() == 0:
        return result
    gt = candidate_gt[cand].long()
    if int(gt.max()) >= num_gts:
        raise AssignerInputError(
            f"paa_reassign: candidate_gt refers to box {int(gt.max())} but num_gts={num_gts}")
    level = level_of_anchor[cand].long().to(device)
    if int(level.min()) < 0:
        raise AssignerInputError("paa_reassign: level_of_anchor must be >= 0")
    score = anchor_scores[cand].detach().to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(score).all()):
        raise AssignerInputError(
            "paa_reassign: anchor_scores must be finite at every candidate anchor")

    with torch.no_grad():
        # order by (box, level, score, anchor index) through stable sorts, least significant first
        order = score.argsort(stable=True)
        num_levels = int(level.max()) + 1
        group = gt * num_levels + level
        order = order[group[order].argsort(stable=True)]
        keep = order[_group_rank(group[order]) < int(topk)]
        # the kept candidates ordered by (box, score, anchor index)
        keep = keep[score[keep].argsort(stable=True)]
        keep = keep[gt[keep].argsort(stable=True)]
        kept_gt = gt[keep]
        pos_in_box = _group_rank(kept_gt)
        per_box = torch.bincount(kept_gt, minlength=num_gts)

        fitted = per_box >= 2
        if not bool(fitted.any()):
            return result
        row_of_box = torch.cumsum(fitted.long(), 0) - 1
        sel = fitted[kept_gt]
        keep, kept_gt, pos_in_box = keep[sel], kept_gt[sel], pos_in_box[sel]
        rows, width = int(fitted.sum()), int(per_box.max())
        row = row_of_box[kept_gt]
        x = torch.zeros((rows, width), dtype=torch.float64, device=device)
        valid = torch.zeros((rows, width), dtype=torch.bool, device=device)
        x[row, pos_in_box] = score[keep]
        valid[row, pos_in_box] = True

        component, loglik = _gmm_fit(x, valid, reg_covar, GMM_TOL, GMM_MAX_ITER)
        low = (component == 0) & valid
        best = torch.where(low, loglik, torch.full_like(loglik, float("-inf"))).argmax(dim=1)
        has_low = low.any(dim=1)
        cols = torch.arange(width, device=device)
        positive = low & (cols[None, :] <= best[:, None]) & has_low[:, None]
        is_pos = positive[row, pos_in_box]
        result[cand[keep[is_pos]]] = kept_gt[is_pos]
    return result
