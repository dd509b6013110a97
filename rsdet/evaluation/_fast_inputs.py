"""The fast evaluator's inputs: ground truth and detections as arrays, under each protocol's rules.

Everything the official evaluators decide before matching is decided here, the same way
(docs/evaluation.md, "The fast path"):

* images and categories are taken in ascending id order; within one (image, category) the ground
  truth keeps its order in the annotation file and the detections are ranked by descending score,
  ties in the order of the results list (a stable sort);
* COCO: a ground truth object is ignored when ``iscrowd`` is set (an ``ignore`` key is overwritten
  by it, as COCOeval does); only the first ``max_dets`` ranked detections of each (image, category)
  exist at all;
* LVIS: each image keeps its ``max_dets`` best detections (stable), then ground truth and
  detections of zero (or infinite) area are dropped, then detections of a category that is neither
  annotated in the image nor listed in its ``neg_category_ids`` are dropped; an annotation's own
  ``ignore`` flag is honoured; a detection of a category in ``not_exhaustive_category_ids`` is
  flagged so that, when unmatched, it is ignored;
* areas: ground truth ``area`` as given; a detection's area is ``w * h`` of its box (bbox) or its
  mask area (segm);
* IoU comes from ``pycocotools.mask.iou`` itself, one call per (image, category) that has both
  detections and ground truth, so every value is the one the official evaluators compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

#: IoU thresholds .50:.05:.95 and recall points 0:.01:1, built exactly as both evaluators build them
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: area ranges all, small, medium, large (in pixels), as both evaluators define them
AREA_RNG = np.array([[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]],
                    dtype=float)
AREA_LBL = ("all", "small", "medium", "large")


@dataclass
class Inputs:
    """Ground truth and detections of one evaluation, sorted for matching.

    Ground truth is ordered by (category, image, file order), detections by (category, image,
    descending score, results-list order); ``group`` is ``category_index * n_images + image_index``.
    Per group ``k`` that has both, ``ious[pair_start[k]:...]`` holds its (detections x ground
    truth) IoU matrix row by row.
    """

    protocol: str
    iou_type: str
    max_dets: int
    img_ids: list[int]
    cat_ids: list[int]
    # ground truth
    gt_group: np.ndarray
    gt_id_nonzero: np.ndarray  # a match to ground-truth id 0 counts as no match (both evaluators)
    gt_area: np.ndarray
    gt_ignore: np.ndarray     # the protocol's own ignore flag, before area ranges
    gt_crowd: np.ndarray      # COCO iscrowd: IoU over the detection's area, may match many times
    # detections
    dt_group: np.ndarray
    dt_score: np.ndarray
    dt_area: np.ndarray
    dt_rank: np.ndarray       # rank within its (image, category), 0 = highest score
    dt_unlisted: np.ndarray   # LVIS: category not exhaustively annotated in the image
    # matching groups (those with detections and ground truth)
    groups: np.ndarray        # group keys, ascending
    grp_dt_start: np.ndarray
    grp_nd: np.ndarray
    grp_gt_start: np.ndarray
    grp_ng: np.ndarray
    pair_start: np.ndarray
    ious: np.ndarray

    @property
    def dt_cat(self) -> np.ndarray:
        return self.dt_group // len(self.img_ids)

    @property
    def gt_cat(self) -> np.ndarray:
        return self.gt_group // len(self.img_ids)

    @property
    def dt_img(self) -> np.ndarray:
        return self.dt_group % len(self.img_ids)


def _gt_rle(ann: dict, img: dict):
    """A ground-truth mask as the evaluators convert it (polygons merged, uncompressed RLE encoded)."""
    segm = ann["segmentation"]
    h, w = img["height"], img["width"]
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, h, w)
    return segm


def _mask_areas(rles: list) -> np.ndarray:
    """Mask areas, in chunks: pycocotools' ``area`` of 256 or more masks fails under numpy 2."""
    parts = [mask_utils.area(rles[i:i + 255]) for i in range(0, len(rles), 255)]
    return np.concatenate(parts).astype(float) if parts else np.zeros(0)


