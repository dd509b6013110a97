"""``evaluate()``: COCO/LVIS AP from the official evaluators plus optimal LRP, in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.cocoeval import COCOeval

from rsdet.errors import ConfigError
from rsdet.evaluation import _backends as backends
from rsdet.evaluation.io import (DEFAULT_MAX_DETS, IOU_TYPES, PROTOCOLS, load_detections,
                                 load_ground_truth, validate_detections)
from rsdet.evaluation.lrp import ClassLRP, class_lrp, summarize_lrp

COCO_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
LVIS_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
# LVISEval.results names these "AR@300", "ARs@300", ... after its max_dets; like COCO's AR100, the
# rsdet key keeps the default count in its name and holds AR at ``max_dets`` (docs/evaluation.md).
LVIS_AR_KEYS = ("AR300", "ARs300", "ARm300", "ARl300")
LRP_KEYS = ("oLRP", "oLRP_Loc", "oLRP_FP", "oLRP_FN")
#: the metrics ``rsdet train`` prints when a run ends (every protocol has them)
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl") + LRP_KEYS
LVIS_LRP_GROUP_KEYS = ("oLRPr", "oLRPc", "oLRPf")


def metric_keys(protocol: str) -> tuple[str, ...]:
    """The keys ``evaluate`` returns for a protocol, in display order (without ``per_class``)."""
    if protocol == "lvis":
        return LVIS_AP_KEYS + LVIS_AR_KEYS + LRP_KEYS + LVIS_LRP_GROUP_KEYS
    return COCO_AP_KEYS + LRP_KEYS


def check_options(iou_type: str, protocol: str, max_dets: int | None) -> int:
    """Validate the options shared by evaluate and threshold_sweep; return the max detections."""
    if iou_type not in IOU_TYPES:
        raise ConfigError(f"iou_type={iou_type!r} is not supported; use one of {IOU_TYPES}.")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={protocol!r} is not supported; use one of {PROTOCOLS}.")
    if max_dets is None:
        return DEFAULT_MAX_DETS[protocol]
    if isinstance(max_dets, bool) or not isinstance(max_dets, (int, np.integer)) or max_dets < 1:
        raise ConfigError(f"max_dets={max_dets!r} must be a positive integer (detections per image).")
    return int(max_dets)


def evaluate(gt: str | Path | dict, detections: str | Path | list, iou_type: str = "bbox",
             protocol: str = "coco", max_dets: int | None = None, per_class: bool = False,
             verbose: bool = False) -> dict[str, Any]:
    """Evaluate COCO-format detections with pycocotools/lvis AP and optimal LRP.

    Args:
        gt: COCO or LVIS annotation JSON (path) or the loaded dict (not modified).
        detections: COCO results JSON (path) or the list of records ``image_id``,
            ``category_id``, ``bbox`` [x, y, w, h], ``score`` and, for ``iou_type="segm"``,
            ``segmentation`` as RLE. For segm the area deciding small/medium/large is the mask's.
        iou_type: ``"bbox"`` or ``"segm"``.
        protocol: ``"coco"`` (pycocotools COCOeval) or ``"lvis"`` (lvis LVISEval, federated
            rules for negative / not-exhaustive categories).
        max_dets: detections per image; default 100 (COCO) / 300 (LVIS). The AR keys keep
            their names (COCO AR1/AR10/AR100, LVIS AR300/ARs300/ARm300/ARl300) and the last
            COCO one and the LVIS ones are measured at ``max_dets``.
        per_class: also return ``"per_class"``: ``{category_id: {"name", "AP", "oLRP",
            "oLRP_Loc", "oLRP_FP", "oLRP_FN", "lrp_optimal_threshold"}}`` for every class with
            ground truth (AP at IoU .50:.95, area all).
        verbose: let the evaluators print their usual progress and tables.

    Returns:
        Fractions in [0, 1] (−1 where undefined, as pycocotools does). coco: AP, AP50, AP75, APs,
        APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (= ``COCOeval.stats``), oLRP, oLRP_Loc, oLRP_FP,
        oLRP_FN. lvis: AP, AP50, AP75, APs, APm, APl, APr, APc, APf, AR300, ARs300, ARm300, ARl300 (= ``LVISEval.results``; the
        AR keys are its ``AR@<max_dets>``, ``ARs@<max_dets>``, ...), oLRP,
        oLRP_Loc, oLRP_FP, oLRP_FN, oLRPr, oLRPc, oLRPf. oLRP follows Oksuz et al., TPAMI 2021
        (see :mod:`rsdet.evaluation.lrp`) under the evaluator's own matching at IoU 0.5.

    Raises:
        rsdet.errors.DataError: missing/unreadable files or a malformed record (named by index).
        rsdet.errors.ConfigError: unknown ``iou_type``/``protocol`` or a bad ``max_dets``.
    """
    max_dets = check_options(iou_type, protocol, max_dets)
    dataset, _ = load_ground_truth(gt, protocol, check_masks=iou_type == "segm")
    records, source = load_detections(detections)
    dets = validate_detections(records, dataset, source, iou_type)
    # load_ground_truth / validate_detections returned fresh copies: no need to copy again
    return evaluate_prepared(dataset, dets, iou_type, protocol, max_dets, per_class, verbose,
                             copy_records=False)


def evaluate_prepared(dataset: dict, dets: list[dict], iou_type: str, protocol: str,
                      max_dets: int, per_class: bool = False, verbose: bool = False,
                      copy_records: bool = True) -> dict:
    """``evaluate`` on inputs already passed through :mod:`rsdet.evaluation.io` (no re-checks).

    With ``copy_records`` it works on copies of the annotation and detection records, which the
    evaluators write into, so one prepared dataset can be evaluated many times (sweeps).
    """
    if copy_records:
        dataset = {**dataset, "annotations": [dict(a) for a in dataset["annotations"]]}
        dets = [dict(d) for d in dets]
    with backends.quiet(verbose):
        if protocol == "coco":
            ev, metrics, class_ap = _run_coco(dataset, dets, iou_type, max_dets)
        else:
            ev, metrics, class_ap = _run_lvis(dataset, dets, iou_type, max_dets)
    lrp = class_lrp(ev, protocol)
    groups = None
    if protocol == "lvis":
        groups = {g: [c["id"] for c in dataset["categories"] if c["frequency"] == g]
                  for g in ("r", "c", "f")}
    metrics.update(summarize_lrp(lrp, groups))
    if per_class:
        names = {c["id"]: c.get("name", str(c["id"])) for c in dataset["categories"]}
        metrics["per_class"] = {cat: _class_entry(names[cat], class_ap.get(cat, -1.0), lrp[cat])
                                for cat in sorted(lrp)}
    return metrics


def _class_entry(name: str, ap: float, c: ClassLRP) -> dict[str, Any]:
    def defined(x: float) -> float:
        return -1.0 if np.isnan(x) else float(x)

    return {"name": name, "AP": ap, "oLRP": defined(c.olrp), "oLRP_Loc": defined(c.loc),
            "oLRP_FP": defined(c.fp), "oLRP_FN": defined(c.fn),
            "lrp_optimal_threshold": defined(c.threshold)}


def _class_ap(precision: np.ndarray, cat_ids: list[int]) -> dict[int, float]:
    """Per-class AP from a (T, R, K) precision slice at area all, mean over defined values."""
    out = {}
    for k, cat in enumerate(cat_ids):
        p = precision[:, :, k]
        p = p[p > -1]
        out[int(cat)] = float(p.mean()) if p.size else -1.0
    return out


def _run_coco(dataset: dict, dets: list[dict], iou_type: str, max_dets: int):
    gt = backends.coco_gt(dataset)
    ev = COCOeval(gt, backends.coco_results(gt, dets), iou_type)
    # summarize() reads AR1/AR10/AR100 from maxDets[0..2]; keep three entries, capped at max_dets.
    ev.params.maxDets = [min(1, max_dets), min(10, max_dets), max_dets]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    metrics = {k: float(v) for k, v in zip(COCO_AP_KEYS, ev.stats)}
    # precision: (T, R, K, A, M); area "all" is index 0, max_dets the last entry.
    class_ap = _class_ap(ev.eval["precision"][:, :, :, 0, -1], ev.params.catIds)
    return ev, metrics, class_ap


def _run_lvis(dataset: dict, dets: list[dict], iou_type: str, max_dets: int):
    lvis = backends.import_lvis()
    gt = backends.lvis_gt(dataset)
    ev = lvis.LVISEval(gt, backends.lvis_results(dataset, dets, max_dets), iou_type)
    ev.params.max_dets = max_dets
    ev.run()
    metrics = {k: float(ev.results[k]) for k in LVIS_AP_KEYS}
    for key, area in zip(LVIS_AR_KEYS, ("", "s", "m", "l")):
        metrics[key] = float(ev.results[f"AR{area}@{max_dets}"])
    # precision: (T, R, K, A); area "all" is index 0.
    class_ap = _class_ap(ev.eval["precision"][:, :, :, 0], ev.params.cat_ids)
    return ev, metrics, class_ap
