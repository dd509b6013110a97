"""Cascade R-CNN: per-stage targets, refinement with GT-proposals removed, averaged test scores, the
RPN's border rule and the recipes (hand-checked toys)."""

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from torchvision.models.detection.image_list import ImageList

from rsdet.errors import ConfigError
from rsdet.models import build_detector
from rsdet.models.assign.max_iou import max_iou_assign
from rsdet.models.detectors.cascade_rcnn import average_stage_scores, coder_weights_from_stds
from rsdet.models.heads.rpn import inside_anchors
from rsdet.models.samplers import resolve_stage_sampler
from rsdet.models.stage import IGNORED, NEGATIVE
from rsdet.train_cli import CONF_DIR

SMALL = ["dataset.min_size=64", "dataset.max_size=64"]


def _compose(overrides=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=["detector=cascade_rcnn", *SMALL, *overrides])


def _model(overrides=(), num_classes=3):
    torch.manual_seed(0)
    return build_detector(_compose(overrides), num_classes)


def _features(model, size=64, images=1):
    """Backbone features of ``images`` blank images: one per image the proposals refer to (RoIAlign does
    not check the batch index, so a missing image would read memory outside the feature maps)."""
    return model.backbone(torch.zeros(images, 3, size, size))


def _fix_head(head, logits, deltas):
    """Make a stage head predict constant ``logits`` and ``deltas`` for every RoI."""
    with torch.no_grad():
        head.cls_score.weight.zero_()
        head.cls_score.bias.copy_(torch.tensor(logits))
        head.bbox_pred.weight.zero_()
        head.bbox_pred.bias.copy_(torch.tensor(deltas))


# A GT box 0..100 and proposals of IoU 0.75, 0.65, 0.55, 0.45 with it (widths 75, 65, 55, 45 at the same
# left edge: intersection / union = width / 100).
GT = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
PROPOSALS = torch.tensor([[0.0, 0.0, 75.0, 100.0], [0.0, 0.0, 65.0, 100.0], [0.0, 0.0, 55.0, 100.0],
                          [0.0, 0.0, 45.0, 100.0]])


def test_each_stage_labels_proposals_at_its_own_iou_threshold():
    model = _model()
    target = {"boxes": GT, "labels": torch.tensor([2])}
    expected = {  # rows: IoU 0.75, 0.65, 0.55, 0.45, then the appended GT (IoU 1)
        "stage1": [2, 2, 2, NEGATIVE, 2],               # IoU >= 0.5
        "stage2": [2, 2, NEGATIVE, NEGATIVE, 2],        # IoU >= 0.6: 0.65 still positive
        "stage3": [2, NEGATIVE, NEGATIVE, NEGATIVE, 2],  # IoU >= 0.7: 0.65 now negative
    }
    assert [h.spec.name for h in model.stage_heads] == ["stage1", "stage2", "stage3"]
    assert [h.spec.iou_threshold for h in model.stage_heads] == [0.5, 0.6, 0.7]
    for head in model.stage_heads:
        rows = head.assign([PROPOSALS], [target])
        assert rows.classes.tolist() == expected[head.spec.name], head.spec.name
        assert rows.is_gt.tolist() == [False] * 4 + [True]
        assert torch.equal(rows.gts[rows.classes >= 0], GT.expand(int((rows.classes >= 0).sum()), 4))
        assert head.bbox_pred.out_features == 4  # class-agnostic regression


