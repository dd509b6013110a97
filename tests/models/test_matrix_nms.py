"""Matrix NMS (SOLOv2 §4.2) against decays worked out by hand from its formula on toy masks: 1 × W strips,
so every IoU is a ratio of column counts (rsdet/models/matrix_nms.py's docstring)."""

import math

import pytest
import torch

from rsdet.errors import ConfigError
from rsdet.models.matrix_nms import mask_iou_matrix, matrix_nms


def strips(width, *spans):
    """(n, 1, width) binary masks covering columns [a, b) of each (a, b) span."""
    masks = torch.zeros(len(spans), 1, width, dtype=torch.bool)
    for k, (a, b) in enumerate(spans):
        masks[k, 0, a:b] = True
    return masks


def test_iou_matrix_of_strips():
    iou = mask_iou_matrix(strips(10, (0, 6), (0, 4), (2, 8)))
    assert iou[0, 1] == pytest.approx(4 / 6) and iou[0, 2] == pytest.approx(4 / 8) and iou[1, 2] == pytest.approx(2 / 8)
    assert torch.allclose(iou, iou.T) and torch.allclose(iou.diagonal(), torch.ones(3))


def test_gaussian_decays_by_hand():
    # A [0,6) 0.9, B [0,4) 0.8, C [2,8) 0.7 of class 0; D = A's mask in class 1, 0.6.
    masks = strips(10, (0, 6), (0, 4), (2, 8), (0, 6))
    labels = torch.tensor([0, 0, 0, 1])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # IoU(A,B) = 4/6, IoU(A,C) = 4/8, IoU(B,C) = 2/8; comp_A = 0, comp_B = 2/3.
    # decay_B = exp(-2 (2/3)^2); decay_C = min(exp(-2 (1/2)^2 - 0), exp(-2 ((1/4)^2 - (2/3)^2))) = exp(-1/2);
    # D has no higher-scoring mask of its class.
    expected = [0.9, 0.8 * math.exp(-2 * (4 / 9)), 0.7 * math.exp(-0.5), 0.6]
    got = matrix_nms(masks, labels, scores, sigma=2.0)
    assert got.tolist() == pytest.approx(expected, rel=1e-6)


def test_linear_decays_by_hand():
    masks = strips(10, (0, 6), (0, 4), (2, 8), (0, 6))
    labels = torch.tensor([0, 0, 0, 1])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # decay_B = (1 - 2/3) / (1 - 0); decay_C = min((1 - 1/2) / 1, (1 - 1/4) / (1 - 2/3)) = 1/2
    got = matrix_nms(masks, labels, scores, kernel="linear")
    assert got.tolist() == pytest.approx([0.9, 0.8 / 3, 0.35, 0.6], rel=1e-6)


def test_a_mask_overlapping_only_a_suppressed_mask_is_compensated():
    # A [0,10), B [3,13) (IoU 7/13 with A), C [10,18) touches B only (IoU 3/15), all of class 2.
    masks = strips(20, (0, 10), (3, 13), (10, 18))
    scores = torch.tensor([0.9, 0.8, 0.7])
    got = matrix_nms(masks, torch.tensor([2, 2, 2]), scores, sigma=2.0)
    # decay_C = min(1, exp(-2 ((3/15)^2 - (7/13)^2))) = 1: B, its only overlap, is itself largely suppressed
    assert got.tolist() == pytest.approx([0.9, 0.8 * math.exp(-2 * (7 / 13) ** 2), 0.7], rel=1e-6)
    # without the compensation C would have decayed to 0.7 exp(-2 (1/5)^2)
    assert got[2] > 0.7 * math.exp(-2 * 0.04)


def test_unsorted_scores_and_unknown_kernels_are_refused():
    masks = strips(4, (0, 2), (1, 3))
    with pytest.raises(ConfigError, match="descending"):
        matrix_nms(masks, torch.tensor([0, 0]), torch.tensor([0.2, 0.5]))
    with pytest.raises(ConfigError, match="gaussian, linear"):
        matrix_nms(masks, torch.tensor([0, 0]), torch.tensor([0.5, 0.2]), kernel="box")
    assert matrix_nms(masks[:0], torch.zeros(0, dtype=torch.long), torch.zeros(0)).numel() == 0
