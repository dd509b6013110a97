"""The criterion turns one stage's predictions + assignment into the paper's loss terms."""

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.models.detection._utils import BoxCoder

from rsdet import losses as L
from rsdet.errors import ConfigError
from rsdet.models.criterion import Criterion, check_mask_labels, stage_loss_config
from rsdet.models.stage import StageOutput, StageSpec

RS = {"name": "rs", "cls": "rs", "delta": 0.5, "label": "iou", "box": "giou", "box_weight": 1.0, "weighting": "score",
      "delta_loc": None, "balance": "value", "box_normalizer": "weights", "stage_weights": {"rpn": 0.2}, "prior_prob": None,
      "lr": 0.01, "test_score_thresh": 0.4, "default_sampler": {"rpn": "none", "rcnn": "none"}, "rpn": {}, "rcnn": {}}
SPECS = {"rpn": StageSpec("rpn", 1, iou_threshold=0.7, objectness=True), "rcnn": StageSpec("rcnn", 3)}
STAGES = list(SPECS.values())  # the stages a Faster R-CNN declares


def _stage(name="rcnn", num_classes=3, with_pos=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = 12
    ref = torch.rand(m, 2, generator=g) * 50
    ref = torch.cat([ref, ref + 10 + torch.rand(m, 2, generator=g) * 20], 1)
    gt = ref + torch.randn(m, 4, generator=g)
    classes = torch.full((m,), -1)
    if with_pos:
        classes[[0, 3, 5, 8]] = torch.tensor([0, 2, 1, 2]) if num_classes > 1 else 0
    classes[10] = -2  # ignored
    logits = torch.randn(m, num_classes, generator=g, requires_grad=True)
    deltas = (torch.randn(m, 4, generator=g) * 0.1).requires_grad_()
    spec = StageSpec(name, num_classes, iou_threshold=0.5, objectness=name == "rpn")
    return StageOutput(spec, logits, deltas, ref, gt, classes, BoxCoder((10.0, 10.0, 5.0, 5.0)),
                       torch.zeros(m, dtype=torch.long))


def test_rs_terms_value_self_balance_and_official_gradient_contract():
    crit = Criterion(OmegaConf.create(RS), STAGES)
    out = _stage()
    terms, stats = crit(out, 1)
    assert set(terms) == {"rcnn_rank", "rcnn_sort", "rcnn_box"}
    # value-based self-balance: λ L_box has the value of L_R + L_S (supplementary S2.1, value-based)
    assert torch.allclose(terms["rcnn_box"], terms["rcnn_rank"] + terms["rcnn_sort"], atol=1e-6)
    # the classification gradient is the RS identity update on the non-ignored rows
    (terms["rcnn_rank"] + terms["rcnn_sort"]).backward()
    keep = out.gt_classes >= -1
    target = torch.zeros(out.cls_logits.shape)
    pred = out.box_coder.decode_single(out.box_deltas.detach(), out.ref_boxes)
    pos = torch.nonzero(out.gt_classes >= 0).flatten()
    target[pos, out.gt_classes[pos]] = L.box_iou_aligned(pred[pos], out.gt_boxes[pos])
    logits = out.cls_logits.detach()[keep].clone().requires_grad_()
    rank, sort = L.rank_sort_loss(logits, target[keep], delta=0.5)
    rank.backward()
    assert torch.allclose(out.cls_logits.grad[keep], logits.grad, atol=1e-7)
    assert out.cls_logits.grad[~keep].abs().sum() == 0  # ignored rows get nothing
    assert stats["rcnn/num_pos"] == 4 and stats["rcnn/num_neg"] == 7
    assert stats["rcnn/task_neg_per_pos"] == (4 * 2 + 7 * 3) / 4


def test_rpn_terms_carry_the_stage_weight():
    crit = Criterion(OmegaConf.create(RS), STAGES)
    out = _stage(name="rpn", num_classes=1)
    terms, _ = crit(out, 1)
    plain = Criterion(OmegaConf.create({**RS, "stage_weights": {}}), STAGES)(_stage(name="rpn", num_classes=1), 1)[0]
    for k in terms:
        assert torch.allclose(terms[k], 0.2 * plain[k])


def test_no_positive_batch_gives_zero_valued_zero_gradient_terms():
    crit = Criterion(OmegaConf.create(RS), STAGES)
    out = _stage(with_pos=False)
    terms, stats = crit(out, 1)
    total = sum(terms.values())
    total.backward()
    assert float(total.detach()) == 0.0 and stats["rcnn/num_pos"] == 0
    assert out.cls_logits.grad.abs().sum() == 0 and out.box_deltas.grad.abs().sum() == 0


@pytest.mark.parametrize("weighting", ["none", "score", "iou", "centerness", "rank"])
@pytest.mark.parametrize("balance", ["constant", "value", "magnitude"])
def test_every_weighting_and_balance_gives_finite_box_terms(weighting, balance):
    cfg = OmegaConf.create({**RS, "weighting": weighting, "balance": balance, "box_weight": 2.0})
    out = _stage()
    terms, _ = Criterion(cfg, STAGES)(out, 1)
    sum(terms.values()).backward()
    assert torch.isfinite(terms["rcnn_box"]) and out.box_deltas.grad.abs().sum() > 0


def test_constant_balance_scales_the_weighted_mean():
    out = _stage()
    terms, _ = Criterion(OmegaConf.create({**RS, "balance": "constant", "box_weight": 3.0,
                                           "weighting": "none"}), STAGES)(out, 1)
    pos = torch.nonzero(out.gt_classes >= 0).flatten()
    pred = out.box_coder.decode_single(out.box_deltas[pos], out.ref_boxes[pos])
    expected = 3.0 * L.giou_loss(pred, out.gt_boxes[pos], reduction="none").mean()
    assert torch.allclose(terms["rcnn_box"], expected)


@pytest.mark.parametrize("recipe", [{"cls": "ce", "box_normalizer": "sampled", "balance": "constant"},
                                    {"cls": "focal"}, {"cls": "ap", "delta": 1.0},
                                    {"cls": "alrp", "delta": 1.0, "balance": "constant"}])
def test_other_recipes_produce_named_terms(recipe):
    cfg = OmegaConf.create({**RS, **recipe})
    out = _stage()
    if recipe["cls"] == "ce":  # softmax head: C + 1 logits, background last
        out.cls_logits = torch.randn(12, 4, requires_grad=True)
    terms, _ = Criterion(cfg, STAGES)(out, 1)
    assert set(terms) == {"rcnn_cls", "rcnn_box"}
    sum(terms.values()).backward()
    assert out.cls_logits.grad.abs().sum() > 0


def test_invalid_values_name_the_key():
    with pytest.raises(ConfigError, match="loss.cls='hinge'"):
        stage_loss_config(OmegaConf.create({**RS, "cls": "hinge"}), SPECS["rcnn"])
    with pytest.raises(ConfigError, match="loss.delta=0.0"):
        stage_loss_config(OmegaConf.create({**RS, "cls": "ap", "delta": 0.0}), SPECS["rcnn"])
    assert stage_loss_config(OmegaConf.create({**RS, "rpn": {"box": "l1"}}), SPECS["rpn"]).box == "l1"
    assert stage_loss_config(OmegaConf.create({**RS, "rpn": {"box": None}}), SPECS["rpn"]).box == "giou"


def test_ranking_groups_average_independent_per_group_losses():
    """Groups of g images are ranked separately and averaged: the 4 GPUs x 4 images emulation."""
    out = _stage()
    out.image_index = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    grouped, stats = Criterion(OmegaConf.create(RS), STAGES, group_images=2)(out, 4)
    plain = Criterion(OmegaConf.create(RS), STAGES)
    halves = []
    for rows in (torch.arange(0, 6), torch.arange(6, 12)):
        part = _stage()
        part.cls_logits = out.cls_logits.detach()[rows].requires_grad_()
        part.box_deltas, part.ref_boxes = out.box_deltas.detach()[rows], out.ref_boxes[rows]
        part.gt_boxes, part.gt_classes = out.gt_boxes[rows], out.gt_classes[rows]
        part.image_index = out.image_index[rows] % 2
        halves.append(plain(part, 2)[0])
    for name in grouped:
        assert torch.allclose(grouped[name], (halves[0][name] + halves[1][name]) / 2, atol=1e-6)
    assert stats["rcnn/num_pos"] == 4 and stats["rcnn/num_neg"] == 7
    whole, _ = plain(_stage(), 4)
    assert not torch.allclose(whole["rcnn_rank"], grouped["rcnn_rank"])


# ---------------------------------------------------------------- mask stages (YOLACT)
def _mask_stage(seed=0):
    """Two images, 8 rows, positives 1, 2, 6 (rows 1 and 6 on image 1), 2 prototypes on an 8 x 8 grid."""
    from rsdet.models.heads.protonet import prototype_mask_prediction

    g = torch.Generator().manual_seed(seed)
    m = 8
    ref = torch.rand(m, 2, generator=g) * 20
    ref = torch.cat([ref, ref + 8 + torch.rand(m, 2, generator=g) * 6], 1)
    gt = (ref + torch.randn(m, 4, generator=g)).clamp(0, 31)
    classes = torch.tensor([-1, 0, 2, -1, -2, -1, 1, -1])
    image = torch.tensor([0, 1, 0, 0, 1, 1, 1, 0])
    logits = torch.randn(m, 3, generator=g, requires_grad=True)
    deltas = (torch.randn(m, 4, generator=g) * 0.1).requires_grad_()
    coeffs = torch.randn(m, 2, generator=g, requires_grad=True)
    protos = torch.rand(2, 2, 8, 8, generator=g)
    gt_masks = (torch.rand(3, 8, 8, generator=g) > 0.4).float()
    gt_index = torch.tensor([-1, 0, 1, -1, -1, -1, 2, -1])
    masks = prototype_mask_prediction(protos, coeffs, image, torch.nonzero(classes >= 0).flatten(), gt_masks, gt_index,
                                      crop_boxes=gt / 4, padding=1.0)
    spec = StageSpec("head", 3, masks=True)
    out = StageOutput(spec, logits, deltas, ref, gt, classes, BoxCoder((10.0, 10.0, 5.0, 5.0)), image, masks=masks)
    out.branch = {"protos": protos, "coeffs": coeffs, "image_index": image, "gt_masks": gt_masks, "gt_index": gt_index}
    return out, spec


def _direct_masks(out):
    from rsdet.models.image_masks import box_region

    pos = torch.tensor([1, 2, 6])
    b = out.branch
    pred = torch.stack([torch.sigmoid(torch.einsum("khw,k->hw", b["protos"][b["image_index"][r]], b["coeffs"][r]))
                        for r in pos.tolist()])
    crop = box_region(out.gt_boxes[pos] / 4, 8, 8, padding=1.0)
    return pos, pred * crop, b["gt_masks"][b["gt_index"][pos]], crop


def test_dice_mask_term_is_the_score_weighted_mean_over_positives():
    cfg = dict(RS, balance="constant", mask_weight=2.0, head={})
    out, spec = _mask_stage()
    terms, _ = Criterion(OmegaConf.create(cfg), [spec])(out, 2)
    assert set(terms) == {"head_rank", "head_sort", "head_box", "head_mask"}
    pos, pred, gt, _ = _direct_masks(out)
    w = out.cls_logits.detach()[pos].sigmoid().max(1).values  # score weights: max over classes
    dice = 2 * (pred * gt).flatten(1).sum(1) / ((pred ** 2).flatten(1).sum(1) + (gt ** 2).flatten(1).sum(1) + 1e-5)
    expected = 1 - (w * dice).sum() / w.sum()  # RS-YOLACT's L_mask
    assert torch.allclose(terms["head_mask"], 2.0 * expected, atol=1e-6)


def test_mask_term_value_self_balance_and_its_gradient_reaches_the_coefficients():
    out, spec = _mask_stage()
    terms, _ = Criterion(OmegaConf.create(dict(RS, head={})), [spec])(out, 2)
    assert torch.allclose(terms["head_mask"], terms["head_rank"] + terms["head_sort"], atol=1e-6)
    terms["head_mask"].backward()
    grad = out.branch["coeffs"].grad
    assert grad[[1, 2, 6]].abs().sum() > 0 and grad[[0, 3, 4, 5, 7]].abs().sum() == 0


def test_dice_label_ranks_positives_by_the_dice_of_their_detached_masks():
    out, spec = _mask_stage()
    terms, _ = Criterion(OmegaConf.create(dict(RS, label="dice", head={})), [spec])(out, 2)
    pos, pred, gt, _ = _direct_masks(out)
    keep = out.gt_classes >= -1
    target = torch.zeros(8, 3)
    target[pos, out.gt_classes[pos]] = L.dice_coefficient(pred.detach(), gt)
    rank, sort = L.rank_sort_loss(out.cls_logits.detach()[keep], target[keep], delta=0.5)
    assert torch.allclose(terms["head_rank"], rank) and torch.allclose(terms["head_sort"], sort)
    mean, _ = Criterion(OmegaConf.create(dict(RS, label="iou_dice", head={})), [spec])(out, 2)
    assert not torch.allclose(mean["head_sort"], terms["head_sort"])


def test_bce_mask_term_is_the_box_normalised_pixel_bce_averaged_over_positives():
    import torch.nn.functional as F

    ce = dict(RS, name="ce", cls="ce", weighting="none", balance="constant", mask="bce", mask_weight=6.125, head={})
    out, _ = _mask_stage()
    spec = StageSpec("head", 3, masks=True)
    out.cls_logits = torch.randn(8, 4, requires_grad=True)  # softmax: C + 1 logits
    terms, _ = Criterion(OmegaConf.create(ce), [spec])(out, 2)
    assert set(terms) == {"head_cls", "head_box", "head_mask"}
    _, pred, gt, crop = _direct_masks(out)
    per_pos = (F.binary_cross_entropy(pred, gt, reduction="none") * crop).flatten(1).sum(1) / crop.flatten(1).sum(1)
    assert torch.allclose(terms["head_mask"], 6.125 * per_pos.mean(), atol=1e-6)


def test_mask_labels_and_losses_are_checked_up_front():
    with pytest.raises(ConfigError, match="predicts boxes only") as info:
        check_mask_labels(OmegaConf.create(dict(RS, label="dice")), [SPECS["rcnn"]], "faster_rcnn")
    # every mask detector is offered, from the registry (SOLOv2 included), and no box detector
    for name in ("mask_rcnn", "yolact", "solov2"):
        assert f"detector={name}" in str(info.value)
    assert "detector=atss" not in str(info.value)
    with pytest.raises(ConfigError, match="loss.mask='l2'"):
        stage_loss_config(OmegaConf.create(dict(RS, mask="l2")), StageSpec("head", 3, masks=True))


def test_mask_stage_ranking_groups_split_the_mask_rows_by_image():
    out, spec = _mask_stage()
    cfg = OmegaConf.create(dict(RS, label="dice", head={}))
    grouped, _ = Criterion(cfg, [spec], group_images=1)(out, 2)
    halves = [Criterion(cfg, [spec])(out.select(torch.nonzero(out.image_index == k).flatten(), k), 1)[0]
              for k in (0, 1)]
    image1 = out.select(torch.tensor([1, 4, 5, 6]), 1).masks
    assert image1.rows.tolist() == [0, 3]  # positives 1 and 6 of image 1, renumbered
    for name in grouped:
        assert torch.allclose(grouped[name], (halves[0][name] + halves[1][name]) / 2, atol=1e-6)
