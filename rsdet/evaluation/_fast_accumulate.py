"""The fast evaluator's accumulation: precision/recall arrays, summary numbers and oLRP inputs.

Given the matching (rsdet.evaluation._fast_match), every detection gets, per area range and IoU
threshold, the label the official evaluators give it: true positive (matched to ground truth with a
non-zero id that is not ignored), ignored (matched to ignored ground truth, or unmatched and of an
area outside the range, or for LVIS unmatched in a category the image does not annotate
exhaustively) or false positive. Per category, detections are ranked by descending score, ties by
image (ascending id) and then by their rank inside the image, which is the order the official
``accumulate`` produces with its stable sort of the per-image lists. The cumulative counts give
recall and precision, precision is made monotone from the right and read at the 101 recall points,
and the arrays have exactly the official shapes, so the same means over the same arrays give the
same numbers (docs/evaluation.md, "The fast path").

A test score threshold keeps a prefix of every category's ranking and of every (image, category)
list, so one matching serves every threshold of a sweep: :func:`accumulate` takes a ``keep`` mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsdet.evaluation._fast_inputs import AREA_LBL, AREA_RNG, IOU_THRS, REC_THRS, Inputs
from rsdet.evaluation._fast_match import gt_ignored, match
from rsdet.evaluation.lrp import ClassLRP, optimal_lrp


@dataclass
class Matched:
    """Per-detection labels (A, T, n) in detection order, and each category's ranking."""

    inp: Inputs
    tp: np.ndarray
    fp: np.ndarray
    tp_iou: np.ndarray    # IoU of the pair at area "all", IoU 0.5 (0 where not a true positive)
    ranking: np.ndarray   # detection indices, by category, then descending score, image, rank
    cat_start: np.ndarray
    npig: np.ndarray      # (K, A) ground truth that counts, per category and area range

    @property
    def max_dets_list(self) -> list[int]:
        """COCO's ``maxDets`` ([1, 10, N] capped at N); LVIS has the single N."""
        n = self.inp.max_dets
        return [n] if self.inp.protocol == "lvis" else [min(1, n), min(10, n), n]


def label(inp: Inputs) -> Matched:
    """Match and label every detection (see the module docstring)."""
    n_area, n_thr, n = len(AREA_RNG), len(IOU_THRS), len(inp.dt_score)
    area = inp.dt_area[None, :]
    out = (area < AREA_RNG[:, :1]) | (area > AREA_RNG[:, 1:])          # (A, n)
    if inp.protocol == "lvis":
        out = out | inp.dt_unlisted[None, :]
    tp = np.zeros((n_area, n_thr, n), dtype=bool)
    fp = np.broadcast_to(~out[:, None, :], (n_area, n_thr, n)).copy()
    tp_iou = np.zeros(n)
    cand, gt_of, iou_of = match(inp)
    if len(cand):
        gt_of = gt_of.transpose(1, 2, 0)                                 # (A, T, c)
        has = gt_of >= 0
        g = np.where(has, gt_of, 0)
        nonzero = has & inp.gt_id_nonzero[g]      # a matched ground-truth id 0 counts as no match
        g_ign = gt_ignored(inp)[np.arange(n_area)[:, None, None], g]
        out_c = out[:, None, cand]
        ign = np.where(nonzero, g_ign, (has & g_ign) | out_c)
        tp[:, :, cand] = nonzero & ~ign
        fp[:, :, cand] = ~nonzero & ~ign
        tp_iou[cand] = np.where(tp[0, 0, cand], iou_of, 0.0)
    cat = inp.dt_cat
    ranking = np.lexsort((inp.dt_rank, inp.dt_img, -inp.dt_score, cat))
    cat_start = np.searchsorted(cat[ranking], np.arange(len(inp.cat_ids) + 1), side="left")
    ign = gt_ignored(inp)
    gcat = inp.gt_cat
    npig = np.stack([np.bincount(gcat[~ign[a]], minlength=len(inp.cat_ids))
                     for a in range(n_area)], axis=1)
    return Matched(inp, tp, fp, tp_iou, ranking, cat_start, npig)


def _first_at_least(rc: np.ndarray) -> np.ndarray:
    """Per row of the non-decreasing ``rc`` (rows, n): ``searchsorted(row, REC_THRS, "left")``.

    One search for all rows: complex keys (row, recall) sort lexicographically, so each row's
    entries stay apart from the others' without altering any recall value."""
    rows, n = rc.shape
    rid = np.arange(rows, dtype=float)
    keys = (rid[:, None] + 1j * rc).ravel()
    queries = (rid[:, None] + 1j * REC_THRS[None, :]).ravel()
    pos = np.searchsorted(keys, queries, side="left").reshape(rows, len(REC_THRS))
    return pos - np.arange(rows)[:, None] * n


@dataclass
class Accumulated:
    """Official-shaped arrays without the categories that have no ground truth: precision
    (T, R, K', A, M) and recall (T, K', A, M) for the categories ``cat_index`` (indices into
    ``Inputs.cat_ids``; LVIS has M = 1), and oLRP per category id.

    The official arrays hold -1 everywhere in a category without ground truth, and every summary is
    the mean of the entries above -1 taken in array order, so leaving those categories out changes
    neither the entries nor their order: the means are the same, bit for bit, and much cheaper."""

    precision: np.ndarray
    recall: np.ndarray
    cat_index: np.ndarray
    lrp: dict[int, ClassLRP]


