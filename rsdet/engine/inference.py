"""Inference to COCO results, evaluation of a trained run, and score-threshold sweeps with fps.

Supplementary Tables S10/S11: RS models keep their AP up to a 0.60 test threshold while inference
gets faster, because fewer (box, class) candidates reach NMS. ``evaluate_run`` measures both: one
inference pass at the lowest threshold gives every threshold's metrics (a detection above a
threshold is the same detection whichever threshold produced it), and a timed pass per threshold
(batch 1, after warm-up) gives images per second.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from rsdet.errors import RsdetError
from rsdet.records import atomic_write_text, dumps

log = logging.getLogger(__name__)


def pick_device(spec: str = "auto") -> torch.device:
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(spec).startswith("cuda") and not torch.cuda.is_available():
        raise RsdetError(f"device={spec} was requested but CUDA is not available; use device=cpu or device=auto")
    return torch.device(spec)


#: a detection's mask probability at or above this is inside the object (docs/evaluation.md, "Mask AP")
MASK_THRESHOLD = 0.5


def encode_masks(masks: torch.Tensor, threshold: float = MASK_THRESHOLD) -> list[dict]:
    """COCO RLE (``{"size": [h, w], "counts": str}``) of (n, 1, H, W) or (n, H, W) mask probabilities,
    binarised at ``probability >= threshold``."""
    import numpy as np
    from pycocotools import mask as mask_utils

    if masks.dim() == 4:
        masks = masks[:, 0]
    binary = (masks.float() >= threshold).to(torch.uint8).cpu().numpy()
    rles = []
    for m in binary:
        rle = mask_utils.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode("ascii")
        rles.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"]})
    return rles


def _to_coco(det: dict, image_id: int, category_ids: list[int]) -> list[dict]:
    """COCO result records of one image's detections; with ``masks`` (n, 1, H, W) probabilities in the
    image frame, each record also carries its ``segmentation`` RLE."""
    boxes = det["boxes"].float().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = det["scores"].float().cpu().tolist()
    labels = det["labels"].cpu().tolist()
    records = [
        {"image_id": int(image_id), "category_id": int(category_ids[c]), "bbox": [round(v, 2) for v in b],
         "score": round(float(s), 5)}
        for b, s, c in zip(xywh, scores, labels)
    ]
    if "masks" in det:
        for rec, rle in zip(records, encode_masks(det["masks"])):
            rec["segmentation"] = rle
    return records


def split_iou_types(dets: list[dict], types, detector: str = "?") -> dict[str, list[dict]]:
    """The results of each evaluated IoU type: the box results (records without masks) and, with segm,
    the mask results (``image_id``, ``category_id``, ``segmentation``, ``score``) of the same detections."""
    out = {"bbox": [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]}
    if "segm" in types:
        if any("segmentation" not in d for d in dets):
            raise RsdetError(f"eval.iou_types={list(types)}: detector={detector} returned detections without "
                             "masks, so mask AP cannot be evaluated; use eval.iou_types=[bbox]")
        out["segm"] = [{"image_id": d["image_id"], "category_id": d["category_id"], "segmentation": d["segmentation"],
                        "score": d["score"]} for d in dets]
    return out


def predictions_path_for(bbox_path: Path, iou_type: str) -> Path:
    """``predictions_bbox[...].json`` -> ``predictions_<iou_type>[...].json`` beside it."""
    bbox_path = Path(bbox_path)
    if iou_type == "bbox":
        return bbox_path
    if "bbox" in bbox_path.name:
        return bbox_path.with_name(bbox_path.name.replace("bbox", iou_type, 1))
    return bbox_path.with_name(f"{bbox_path.stem}_{iou_type}{bbox_path.suffix}")


@torch.no_grad()
def infer_images(model, dataset, device: torch.device, indices, progress=None, total: int | None = None
                 ) -> dict[int, list[dict]]:
    """Detections of ``model`` on the images ``indices`` of ``dataset`` in COCO results format (batch 1,
    original image size), by image index; the model's ``score_thresh`` applies."""
    model.eval()
    indices = list(indices)
    task = progress.add_task("evaluating", total=total or len(indices), info="") if progress is not None else None
    results: dict[int, list[dict]] = {}
    for i in indices:
        image, target = dataset[i]
        det = model([image.to(device)])[0]
        results[i] = _to_coco(det, target["image_id"], dataset.category_ids)
        if progress is not None:
            progress.advance(task)
    return results


