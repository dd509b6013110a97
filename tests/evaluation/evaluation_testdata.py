"""Shared helpers for tests/evaluation: data sets, perturbed detections, official references.

Not a test module (no ``test_`` prefix); test files import it after putting this folder on
``sys.path``. References call pycocotools / lvis directly and compute oLRP a second, independent
way (plain Python loop over prefixes, IoU recomputed from the raw geometry), so the tests compare
rsdet against the definition rather than against itself.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rsdet.evaluation._backends import import_lvis, quiet

HERE = Path(__file__).resolve().parent
LVIS_FIXTURE = HERE / "data" / "lvis_v0.5_val_100.json"
COCO_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
LVIS_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
# rsdet key -> LVISEval.results key at max_dets=N
LVIS_AR_KEYS = {"AR300": "AR@{}", "ARs300": "ARs@{}", "ARm300": "ARm@{}", "ARl300": "ARl@{}"}


def load_lvis() -> dict:
    return json.loads(LVIS_FIXTURE.read_text())


# ------------------------------------------------------------------------------------ geometry
def box_polygon(box):
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def rle_of(segmentation, h, w) -> dict:
    """Compressed RLE (JSON-able: counts as str) of a polygon list."""
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def shift_polygons(polys, dx, dy, sx=1.0, sy=1.0):
    out = []
    for p in polys:
        xs, ys = np.asarray(p[0::2], float), np.asarray(p[1::2], float)
        cx, cy = xs.mean(), ys.mean()
        xs, ys = cx + (xs - cx) * sx + dx, cy + (ys - cy) * sy + dy
        out.append([float(v) for xy in zip(xs, ys) for v in xy])
    return out


# ------------------------------------------------------------------------------------ data sets
def synthetic_coco(seed: int = 0, n_images: int = 24, n_cats: int = 4) -> dict:
    """COCO-format ground truth: boxes of all sizes, crowd regions, a category without objects."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        for _ in range(rng.integers(0, 7)):
            side = float(rng.choice([14, 60, 220]))  # small, medium and large objects
            w, h = side * rng.uniform(0.6, 1.4), side * rng.uniform(0.6, 1.4)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            box = [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]
            cat = int(rng.integers(1, n_cats))  # the last category never gets an object
            crowd = int(rng.random() < 0.08)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": crowd,
                         "segmentation": box_polygon(box)})
    # Masks smaller than their boxes, so mask area and box area disagree (segm size ranges).
    for a in anns:
        a["segmentation"] = shift_polygons(a["segmentation"], 0, 0, 0.7, 0.7)
        a["area"] = float(mask_utils.area(rle_of(a["segmentation"], 480, 640)))
    cats = [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in range(1, n_cats + 1)]
    return {"images": images, "annotations": anns, "categories": cats}


def perturbed_detections(gt: dict, seed: int = 1, iou_type: str = "bbox",
                         federated: bool = False) -> list[dict]:
    """Detections derived from ``gt``: jittered boxes, dropped objects, duplicates, false positives
    (random boxes; for LVIS also in negative, not-exhaustive and unannotated categories) and
    random scores, each kind of error a known quantity."""
    rng = np.random.default_rng(seed)
    imgs = {im["id"]: im for im in gt["images"]}
    cat_ids = [c["id"] for c in gt["categories"]]
    dets = []

    def add(img, cat, box, polys, score):
        d = {"image_id": img["id"], "category_id": int(cat), "score": round(float(score), 4),
             "bbox": [round(float(v), 2) for v in box]}
        if iou_type == "segm":
            d["segmentation"] = rle_of(polys, img["height"], img["width"])
        dets.append(d)

    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue  # dropped: a false negative
        img = imgs[a["image_id"]]
        x, y, w, h = a["bbox"]
        dx, dy = rng.normal(0, 0.07) * w, rng.normal(0, 0.07) * h
        sx, sy = math.exp(rng.normal(0, 0.1)), math.exp(rng.normal(0, 0.1))
        box = [x + dx + w * (1 - sx) / 2, y + dy + h * (1 - sy) / 2, w * sx, h * sy]
        polys = a["segmentation"] if isinstance(a["segmentation"], list) else box_polygon(a["bbox"])
        polys = shift_polygons(polys, dx, dy, sx, sy)
        add(img, a["category_id"], box, polys, rng.random())
        if rng.random() < 0.1:  # a duplicate: a false positive once the original matched
            add(img, a["category_id"], box, polys, rng.random())

    for img in gt["images"]:
        choices = [int(c) for c in rng.choice(cat_ids, 2)]
        if federated:
            choices += [int(rng.choice(img[k])) for k in ("neg_category_ids",
                                                           "not_exhaustive_category_ids") if img[k]]
        for cat in choices:
            w, h = rng.uniform(10, img["width"] / 2), rng.uniform(10, img["height"] / 2)
            box = [rng.uniform(0, img["width"] - w), rng.uniform(0, img["height"] - h), w, h]
            add(img, cat, box, box_polygon(box), rng.random() * 0.8)
    return dets