def prepare(dataset: dict, dets: list[dict], iou_type: str, protocol: str, max_dets: int) -> Inputs:
    """Arrays of ``dataset`` (checked by rsdet.evaluation.io) and ``dets`` (checked records)."""
    lvis = protocol == "lvis"
    # ids stay Python integers (any size, as the evaluators allow); arrays hold their positions
    images = {im["id"]: im for im in dataset["images"]}
    img_ids = sorted(images)
    cat_ids = sorted(c["id"] for c in dataset["categories"])
    img_index = {v: i for i, v in enumerate(img_ids)}
    cat_index = {v: i for i, v in enumerate(cat_ids)}
    n_img = len(img_ids)

    # ------------------------------------------------------------------ ground truth
    anns = dataset["annotations"]
    g_img_i = np.fromiter((img_index[a["image_id"]] for a in anns), dtype=np.int64, count=len(anns))
    g_cat_i = np.fromiter((cat_index[a["category_id"]] for a in anns), dtype=np.int64, count=len(anns))
    g_area = np.array([a["area"] for a in anns], dtype=float)
    g_id_nonzero = np.fromiter((a["id"] != 0 for a in anns), dtype=bool, count=len(anns))
    if lvis:
        g_keep = (g_area > 0) & (g_area < np.inf)
        g_ignore = np.array([bool(a.get("ignore", 0)) for a in anns], dtype=bool)
        g_crowd = np.zeros(len(anns), dtype=bool)
    else:
        g_keep = np.ones(len(anns), dtype=bool)
        g_crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        g_ignore = g_crowd.copy()
    g_group = g_cat_i * n_img + g_img_i
    g_pos = np.arange(len(anns))
    kept = np.flatnonzero(g_keep)
    gorder = kept[np.lexsort((g_pos[kept], g_group[kept]))]

    # ------------------------------------------------------------------ detections
    n = len(dets)
    d_img_i = np.fromiter((img_index[d["image_id"]] for d in dets), dtype=np.int64, count=n)
    d_cat_i = np.fromiter((cat_index[d["category_id"]] for d in dets), dtype=np.int64, count=n)
    d_score = np.fromiter((d["score"] for d in dets), dtype=float, count=n)
    if iou_type == "bbox":
        d_box = np.array([d["bbox"] for d in dets], dtype=float).reshape(n, 4)
        d_area = d_box[:, 2] * d_box[:, 3]
    else:
        d_area = _mask_areas([d["segmentation"] for d in dets])
    d_group = d_cat_i * n_img + d_img_i
    d_pos = np.arange(n)
    d_keep = np.ones(n, dtype=bool)
    d_unlisted = np.zeros(n, dtype=bool)
    if lvis and n:
        # the image's best max_dets (descending score, ties in list order), before any other rule
        by_img = np.lexsort((d_pos, -d_score, d_img_i))
        first = np.searchsorted(d_img_i[by_img], d_img_i[by_img], side="left")
        img_rank = np.empty(n, dtype=np.int64)
        img_rank[by_img] = np.arange(n) - first
        d_keep &= img_rank < max_dets
        d_keep &= (d_area > 0) & (d_area < np.inf)
        # federated rules: categories present (after the area rule) or negative in the image
        present = set(zip(g_img_i[kept].tolist(), g_cat_i[kept].tolist()))
        neg = [{cat_index[c] for c in images[i].get("neg_category_ids") or () if c in cat_index}
               for i in img_ids]
        nel = [{cat_index[c] for c in images[i].get("not_exhaustive_category_ids") or () if c in cat_index}
               for i in img_ids]
        pairs = list(zip(d_img_i.tolist(), d_cat_i.tolist()))
        d_keep &= np.fromiter(((i, c) in present or c in neg[i] for i, c in pairs), dtype=bool, count=n)
        d_unlisted = np.fromiter((c in nel[i] for i, c in pairs), dtype=bool, count=n)
    kept_d = np.flatnonzero(d_keep)
    dorder = kept_d[np.lexsort((d_pos[kept_d], -d_score[kept_d], d_group[kept_d]))]
    sorted_groups = d_group[dorder]
    first = np.searchsorted(sorted_groups, sorted_groups, side="left")
    rank = np.arange(len(dorder)) - first
    if not lvis:  # COCOeval keeps the first max_dets of every (image, category)
        dorder, rank = dorder[rank < max_dets], rank[rank < max_dets]

    gt_group, dt_group = g_group[gorder], d_group[dorder]
    groups = np.intersect1d(gt_group, dt_group)
    grp_dt_start = np.searchsorted(dt_group, groups, side="left")
    grp_nd = np.searchsorted(dt_group, groups, side="right") - grp_dt_start
    grp_gt_start = np.searchsorted(gt_group, groups, side="left")
    grp_ng = np.searchsorted(gt_group, groups, side="right") - grp_gt_start
    sizes = grp_nd * grp_ng
    pair_start = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)

    # ------------------------------------------------------------------ IoU per group
    blocks = []
    if iou_type == "bbox":
        g_box = np.array([a["bbox"] for a in anns], dtype=float).reshape(len(anns), 4)[gorder]
        boxes = d_box[dorder]
        crowd = g_crowd[gorder].astype(np.uint8)
        for ds, nd, gs, ng in zip(grp_dt_start.tolist(), grp_nd.tolist(), grp_gt_start.tolist(),
                                  grp_ng.tolist()):
            blocks.append(mask_utils.iou(boxes[ds:ds + nd], g_box[gs:gs + ng],
                                         crowd[gs:gs + ng]).ravel())
    else:
        need = np.zeros(len(gorder), dtype=bool)
        for gs, ng in zip(grp_gt_start.tolist(), grp_ng.tolist()):
            need[gs:gs + ng] = True
        g_rles = [_gt_rle(anns[j], images[anns[j]["image_id"]]) if need[i] else None
                  for i, j in enumerate(gorder.tolist())]
        d_rles = [dets[j]["segmentation"] for j in dorder.tolist()]
        crowd = [int(c) for c in g_crowd[gorder].tolist()]
        for ds, nd, gs, ng in zip(grp_dt_start.tolist(), grp_nd.tolist(), grp_gt_start.tolist(),
                                  grp_ng.tolist()):
            blocks.append(np.asarray(mask_utils.iou(d_rles[ds:ds + nd], g_rles[gs:gs + ng],
                                                    crowd[gs:gs + ng]), dtype=float).ravel())
    ious = np.concatenate(blocks) if blocks else np.zeros(0)

    return Inputs(
        protocol=protocol, iou_type=iou_type, max_dets=max_dets, img_ids=img_ids, cat_ids=cat_ids,
        gt_group=gt_group, gt_id_nonzero=g_id_nonzero[gorder], gt_area=g_area[gorder], gt_ignore=g_ignore[gorder],
        gt_crowd=g_crowd[gorder], dt_group=dt_group, dt_score=d_score[dorder], dt_area=d_area[dorder],
        dt_rank=rank, dt_unlisted=d_unlisted[dorder], groups=groups, grp_dt_start=grp_dt_start,
        grp_nd=grp_nd, grp_gt_start=grp_gt_start, grp_ng=grp_ng, pair_start=pair_start, ious=ious)
