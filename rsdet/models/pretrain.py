"""A backbone pretrained on the shapes domain: the CPU stand-in for the paper's ImageNet weights.

The paper's detectors start from an ImageNet-pretrained ResNet-50 (supplementary Sec. S3, every
table's setting); nothing can be downloaded here, so ``detector.backbone.pretrained=shapes`` trains
the ResNet once, deterministically, as an object classifier (ImageNet-like: one object per crop,
its shape class) on crops of shapes images drawn by the dataset's own generator from a **different
seed stream** than the detection splits (never a training or validation image of the detector), and caches the
weights like the dataset: ``<cache>/backbones/shapes-resnet<depth>-<hash>.pt`` with a JSON manifest
beside it (docs/detectors.md, "A shapes-pretrained backbone"). ``rsdet data pretrain-backbone``
builds it explicitly and prints its held-out accuracy.

The file is a plain state dict (tensors only: it loads with ``torch.load(weights_only=True)``), with
torchvision ResNet keys, BN running statistics included, so ``norm=frozen_bn`` freezes meaningful
statistics as the paper's recipe does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet

from rsdet.errors import ConfigError

log = logging.getLogger(__name__)

#: bump when the recipe below changes: the hash (and so the cached file) follows it
PRETRAIN_VERSION = 1
#: the seed stream of the pretraining images: the detection splits use streams 0 (train) and 1 (val)
_STREAM = 7
_HELD_OUT = 1 << 20  # held-out images are drawn from indices past this, never trained on


def default_params(depth: int = 10) -> dict:
    """The recipe of ``pretrained=shapes`` (AdamW, cosine decay, fresh images every step; ``batch`` images,
    every object of them one crop of ``crop`` px)."""
    params = {"depth": int(depth), "iters": 500, "batch": 16, "crop": 64, "lr": 0.002,
              "weight_decay": 0.05, "seed": 0, "held_out": 256}  # fmt: skip
    quick = os.environ.get("RSDET_PRETRAIN_ITERS")
    if quick:  # fewer iterations for quick checks and the test suite: another recipe, so another file
        try:
            iters = int(quick)
        except ValueError:
            iters = 0
        if iters < 1:
            raise ConfigError(f"RSDET_PRETRAIN_ITERS={quick!r} must be a positive integer (pretraining iterations "
                              f"of detector.backbone.pretrained=shapes); unset it for the default {params['iters']}")
        params.update(iters=iters, held_out=min(params["held_out"], 8 * iters))
    return params


def params_hash(params: dict) -> str:
    text = json.dumps({"version": PRETRAIN_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def weights_path(cache: Path, params: dict) -> Path:
    return Path(cache) / "backbones" / f"shapes-resnet{params['depth']}-{params_hash(params)}.pt"


def _draw_params(image_size: int):
    from rsdet.data import shapes

    return shapes._draw_params(shapes.shapes_params(image_size=image_size))


def _batch(draw, seed: int, start: int, count: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The objects of images ``start .. start + count - 1`` of the pretraining stream (each image from
    its own generator, so image i is the same for any batch size) as normalised (M, 3, crop, crop)
    square crops around each object's box (1.25x its longer side, RoIAlign), and their class indices."""
    from torchvision.ops import roi_align

    from rsdet.data.shapes_draw import draw_image
    from rsdet.models.detectors.base import IMAGE_MEAN, IMAGE_STD

    pixels, boxes, labels = [], [], []
    for k in range(count):
        image, objects = draw_image(draw, np.random.default_rng([seed, _STREAM, start + k]))
        pixels.append(torch.from_numpy(image))
        for obj in objects:
            x, y, w, h = obj.bbox
            cx, cy, half = x + w / 2, y + h / 2, 0.625 * max(w, h, 1.0)
            boxes.append([float(k), cx - half, cy - half, cx + half, cy + half])
            labels.append(obj.label)
    x = torch.stack(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    rois = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 5)
    return roi_align(x, rois, output_size=crop, aligned=True), torch.tensor(labels, dtype=torch.long)


def _network(depth: int, num_classes: int) -> nn.Module:
    from rsdet.models.backbone import _RESNETS

    if depth not in _RESNETS:
        raise ConfigError(f"detector.backbone.depth={depth} is not one of {sorted(_RESNETS)}")
    block, layers = _RESNETS[depth]
    return resnet.ResNet(block, layers, num_classes=num_classes)