def accumulate(m: Matched, keep: np.ndarray | None = None) -> Accumulated:
    """Precision/recall arrays and per-category oLRP; ``keep`` (bool per detection) restricts the
    evaluation to a subset that is a prefix of every ranking (a test score threshold)."""
    inp = m.inp
    n_thr, n_rec, n_area = len(IOU_THRS), len(REC_THRS), len(AREA_RNG)
    md_list = m.max_dets_list
    cats = np.flatnonzero(m.npig.max(axis=1) > 0)
    precision = -np.ones((n_thr, n_rec, len(cats), n_area, len(md_list)))
    recall = -np.ones((n_thr, len(cats), n_area, len(md_list)))
    lrp: dict[int, ClassLRP] = {}
    eps = np.spacing(1)
    for j, k in enumerate(cats.tolist()):
        idx = m.ranking[m.cat_start[k]:m.cat_start[k + 1]]
        if keep is not None:
            idx = idx[keep[idx]]
        areas = np.flatnonzero(m.npig[k] > 0)
        npig = m.npig[k, areas]
        kept = None
        for mi in reversed(range(len(md_list))):  # the cuts are nested: when a smaller one keeps
            sel = idx if inp.protocol == "lvis" else idx[inp.dt_rank[idx] < md_list[mi]]
            if kept is not None and len(sel) == kept:  # every detection, it is the same evaluation
                precision[:, :, j, :, mi] = precision[:, :, j, :, mi + 1]
                recall[:, j, :, mi] = recall[:, j, :, mi + 1]
                continue
            kept = n = len(sel)
            tp_sum = np.cumsum(m.tp[:, :, sel][areas], axis=2).astype(float)
            fp_sum = np.cumsum(m.fp[:, :, sel][areas], axis=2).astype(float)
            rc = tp_sum / npig[:, None, None]
            pr = tp_sum / (fp_sum + tp_sum + eps)
            rec = rc[:, :, -1] if n else np.zeros((len(areas), n_thr))
            recall[:, j, areas, mi] = rec.T
            if n:
                pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
                rows = pr.reshape(-1, n)
                pos = _first_at_least(rc.reshape(-1, n))
                q = np.where(pos < n, np.take_along_axis(rows, np.minimum(pos, n - 1), axis=1), 0.0)
                q = q.reshape(len(areas), n_thr, n_rec)
            else:
                q = np.zeros((len(areas), n_thr, n_rec))
            precision[:, :, j, areas, mi] = q.transpose(1, 2, 0)
        if m.npig[k, 0] > 0:  # oLRP: area all, the last max-detections cut, IoU 0.5
            sel = idx if inp.protocol == "lvis" else idx[inp.dt_rank[idx] < md_list[-1]]
            lrp[inp.cat_ids[k]] = optimal_lrp(inp.dt_score[sel], m.tp[0, 0, sel], m.fp[0, 0, sel],
                                              m.tp_iou[sel], int(m.npig[k, 0]))
    return Accumulated(precision, recall, cats, lrp)


def _mean_defined(s: np.ndarray) -> float:
    defined = s[s > -1]
    return -1.0 if len(defined) == 0 else float(np.mean(defined))


def coco_stats(acc: Accumulated, max_dets_list: list[int]) -> list[float]:
    """``COCOeval.stats`` (its 12 numbers) from the arrays, with COCOeval's own selections."""

    def summarize(ap: bool, iou: float | None = None, area: str = "all", max_det: int = 100) -> float:
        aind = [i for i, lbl in enumerate(AREA_LBL) if lbl == area]
        mind = [i for i, md in enumerate(max_dets_list) if md == max_det]
        s = acc.precision if ap else acc.recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRS)[0]]
        s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
        return _mean_defined(s)

    last = max_dets_list[2]
    # COCOeval.summarize reads AP (its first number) at 100 detections whatever maxDets holds, so it
    # is -1 unless max_dets is 100; AP50, AP75 and the sizes use the last maxDets entry.
    return [summarize(True, max_det=100), summarize(True, 0.5, max_det=last),
            summarize(True, 0.75, max_det=last), summarize(True, area="small", max_det=last),
            summarize(True, area="medium", max_det=last), summarize(True, area="large", max_det=last),
            summarize(False, max_det=max_dets_list[0]), summarize(False, max_det=max_dets_list[1]),
            summarize(False, max_det=last), summarize(False, area="small", max_det=last),
            summarize(False, area="medium", max_det=last), summarize(False, area="large", max_det=last)]


def lvis_results(acc: Accumulated, freq_groups: list[list[int]]) -> dict[str, float]:
    """``LVISEval.results`` (AP family, AP_r/c/f, AR and per-size AR) with LVISEval's selections;
    ``freq_groups`` holds the category indices (into ``Inputs.cat_ids``) of the r, c and f groups."""
    precision, recall = acc.precision[..., 0], acc.recall[..., 0]
    column = {int(k): j for j, k in enumerate(acc.cat_index.tolist())}
    freq_groups = [[column[k] for k in group if k in column] for group in freq_groups]

    def summarize(ap: bool, iou: float | None = None, area: str = "all", group: int | None = None):
        aidx = [i for i, lbl in enumerate(AREA_LBL) if lbl == area]
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRS)[0]]
        if not ap:
            s = s[:, :, aidx]
        elif group is not None:
            s = s[:, :, freq_groups[group], aidx]
        else:
            s = s[:, :, :, aidx]
        return _mean_defined(s)

    out = {"AP": summarize(True), "AP50": summarize(True, 0.5), "AP75": summarize(True, 0.75),
           "APs": summarize(True, area="small"), "APm": summarize(True, area="medium"),
           "APl": summarize(True, area="large"), "APr": summarize(True, group=0),
           "APc": summarize(True, group=1), "APf": summarize(True, group=2), "AR": summarize(False)}
    for area in ("small", "medium", "large"):
        out[f"AR{area[0]}"] = summarize(False, area=area)
    return out
