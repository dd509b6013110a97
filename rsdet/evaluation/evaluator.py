"""``evaluate()``: COCO/LVIS AP (official evaluators or the equal fast backend) plus optimal LRP."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.cocoeval import COCOeval

from rsdet.errors import ConfigError
from rsdet.evaluation import _backends as backends
from rsdet.evaluation.io import (DEFAULT_MAX_DETS, IOU_TYPES, PROTOCOLS, load_detections,
                                 load_ground_truth, validate_detections)
from rsdet.evaluation.lrp import ClassLRP, class_lrp, summarize_lrp

#: eval.backend / ``rsdet evaluate --backend``: auto = fast (equal to the official evaluators on
#: every number, docs/evaluation.md "The fast path"); official = pycocotools / lvis themselves
BACKENDS = ("auto", "official", "fast")

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


def resolve_backend(backend: str) -> str:
    """``official`` or ``fast`` for a configured backend (``auto`` is ``fast``: proven equal on
    both protocols and IoU types); a ConfigError names the allowed values."""
    if backend not in BACKENDS:
        raise ConfigError(f"eval.backend={backend!r} is not one of {', '.join(BACKENDS)} (auto: the fast "
                          f"backend, equal to pycocotools / lvis; official: those evaluators themselves).")
    return "official" if backend == "official" else "fast"


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
             verbose: bool = False, backend: str = "auto") -> dict[str, Any]:
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
        per_class: also return ``"per_class"``: ``{category_id: {"name", "AP", "AP50", "oLRP",
            "oLRP_Loc", "oLRP_FP", "oLRP_FN", "lrp_optimal_threshold", "num_gt"[, "frequency"]}}``
            for every class with ground truth (AP at area all; LVIS adds the frequency group), and
            ``"pr_curve"``: ``{"recall": [101 points], "AP": [...], "AP50": [...], "AP75": [...]}``,
            the interpolated precision at each recall point averaged over classes (and for "AP"
            over the IoU thresholds .50:.95).
        verbose: let the official evaluators print their usual progress and tables.
        backend: ``"auto"`` / ``"fast"`` (rsdet.evaluation.fast, the same numbers, several times
            faster) or ``"official"`` (pycocotools / lvis themselves).

    Returns:
        Fractions in [0, 1] (−1 where undefined, as pycocotools does). coco: AP, AP50, AP75, APs,
        APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (= ``COCOeval.stats``), oLRP, oLRP_Loc, oLRP_FP,
        oLRP_FN. lvis: AP, AP50, AP75, APs, APm, APl, APr, APc, APf, AR300, ARs300, ARm300,
        ARl300 (= ``LVISEval.results``; the AR keys are its ``AR@<max_dets>``, ...), oLRP,
        oLRP_Loc, oLRP_FP, oLRP_FN, oLRPr, oLRPc, oLRPf. oLRP follows Oksuz et al., TPAMI 2021
        (see :mod:`rsdet.evaluation.lrp`) under the evaluator's own matching at IoU 0.5.

    Raises:
        rsdet.errors.DataError: missing/unreadable files or a malformed record (named by index).
        rsdet.errors.ConfigError: unknown ``iou_type``/``protocol``/``backend`` or a bad ``max_dets``.
    """
    max_dets = check_options(iou_type, protocol, max_dets)
    resolve_backend(backend)
    dataset, _ = load_ground_truth(gt, protocol, check_masks=iou_type == "segm")
    records, source = load_detections(detections)
    dets = validate_detections(records, dataset, source, iou_type)
    # load_ground_truth / validate_detections returned fresh copies: no need to copy again
    return evaluate_prepared(dataset, dets, iou_type, protocol, max_dets, per_class, verbose,
                             copy_records=False, backend=backend)


@dataclass
class Outcome:
    """What either backend hands to :func:`finish`: the AP/AR metrics under rsdet's keys, the
    precision array at area all and the last max-detections cut (T, R, K) with the category ids of
    its K axis, and oLRP per category."""

    metrics: dict[str, float]
    precision: np.ndarray
    cat_ids: list[int]
    lrp: dict[int, ClassLRP]


