"""Detector weights from a torchvision state-dict file: ``detector.init=torchvision:<model>[-backbone]:<PATH>``.

``<model>`` is one of torchvision's ``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn`` and
``retinanet_resnet50_fpn``; ``PATH`` a local file of that model's ``state_dict()`` (never downloaded;
``=PATH`` works too when quoted). Without ``-backbone`` the whole torchvision Faster R-CNN / Mask R-CNN
is mapped into rsdet's (detector=faster_rcnn / mask_rcnn with the softmax recipe, loss=ce); with it,
only the ResNet + FPN, into any detector whose backbone has the same layout (the Faster/Mask R-CNN
files: P2-P6 for the R-CNN detectors; RetinaNet's: P3-P7 for ATSS, PAA, YOLACT). A key of the file
that maps nowhere, a weight of the detector the file does not fill, or a shape that differs is an
error listing them. docs/visualisation.md ("Weights from torchvision") gives the key mapping and the
settings under which rsdet's detections equal torchvision's.

The mapping (torchvision -> rsdet), beside identical names (``backbone.*``, ``rpn.head.*``):

- ``roi_heads.box_head.*`` -> ``roi_head.box_head.*``;
- ``roi_heads.box_predictor.cls_score``: C + 1 softmax logits with background *first* -> rsdet's
  softmax head, background *last* (rows 1..C, then row 0);
- ``roi_heads.box_predictor.bbox_pred``: 4 (C + 1) class-specific deltas -> 4 C (background's dropped);
- ``roi_heads.mask_head.<i>.0`` -> ``mask_branch.head.fcn.<2i>``, ``mask_predictor.conv5_mask`` ->
  ``mask_branch.head.upsample``, ``mask_predictor.mask_fcn_logits`` -> ``mask_branch.head.predictor``
  (rows 1..C).

A file with more classes than the dataset (torchvision's COCO models: background + category ids
1-90, 91 rows) is mapped by category id: rsdet's label k takes row ``category_ids[k]``. The names
torchvision used before its 0.13 layout (``rpn.head.conv.weight``, ``fpn.inner_blocks.0.weight``,
``mask_head.mask_fcn1.weight``) are read too.

Two parts act at different times: :func:`prepare_for_init` at build time (a structural change that
every later build of the same config repeats, so checkpoints load) keeps the backbone's frozen batch
norm, which rsdet otherwise replaces by trainable BN when no ImageNet weights are given;
:func:`init_detector` loads the file when a training run starts (not when it resumes).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from rsdet.errors import ConfigError

log = logging.getLogger(__name__)

MODELS = ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "retinanet_resnet50_fpn")
#: torchvision's R-CNN decodes RPN deltas with unit weights; rsdet's RPN uses detector.rpn.box_coder_weights
TORCHVISION_RPN_CODER = (1.0, 1.0, 1.0, 1.0)
_OLD_NAMES = ((re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$"), r"\1.0.\2"),
              (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"))
_OLD_MASK = re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$")


@dataclass(frozen=True)
class InitSpec:
    """A parsed ``detector.init``: the torchvision model, whether only its backbone is used, the file."""

    model: str
    backbone_only: bool
    path: Path


def parse_init(value: Any) -> InitSpec | None:
    """``torchvision:<model>[-backbone]:<PATH>`` (or ``=<PATH>``) -> InitSpec; None/"" -> None."""
    if value in (None, "", "none", "null"):
        return None
    text = str(value)
    usage = ("detector.init=torchvision:<model>[-backbone]:<PATH> with <model> one of " + ", ".join(MODELS)
             + ", e.g. detector.init=torchvision:fasterrcnn_resnet50_fpn:/weights/fasterrcnn.pth")
    if not text.startswith("torchvision:"):
        raise ConfigError(f"detector.init={text!r} is not understood; use {usage}")
    match = re.match(r"^torchvision:([A-Za-z0-9_]+?)(-backbone)?[:=](.+)$", text)
    if match is None:
        raise ConfigError(f"detector.init={text!r} names no file; use {usage}")
    model, backbone, path = match.group(1), bool(match.group(2)), Path(match.group(3)).expanduser()
    if model not in MODELS:
        raise ConfigError(f"detector.init: torchvision model {model!r} is not one of {', '.join(MODELS)}")
    if model == "retinanet_resnet50_fpn" and not backbone:
        raise ConfigError("detector.init: rsdet has no RetinaNet; use retinanet_resnet50_fpn-backbone to start a "
                          "one-stage detector (ATSS, PAA, YOLACT) from its ResNet + FPN")
    return InitSpec(model, backbone, path)


def prepare_for_init(model: nn.Module, cfg: Any) -> nn.Module:
    """With ``detector.init`` and ``detector.backbone.norm=frozen_bn``, the backbone's batch norms become
    ``FrozenBatchNorm2d`` again (loaded, not random, statistics). Called by ``build_detector``."""
    det = cfg.get("detector") or {}
    if parse_init(det.get("init")) is None or (det.get("backbone") or {}).get("norm", "frozen_bn") != "frozen_bn":
        return model
    body = getattr(getattr(model, "backbone", None), "body", None)
    if body is not None:
        _freeze_batch_norms(body)
    return model


def _freeze_batch_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batch_norms(child)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a state-dict file (``weights_only`` loading: nothing in it runs), old names renamed."""
    if not path.is_file():
        raise ConfigError(f"detector.init: {path} does not exist; give a local file of a torchvision model's "
                          "state_dict() (rsdet never downloads weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"detector.init: {path} cannot be read as a torch state dict ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]})") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"detector.init: {path} holds no state dict (a mapping of names to tensors)")
    return {_new_name(k): v for k, v in state.items()}


