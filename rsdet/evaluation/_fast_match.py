"""The fast evaluator's matcher: the official greedy matching, for all groups at once.

Both official evaluators match each (image, category) separately, for every area range and IoU
threshold t: detections are visited in ranked order and each takes, among the ground truth it may
still take, the one of highest IoU with IoU >= min(t, 1 - 1e-10), preferring ground truth that is
not ignored (for this area range) over ignored ground truth, and among equal IoUs the one listed
last. Taken ground truth is unavailable to later detections, except COCO crowd regions.

That is a sequential process inside one group, but groups are independent, so here the r-th
detection of every group is processed in the same step ("round"): one array operation per round
over all groups, 4 area ranges and 10 thresholds together (docs/evaluation.md, "The fast path").
A detection whose IoU with every ground truth of its group is below the lowest threshold can never
match and takes no part; the rounds run over the remaining candidates only.
"""

from __future__ import annotations

import numpy as np

from rsdet.evaluation._fast_inputs import AREA_RNG, IOU_THRS, Inputs


def gt_ignored(inp: Inputs) -> np.ndarray:
    """(A, n_gt) bool: ground truth ignored in area range a (its own flag or its area outside)."""
    area = inp.gt_area[None, :]
    return inp.gt_ignore[None, :] | (area < AREA_RNG[:, :1]) | (area > AREA_RNG[:, 1:])


def _segments(lengths: np.ndarray):
    """Start of each segment and, per element, its segment and its index inside the segment."""
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    seg = np.repeat(np.arange(len(lengths)), lengths)
    local = np.arange(int(lengths.sum())) - starts[seg]
    return starts, seg, local


def _last_best(score: np.ndarray, starts: np.ndarray, seg: np.ndarray, local: np.ndarray):
    """Per segment and channel: the local index of the last maximum of ``score`` (-1 where every
    entry is -1, i.e. nothing may be taken)."""
    best = np.maximum.reduceat(score, starts, axis=0)
    hit = (score == best[seg]) & (score >= 0)
    return np.maximum.reduceat(np.where(hit, local[:, None, None], -1), starts, axis=0)


def match(inp: Inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of every detection that can match at all.

    Returns ``(cand, gt_of, iou_of)``: the indices of those detections (ascending); per candidate,
    area range and IoU threshold, the index of the ground truth it took (-1: none), shape
    (n_candidates, A, T); and per candidate the IoU of its pair at area "all", IoU 0.5 (0 where
    none), which is what oLRP needs.
    """
    n_area, n_thr = len(AREA_RNG), len(IOU_THRS)
    thr = np.minimum(IOU_THRS, 1 - 1e-10)
    empty = (np.zeros(0, dtype=np.int64), np.zeros((0, n_area, n_thr), dtype=np.int32), np.zeros(0))
    if not len(inp.groups):
        return empty
    # rows of the IoU blocks: one per detection of a matched group, ng entries each
    row_len = np.repeat(inp.grp_ng, inp.grp_nd)
    row_grp = np.repeat(np.arange(len(inp.groups)), inp.grp_nd)
    row_start = np.concatenate(([0], np.cumsum(row_len)[:-1])).astype(np.int64)
    row_det = (np.repeat(inp.grp_dt_start, inp.grp_nd)
               + np.arange(len(row_len)) - np.repeat(np.cumsum(inp.grp_nd) - inp.grp_nd, inp.grp_nd))
    is_cand = np.maximum.reduceat(inp.ious, row_start) >= thr.min()
    if not is_cand.any():
        return empty
    c_row, c_grp, c_det = row_start[is_cand], row_grp[is_cand], row_det[is_cand]
    # round of a candidate = how many candidates of its group come before it
    first = np.searchsorted(c_grp, c_grp, side="left")
    c_round = np.arange(len(c_grp)) - first

    ignored = gt_ignored(inp).T                      # (n_gt, A)
    crowd = inp.gt_crowd
    taken = np.zeros((len(inp.gt_area), n_area, n_thr), dtype=bool)
    gt_of = np.full((len(c_det), n_area, n_thr), -1, dtype=np.int32)
    by_round = np.argsort(c_round, kind="stable")
    bounds = np.searchsorted(c_round[by_round], np.arange(int(c_round.max()) + 2))
    for r in range(len(bounds) - 1):
        act = by_round[bounds[r]:bounds[r + 1]]      # at most one candidate per group
        ng = inp.grp_ng[c_grp[act]]
        starts, seg, local = _segments(ng)
        iou = inp.ious[np.repeat(c_row[act], ng) + local]
        gidx = np.repeat(inp.grp_gt_start[c_grp[act]], ng) + local
        free = (iou[:, None] >= thr)[:, None, :] & ~taken[gidx]          # (P, A, T)
        ign = ignored[gidx][:, :, None]
        value = iou[:, None, None]
        j = _last_best(np.where(free & ~ign, value, -1.0), starts, seg, local)
        j_ign = _last_best(np.where(free & ign, value, -1.0), starts, seg, local)
        j = np.where(j >= 0, j, j_ign)
        got = np.where(j >= 0, inp.grp_gt_start[c_grp[act]][:, None, None] + j, -1)
        gt_of[act] = got
        s, a, t = np.nonzero(got >= 0)
        g = got[s, a, t]
        keep = ~crowd[g]
        taken[g[keep], a[keep], t[keep]] = True
    first_pick = gt_of[:, 0, 0].astype(np.int64)
    got = c_row + first_pick - inp.grp_gt_start[c_grp]
    iou_of = np.where(first_pick >= 0, inp.ious[np.where(first_pick >= 0, got, 0)], 0.0)
    return c_det, gt_of, iou_of
