"""Precision-recall curves of an evaluation, one per IoU threshold (for the W&B plots).

A curve is COCOeval's (or LVISEval's) interpolated precision at the 101 recall points 0, 0.01, ..., 1,
averaged over the classes where it is defined (area "all", the last max-detections setting) — the
array whose mean over recall points, classes and IoU thresholds is AP (docs/evaluation.md).

HOOK (issue 20, item 4): the evaluator does not return that array yet, so :func:`pr_curves` runs the
matching and accumulation once more on the predictions file. When ``evaluate()`` returns it (a
``"precision"`` entry of the metrics, shape (T, R, K)), :func:`curves_from_precision` is used instead
and the recomputation goes away.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: COCO's IoU thresholds .50:.05:.95 and its recall points
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
RECALL_POINTS = tuple(round(0.01 * i, 2) for i in range(101))


def curves_from_precision(precision: np.ndarray) -> dict[float, list[float]]:
    """{IoU threshold: precision at each recall point} from a (T, R, K) precision array (-1 where
    undefined), averaged over the classes with a defined value at that point (-1 where none)."""
    precision = np.asarray(precision, dtype=np.float64)
    curves = {}
    for t, thr in enumerate(IOU_THRESHOLDS[: precision.shape[0]]):
        p = precision[t]  # (R, K)
        defined = p > -1
        count = defined.sum(axis=1)
        total = np.where(defined, p, 0.0).sum(axis=1)
        curves[thr] = [float(s / c) if c else -1.0 for s, c in zip(total, count)]
    return curves


def pr_curves(gt, predictions: str | Path | list, iou_type: str = "bbox", protocol: str = "coco",
              max_dets: int | None = None, metrics: dict | None = None) -> dict[float, list[float]]:
    """The PR curves of ``predictions`` (a COCO results file or list) against ``gt`` (annotation file or
    dict). ``metrics``: the evaluator's output for them; its ``"precision"`` array is used when present."""
    if metrics is not None and metrics.get("precision") is not None:
        return curves_from_precision(np.asarray(metrics["precision"]))
    from pycocotools.cocoeval import COCOeval

    from rsdet.evaluation import _backends as backends
    from rsdet.evaluation.evaluator import check_options
    from rsdet.evaluation.io import load_detections, load_ground_truth, validate_detections

    max_dets = check_options(iou_type, protocol, max_dets)
    dataset, _ = load_ground_truth(gt, protocol, check_masks=iou_type == "segm")
    records, source = load_detections(predictions)
    dets = validate_detections(records, dataset, source, iou_type)
    with backends.quiet():
        if protocol == "coco":
            coco = backends.coco_gt(dataset)
            ev = COCOeval(coco, backends.coco_results(coco, dets), iou_type)
            ev.params.maxDets = [min(1, max_dets), min(10, max_dets), max_dets]
            ev.evaluate()
            ev.accumulate()
            precision = ev.eval["precision"][:, :, :, 0, -1]
        else:
            lvis = backends.import_lvis()
            ev = lvis.LVISEval(backends.lvis_gt(dataset), backends.lvis_results(dataset, dets, max_dets), iou_type)
            ev.params.max_dets = max_dets
            ev.evaluate()
            ev.accumulate()
            precision = ev.eval["precision"][:, :, :, 0]
    return curves_from_precision(precision)