def _new_name(key: str) -> str:
    for pattern, repl in _OLD_NAMES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    match = _OLD_MASK.match(key)
    if match:
        return f"roi_heads.mask_head.{int(match.group(1)) - 1}.0.{match.group(2)}"
    return key


def _class_rows(total: int, num_classes: int, category_ids: list[int] | None, what: str) -> list[int]:
    """The file's rows (background at 0) that rsdet's labels 0..C-1 take."""
    if total == num_classes + 1:
        return list(range(1, num_classes + 1))
    if category_ids and len(category_ids) == num_classes and max(category_ids) < total and min(category_ids) > 0:
        return [int(c) for c in category_ids]
    raise ConfigError(f"detector.init: the file's {what} has {total} classes (background included), the detector "
                      f"{num_classes}; a file with more classes is mapped by category id, but the dataset's ids "
                      f"{(category_ids or [])[:5]}... do not fit. Train on the classes the file was trained on, or use "
                      "-backbone to take only its ResNet + FPN")


def torchvision_to_rsdet(state: dict[str, Tensor], spec: InitSpec, num_classes: int,
                         category_ids: list[int] | None = None) -> tuple[dict[str, Tensor], list[str]]:
    """(rsdet state dict, keys of ``state`` that map nowhere). ``num_batches_tracked`` is dropped."""
    out: dict[str, Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("backbone."):
            out[key] = value
        elif spec.backbone_only:
            continue  # the heads of the file stay unused on purpose
        elif key.startswith("rpn.head."):
            out[key] = value
        elif key.startswith("roi_heads.box_head."):
            out["roi_head." + key[len("roi_heads."):]] = value
        elif key.startswith("roi_heads.box_predictor.cls_score."):
            rows = _class_rows(value.shape[0], num_classes, category_ids, "box classifier")
            out["roi_head.cls_score." + key.rsplit(".", 1)[1]] = value[rows + [0]]
        elif key.startswith("roi_heads.box_predictor.bbox_pred."):
            rows = _class_rows(value.shape[0] // 4, num_classes, category_ids, "box regressor")
            index = torch.tensor([4 * r + j for r in rows for j in range(4)])
            out["roi_head.bbox_pred." + key.rsplit(".", 1)[1]] = value[index]
        elif (m := re.match(r"^roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)$", key)):
            out[f"mask_branch.head.fcn.{2 * int(m.group(1))}.{m.group(2)}"] = value
        elif key.startswith("roi_heads.mask_predictor.conv5_mask."):
            out["mask_branch.head.upsample." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("roi_heads.mask_predictor.mask_fcn_logits."):
            rows = _class_rows(value.shape[0], num_classes, category_ids, "mask predictor")
            out["mask_branch.head.predictor." + key.rsplit(".", 1)[1]] = value[rows]
        else:
            unused.append(key)
    return out, unused


def _check_file(state: dict[str, Tensor], spec: InitSpec) -> None:
    has_mask = any(k.startswith("roi_heads.mask_") for k in state)
    has_rcnn = any(k.startswith("roi_heads.box_") for k in state)
    has_retina = any(k.startswith("head.classification_head.") for k in state)
    looks = "maskrcnn_resnet50_fpn" if has_mask else "fasterrcnn_resnet50_fpn" if has_rcnn else \
        "retinanet_resnet50_fpn" if has_retina else None
    if not any(k.startswith("backbone.body.") for k in state):
        raise ConfigError(f"detector.init: {spec.path} has no backbone.body.* weights: it is not a state dict of "
                          f"torchvision's {spec.model}")
    if looks is not None and looks != spec.model:
        raise ConfigError(f"detector.init names {spec.model}, but {spec.path} holds a {looks} state dict; name the "
                          f"model the file belongs to (detector.init=torchvision:{looks}"
                          f"{'-backbone' if spec.backbone_only else ''}:{spec.path})")


def _check_detector(model: nn.Module, spec: InitSpec, detector: str) -> None:
    if spec.backbone_only:
        return
    wanted = {"fasterrcnn_resnet50_fpn": "faster_rcnn", "maskrcnn_resnet50_fpn": "mask_rcnn"}[spec.model]
    if detector != wanted:
        raise ConfigError(f"detector.init=torchvision:{spec.model} fills a whole detector={wanted}, not "
                          f"detector={detector}; use detector={wanted}, or torchvision:{spec.model}-backbone:PATH "
                          "for the ResNet + FPN alone")
    if getattr(model.roi_head, "classifier", None) != "softmax":
        raise ConfigError("detector.init: torchvision's box classifier is a softmax over the classes and the "
                          "background; use the softmax recipe loss=ce")
    coder = tuple(float(w) for w in model.rpn.box_coder.weights)
    if coder != TORCHVISION_RPN_CODER:
        raise ConfigError(f"detector.init: torchvision's RPN decodes its deltas with weights {TORCHVISION_RPN_CODER}, "
                          f"this detector's RPN with {coder}; set detector.rpn.box_coder_weights=[1,1,1,1]")


def init_detector(model: nn.Module, cfg: Any, category_ids: list[int] | None = None) -> list[str] | None:
    """Load ``detector.init`` into ``model`` (built by ``build_detector(cfg, ...)``); returns the rsdet keys
    it set, or None when ``detector.init`` is unset. Errors list what does not fit."""
    spec = parse_init((cfg.get("detector") or {}).get("init"))
    if spec is None:
        return None
    detector = str(cfg.detector.name)
    _check_detector(model, spec, detector)
    state = read_state_dict(spec.path)
    _check_file(state, spec)
    mapped, unused = torchvision_to_rsdet(state, spec, int(model.num_classes), category_ids)
    own = model.state_dict()
    targets = [k for k in own if k.startswith("backbone.")] if spec.backbone_only else list(own)
    targets = [k for k in targets if not k.endswith(("_extra_state", "num_batches_tracked"))]
    missing = [k for k in targets if k not in mapped]
    extra = [k for k in mapped if k not in own]
    shapes = [(k, tuple(mapped[k].shape), tuple(own[k].shape)) for k in mapped
              if k in own and tuple(mapped[k].shape) != tuple(own[k].shape)]
    problems = []
    if unused or extra:
        problems.append(f"{len(unused) + len(extra)} weights of the file map to nothing in detector={detector} (e.g. "
                        + ", ".join((unused + extra)[:5]) + ")")
    if missing:
        problems.append(f"{len(missing)} weights of detector={detector} are not in the file "
                        f"(e.g. {', '.join(missing[:5])})")
    if shapes:
        problems.append(f"{len(shapes)} weights differ in shape (e.g. " + ", ".join(
            f"{k}: {a} in the file, {b} here" for k, a, b in shapes[:3]) + ")")
    if problems:
        raise ConfigError(f"detector.init: {spec.path} ({spec.model}{'-backbone' if spec.backbone_only else ''}) does "
                          "not fit this detector: " + "; ".join(problems) + ". The torchvision models are ResNet-50 "
                          "FPN-256 detectors: use schedule=1x (not the CPU preset's small backbone), the detector the "
                          "file belongs to, or -backbone for its ResNet + FPN alone")
    with torch.no_grad():
        for key in mapped:
            own[key].copy_(mapped[key])
    log.info("detector.init: %d weights from %s (%s%s)", len(mapped), spec.path, spec.model,
             "-backbone" if spec.backbone_only else "")
    return list(mapped)