# ------------------------------------------------------------------------------------ references
def coco_reference(gt: dict, dets: list[dict], iou_type: str = "bbox", max_dets: int = 100,
                   drop_bbox: bool = True):
    """pycocotools, called as its README shows (bbox dropped for segm, as detectron2 does)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        dets = copy.deepcopy(dets)
        if iou_type == "segm" and drop_bbox:
            for d in dets:
                d.pop("bbox", None)
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), iou_type)
        ev.params.maxDets = [min(1, max_dets), min(10, max_dets), max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def lvis_reference(dets: list[dict], iou_type: str = "bbox", max_dets: int = 300):
    """The lvis package on the fixture file, as its README shows."""
    lvis = import_lvis()
    dets = copy.deepcopy(dets)
    if iou_type == "segm":
        for d in dets:
            d.pop("bbox", None)
    with quiet():
        gt = lvis.LVIS(str(LVIS_FIXTURE))
        ev = lvis.LVISEval(gt, lvis.LVISResults(gt, dets, max_dets=max_dets), iou_type)
        ev.params.max_dets = max_dets
        ev.run()
    return ev


def reference_olrp(ev, protocol: str, iou_type: str, tau: float = 0.5) -> dict:
    """Per-class (oLRP, Loc, FP, FN, threshold) straight from the definition, slowly.

    Reads only the TP/FP/ignored labels of the official per-image records (the matching oLRP is
    defined on); ranks with Python's stable sort and recomputes each TP's IoU from the raw
    geometry of the matched pair with ``pycocotools.mask.iou``.
    """
    if protocol == "coco":
        recs, p = ev.evalImgs, ev.params
        img_ids, cat_ids, n_area = p.imgIds, p.catIds, len(p.areaRng)
        keys = ("dtIds", "dtScores", "dtMatches", "dtIgnore", "gtIgnore")
        gt_anns, dt_anns, cut = ev.cocoGt.anns, ev.cocoDt.anns, p.maxDets[-1]
    else:
        recs, p = ev.eval_imgs, ev.params
        img_ids, cat_ids, n_area = p.img_ids, p.cat_ids, len(p.area_rng)
        keys = ("dt_ids", "dt_scores", "dt_matches", "dt_ignore", "gt_ignore")
        gt_anns, dt_anns, cut = ev.lvis_gt.anns, ev.lvis_dt.anns, None
    geo = "bbox" if iou_type == "bbox" else "segmentation"
    out = {}
    for k, cat in enumerate(cat_ids):
        entries = [e for e in recs[k * n_area * len(img_ids):(k * n_area + 1) * len(img_ids)] if e]
        num_gt = sum(int(g == 0) for e in entries for g in e[keys[4]])
        if num_gt == 0:
            continue
        ranked = []  # (score, label, iou)
        for e in entries:
            for j, (dt_id, score) in enumerate(list(zip(e[keys[0]], e[keys[1]]))[:cut]):
                gt_id, ignored = int(e[keys[2]][0][j]), bool(e[keys[3]][0][j])
                if ignored:
                    ranked.append((score, "ign", 0.0))
                elif gt_id:
                    iou = mask_utils.iou([dt_anns[dt_id][geo]], [gt_anns[gt_id][geo]], [0])[0][0]
                    ranked.append((score, "tp", float(iou)))
                else:
                    ranked.append((score, "fp", 0.0))
        ranked.sort(key=lambda r: -r[0])  # stable
        best = None
        n_tp = n_fp = 0
        loc = 0.0
        for score, label, iou in ranked:
            n_tp += label == "tp"
            n_fp += label == "fp"
            loc += (1 - iou) if label == "tp" else 0.0
            n_fn = num_gt - n_tp
            lrp = (loc / (1 - tau) + n_fp + n_fn) / (n_tp + n_fp + n_fn)
            if best is None or lrp < best[0]:
                best = (lrp, loc / n_tp if n_tp else math.nan,
                        n_fp / (n_tp + n_fp) if n_tp + n_fp else math.nan, n_fn / num_gt, score)
        if n_tp == 0:
            best = (1.0, math.nan, math.nan, 1.0, math.nan)
        out[int(cat)] = best
    return out


def mean_defined(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else -1.0
