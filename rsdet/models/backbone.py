"""ResNet + FPN backbones built from torchvision parts.

The R-CNN configs of the RS paper use an ImageNet-pretrained ResNet-50 with a frozen stem and first
stage and frozen batch-norm statistics (docs/detectors.md, "Backbones"). The CPU demo uses a shallow ResNet with trainable
batch norm instead, because no pretrained weights can be downloaded there.

Pretrained weights are never downloaded at run time: they come from a local file
(``backbone.pretrained=/path/resnet50.pth``) or from the torch hub cache when the standard
torchvision file is already there (``backbone.pretrained=imagenet``). Otherwise the backbone starts
from random initialisation and a warning says so.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from rsdet.errors import ConfigError

log = logging.getLogger(__name__)

# depth -> (block, layers per stage); depth 10 is a one-block-per-stage ResNet for CPU demos.
_RESNETS = {
    10: (resnet.BasicBlock, [1, 1, 1, 1]),
    18: (resnet.BasicBlock, [2, 2, 2, 2]),
    34: (resnet.BasicBlock, [3, 4, 6, 3]),
    50: (resnet.Bottleneck, [3, 4, 6, 3]),
    101: (resnet.Bottleneck, [3, 4, 23, 3]),
}

# torchvision's ImageNet weight files (as torch.hub caches them), looked up but never downloaded.
_HUB_FILES = {
    18: "resnet18-f37072fd.pth",
    34: "resnet34-b627a593.pth",
    50: "resnet50-0676ba61.pth",
    101: "resnet101-63fe2227.pth",
}


def _norm_layer(kind: str):
    if kind == "frozen_bn":
        return FrozenBatchNorm2d
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "gn":
        return lambda c: nn.GroupNorm(min(32, c // 4), c)
    raise ConfigError(f"detector.backbone.norm={kind!r} is not one of frozen_bn, bn, gn")


def resolve_pretrained(spec: str | None, depth: int) -> Path | None:
    """Return the local weight file for ``spec`` or None for random init.

    ``spec`` is None/"none" (random init), "imagenet" (the torchvision file in the torch hub cache,
    if present), "shapes" (a ResNet pretrained once on the shapes domain and cached,
    :mod:`rsdet.models.pretrain`) or a path to a state-dict file. A path that does not exist is an error, because the
    user asked for it explicitly.
    """
    if spec in (None, "", "none", "null"):
        return None
    if spec == "shapes":  # trained once on the shapes domain and cached (rsdet.models.pretrain)
        from rsdet.data.build import cache_root
        from rsdet.models.pretrain import default_params, ensure_shapes_backbone

        return ensure_shapes_backbone(cache_root(), default_params(depth))[0]
    if spec == "imagenet":
        name = _HUB_FILES.get(depth)
        if name is None:
            return None
        cached = Path(torch.hub.get_dir()) / "checkpoints" / name
        return cached if cached.is_file() else None
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"detector.backbone.pretrained={spec!r}: file not found. Give a path to a ResNet state dict, "
            "'imagenet' to use the torch hub cache when present, 'shapes' for the shapes-pretrained one "
            "(rsdet data pretrain-backbone), or null for random init."
        )
    return path


def _load_weights(model: nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing:
        raise ConfigError(f"pretrained weights {path} do not fit the backbone; missing keys e.g. {missing[:3]}")
    log.info("loaded backbone weights from %s (%d unused keys)", path, len(unexpected))


def build_backbone(cfg: Any) -> BackboneWithFPN:
    """Build ResNet-``depth`` + FPN from the ``detector.backbone`` config.

    Keys: depth, pretrained, norm (frozen_bn | bn | gn), trainable_stages (0-5 as in torchvision),
    returned_stages (subset of 1..4), fpn_channels, extra_levels: ``maxpool`` appends a max-pooled
    P6 (the R-CNN configs), ``p6p7`` two stride-2 convs on the P5 output (ATSS/PAA: P3-P7).
    """
    depth = int(cfg.depth)
    if depth not in _RESNETS:
        raise ConfigError(f"detector.backbone.depth={depth} is not one of {sorted(_RESNETS)}")
    block, layers = _RESNETS[depth]
    weights = resolve_pretrained(cfg.get("pretrained"), depth)
    norm = cfg.get("norm", "frozen_bn")
    if weights is None and norm == "frozen_bn":
        # Frozen statistics of a random network are meaningless; train them instead.
        norm = "bn"
    body = resnet.ResNet(block, layers, norm_layer=_norm_layer(norm))
    if weights is not None:
        _load_weights(body, weights)
    elif cfg.get("pretrained") not in (None, "", "none", "null"):
        warnings.warn(
            f"backbone weights {cfg.get('pretrained')!r} for ResNet-{depth} not found locally "
            f"(expected {Path(torch.hub.get_dir()) / 'checkpoints' / _HUB_FILES.get(depth, '?')}); "
            "training from random initialisation. Pass detector.backbone.pretrained=/path/to/file.pth "
            "to use ImageNet weights.",
            stacklevel=2,
        )

    trainable = int(cfg.get("trainable_stages", 5 if weights is None else 3))
    to_train = ["layer4", "layer3", "layer2", "layer1", "conv1", "bn1"][: trainable + (1 if trainable == 5 else 0)]
    for name, p in body.named_parameters():
        if not any(name.startswith(layer) for layer in to_train):
            p.requires_grad_(False)

    returned = list(cfg.get("returned_stages", [1, 2, 3, 4]))
    expansion = block.expansion
    in_channels = [64 * 2 ** (s - 1) * expansion for s in returned]
    return_layers = {f"layer{s}": str(i) for i, s in enumerate(returned)}
    fpn_channels = int(cfg.get("fpn_channels", 256))
    extra = cfg.get("extra_levels", "maxpool")
    if extra == "maxpool":
        extra_blocks = LastLevelMaxPool()
    elif extra == "p6p7":
        extra_blocks = LastLevelP6P7(fpn_channels, fpn_channels)  # equal widths: P6 from the P5 output
    else:
        raise ConfigError(f"detector.backbone.extra_levels={extra!r} is not one of maxpool, p6p7")
    return BackboneWithFPN(body, return_layers, in_channels, fpn_channels, extra_blocks=extra_blocks)
