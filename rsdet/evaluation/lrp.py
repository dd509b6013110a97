"""Optimal LRP (oLRP) and its components, on top of the official evaluators' own matching.

Definition (Oksuz, Cam, Kalkan, Akbas, "One Metric to Measure them All: Localisation Recall
Precision (LRP) for Evaluating Visual Detection Tasks", TPAMI 2021, Eq. 2 and Sec. 4). For one
class, with TP-validation threshold tau = 0.5, the LRP of a set of detections is

    LRP = ( sum_{TP} (1 - IoU) / (1 - tau) + N_FP + N_FN ) / ( N_TP + N_FP + N_FN ).

Thresholding the class's detections at a score s keeps a prefix of the ranking, so
oLRP = min over prefixes of LRP (the *first* minimum; ties in score are not grouped), and at that
prefix the components are

    oLRP_Loc = sum_{TP} (1 - IoU) / N_TP      (mean 1 - IoU, not divided by 1 - tau),
    oLRP_FP  = N_FP / (N_TP + N_FP),          oLRP_FN = N_FN / N_GT,

with the prefix's last score as the class's LRP-optimal threshold. A class with ground truth
but no true positive has oLRP = oLRP_FN = 1 and undefined Loc/FP/threshold; a class without
(non-ignored) ground truth is skipped. Dataset values are means over classes of the defined
values.

The ranking and the TP/FP/ignored labels are those of the AP evaluation at IoU 0.5, area "all",
the protocol's max detections, in the order ``accumulate`` ranks them (per-image lists
concatenated in image order, then a stable sort by descending score): :func:`class_lrp` reads
them from COCOeval.evalImgs / LVISEval.eval_imgs (official backend) and looks a TP's IoU up in the
evaluator's own ``ious`` matrix; the fast backend (rsdet.evaluation._fast_accumulate) passes the
same labels and IoUs from its own, identical matching to :func:`optimal_lrp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

TAU = 0.5  # LRP's TP-validation IoU threshold; also the first COCO/LVIS IoU threshold.


@dataclass(frozen=True)
class ClassLRP:
    """oLRP of one class; NaN marks an undefined component."""

    olrp: float
    loc: float
    fp: float
    fn: float
    threshold: float
    num_gt: int


def optimal_lrp(scores: np.ndarray, is_tp: np.ndarray, is_fp: np.ndarray, tp_iou: np.ndarray,
                num_gt: int, tau: float = TAU) -> ClassLRP:
    """oLRP of one class from its ranked detections (TPAMI 2021 definition, see module doc).

    Args:
        scores: (D,) detection scores, already in ranking order (descending).
        is_tp, is_fp: (D,) bool; a detection that is neither (matched to a crowd / ignored ground
            truth, or an unmatched detection the protocol ignores) counts in no term.
        tp_iou: (D,) IoU of each TP with its matched ground truth (other entries unused).
        num_gt: number of non-ignored ground-truth objects of the class, > 0.
    """
    if num_gt <= 0:
        raise ValueError("oLRP is undefined for a class without ground truth; skip the class.")
    is_tp = np.asarray(is_tp, dtype=bool)
    n_tp = np.cumsum(is_tp)
    if n_tp.size == 0 or n_tp[-1] == 0:
        return ClassLRP(1.0, np.nan, np.nan, 1.0, np.nan, int(num_gt))
    n_fp = np.cumsum(np.asarray(is_fp, dtype=bool))
    n_fn = num_gt - n_tp
    loc_sum = np.cumsum(np.where(is_tp, 1.0 - np.asarray(tp_iou, dtype=float), 0.0))
    lrp = (loc_sum / (1.0 - tau) + n_fp + n_fn) / (n_tp + n_fp + n_fn)
    i = int(np.argmin(lrp))  # argmin returns the first minimum, as the definition asks
    tp_i, fp_i = int(n_tp[i]), int(n_fp[i])
    return ClassLRP(
        olrp=float(lrp[i]),
        # Only a degenerate ranking (every TP at IoU exactly tau, so min LRP = 1 is reached
        # before the first TP) leaves these 0/0; they are then undefined like a class without TP.
        loc=float(loc_sum[i] / tp_i) if tp_i else np.nan,
        fp=float(fp_i / (tp_i + fp_i)) if tp_i + fp_i else np.nan,
        fn=float(n_fn[i] / num_gt),
        threshold=float(scores[i]),
        num_gt=int(num_gt),
    )


# Field names of the two evaluators' per-image records.
_FIELDS = {
    "coco": dict(records="evalImgs", img_ids="imgIds", cat_ids="catIds", area="areaRngLbl",
                 iou_thrs="iouThrs", scores="dtScores", matches="dtMatches", dt_ignore="dtIgnore",
                 gt_ignore="gtIgnore"),
    "lvis": dict(records="eval_imgs", img_ids="img_ids", cat_ids="cat_ids", area="area_rng_lbl",
                 iou_thrs="iou_thrs", scores="dt_scores", matches="dt_matches",
                 dt_ignore="dt_ignore", gt_ignore="gt_ignore"),
}


def _ranked_classes(ev: Any, protocol: str) -> Iterator[tuple[int, np.ndarray, np.ndarray,
                                                               np.ndarray, np.ndarray, int]]:
    """Yield ``(cat_id, scores, is_tp, is_fp, tp_iou, num_gt)`` per class with ground truth."""
    f = _FIELDS[protocol]
    p = ev.params
    records = getattr(ev, f["records"])
    img_ids, cat_ids = list(getattr(p, f["img_ids"])), list(getattr(p, f["cat_ids"]))
    if getattr(p, f["area"])[0] != "all":
        raise ValueError("oLRP needs the evaluator's first area range to be 'all'.")
    iou_thrs = np.asarray(getattr(p, f["iou_thrs"]), dtype=float)
    t = int(np.argmin(np.abs(iou_thrs - TAU)))
    if abs(iou_thrs[t] - TAU) > 1e-12:
        raise ValueError(f"oLRP needs IoU threshold {TAU} among the evaluator's thresholds.")
    # COCOeval.accumulate cuts every image's list at maxDets; LVIS cut at load time (LVISResults).
    max_det = p.maxDets[-1] if protocol == "coco" else None
    n_img, n_area = len(img_ids), len(getattr(p, f["area"]))
    gt_column = None  # gt id -> column in ev.ious[img, cat], built on first use

    for k, cat_id in enumerate(cat_ids):
        start = k * n_area * n_img  # area index 0 ("all") comes first for each class
        entries = [e for e in records[start:start + n_img] if e is not None]
        if not entries:
            continue
        num_gt = int(sum(np.count_nonzero(np.asarray(e[f["gt_ignore"]]) == 0) for e in entries))
        if num_gt == 0:
            continue
        scores = np.concatenate([np.asarray(e[f["scores"]][:max_det], dtype=float)
                                 for e in entries])
        matches = np.concatenate([e[f["matches"]][t, :max_det] for e in entries])
        ignored = np.concatenate([e[f["dt_ignore"]][t, :max_det] for e in entries]).astype(bool)
        is_tp = (matches != 0) & ~ignored  # as accumulate: a matched gt id is non-zero
        is_fp = (matches == 0) & ~ignored
        tp_iou = np.zeros(scores.shape)
        tp_pos = np.flatnonzero(is_tp)
        if tp_pos.size:
            if gt_column is None:
                gt_column = {g["id"]: j for gts in ev._gts.values() for j, g in enumerate(gts)}
            lengths = np.fromiter((len(e[f["scores"]][:max_det]) for e in entries), dtype=np.int64,
                                  count=len(entries))
            offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            owner = np.searchsorted(offsets, tp_pos, side="right") - 1
            # ious rows follow the same stable score sort as the per-image records; columns
            # follow the evaluator's original per-(image, class) ground-truth order.
            for pos, j in zip(tp_pos.tolist(), owner.tolist()):
                e = entries[j]
                ious = ev.ious[e["image_id"], e["category_id"]]
                tp_iou[pos] = ious[pos - offsets[j], gt_column[int(matches[pos])]]
        order = np.argsort(-scores, kind="mergesort")
        yield (cat_id, scores[order], is_tp[order], is_fp[order], tp_iou[order], num_gt)


def class_lrp(ev: Any, protocol: str) -> dict[int, ClassLRP]:
    """oLRP of every class with ground truth, from an evaluator after ``evaluate()``."""
    return {int(cat): optimal_lrp(s, tp, fp, iou, n)
            for cat, s, tp, fp, iou, n in _ranked_classes(ev, protocol)}


def _mean(values: Iterable[float]) -> float:
    arr = np.asarray([v for v in values if not np.isnan(v)], dtype=float)
    return float(arr.mean()) if arr.size else -1.0


def summarize_lrp(per_class: dict[int, ClassLRP],
                  groups: dict[str, Iterable[int]] | None = None) -> dict[str, float]:
    """Means over classes (undefined values skipped, -1 when nothing is defined).

    Returns oLRP, oLRP_Loc, oLRP_FP, oLRP_FN and, for each ``groups`` entry (e.g. LVIS frequency
    groups ``{"r": [...], "c": [...], "f": [...]}``), ``oLRP<name>``.
    """
    vals = list(per_class.values())
    out = {
        "oLRP": _mean(c.olrp for c in vals),
        "oLRP_Loc": _mean(c.loc for c in vals),
        "oLRP_FP": _mean(c.fp for c in vals),
        "oLRP_FN": _mean(c.fn for c in vals),
    }
    for name, cat_ids in (groups or {}).items():
        out[f"oLRP{name}"] = _mean(per_class[c].olrp for c in cat_ids if c in per_class)
    return out
