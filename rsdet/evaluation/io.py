"""Loading and validating ground truth and detections before they reach the official evaluators.

pycocotools and lvis fail on bad input with bare ``assert``s, ``KeyError``s deep inside
``evaluate()`` or, worse, silently (a NaN score sorts arbitrarily, an unknown category is just
never evaluated). Everything here raises :class:`rsdet.errors.DataError` instead, naming the
file, the index of the first bad record and what is wrong with it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from rsdet.data.annotations import box_problem, check_annotations, is_finite, is_id, read_json
from rsdet.errors import DataError

__all__ = ["IOU_TYPES", "PROTOCOLS", "DEFAULT_MAX_DETS", "load_detections", "load_ground_truth", "read_json",
           "validate_detections"]

IOU_TYPES = ("bbox", "segm")
PROTOCOLS = ("coco", "lvis")
#: detections per image each protocol evaluates by default (COCO's 100, LVIS' 300)
DEFAULT_MAX_DETS = {"coco": 100, "lvis": 300}


def load_ground_truth(gt: str | Path | dict, protocol: str = "coco", check_masks: bool = False) -> tuple[dict, str]:
    """Return ``(dataset, source)``: a checked COCO/LVIS annotation dict and a name for messages.

    The checks are those of the training loader (:func:`rsdet.data.annotations.check_annotations`)
    plus what evaluation needs: annotation ``id`` and ``area``, and for LVIS the federated lists;
    ``check_masks`` (mask AP) also checks every segmentation (polygon/RLE) before pycocotools sees it.
    The returned dict is a shallow copy whose annotation records are copied too, because the
    evaluators write flags (``ignore``, ``_ignore``) and RLE masks into them; the caller's dict is
    left untouched. COCO-protocol evaluation of a file without ``iscrowd`` (LVIS files have none)
    treats every annotation as non-crowd instead of crashing in COCOeval.computeIoU.
    """
    if isinstance(gt, (str, Path)):
        source = f"Ground truth {gt}"
        data = read_json(gt, "Ground-truth")
    elif isinstance(gt, dict):
        source, data = "Ground truth <dict>", gt
    else:
        raise DataError(f"Ground truth must be a path or a dict, got {type(gt).__name__}.")
    check_annotations(data, source, protocol=protocol, for_evaluation=True, check_masks=check_masks)
    annotations = []
    for ann in data["annotations"]:
        ann = dict(ann)
        if protocol == "coco":
            ann.setdefault("iscrowd", 0)
        annotations.append(ann)
    return {**data, "annotations": annotations}, source


def load_detections(detections: str | Path | list) -> tuple[list, str]:
    """Return ``(records, source)`` for a COCO results file or an in-memory list (not yet checked)."""
    if isinstance(detections, (str, Path)):
        source = str(detections)
        data = read_json(detections, "Detections")
    elif isinstance(detections, (list, tuple)):
        source, data = "<detections list>", list(detections)
    else:
        raise DataError(f"Detections must be a path or a list, got {type(detections).__name__}.")
    if not isinstance(data, list):
        raise DataError(f"Detections {source} must be a JSON list of records (COCO results format: "
                        f"image_id, category_id, bbox, score), got a {type(data).__name__}.")
    return data, source


def _to_rle(seg: Any, img: dict) -> tuple[dict | None, str | None]:
    """Compressed RLE for a detection mask; polygons and uncompressed RLE are converted."""
    h, w = img.get("height"), img.get("width")
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        size = list(seg["size"]) if isinstance(seg["size"], (list, tuple)) else None
        if size is None or len(size) != 2:
            return None, f"'segmentation' RLE 'size' must be [height, width], got {seg['size']!r}"
        if h is not None and w is not None and size != [h, w]:
            return None, f"'segmentation' RLE size {size} differs from the image's [{h}, {w}]"
        if isinstance(seg["counts"], (str, bytes)):
            return seg, None
        if isinstance(seg["counts"], list):
            return mask_utils.frPyObjects(seg, size[0], size[1]), None
        return None, "'segmentation' RLE 'counts' must be a string (or a list of run lengths)"
    if isinstance(seg, list) and seg and h is not None and w is not None:
        try:
            return mask_utils.merge(mask_utils.frPyObjects(seg, h, w)), None
        except Exception:  # pycocotools raises plain Exceptions for malformed polygons
            return None, "'segmentation' polygon list is malformed"
    return None, "'segmentation' must be an RLE {'size': [h, w], 'counts': ...}"


_PLAIN_NUMBERS = frozenset({int, float})


def _plain_bbox_record(rec: Any, images: dict, categories: set) -> bool:
    """Fast acceptance of the common case (plain ints/floats); anything else gets the full check."""
    if type(rec) is not dict:
        return False
    im, cat, score, box = rec.get("image_id"), rec.get("category_id"), rec.get("score"), rec.get("bbox")
    if type(im) is not int or type(cat) is not int or im not in images or cat not in categories:
        return False
    if type(score) not in _PLAIN_NUMBERS or type(box) is not list or len(box) != 4:
        return False
    x, y, w, h = box
    if not (type(x) in _PLAIN_NUMBERS and type(y) in _PLAIN_NUMBERS
            and type(w) in _PLAIN_NUMBERS and type(h) in _PLAIN_NUMBERS):
        return False
    # a NaN/inf anywhere makes the sum non-finite; an overflow (sum, area, an int too large for a
    # float) just takes the slow path, which names the problem
    try:
        return math.isfinite(score + x + y + w + h + w * h) and w >= 0 and h >= 0
    except OverflowError:
        return False


def _checked_record(i: int, rec: Any, images: dict, categories: set, source: str,
                    iou_type: str) -> dict:
    """Full check of one record: a fixed-up copy, or a DataError naming what is wrong."""
    where = f"Detections {source}: record {i}"
    geometry = "bbox" if iou_type == "bbox" else "segmentation"
    if not isinstance(rec, dict):
        raise DataError(f"{where} is a {type(rec).__name__}, expected an object with "
                        f"image_id, category_id, {geometry}, score.")
    missing = [k for k in ("image_id", "category_id", geometry, "score") if k not in rec]
    if missing:
        raise DataError(f"{where} lacks {missing} (has {sorted(rec)}); iou_type={iou_type!r} "
                        f"needs image_id, category_id, {geometry}, score.")
    img = images.get(rec["image_id"]) if is_id(rec["image_id"]) else None
    if img is None:
        raise DataError(f"{where} has image_id {rec['image_id']!r}, which is not an image of "
                        f"the ground truth; were the detections made on another split?")
    if not is_id(rec["category_id"]) or rec["category_id"] not in categories:
        raise DataError(f"{where} has category_id {rec['category_id']!r}, which is not a "
                        f"category of the ground truth (map contiguous labels back to ids).")
    if not is_finite(rec["score"]):
        raise DataError(f"{where} has score {rec['score']!r}; scores must be finite numbers.")
    rec = dict(rec)
    if iou_type == "bbox":
        problem = box_problem(rec["bbox"])
    else:
        rec.pop("bbox", None)
        rec["segmentation"], problem = _to_rle(rec["segmentation"], img)
    if problem:
        raise DataError(f"{where}: {problem}.")
    return rec


def validate_detections(records: list, gt: dict, source: str, iou_type: str = "bbox") -> list[dict]:
    """Check every record and return copies ready for ``loadRes`` / ``LVISResults``.

    Copies, because both loaders write ``id``/``area``/``iscrowd`` into the records. For
    ``iou_type="segm"`` the ``bbox`` key is dropped so that the loaders take the area (which
    decides small/medium/large) from the mask, not from the box, as detectron2 and mmdetection do.
    The first bad record raises a DataError naming ``source``, its index and the problem.
    """
    images = {img["id"]: img for img in gt["images"]}
    categories = {cat["id"] for cat in gt["categories"]}
    if iou_type == "bbox":
        return [dict(rec) if _plain_bbox_record(rec, images, categories)
                else _checked_record(i, rec, images, categories, source, iou_type)
                for i, rec in enumerate(records)]
    return [_checked_record(i, rec, images, categories, source, iou_type)
            for i, rec in enumerate(records)]