def _num_images(dataset, max_images: int | None) -> int:
    return len(dataset) if max_images is None else min(len(dataset), int(max_images))


@torch.no_grad()
def run_inference(model, dataset, device: torch.device, score_thresh: float | None = None,
                  max_images: int | None = None, progress=None) -> list[dict]:
    """Detections of ``model`` on ``dataset`` in COCO results format (batch 1, original image size)."""
    if score_thresh is not None:
        model.score_thresh = float(score_thresh)
    per_image = infer_images(model, dataset, device, range(_num_images(dataset, max_images)), progress)
    return [d for i in sorted(per_image) for d in per_image[i]]


@torch.no_grad()
def measure_fps(model, dataset, device: torch.device, score_thresh: float, num_images: int = 50,
                warmup: int = 5) -> float:
    """Images per second at batch 1 after ``warmup`` images, at the given test score threshold."""
    model.eval()
    model.score_thresh = float(score_thresh)
    n = min(len(dataset), warmup + num_images)
    images = [dataset[i][0].to(device) for i in range(n)]
    for img in images[:warmup]:
        model([img])
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for img in images[warmup:]:
        model([img])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (n - warmup) / max(time.perf_counter() - start, 1e-9)


def eval_score_thresh(cfg: Any) -> float:
    """The test score threshold of a run: ``eval.score_thresh`` if set, else the detector's own
    (``detector.test_score_thresh``, ATSS/PAA 0.05), else the loss recipe's (RS 0.40, CE 0.05)."""
    from rsdet.models.detectors.base import test_score_thresh

    thr = cfg.eval.get("score_thresh")
    return test_score_thresh(cfg) if thr is None else float(thr)


def ground_truth_for(ann_file: str, dataset, max_images: int | None):
    """The ground truth the detections of ``run_inference(..., max_images)`` are scored against: the
    annotation file, or only its first ``max_images`` images (else the skipped images would count
    as missed objects)."""
    if not max_images:
        return ann_file
    keep = set(dataset.image_ids[: int(max_images)])
    data = json.loads(Path(ann_file).read_text())
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return data


