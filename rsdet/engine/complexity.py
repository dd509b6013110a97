"""Parameter count and FLOPs per image of a detector, for run.json (docs/visualisation.md, "Model size").

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions,
2 FLOPs per multiply-add; tools that count a multiply-add as one operation report half) over one
test-time forward pass of one image at the detector's input size: a mid-grey image of
``min_size`` x ``max_size`` pixels (``detector.min_size``/``max_size``, else the dataset's:
192 x 192 on the shapes data, 800 x 1333 for COCO).
The count of the parts that run per proposal or per detection depends on the image: the R-CNN box
head always sees the proposals kept at test time, a mask head only the detections, so a mask
detector's figure counts its mask head for the grey image's detections only (not at all when it finds
nothing there).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def input_size(cfg: Any) -> tuple[int, int]:
    """(height, width) FLOPs are counted at: the detector's resize target."""
    det, data = cfg.get("detector") or {}, cfg.get("dataset") or {}
    min_size = int(det.get("min_size") or data.get("min_size") or 800)
    max_size = int(det.get("max_size") or data.get("max_size") or min_size)
    return min_size, max(min_size, max_size)


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    params = list(model.parameters())
    return {"parameters": int(sum(p.numel() for p in params)),
            "trainable_parameters": int(sum(p.numel() for p in params if p.requires_grad))}


@torch.no_grad()
def count_flops(model: torch.nn.Module, height: int, width: int, device: torch.device | str = "cpu") -> int:
    """FLOPs of one eval-mode forward pass of a grey ``height`` x ``width`` image. The model's mode is
    restored and no RNG state is consumed."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    image = torch.full((3, height, width), 0.5, device=device)
    devices = [device] if torch.device(device).type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), FlopCounterMode(display=False) as counter:
            model([image])
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_complexity(model: torch.nn.Module, cfg: Any, device: torch.device | str = "cpu") -> dict[str, Any]:
    """``{"parameters", "trainable_parameters", "flops_per_image", "flops_input_size"}``;
    the FLOPs keys are absent (and a warning says why) if the count fails."""
    out: dict[str, Any] = parameter_counts(model)
    h, w = input_size(cfg)
    try:
        total = count_flops(model, h, w, device)
    except Exception as exc:  # never let a statistic end a run
        log.warning("FLOPs not counted (%s: %s)", type(exc).__name__, exc)
        return out
    out.update(flops_per_image=total, flops_input_size=[h, w])
    return out
