"""One-stage detector pieces: score voting, per-image assignment, test-time scoring."""

import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from rsdet.models import build_detector
from rsdet.models.anchors import dense_anchor_sizes, grid_anchors
from rsdet.models.detectors.one_stage import score_voting
from rsdet.train_cli import CONF_DIR


def _model(detector, loss="rs", extra=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"detector={detector}", f"loss={loss}", *extra])
    return build_detector(cfg, 6)


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


def _paa_one_image(model, anchors, per_level, target, cls_logits, deltas):
    """PAA's assignment of one image, written out from its pieces (the reference of the batched one)."""
    from rsdet.models.assign.max_iou import max_iou_assign
    from rsdet.models.assign.paa import paa_anchor_scores, paa_reassign

    gt, labels = target["boxes"], target["labels"]
    classes, boxes, index = max_iou_assign(model.candidate_matcher, anchors, gt, labels)
    if gt.numel() == 0:
        return classes, boxes
    levels = torch.arange(len(per_level)).repeat_interleave(torch.tensor(per_level))
    cand = torch.nonzero(index >= 0).flatten()
    scores = torch.zeros(len(anchors))
    pred = model.box_coder.decode_single(deltas[cand], anchors[cand])
    scores[cand] = paa_anchor_scores(cls_logits[cand], labels[index[cand]], pred, gt[index[cand]],
                                     box_weight=model.score_box_weight).float()
    matched = paa_reassign(index, scores, levels, len(gt), model.topk)
    classes = torch.where(matched >= 0, labels[matched.clamp(min=0)], torch.full_like(matched, -1))
    return classes, gt[matched.clamp(min=0)]


@pytest.mark.parametrize("seed", range(4))
def test_paa_assigns_a_batch_exactly_as_image_by_image(seed):
    gen = torch.Generator().manual_seed(seed)
    model = _model("paa", "focal" if seed % 2 else "rs")
    shapes, strides = [(16, 16), (8, 8), (4, 4)], [8, 16, 32]
    level_anchors = grid_anchors(shapes, strides, dense_anchor_sizes(strides, 4, 3), torch.device("cpu"))
    anchors, per_level = torch.cat(level_anchors), [len(a) for a in level_anchors]
    targets = []
    for n in (3, 0, 7, 1):  # an image without objects among them
        xy = torch.rand((n, 2), generator=gen) * 90
        wh = torch.rand((n, 2), generator=gen) * 60 + 8
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 6, (n,), generator=gen)})
    cls = torch.randn((len(targets), len(anchors), 6), generator=gen) * 2
    reg = torch.randn((len(targets), len(anchors), 4), generator=gen) * 0.2
    classes, boxes = model.assign_images(anchors, per_level, targets, cls, reg)
    ref = [_paa_one_image(model, anchors, per_level, t, cls[b], reg[b]) for b, t in enumerate(targets)]
    assert torch.equal(classes, torch.cat([c for c, _ in ref]))
    assert torch.equal(boxes, torch.cat([g for _, g in ref]))
    assert (classes >= 0).sum() > 0
