"""What the W&B logger shows of an evaluation beyond scalars (docs/visualisation.md, "W&B media").

- a ``wandb.Table`` of a fixed set of validation images (the first ``logger.media_images``): each
  row one image as a ``wandb.Image`` with two box layers (``predictions`` with scores,
  ``ground_truth``) and, for mask detectors, two mask layers, plus per-image numbers: detections,
  ground-truth objects, true positives at IoU 0.5 (greedy by score, same class), precision and
  recall there, and the mean detection score;
- PR curves from the evaluation's own ``pr_curve`` block: IoU 0.50, 0.75 and the mean over .50:.95
  (:mod:`rsdet.vis.pr`);
- the oLRP components (oLRP, localisation, FP, FN errors; Oksuz et al., TPAMI 2021) as a bar chart;
- the final checkpoint and the run record as an Artifact of type ``model``.

Nothing here changes the model's state or draws random numbers from the training RNGs (inference
runs under ``torch.random.fork_rng``), so an evaluation with media leaves an exact resume exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from rsdet.vis.draw import MASK_THRESHOLD, to_uint8

#: the run record files an artifact carries beside the checkpoint (docs/records.md)
RECORD_FILES = ("config.yaml", "run.json", "metrics.json", "history.jsonl", "metrics_history.jsonl")


def match_at_iou(det: dict, target: dict, iou: float = 0.5) -> int:
    """True positives of one image: detections in descending score order each take the unmatched
    ground-truth object of their class with the highest IoU >= ``iou``."""
    boxes, gt = det["boxes"], target["boxes"]
    if len(boxes) == 0 or len(gt) == 0:
        return 0
    ious = box_iou(boxes.float(), gt.float())
    same = det["labels"][:, None] == target["labels"][None, :]
    ious = torch.where(same, ious, torch.full_like(ious, -1.0))
    taken = torch.zeros(len(gt), dtype=torch.bool)
    tp = 0
    for i in torch.argsort(det["scores"], descending=True).tolist():
        row = ious[i].masked_fill(taken, -1.0)
        j = int(row.argmax())
        if row[j] >= iou:
            taken[j] = True
            tp += 1
    return tp


def image_scores(det: dict, target: dict) -> dict[str, float]:
    """The per-image numbers of a table row."""
    n_det, n_gt = len(det["boxes"]), len(target["boxes"])
    tp = match_at_iou(det, target)
    return {"detections": n_det, "objects": n_gt, "tp50": tp,
            "precision50": tp / n_det if n_det else (1.0 if n_gt == 0 else 0.0),
            "recall50": tp / n_gt if n_gt else 1.0,
            "mean_score": float(det["scores"].float().mean()) if n_det else 0.0}


def _box_layer(boxes: torch.Tensor, labels: torch.Tensor, names: list[str], scores=None) -> dict:
    data = []
    for k, (b, lab) in enumerate(zip(boxes.tolist(), labels.tolist())):
        entry = {"position": {"minX": b[0], "minY": b[1], "maxX": b[2], "maxY": b[3]}, "domain": "pixel",
                 "class_id": int(lab), "box_caption": names[lab] if lab < len(names) else str(lab)}
        if scores is not None:
            entry["scores"] = {"score": float(scores[k])}
            entry["box_caption"] += f" {float(scores[k]):.2f}"
        data.append(entry)
    return {"box_data": data, "class_labels": {k: n for k, n in enumerate(names)}}


def _label_map(masks: torch.Tensor, labels: torch.Tensor, order: list[int], shape) -> np.ndarray:
    """One (H, W) class map of instance masks (class k drawn as k + 1, 0 background); later entries
    of ``order`` are painted over earlier ones."""
    out = np.zeros(shape, dtype=np.uint8 if len(labels) == 0 or int(labels.max()) < 255 else np.int32)
    for i in order:
        out[masks[i].numpy()] = int(labels[i]) + 1
    return out


def wandb_image(wandb, image: torch.Tensor, det: dict, target: dict, names: list[str]):
    """A ``wandb.Image`` of one validation image with predicted and ground-truth boxes (and masks)."""
    pixels = to_uint8(image).permute(1, 2, 0).contiguous().numpy()
    boxes = {"predictions": _box_layer(det["boxes"], det["labels"], names, det["scores"]),
             "ground_truth": _box_layer(target["boxes"], target["labels"], names)}
    masks = {}
    mask_names = {0: "background", **{k + 1: n for k, n in enumerate(names)}}
    if "masks" in det:
        m = det["masks"][:, 0] >= MASK_THRESHOLD if det["masks"].dim() == 4 else det["masks"] >= MASK_THRESHOLD
        order = torch.argsort(det["scores"]).tolist()  # the best-scoring mask on top
        masks["predictions"] = {"mask_data": _label_map(m, det["labels"], order, pixels.shape[:2]),
                                "class_labels": mask_names}
    if "masks" in target:
        m = target["masks"].bool()
        masks["ground_truth"] = {"mask_data": _label_map(m, target["labels"], list(range(len(m))), pixels.shape[:2]),
                                 "class_labels": mask_names}
    return wandb.Image(pixels, boxes=boxes, masks=masks or None)


COLUMNS = ["image_id", "image", "detections", "objects", "tp50", "precision50", "recall50", "mean_score"]


@torch.no_grad()
def predictions_table(wandb, model, dataset, device: torch.device, count: int):
    """The ``wandb.Table`` of the first ``count`` images of ``dataset`` (the model is put back in the
    mode it was in)."""
    names = list(getattr(dataset, "category_names", []) or [str(k) for k in range(model.num_classes)])
    table = wandb.Table(columns=COLUMNS)
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            for index in range(min(int(count), len(dataset))):
                image, target = dataset[index]
                det = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
                scores = image_scores(det, target)
                table.add_data(target["image_id"], wandb_image(wandb, image, det, target, names),
                               *(scores[c] for c in COLUMNS[2:]))
    finally:
        model.train(was_training)
    return table


def pr_plot(wandb, curves: dict[str, list[float]], title: str):
    """One line per curve of an evaluation's ``pr_curve`` block (``rsdet.vis.pr.read_pr_curve``: IoU
    0.50, 0.75 and the mean over .50:.95) over recall; undefined points (-1) are left out of a line."""
    from rsdet.vis.pr import CURVES, defined_points

    xs, ys, keys = [], [], []
    for key, label in CURVES:
        x, y = defined_points(curves["recall"], curves[key])
        if not x:
            continue
        xs.append(x)
        ys.append(y)
        keys.append(f"{label} ({key})")
    if not keys:
        return None
    return wandb.plot.line_series(xs=xs, ys=ys, keys=keys, title=title, xname="recall")


def olrp_plot(wandb, metrics: dict, title: str):
    """A bar chart of oLRP and its components (lower is better)."""
    keys = [k for k in ("oLRP", "oLRP_Loc", "oLRP_FP", "oLRP_FN") if isinstance(metrics.get(k), (int, float))]
    if not keys:
        return None
    table = wandb.Table(columns=["component", "value"], data=[[k, float(metrics[k])] for k in keys])
    return wandb.plot.bar(table, "component", "value", title=title)


def record_artifact(wandb, run_dir: Path, name: str, status: str, metadata: dict[str, Any] | None = None):
    """An Artifact (type ``model``) with ``checkpoints/last.pt`` and the run record files, or None when
    there is no checkpoint. ``run.json`` goes in with ``status`` (the record's own file is closed by the
    caller after the logger finishes)."""
    ckpt = run_dir / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        return None
    artifact = wandb.Artifact(name, type="model", metadata=metadata or {})
    artifact.add_file(str(ckpt), name="checkpoints/last.pt")
    for file in RECORD_FILES:
        path = run_dir / file
        if not path.is_file():
            continue
        if file == "run.json":
            try:
                info = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            info["status"] = status
            with artifact.new_file("run.json", mode="w", encoding="utf-8") as fh:
                fh.write(json.dumps(info, indent=2) + "\n")
        else:
            artifact.add_file(str(path), name=file)
    return artifact
