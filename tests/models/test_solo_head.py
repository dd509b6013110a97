"""SOLOv2's network pieces (rsdet/models/heads/solo.py): CoordConv channels, per-level output shapes, the
mask features at P2's resolution and the dynamic 1 x 1 convolution."""

import torch
import torch.nn.functional as F

from rsdet.models.heads.solo import MaskFeatureBranch, SoloKernelHead, coord_features, dynamic_masks


def test_coord_features_span_minus_one_to_one_x_first():
    c = coord_features(torch.zeros(2, 5, 3, 4))
    assert c.shape == (2, 2, 3, 4)
    assert torch.allclose(c[0, 0, 0], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])) and c[0, 0, :, 0].tolist() == [-1.0] * 3
    assert c[0, 1, :, 0].tolist() == [-1.0, 0.0, 1.0]  # y


def test_kernel_head_gives_class_logits_and_kernels_on_each_grid():
    torch.manual_seed(0)
    head = SoloKernelHead(8, num_classes=3, kernel_channels=5, feat_channels=8, num_convs=2, prior_prob=0.01)
    feats = [torch.randn(2, 8, 12, 12), torch.randn(2, 8, 6, 6)]
    cls, kernels = head(feats, [6, 4])
    assert [tuple(c.shape) for c in cls] == [(2, 3, 6, 6), (2, 3, 4, 4)]
    assert [tuple(k.shape) for k in kernels] == [(2, 5, 6, 6), (2, 5, 4, 4)]
    assert head.kernel_tower[0].in_channels == 10 and head.cls_tower[0].in_channels == 8  # coords: kernels only
    assert torch.allclose(head.cls_out.bias, torch.full((3,), -torch.log(torch.tensor(99.0)).item()))


def test_mask_features_sum_four_levels_at_p2_resolution():
    torch.manual_seed(0)
    branch = MaskFeatureBranch(8, channels=6, out_channels=5, num_levels=4)
    feats = [torch.randn(1, 8, 16 // 2 ** i, 16 // 2 ** i) for i in range(5)]  # P2..P6
    out = branch(feats)
    assert out.shape == (1, 5, 16, 16) and out.min() >= 0  # GN + ReLU at the end
    ups = [sum(isinstance(m, torch.nn.Upsample) for m in level) for level in branch.levels]
    assert ups == [0, 1, 2, 3]
    assert branch.levels[3][0].in_channels == 10 and branch.levels[2][0].in_channels == 8  # coords on P5 only


def test_dynamic_masks_are_a_one_by_one_convolution():
    feat, kernels = torch.randn(5, 7, 9), torch.randn(3, 5)
    expected = F.conv2d(feat[None], kernels[:, :, None, None])[0]
    assert torch.allclose(dynamic_masks(feat, kernels), expected, atol=1e-5)