def test_refinement_feeds_the_next_stage_and_drops_the_gt_proposals():
    model = _model()
    # stage 1 moves every box right by 0.1 * width (dx = 1 / weight 10); stage 2 moves nothing
    _fix_head(model.stage_heads[0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0])
    _fix_head(model.stage_heads[1], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    proposals = [torch.tensor([[4.0, 4.0, 24.0, 24.0], [30.0, 10.0, 50.0, 40.0]]),
                 torch.tensor([[10.0, 10.0, 30.0, 30.0]])]
    targets = [{"boxes": torch.tensor([[6.0, 4.0, 26.0, 24.0], [0.0, 0.0, 60.0, 60.0]]), "labels": torch.tensor([0, 1])},
               {"boxes": torch.tensor([[10.0, 12.0, 30.0, 32.0]]), "labels": torch.tensor([2])}]
    outs = model.cascade_train(_features(model, images=2), proposals, [(64, 64), (64, 64)], targets)
    assert [o.name for o in outs] == ["stage1", "stage2", "stage3"]
    # stage 1: 2 + 2 GT rows and 1 + 1 GT row; stage 2: the refined proposals (GT copies removed) + the GT again
    assert outs[0].ref_boxes.shape[0] == 6 and outs[1].ref_boxes.shape[0] == 6
    shifted = torch.tensor([[6.0, 4.0, 26.0, 24.0], [32.0, 10.0, 52.0, 40.0]])  # +2 px: 0.1 x width 20
    assert torch.allclose(outs[1].ref_boxes[:2], shifted, atol=1e-4)
    assert torch.equal(outs[1].ref_boxes[2:4], targets[0]["boxes"])
    assert torch.allclose(outs[1].ref_boxes[4], torch.tensor([12.0, 10.0, 32.0, 30.0]), atol=1e-4)
    assert torch.equal(outs[1].ref_boxes[5], targets[1]["boxes"][0])
    # the shifted first box now coincides with GT 0 (IoU 1): positive in stage 2; stage 3 sees the
    # stage-2 boxes unchanged (zero deltas), GT rows again appended once
    assert outs[1].gt_classes[0] == 0 and outs[2].ref_boxes.shape[0] == 6
    assert torch.allclose(outs[2].ref_boxes, outs[1].ref_boxes, atol=1e-4)
    assert not outs[1].ref_boxes.requires_grad  # refinement is detached


def test_test_scores_average_the_stages_logits_and_boxes_come_from_the_last_stage():
    model = _model().eval()
    # class-0 logits 2, -1, 0.5 in the three stages: sigmoid of the mean 0.5 = 0.6225 (the mean of the
    # sigmoids would be 0.5907); the other classes stay far below the 0.40 threshold
    _fix_head(model.stage_heads[0], [2.0, -9.0, -9.0], [1.0, 0.0, 0.0, 0.0])                   # x + 0.1 w
    _fix_head(model.stage_heads[1], [-1.0, -9.0, -9.0], [0.0, 1.0, 0.0, 0.0])                  # y + 0.1 h
    _fix_head(model.stage_heads[2], [0.5, -9.0, -9.0], [0.0, 0.0, 5 * math.log(1.5), 0.0])     # w x 1.5
    assert model.score_thresh == 0.40
    dets = model.cascade_test(_features(model), [torch.tensor([[10.0, 10.0, 30.0, 30.0]])], [(64, 64)])
    assert dets[0]["labels"].tolist() == [0]
    assert dets[0]["scores"].item() == pytest.approx(1 / (1 + math.exp(-0.5)), abs=1e-6)
    # stage 1: [12, 10, 32, 30]; stage 2: [12, 12, 32, 32]; stage 3 (boxes used): width 20 -> 30 about x 22
    assert torch.allclose(dets[0]["boxes"], torch.tensor([[7.0, 12.0, 37.0, 32.0]]), atol=1e-4)

    probs = _model(["detector.cascade.test_average=scores"]).eval()
    for src, dst in zip(model.stage_heads, probs.stage_heads):
        dst.load_state_dict(src.state_dict())
    dets = probs.cascade_test(_features(probs), [torch.tensor([[10.0, 10.0, 30.0, 30.0]])], [(64, 64)])
    mean_sigmoid = sum(1 / (1 + math.exp(-v)) for v in (2.0, -1.0, 0.5)) / 3
    assert dets[0]["scores"].item() == pytest.approx(mean_sigmoid, abs=1e-6)


def test_softmax_stages_average_logits_before_the_softmax():
    logits = [torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 2.0]])]
    scores = average_stage_scores(logits, lambda x: x.softmax(-1)[:, :2])
    expected = torch.tensor([1.0, 0.0, 1.0]).softmax(-1)[:2]
    assert torch.allclose(scores[0], expected)
    with pytest.raises(ConfigError, match="test_average"):
        _model(["detector.cascade.test_average=median"])


