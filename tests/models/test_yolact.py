"""YOLACT: anchors, training outputs of both recipes, and the detection output contract (masks in the
original image frame)."""

import pytest
import torch
from hydra import compose, initialize_config_dir

from rsdet.errors import DataError
from rsdet.models import build_detector
from rsdet.models.anchors import grid_anchors
from rsdet.train_cli import CONF_DIR

SMALL = ["detector.backbone.fpn_channels=64", "detector.proto.channels=16", "dataset.min_size=96",
         "dataset.max_size=128"]


def _model(loss="rs", extra=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["detector=yolact", f"loss={loss}", *SMALL, *extra])
    torch.manual_seed(0)
    return build_detector(cfg, 6)


def _batch():
    images = [torch.rand(3, 96, 96), torch.rand(3, 96, 96)]
    targets = []
    for shift in (0, 30):
        masks = torch.zeros(2, 96, 96, dtype=torch.uint8)
        masks[0, 10 + shift:40 + shift, 10:50] = 1
        masks[1, 50:90, 40 + shift // 2:80] = 1
        boxes = torch.tensor([[10.0, 10 + shift, 50, 40 + shift], [40 + shift // 2, 50, 80, 90]])
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 4]), "masks": masks})
    return images, targets


def test_yolact_anchors_have_three_aspect_ratios_centred_in_their_cell():
    p3 = grid_anchors([(1, 2)], [8], [(16.0,)], torch.device("cpu"), (0.5, 1.0, 2.0), center_offset=0.5)[0]
    assert p3.shape == (6, 4)
    wh = p3[:, 2:] - p3[:, :2]
    assert torch.allclose(wh[:3, 1] / wh[:3, 0], torch.tensor([0.5, 1.0, 2.0]))  # ratio = h / w
    assert torch.allclose(wh[:3].prod(1), torch.full((3,), 256.0))  # area = size^2
    assert torch.allclose((p3[3, :2] + p3[3, 2:]) / 2, torch.tensor([12.0, 4.0]))  # (x + 0.5) * stride


@pytest.mark.parametrize("loss", ["rs", "ce"])
def test_training_step_gives_the_recipe_terms_and_gradients_everywhere(loss):
    model = _model(loss).train()
    images, targets = _batch()
    terms, stats = model(images, targets)
    expected = {"head_rank", "head_sort", "head_box", "head_mask"} if loss == "rs" else {"head_cls", "head_box",
                                                                                         "head_mask"}
    assert set(terms) == expected
    assert all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    for part in (model.head.coef_out, model.head.cls_out, model.protonet.post[-2]):
        assert part.weight.grad is not None and part.weight.grad.abs().sum() > 0
    if loss == "ce":  # OHEM keeps every positive and 3 negatives per positive (plenty of negatives here)
        assert stats["head/num_neg"] == 3 * stats["head/num_pos"] > 0
        assert model.head.cls_out.out_channels == model.head.num_anchors * 7  # softmax: C + 1 outputs per anchor
    else:
        assert stats["head/num_neg"] > 100 * stats["head/num_pos"]  # every anchor, no OHEM


def test_training_without_masks_says_how_to_load_them():
    model = _model().train()
    images, targets = _batch()
    with pytest.raises(DataError, match="dataset.with_masks=true"):
        model(images, [{k: t[k] for k in ("boxes", "labels")} for t in targets])


@pytest.mark.parametrize("nms", ["fast", "standard"])
def test_eval_gives_boxes_labels_and_probability_masks_in_the_original_frame(nms):
    model = _model(extra=[f"detector.test.nms={nms}", "detector.test_score_thresh=0.0"]).eval()
    image = torch.rand(3, 60, 80)  # resized to 96 x 128 by the transform, mapped back here
    det = model([image])[0]
    n = len(det["boxes"])
    assert n > 0 and det["scores"].shape == (n,) and det["labels"].shape == (n,)
    assert det["labels"].min() >= 0 and det["labels"].max() < 6
    assert det["masks"].shape == (n, 1, 60, 80) and det["masks"].dtype == torch.float32
    assert det["masks"].min() >= 0 and det["masks"].max() <= 1
    assert (det["boxes"][:, 2] <= 80).all() and (det["boxes"][:, 3] <= 60).all()
    # zero outside the (original-frame) box: pixel centres outside it carry no probability
    from rsdet.models.image_masks import box_region

    outside = 1 - box_region(det["boxes"], 60, 80)
    assert (det["masks"][:, 0] * outside).abs().max() == 0


def test_masks_are_mapped_from_the_resized_to_the_original_frame(monkeypatch):
    model = _model().eval()

    def detect(images, features):  # a known mask in the resized (= padded) frame: the left half of 96 x 128
        assert tuple(images.tensors.shape[-2:]) == (96, 128)
        probs = torch.zeros(1, 96, 128)
        probs[0, :, :64] = 0.8
        return [{"boxes": torch.tensor([[0.0, 0, 128, 96]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([2]), "image_masks": probs}]

    monkeypatch.setattr(model, "detect", detect)
    det = model([torch.rand(3, 48, 64)])[0]
    assert det["masks"].shape == (1, 1, 48, 64)
    assert torch.allclose(det["boxes"], torch.tensor([[0.0, 0, 64, 48]]))
    assert torch.allclose(det["masks"][0, 0, :, :31], torch.tensor(0.8))
    assert det["masks"][0, 0, :, 33:].abs().max() == 0


def test_scales_per_octave_multiply_the_anchors_per_location():
    model = _model(extra=["detector.head.scales_per_octave=3"])
    assert model.head.num_anchors == 9
    assert model.anchor_sizes[0] == pytest.approx((12.0, 12 * 2 ** (1 / 3), 12 * 2 ** (2 / 3)))


def test_atss_assigner_gives_the_atss_positives_without_ignored_rows():
    """detector.assigner.kind=atss labels YOLACT's anchors exactly as atss_assign does (the CPU preset's
    assigner); max_iou keeps YOLACT's ignored band; an unknown kind is a config error naming the choices."""
    from rsdet.errors import ConfigError
    from rsdet.models.assign.atss import atss_assign

    model = _model(extra=["detector.assigner.kind=atss", "detector.assigner.topk=4"])
    images, targets = _batch()
    anchors = grid_anchors([(12, 12), (6, 6), (3, 3), (2, 2), (1, 1)], model.strides, model.anchor_sizes,
                           torch.device("cpu"), model.aspect_ratios, 0.5)
    flat, per_level = torch.cat(anchors), [len(a) for a in anchors]
    classes, boxes, index = model._assign(flat, per_level, targets[0])
    want_classes, want_index = atss_assign(flat, per_level, targets[0]["boxes"], targets[0]["labels"], 4)
    assert torch.equal(classes, want_classes) and torch.equal(index, want_index)
    assert (classes >= 0).sum() > 0 and set(classes.unique().tolist()) <= {-1, 1, 4}  # no ignored (-2) rows
    assert torch.equal(boxes[classes >= 0], targets[0]["boxes"][index[classes >= 0]])
    max_iou_classes = _model(extra=["detector.assigner.kind=max_iou"])._assign(flat, per_level, targets[0])[0]
    assert (max_iou_classes == -2).any()
    terms, _ = model.train()(images, targets)
    assert all(torch.isfinite(v) for v in terms.values())
    with pytest.raises(ConfigError, match="max_iou.*atss"):
        _model(extra=["detector.assigner.kind=fcos"])