def evaluate_prepared(dataset: dict, dets: list[dict], iou_type: str, protocol: str,
                      max_dets: int, per_class: bool = False, verbose: bool = False,
                      copy_records: bool = True, backend: str = "auto") -> dict:
    """``evaluate`` on inputs already passed through :mod:`rsdet.evaluation.io` (no re-checks).

    With ``copy_records`` the official backend works on copies of the annotation and detection
    records, which those evaluators write into, so one prepared dataset can be evaluated many
    times (sweeps); the fast backend never writes into them.
    """
    if resolve_backend(backend) == "fast":
        from rsdet.evaluation.fast import FastEvaluation  # noqa: PLC0415

        summary = FastEvaluation(dataset, dets, iou_type, protocol, max_dets).summary()
        return finish(fast_outcome(summary, protocol), dataset, protocol, per_class)
    if copy_records:
        dataset = {**dataset, "annotations": [dict(a) for a in dataset["annotations"]]}
        dets = [dict(d) for d in dets]
    with backends.quiet(verbose):
        if protocol == "coco":
            ev, metrics, precision, cat_ids = _run_coco(dataset, dets, iou_type, max_dets)
        else:
            ev, metrics, precision, cat_ids = _run_lvis(dataset, dets, iou_type, max_dets)
    return finish(Outcome(metrics, precision, cat_ids, class_lrp(ev, protocol)), dataset, protocol,
                  per_class)


def fast_outcome(summary: Any, protocol: str) -> Outcome:
    """An :class:`Outcome` from :class:`rsdet.evaluation.fast.Summary` (rsdet's key names)."""
    stats = summary.stats
    if protocol == "coco":
        metrics = {k: float(v) for k, v in zip(COCO_AP_KEYS, stats)}
    else:
        metrics = {k: float(stats[k]) for k in LVIS_AP_KEYS}
        for key, area in zip(LVIS_AR_KEYS, ("", "s", "m", "l")):
            metrics[key] = float(stats[f"AR{area}"])
    return Outcome(metrics, summary.precision, summary.cat_ids, summary.lrp)


def finish(outcome: Outcome, dataset: dict, protocol: str, per_class: bool) -> dict[str, Any]:
    """The metrics dict: AP/AR, oLRP means (and LVIS groups), optionally per class and PR curves."""
    metrics = dict(outcome.metrics)
    groups = None
    if protocol == "lvis":
        groups = {g: [c["id"] for c in dataset["categories"] if c["frequency"] == g]
                  for g in ("r", "c", "f")}
    metrics.update(summarize_lrp(outcome.lrp, groups))
    if per_class:
        cats = {c["id"]: c for c in dataset["categories"]}
        column = {cat: k for k, cat in enumerate(outcome.cat_ids)}
        metrics["per_class"] = {
            cat: _class_entry(cats[cat], outcome.precision[:, :, column[cat]], outcome.lrp[cat], protocol)
            for cat in sorted(outcome.lrp)}
        metrics["pr_curve"] = pr_curve(outcome.precision)
    return metrics


def _defined_mean(p: np.ndarray) -> float:
    p = p[p > -1]
    return float(p.mean()) if p.size else -1.0


def _class_entry(cat: dict, precision: np.ndarray, c: ClassLRP, protocol: str) -> dict[str, Any]:
    """One class: AP over IoU .50:.95 and AP50 from its (T, R) precision, oLRP and components."""
    def defined(x: float) -> float:
        return -1.0 if np.isnan(x) else float(x)

    entry = {"name": cat.get("name", str(cat["id"])), "AP": _defined_mean(precision),
             "AP50": _defined_mean(precision[0]), "oLRP": defined(c.olrp), "oLRP_Loc": defined(c.loc),
             "oLRP_FP": defined(c.fp), "oLRP_FN": defined(c.fn),
             "lrp_optimal_threshold": defined(c.threshold), "num_gt": int(c.num_gt)}
    if protocol == "lvis":
        entry["frequency"] = cat["frequency"]
    return entry


def pr_curve(precision: np.ndarray) -> dict[str, list[float]]:
    """Precision at the 101 recall points, mean over the classes with ground truth: at IoU 0.5
    (``AP50``), 0.75 (``AP75``) and averaged over .50:.95 (``AP``); −1 where no class is defined."""
    from rsdet.evaluation._fast_inputs import REC_THRS  # noqa: PLC0415

    def curve(p: np.ndarray) -> list[float]:  # p: (..., R, K) -> mean over the other axes per R
        p = np.moveaxis(p, -2, 0).reshape(p.shape[-2], -1)
        return [_defined_mean(row) for row in p]

    return {"recall": [float(r) for r in REC_THRS], "AP": curve(precision),
            "AP50": curve(precision[0]), "AP75": curve(precision[5])}


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
    return ev, metrics, ev.eval["precision"][:, :, :, 0, -1], list(ev.params.catIds)


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
    return ev, metrics, ev.eval["precision"][:, :, :, 0], list(ev.params.cat_ids)