def test_border_crossing_anchors_are_ignored():
    # an (h, w) = (48, 64) image: x1, y1 >= 0 and x2 < 64, y2 < 48 (strict on the far edges)
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [-1.0, 0.0, 10.0, 10.0], [50.0, 30.0, 63.9, 47.9],
                            [50.0, 30.0, 64.0, 40.0], [0.0, 0.0, 60.0, 48.0]])
    assert inside_anchors(anchors, (48, 64), 0).tolist() == [True, False, True, False, False]
    assert inside_anchors(anchors, (48, 64), 1).tolist() == [True, True, True, True, True]
    assert inside_anchors(anchors, (48, 64), -1).all()

    model = _model().train()
    assert model.rpn.allowed_border == 0
    image = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    target = [{"boxes": torch.tensor([[0.0, 0.0, 30.0, 30.0]]), "labels": torch.tensor([0])}]
    _, out = model.rpn(image, _features(model), target)
    inside = inside_anchors(out.ref_boxes, (64, 64), 0)
    assert (~inside).any() and inside.any()
    assert (out.gt_classes[~inside] == IGNORED).all()
    # the inside anchors are labelled among themselves, exactly as an assignment of those anchors alone
    expected, _, _ = max_iou_assign(model.rpn.proposal_matcher, out.ref_boxes[inside], target[0]["boxes"], None)
    assert torch.equal(out.gt_classes[inside], expected) and (expected == 0).any()

    faster = build_detector(_compose(["detector=faster_rcnn"]), 3).train()  # Faster R-CNN keeps every anchor
    _, out = faster.rpn(image, _features(faster), target)
    crossing = ~inside_anchors(out.ref_boxes, (64, 64), 0)
    assert (out.gt_classes[crossing] == NEGATIVE).any()


@pytest.mark.filterwarnings("ignore:backbone weights")
def test_recipes_stage_weights_stds_samplers_and_per_stage_overrides():
    rs = _compose(["schedule=1x"])
    ce = _compose(["schedule=1x", "loss=ce"])
    assert rs.loss.lr == 0.012 and ce.loss.lr == 0.02
    assert rs.detector.backbone.depth == 50 and _compose().detector.backbone.depth == 10
    assert [list(s) for s in rs.detector.cascade.box_stds] == [[0.1, 0.1, 0.2, 0.2]] * 3
    assert [coder_weights_from_stds(s)[0] for s in ce.detector.cascade.box_stds] == pytest.approx([10, 20, 1 / 0.033])
    rs_model, ce_model = build_detector(rs, 3), build_detector(ce, 3)
    assert {k: c.stage_weight for k, c in rs_model.criterion.cfg.items()} == {
        "rpn": 0.2, "stage1": 1.0, "stage2": 1.0, "stage3": 1.0}
    assert {k: c.stage_weight for k, c in ce_model.criterion.cfg.items()} == {
        "rpn": 1.0, "stage1": 1.0, "stage2": 0.5, "stage3": 0.25}
    assert ce_model.stage_heads[2].box_coder.weights == pytest.approx((1 / 0.033, 1 / 0.033, 1 / 0.067, 1 / 0.067))
    for stage in ("stage1", "stage2", "stage3"):
        assert resolve_stage_sampler(ce.sampler, ce.loss, stage) == {
            "kind": "random", "batch_per_image": 512, "positive_fraction": 0.25}
        assert resolve_stage_sampler(rs.sampler, rs.loss, stage) == {"kind": "none"}
    assert ce_model.stage_heads[0].classifier == "softmax" and ce_model.stage_heads[0].cls_score.out_features == 4
    assert ce_model.score_thresh == 0.05 and rs_model.score_thresh == 0.40

    delta = _model(["loss.stage2.delta=0.25"])
    assert [delta.criterion.cfg[s].delta for s in ("stage1", "stage2", "stage3")] == [0.5, 0.25, 0.5]
    with pytest.raises(ConfigError, match="loss.rcnn.delta.*stage1, stage2, stage3"):
        _model(["loss.rcnn.delta=0.25"])
    with pytest.raises(ConfigError, match="one kind of classifier"):
        _model(["loss.stage2.cls=ce"])  # softmax on one stage, sigmoid on the others: no common test score
    with pytest.raises(ConfigError, match="box_stds"):
        _model(["detector.cascade.iou_thresholds=[0.5,0.6]"])


@pytest.mark.parametrize("loss", ["ap", "alrp", "focal"])
def test_other_sigmoid_recipes_train_every_stage(loss):
    model = _model([f"loss={loss}"]).train()
    images = [torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 48.0]]), "labels": torch.tensor([1])}]
    terms, stats = model(images, targets)
    assert {f"{s}_{t}" for s in ("rpn", "stage1", "stage2", "stage3") for t in ("cls", "box")} <= set(terms)
    total = sum(terms.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.stage_heads[2].cls_score.weight.grad is not None
