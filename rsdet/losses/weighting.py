"""Instance-level importance weights of the box loss (supplementary S2.1, Eq. S18/S21, Table S1).

L_box = sum_i (w_i / sum_j w_j) L_GIoU(i)   (Eq. S18)

with w_i from one of: none, centerness, score (adopted by RS Loss), IoU, ranking-based (aLRP,
optionally smoothed by delta_loc, Table S3).  All weights are detached.
"""

from __future__ import annotations

import torch

from rsdet.errors import ConfigError
from rsdet.losses._checks import LossInputError
from rsdet.losses._pairs import relation_sums
from rsdet.losses.labels import box_iou_aligned

__all__ = ["weighted_mean", "centerness_weights", "score_weights", "iou_weights",
           "ranking_weights", "instance_weights", "WEIGHT_KINDS"]

WEIGHT_KINDS = ("none", "centerness", "score", "iou", "rank")


def weighted_mean(values: torch.Tensor, weights: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """sum_i w_i v_i / sum_i w_i, the denominator replaced by 1 when sum_i w_i < eps (docs/losses.md).

    The official heads use eps = 1e-12 (ATSS, PAA) or 1e-10 (elsewhere).  Weights are detached.
    An empty input gives a 0 that still carries the graph of ``values``.
    """
    if values.shape != weights.shape:
        raise LossInputError(
            f"weighted_mean: values {tuple(values.shape)} and weights {tuple(weights.shape)} "
            "must have the same shape")
    w = weights.detach().to(values.dtype)
    total = w.sum()
    denom = torch.where(total < eps, torch.ones_like(total), total)
    return (w * values).sum() / denom


def centerness_weights(anchor_centers: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """FCOS/ATSS centerness of each anchor centre w.r.t. its GT box (Table S1 "centerness").

    sqrt(min(l, r)/max(l, r) * min(t, b)/max(t, b)) with l, t, r, b the distances from the centre
    to the box sides; centres outside the box (negative distances) give 0.

    Args:
        anchor_centers: (P, 2) (x, y).
        gt_boxes: (P, 4) (x1, y1, x2, y2).
    """
    if anchor_centers.shape[-1:] != (2,) or gt_boxes.shape[-1:] != (4,) \
            or anchor_centers.shape[0] != gt_boxes.shape[0]:
        raise LossInputError(
            f"centerness_weights: expected (P, 2) centres and (P, 4) boxes, got "
            f"{tuple(anchor_centers.shape)} and {tuple(gt_boxes.shape)}")
    with torch.no_grad():
        x, y = anchor_centers[:, 0], anchor_centers[:, 1]
        lr = torch.stack([x - gt_boxes[:, 0], gt_boxes[:, 2] - x], 1).clamp(min=0)
        tb = torch.stack([y - gt_boxes[:, 1], gt_boxes[:, 3] - y], 1).clamp(min=0)
        ratio = (lr.min(1).values / lr.max(1).values.clamp(min=1e-12)) \
            * (tb.min(1).values / tb.max(1).values.clamp(min=1e-12))
        return ratio.sqrt()


def score_weights(cls_logits: torch.Tensor) -> torch.Tensor:
    """w_i = max over classes of sigmoid(s_i,c), detached — RS Loss's choice (supplementary S2.1).

    Args:
        cls_logits: (P, C) class logits of the positive rows (the max over ALL classes, not
            the GT class score, as in the official heads), or (P,) for single-logit heads (RPN).
    """
    with torch.no_grad():
        scores = cls_logits.detach().float().sigmoid()
        return scores.max(-1).values if scores.dim() > 1 else scores


def iou_weights(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """w_i = IoU(decoded prediction, GT), detached (Table S1 "IoU-based")."""
    with torch.no_grad():
        return box_iou_aligned(pred_boxes.detach().float(), gt_boxes.detach().float())


def ranking_weights(pos_logits: torch.Tensor, ranks: torch.Tensor,
                    delta_loc: float | None = None) -> torch.Tensor:
    """Ranking-based weights, supplementary Eq. S21: w_i = (1/|P|) sum_k H(s_i - s_k) / rank(k).

    Positive i collects 1/rank(k) from every positive k it scores at or above.

    Args:
        pos_logits: (P,) logits of the positives (their GT-class entries).
        ranks: (P,) smoothed ranks, e.g. :func:`rsdet.losses.ranking.positive_ranks` (self
            counted 1, delta = delta_RS) or the ``rank`` of :func:`rsdet.losses.alrp_loss`.
        delta_loc: None = aLRP "default": hard step realised by the descending sort (ties broken
            by sort order; the weights that :func:`rsdet.losses.alrp_loc_loss` implies).  A number
            >= 0 smooths the numerator with H_{delta_loc}; 0 is the hard step with H(0) = 1 for
            ties (Table S3 studies 0 ... 2).

    Returns:
        (P,) un-normalised weights (the 1/|P| cancels in :func:`weighted_mean`), detached.
        Hand-checked vector: logits (3, 2, -1, -3), ranks (1, 2, 5, 7), delta_loc = 0 ->
        (0.460714, 0.210714, 0.085714, 0.035714).
    """
    if pos_logits.shape != ranks.shape or pos_logits.dim() != 1:
        raise LossInputError(
            f"ranking_weights: pos_logits {tuple(pos_logits.shape)} and ranks "
            f"{tuple(ranks.shape)} must both be (P,)")
    with torch.no_grad():
        p = pos_logits.numel()
        if p == 0:
            return pos_logits.new_zeros(0, dtype=torch.float32)
        s = pos_logits.detach().to(torch.float64)
        inv_rank = 1.0 / ranks.detach().to(torch.float64)
        if delta_loc is None:
            order = torch.sort(s, descending=True, stable=True).indices
            collected = torch.flip(torch.cumsum(torch.flip(inv_rank[order], [0]), 0), [0])
            w = torch.empty_like(s)
            w[order] = collected
        else:
            if delta_loc < 0:
                raise LossInputError(f"ranking_weights: delta_loc must be >= 0, got {delta_loc}")
            # relation_sums gives sum_j H(s_j - s_i) v_j; here we need sum_k H(s_i - s_k) v_k,
            # i.e. the same with logits negated.
            w = relation_sums(-s, float(delta_loc), inv_rank)
        return (w / p).to(torch.float32 if pos_logits.dtype != torch.float64 else torch.float64)


def instance_weights(kind: str, *, num: int | None = None, cls_logits=None, pred_boxes=None,
                     gt_boxes=None, anchor_centers=None, pos_logits=None, ranks=None,
                     delta_loc: float | None = None) -> torch.Tensor:
    """Dispatch to one weighting of Table S1 by name (config group ``weighting``).

    kind: "none" (ones; needs ``num`` or any tensor), "centerness" (anchor_centers, gt_boxes),
    "score" (cls_logits), "iou" (pred_boxes, gt_boxes), "rank" (pos_logits, ranks, delta_loc).
    """
    if kind == "none":
        ref = next((t for t in (cls_logits, pred_boxes, gt_boxes, anchor_centers, pos_logits)
                    if t is not None), None)
        if num is None and ref is None:
            raise LossInputError("instance_weights('none'): pass num=P or a per-positive tensor")
        n = int(num) if num is not None else ref.shape[0]
        return torch.ones(n, device=ref.device if ref is not None else None)
    needed = {"centerness": (anchor_centers, gt_boxes), "score": (cls_logits,),
              "iou": (pred_boxes, gt_boxes), "rank": (pos_logits, ranks)}
    if kind not in needed:
        raise ConfigError(f"unknown instance weighting {kind!r}; choose one of {WEIGHT_KINDS}")
    if any(t is None for t in needed[kind]):
        raise LossInputError(f"instance_weights({kind!r}) is missing one of its input tensors")
    if kind == "centerness":
        return centerness_weights(anchor_centers, gt_boxes)
    if kind == "score":
        return score_weights(cls_logits)
    if kind == "iou":
        return iou_weights(pred_boxes, gt_boxes)
    return ranking_weights(pos_logits, ranks, delta_loc)
