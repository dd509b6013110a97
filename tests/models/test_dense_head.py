import math

import pytest
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from rsdet.errors import ConfigError
from rsdet.models.anchors import dense_anchor_sizes
from rsdet.models.heads.dense import DenseHead
from rsdet.models.heads.layers import group_norm_groups


def _anchors(sizes, image_hw, feature_hws, batch=1):
    gen = AnchorGenerator(tuple(sizes), ((1.0,),) * len(sizes))
    images = ImageList(torch.zeros(batch, 3, *image_hw), [image_hw] * batch)
    feats = [torch.zeros(batch, 1, h, w) for h, w in feature_hws]
    return gen(images, feats)


def test_output_shapes_match_anchor_count():
    strides, image_hw = (8, 16, 32), (64, 96)
    hws = [(image_hw[0] // s, image_hw[1] // s) for s in strides]
    head = DenseHead(in_channels=64, num_anchors=3, num_classes=5, num_levels=3, aux="iou")
    feats = [torch.randn(2, 64, h, w) for h, w in hws]
    cls, reg, aux = head(feats)
    anchors = _anchors(dense_anchor_sizes(strides), image_hw, hws, batch=2)
    n = sum(h * w * 3 for h, w in hws)
    assert len(anchors[0]) == n == 3 * (8 * 12 + 4 * 6 + 2 * 3)
    assert cls.shape == (2, n, 5) and reg.shape == (2, n, 4) and aux.shape == (2, n, 1)
    assert DenseHead(64, 3, 5, 3, aux="none")(feats)[2] is None


def test_rows_follow_anchor_generator_order_level_y_x_anchor():
    # No towers; the regression conv copies input channels (y index, x index, level id) at the
    # centre tap into deltas 0..2 of every anchor and writes the anchor index into delta 3; the
    # classifier bias is 100 * a + c.  Each output row must then describe the anchor that
    # torchvision's AnchorGenerator puts in the same row.
    strides, image_hw = (8, 16), (32, 48)
    hws = [(4, 6), (2, 3)]
    num_anchors, num_classes = 3, 2
    head = DenseHead(in_channels=3, num_anchors=num_anchors, num_classes=num_classes,
                     num_levels=2, num_convs=0, norm="none")
    with torch.no_grad():
        head.reg_out.weight.zero_()
        head.cls_out.weight.zero_()
        for a in range(num_anchors):
            for k in range(3):
                head.reg_out.weight[a * 4 + k, k, 1, 1] = 1.0
            head.reg_out.bias[a * 4 + 3] = a
            for c in range(num_classes):
                head.cls_out.bias[a * num_classes + c] = 100 * a + c
    feats = []
    for level, (h, w) in enumerate(hws):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        feats.append(torch.stack((ys, xs, torch.full_like(ys, level))).float()[None])
    cls, reg, _ = head(feats)

    anchors = _anchors(dense_anchor_sizes(strides), image_hw, hws)[0]
    level = torch.cat([torch.full((h * w * num_anchors,), i) for i, (h, w) in enumerate(hws)])
    stride = torch.tensor(strides)[level]
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    width = anchors[:, 2] - anchors[:, 0]
    sizes = dense_anchor_sizes(strides)
    anchor_idx = torch.tensor([min(range(3), key=lambda a: abs(sizes[lv][a] - wd))
                               for lv, wd in zip(level.tolist(), width.tolist())])
    assert torch.equal(reg[0, :, 0], cy / stride)
    assert torch.equal(reg[0, :, 1], cx / stride)
    assert torch.equal(reg[0, :, 2], level.float())
    assert torch.equal(reg[0, :, 3], anchor_idx.float())
    assert torch.equal(cls[0, :, 0], 100 * anchor_idx.float())
    assert torch.equal(cls[0, :, 1], 100 * anchor_idx.float() + 1)


def test_initial_values():
    head = DenseHead(in_channels=64, num_anchors=3, num_classes=4, num_levels=5, aux="centerness")
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 + 4 + 3  # two towers + cls, reg, aux
    for conv in convs:
        assert abs(conv.weight.mean().item()) < 2e-3
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.1)
    for conv in list(head.cls_tower) + list(head.reg_tower):
        if isinstance(conv, nn.Conv2d):
            assert conv.bias is None  # followed by GroupNorm
    assert torch.all(head.reg_out.bias == 0) and torch.all(head.aux_out.bias == 0)
    assert torch.allclose(head.cls_out.bias, torch.full((12,), -math.log(99)))
    assert -math.log(99) == pytest.approx(-4.59512)
    for norm in (m for m in head.modules() if isinstance(m, nn.GroupNorm)):
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    assert [s.scale.item() for s in head.scales] == [1.0] * 5
    no_norm = DenseHead(16, 1, 2, 1, num_convs=1, norm="none")
    assert torch.all(no_norm.cls_tower[0].bias == 0)
    # initial foreground probability is the prior
    cls, _, _ = head([torch.zeros(1, 64, 2, 2)] * 5)
    assert torch.sigmoid(cls).mean().item() == pytest.approx(0.01, rel=1e-3)


def test_scale_is_a_learnable_scalar_per_level():
    torch.manual_seed(0)
    head = DenseHead(in_channels=16, num_anchors=1, num_classes=2, num_levels=2, num_convs=1)
    feats = [torch.randn(1, 16, 4, 4), torch.randn(1, 16, 2, 2)]
    _, reg, _ = head(feats)
    scale_params = [s.scale for s in head.scales]
    assert all(p.requires_grad and p.dim() == 0 for p in scale_params)
    param_ids = {id(p) for p in head.parameters()}
    assert all(id(p) in param_ids for p in scale_params)

    with torch.no_grad():
        head.scales[1].scale.fill_(2.0)
    _, reg2, _ = head(feats)
    n0 = 16  # level-0 rows
    assert torch.equal(reg2[:, :n0], reg[:, :n0])
    assert torch.allclose(reg2[:, n0:], 2 * reg[:, n0:])

    # each scale receives the gradient of its own level only
    reg2[:, :n0].sum().backward()
    assert head.scales[0].scale.grad.abs().item() > 0
    assert head.scales[1].scale.grad is None or head.scales[1].scale.grad.item() == 0


def test_group_norm_falls_back_for_narrow_heads():
    assert group_norm_groups(256) == 32
    assert group_norm_groups(64) == 32
    assert group_norm_groups(16) == 16
    assert group_norm_groups(24) == 8
    for channels, groups in ((64, 32), (24, 8)):
        head = DenseHead(in_channels=channels, num_anchors=3, num_classes=3, num_levels=2)
        norms = [m for m in head.modules() if isinstance(m, nn.GroupNorm)]
        assert len(norms) == 8 and all(m.num_groups == groups for m in norms)
        cls, reg, _ = head([torch.randn(2, channels, 6, 6), torch.randn(2, channels, 3, 3)])
        assert cls.shape == (2, 3 * 45, 3) and torch.isfinite(reg).all()


def test_aux_branch_reads_the_regression_tower():
    torch.manual_seed(0)
    head = DenseHead(in_channels=16, num_anchors=2, num_classes=3, num_levels=1, num_convs=2,
                     aux="iou")
    feats = [torch.randn(1, 16, 5, 5)]
    _, _, aux = head(feats)
    with torch.no_grad():
        head.cls_tower[0].weight.mul_(3.0)
    assert torch.equal(head(feats)[2], aux)
    with torch.no_grad():
        head.reg_tower[0].weight.mul_(3.0)
    assert not torch.allclose(head(feats)[2], aux)


def test_bad_configuration_is_a_config_error():
    with pytest.raises(ConfigError, match="norm='bn'"):
        DenseHead(16, 1, 2, 1, norm="bn")
    with pytest.raises(ConfigError, match="aux='quality'"):
        DenseHead(16, 1, 2, 1, aux="quality")
    head = DenseHead(16, 1, 2, num_levels=2)
    with pytest.raises(ConfigError, match="built for 2 levels got 1"):
        head([torch.zeros(1, 16, 2, 2)])
