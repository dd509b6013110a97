"""Anchors of the dense detectors: octave sizes and the per-level grid in the head's row order."""

import math

import pytest
import torch

from rsdet.models.anchors import dense_anchor_sizes, grid_anchors


def test_dense_anchor_sizes_are_octave_scales():
    sizes = dense_anchor_sizes([8, 16, 128])
    assert sizes[0] == pytest.approx((32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)))
    assert sizes[0] == pytest.approx((32.0, 40.3175, 50.7968), abs=1e-4)
    assert sizes[1][0] == 64.0 and sizes[2][0] == 512.0
    assert all(len(s) == 3 for s in sizes)
    assert dense_anchor_sizes([8], octave_base_scale=8, scales_per_octave=1) == [(64.0,)]


def test_grid_anchors_use_the_network_stride_and_the_head_row_order():
    sizes = dense_anchor_sizes([8, 128], octave_base_scale=4, scales_per_octave=3)
    p3, p7 = grid_anchors([(2, 3), (1, 2)], [8, 128], sizes, torch.device("cpu"))
    assert p3.shape == (2 * 3 * 3, 4) and p7.shape == (1 * 2 * 3, 4)
    # row order y, x, anchor: row 3 is (y=0, x=1, anchor 0): centre (8, 0), side 32
    assert torch.allclose(p3[3], torch.tensor([8 - 16.0, -16.0, 8 + 16.0, 16.0]))
    # anchor 1 of a location has side 32 * 2^(1/3) = 40.3 (not rounded to whole pixels)
    assert math.isclose(float(p3[1, 2] - p3[1, 0]), 32 * 2 ** (1 / 3), rel_tol=1e-6)
    # P7 centres step by 128 whatever the padded image size
    assert float(p7[3, 0] + p7[3, 2]) / 2 == 128.0
    # same anchors, same order as torchvision's generator (which DenseHead's flattening follows)
    # where that one is right: integer sizes, an image that is a multiple of every stride
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    gen = AnchorGenerator(((16, 32),), ((1.0,),))
    ours = grid_anchors([(4, 4)], [8], [(16.0, 32.0)], torch.device("cpu"))[0]
    theirs = gen(ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)]), [torch.zeros(1, 8, 4, 4)])[0]
    assert torch.equal(ours, theirs)