def pretrain(params: dict, progress: Callable[[int, int, float], None] | None = None) -> tuple[dict, dict]:
    """Train the classifier; returns (backbone state dict without ``fc``, statistics)."""
    draw = _draw_params(192)  # the shapes images' own size (conf/dataset/shapes.yaml)
    num_classes = len(draw.classes)
    torch.manual_seed(params["seed"])
    model = _network(params["depth"], num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    iters, batch = params["iters"], params["batch"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + np.cos(np.pi * min(i, iters) / iters)))
    loss_fn = nn.CrossEntropyLoss()
    started, losses = time.perf_counter(), []
    model.train()
    for it in range(iters):
        x, y = _batch(draw, params["seed"], it * batch, batch, params["crop"])
        if not len(y):  # a batch of empty images (rare): nothing to learn from
            continue
        loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            raise RuntimeError(f"backbone pretraining diverged at iteration {it} (loss {float(loss)}); "
                               "lower its lr (rsdet.models.pretrain.default_params)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None:
            progress(it + 1, iters, losses[-1])
    stats = {"train_seconds": round(time.perf_counter() - started, 1),
             "final_train_loss": float(np.mean(losses[-20:])) if losses else None}  # fmt: skip
    stats.update(_held_out(model, draw, num_classes, params))
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    return state, stats


@torch.no_grad()
def _held_out(model: nn.Module, draw, num_classes: int, params: dict) -> dict:
    """Object classification accuracy on the objects of images the pretraining never saw."""
    n = int(params["held_out"])
    if n <= 0:
        return {}
    model.eval()
    correct = total = 0
    for start in range(0, n, 32):
        x, y = _batch(draw, params["seed"], _HELD_OUT + start, min(32, n - start), params["crop"])
        if len(y):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    model.train()
    return {"held_out_images": n, "held_out_objects": total, "held_out_accuracy": correct / max(total, 1)}


def _bar():
    """A rich progress callback for an interactive terminal (None otherwise)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def bar():
        with Progress(TextColumn("pretraining backbone"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn(),
                      console=console, refresh_per_second=2) as prog:  # fmt: skip
            task = prog.add_task("pretrain", total=None, loss=0.0)
            yield lambda done, total, loss: prog.update(task, completed=done, total=total, loss=loss)

    return bar()


def ensure_shapes_backbone(cache: str | os.PathLike, params: dict | None = None, *,
                           progress: Callable[[int, int, float], None] | bool | None = None,
                           force: bool = False) -> tuple[Path, dict, bool]:
    """The cached weight file for ``params`` (``default_params()`` if None), trained if missing.

    Returns (path, manifest, trained_now). Concurrent callers wait on a lock and reuse the file the
    first one wrote; the file and its manifest are replaced atomically, the manifest last.
    """
    params = dict(default_params() if params is None else params)
    path = weights_path(Path(cache), params)
    manifest_path = path.with_suffix(".json")

    def complete() -> dict | None:
        if not (path.is_file() and manifest_path.is_file()):
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return manifest if manifest.get("hash") == params_hash(params) else None

    if not force and (manifest := complete()) is not None:
        return path, manifest, False
    path.parent.mkdir(parents=True, exist_ok=True)
    from rsdet.data.shapes import _lock  # the dataset cache's inter-process lock

    with _lock(path.parent / f".{path.name}.lock"):
        if not force and (manifest := complete()) is not None:  # another process trained it meanwhile
            return path, manifest, False
        log.info("shapes-pretrained backbone: training ResNet-%d once into %s (%d iterations of %d images)",
                 params["depth"], path, params["iters"], params["batch"])
        ctx = _bar() if progress in (None, True) else contextlib.nullcontext(progress or None)
        with ctx as callback:
            state, stats = pretrain(params, callback)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, path)
        manifest = {"generator": "rsdet.models.pretrain", "version": PRETRAIN_VERSION,
                    "hash": params_hash(params), "params": params, **stats}  # fmt: skip
        tmp = manifest_path.with_name(f".{manifest_path.name}.partial-{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, manifest_path)  # written last: a weight file without it is never trusted
    return path, manifest, True