def _run_dir_of(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path, path / "checkpoints" / "last.pt"
    if path.suffix == ".pt":
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return run_dir, path
    raise RsdetError(f"{path} is neither a run directory nor a .pt checkpoint")


def load_trained(path: Path, device: torch.device, allow_legacy: bool = False):
    """Rebuild a run's detector from its config.yaml and load its checkpoint, both read safely
    (no interpolation resolved, nothing unpickled but tensors and plain values; docs/resume.md)."""
    from rsdet.data.build import build_dataset
    from rsdet.engine.checkpoint import load_checkpoint
    from rsdet.models import build_detector
    from rsdet.records import load_run_config

    run_dir, ckpt = _run_dir_of(path)
    cfg = load_run_config(run_dir)
    state = load_checkpoint(ckpt, allow_legacy=allow_legacy)
    num_classes = state.get("extra", {}).get("num_classes")
    val = build_dataset(cfg.dataset, cfg.eval.split, train=False)
    model = build_detector(cfg, num_classes or val.num_classes)
    model.load_state_dict(state["model"])
    return cfg, model.to(device).eval(), val, run_dir


def iou_types_of(cfg: Any) -> list[str]:
    """``eval.iou_types`` as a list (bbox when unset)."""
    return list((cfg.get("eval") or {}).get("iou_types") or ["bbox"])


def check_iou_types(cfg: Any) -> list[str]:
    """``eval.iou_types``: bbox (box AP: every detector returns boxes, a mask-only one takes them from its
    masks) and segm (mask AP), the latter allowed exactly when the configured detector predicts masks
    (``Detector.predicts_masks``). Either may be evaluated alone. Returns the checked list."""
    from rsdet.models.build import available_detectors, detector_predicts_masks

    types = iou_types_of(cfg)
    unknown = sorted(set(types) - {"bbox", "segm"})
    if unknown:
        raise RsdetError(f"eval.iou_types={types}: {unknown} is not an evaluation type; use bbox and, with a mask "
                         "detector, segm (e.g. eval.iou_types=[bbox,segm])")
    if len(set(types)) != len(types):
        raise RsdetError(f"eval.iou_types={types} names a type twice; list each of bbox, segm once")
    if "segm" in types and not detector_predicts_masks(cfg.detector.name):
        mask_detectors = [name for name in available_detectors() if detector_predicts_masks(name)]
        raise RsdetError(f"eval.iou_types={types}: mask AP needs a mask detector, and detector="
                         f"{cfg.detector.name} predicts boxes only; use eval.iou_types=[bbox] or a mask detector "
                         f"({' or '.join('detector=' + name for name in mask_detectors)})")
    if "bbox" not in types and (cfg.get("eval") or {}).get("every_epochs"):
        # the training loop's periodic rows (metrics_history.jsonl, epoch<E>/AP) are keyed by box AP
        raise RsdetError(f"eval.iou_types={types} with eval.every_epochs={cfg.eval.every_epochs}: evaluation during "
                         "training records box AP; include bbox (eval.iou_types=[bbox,segm]) or unset "
                         "eval.every_epochs")
    if "segm" in types and not cfg.dataset.get("with_masks"):
        raise RsdetError(f"eval.iou_types={types}: mask AP needs the data set's instance masks, but "
                         "dataset.with_masks=false; set dataset.with_masks=true or eval.iou_types=[bbox]")
    return types


def evaluate_model(cfg: Any, model, dataset, device: torch.device, predictions_path: Path,
                   max_images: int | None = None, progress=None, dist=None) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` (the run's validation split) as configured by ``cfg``: inference
    at the run's test score threshold, the COCO results file written to ``predictions_path``, then
    COCO/LVIS AP and oLRP against the ground truth of the evaluated images.

    In a data-parallel run (``dist``, every rank calls this) rank ``r`` of ``W`` infers the images
    ``r, r + W, ...``, rank 0 gathers the detections in image order, writes and scores them, and
    returns the metrics; the other ranks return ``{}``.

    Used by training (``metrics.json``) and by ``rsdet evaluate RUN`` alike."""
    from rsdet.data.build import dataset_eval_info
    from rsdet.evaluation import evaluate

    types = check_iou_types(cfg)
    info = dataset_eval_info(cfg.dataset, cfg.eval.split)
    thr = eval_score_thresh(cfg)
    start = time.perf_counter()
    if dist is not None and dist.enabled:
        model.score_thresh = float(thr)
        n = _num_images(dataset, max_images)
        mine = infer_images(model, dataset, device, range(dist.rank, n, dist.world_size),
                            progress if dist.is_main else None, total=len(range(0, n, dist.world_size)))
        parts = dist.gather_object(mine)
        if not dist.is_main:
            return {}
        per_image = {i: d for part in parts for i, d in part.items()}
        dets = [d for i in sorted(per_image) for d in per_image[i]]
    else:
        dets = run_inference(model, dataset, device, thr, max_images, progress=progress)
    infer_s = time.perf_counter() - start
    per_type = split_iou_types(dets, types, cfg.detector.name)
    gt = ground_truth_for(info["ann_file"], dataset, max_images)
    result: dict[str, Any] = {}
    for iou_type in types:
        atomic_write_text(predictions_path_for(predictions_path, iou_type), dumps(per_type[iou_type], indent=None))
        result[iou_type] = evaluate(gt, per_type[iou_type], iou_type=iou_type, protocol=info["protocol"],
                                    max_dets=cfg.dataset.get("max_dets"))
    return {**result, "eval_seconds": time.perf_counter() - start, "inference_seconds": infer_s,
            "num_detections": len(dets), "score_thresh": thr}


def evaluate_run(path, score_thresholds=None, out_dir=None, device: str = "auto", max_images: int | None = None,
                 fps_images: int = 50, overwrite: bool = False, allow_legacy: bool = False) -> dict[str, Any]:
    """Evaluate a run directory or checkpoint on its configured validation split.

    Without ``score_thresholds`` the run's own test threshold is used (``evaluate_model``); the result
    goes beside a run's record, never over it (docs/records.md, "Writers"): ``metrics_eval.json`` and
    ``predictions_<type>_eval.json`` in a run directory (``predictions_<type>.json`` in another
    folder); with ``overwrite`` it replaces the run's ``predictions_<type>.json`` and its evaluation
    blocks in ``metrics.json`` (training time and ``epoch<E>`` blocks stay). With ``score_thresholds``,
    one row per threshold (metrics + fps) is returned and written as Markdown/CSV/LaTeX next to
    metrics.json.
    """
    from rsdet.data.build import dataset_eval_info
    from rsdet.evaluation import threshold_sweep, write_table
    from rsdet.records import METRICS_FILE, RunRecord, is_run_dir

    dev = pick_device(device)
    cfg, model, val, run_dir = load_trained(Path(path), dev, allow_legacy=allow_legacy)
    out = Path(out_dir) if out_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    if not score_thresholds:
        in_record = is_run_dir(out)
        beside = in_record and not overwrite
        result = evaluate_model(cfg, model, val, dev, out / ("predictions_bbox_eval.json" if beside else
                                                             "predictions_bbox.json"), max_images)
        if in_record and overwrite:
            record = RunRecord(out, create=False)
            atomic_write_text(out / METRICS_FILE, dumps({**(record.metrics or {}), **result}))
        else:
            atomic_write_text(out / "metrics_eval.json", dumps(result))
        return result
    types = check_iou_types(cfg)
    info = dataset_eval_info(cfg.dataset, cfg.eval.split)
    gt = ground_truth_for(info["ann_file"], val, max_images)
    thresholds = sorted(float(t) for t in score_thresholds)
    per_type = split_iou_types(run_inference(model, val, dev, thresholds[0], max_images), types, cfg.detector.name)
    fps = {t: measure_fps(model, val, dev, t, num_images=fps_images) for t in thresholds}
    result: dict[str, Any] = {"device": str(dev)}
    for iou_type in sorted(types):  # bbox before segm: the mask table shows the box AP of the same detections
        rows = threshold_sweep(gt, per_type[iou_type], thresholds, iou_type=iou_type,
                               protocol=info["protocol"], fps=fps, max_dets=cfg.dataset.get("max_dets"))
        columns = None
        if iou_type == "bbox":
            result["rows"] = rows
            stem = "threshold_sweep"
        else:
            # Table S11: mask AP (with APr/APc/APf on LVIS), the box AP of the same detections, oLRP, fps
            for row, box_row in zip(rows, result.get("rows") or []):
                row["metrics"]["APbox"] = box_row["metrics"]["AP"]
            columns = mask_sweep_columns(info["protocol"], with_box_ap="bbox" in types)
            result[f"rows_{iou_type}"] = rows
            stem = f"threshold_sweep_{iou_type}"
        write_table(rows, out, stem, columns=columns)
        (out / f"{stem}.json").write_text(dumps({"device": str(dev), "iou_type": iou_type, "rows": rows}))
    return result


def mask_sweep_columns(protocol: str, with_box_ap: bool = True) -> list[str]:
    """Columns of a mask-AP threshold sweep, laid out like supplementary Table S11 (APbox when box AP
    is evaluated too)."""
    head = ["AP", "APr", "APc", "APf"] if protocol == "lvis" else ["AP", "AP50", "AP75"]
    return head + (["APbox"] if with_box_ap else []) + ["oLRP", "fps"]
