"""One-stage detector pieces: anchor grid, score voting, per-image assignment, test-time scoring."""

import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from rsdet.models import build_detector
from rsdet.models.detectors.one_stage import grid_anchors, score_voting
from rsdet.models.heads.dense import dense_anchor_sizes
from rsdet.train_cli import CONF_DIR


def _model(detector, loss="rs", extra=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"detector={detector}", f"loss={loss}", *extra])
    return build_detector(cfg, 6)


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


def test_score_voting_averages_same_class_candidates_by_score_and_iou():
    kept = torch.tensor([[0.0, 0, 10, 10]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [0.0, 0, 10, 10], [50.0, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.6, 0.8, 0.9])
    labels = torch.tensor([0, 0, 1, 0])
    voted = score_voting(kept, torch.tensor([0]), boxes, scores, labels)
    # candidates of class 0 overlapping the kept box: itself (IoU 1, w = 0.9) and the shifted one
    # (IoU 9/11, w = 0.6 * exp(-(2/11)^2 / 0.025)); the class-1 box and the far box get no weight
    w1 = 0.6 * math.exp(-((1 - 9 / 11) ** 2) / 0.025)
    expected_x1 = (0.9 * 0 + w1 * 1) / (0.9 + w1)
    assert torch.allclose(voted, torch.tensor([[expected_x1, 0, 10 + expected_x1, 10]]), atol=1e-5)


@pytest.mark.parametrize("detector", ["atss", "paa"])
def test_assignment_of_an_image_without_objects_is_all_negative(detector):
    model = _model(detector)
    anchors = torch.tensor([[0.0, 0, 16, 16], [8, 8, 24, 24]])
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    classes, boxes = model.assign(anchors, [2], target, torch.zeros(2, 6), torch.zeros(2, 4))
    assert classes.tolist() == [-1, -1] and boxes.shape == (2, 4)


def test_paa_positives_are_a_subset_of_the_max_iou_candidates():
    torch.manual_seed(0)
    model = _model("paa")
    level_anchors = grid_anchors([(12, 12), (6, 6)], [8, 16], dense_anchor_sizes([8, 16], 2, 3), torch.device("cpu"))
    anchors = torch.cat(level_anchors)
    target = {"boxes": torch.tensor([[10.0, 10, 50, 60], [40, 30, 90, 80]]), "labels": torch.tensor([2, 4])}
    logits, deltas = torch.randn(len(anchors), 6), torch.randn(len(anchors), 4) * 0.1
    classes, boxes = model.assign(anchors, [len(a) for a in level_anchors], target, logits, deltas)
    from torchvision.ops import box_iou

    best_iou, best_gt = box_iou(anchors, target["boxes"]).max(dim=1)
    pos = classes >= 0
    assert pos.any() and (best_iou[pos] >= 0.1).all()
    assert torch.equal(classes[pos], target["labels"][best_gt[pos]])
    assert torch.equal(boxes[pos], target["boxes"][best_gt[pos]])


def test_standard_baselines_multiply_the_quality_branch_into_the_scores():
    atss = _model("atss", "focal")
    paa = _model("paa", "focal")
    cls = torch.zeros(2, 3)  # sigmoid 0.5
    aux = torch.tensor([0.0, math.log(3.0)])  # sigmoid 0.5, 0.75
    assert torch.allclose(atss._scores(cls, aux)[:, 0], torch.tensor([0.25, 0.375]))
    assert torch.allclose(paa._scores(cls, aux)[:, 0], torch.tensor([0.25, 0.375]).sqrt())
    assert torch.allclose(_model("atss")._scores(cls, None), torch.full((2, 3), 0.5))
