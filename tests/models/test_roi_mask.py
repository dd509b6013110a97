"""Mask R-CNN's mask branch: RoI mask targets (hand-checked, flip-aligned), the positive cap, the mask
loss against a direct per-RoI computation, Dice labels, and the configuration errors of mask options."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.image_list import ImageList

from rsdet import losses as L
from rsdet.errors import ConfigError, RsdetError
from rsdet.engine.inference import check_iou_types
from rsdet.models import build_detector
from rsdet.models.criterion import Criterion
from rsdet.models.heads.roi_mask import cap_positive_rows, mask_targets
from rsdet.models.stage import MaskPrediction, StageOutput, StageSpec
from rsdet.train_cli import CONF_DIR

SMALL = ["dataset.min_size=64", "dataset.max_size=64"]


def _compose(overrides=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*SMALL, *overrides])


# ---------------------------------------------------------------- targets
def test_mask_target_of_a_roi_is_the_gt_mask_cropped_and_resized():
    mask = torch.zeros(1, 40, 40, dtype=torch.uint8)
    mask[0, 8:24, 4:20] = 1  # a 16 x 16 square at x 4..20, y 8..24
    boxes = torch.tensor([[4.0, 8.0, 20.0, 24.0],    # the square's own box: all inside
                          [4.0, 8.0, 36.0, 24.0]])   # twice as wide: the left half inside
    t = mask_targets([mask], boxes, torch.tensor([0, 0]), torch.tensor([0, 0]), size=8)
    assert t.shape == (2, 8, 8)
    assert torch.equal(t[0], torch.ones(8, 8))
    expected = torch.zeros(8, 8)
    expected[:, :4] = 1
    assert torch.equal(t[1], expected)


def test_mask_target_uses_the_matched_gt_of_each_roi_in_its_own_image():
    a = torch.zeros(2, 20, 20, dtype=torch.uint8)
    a[1, :, :10] = 1        # image 0, GT 1: left half
    b = torch.zeros(1, 20, 20, dtype=torch.uint8)
    b[0, 10:, :] = 1        # image 1, GT 0: bottom half
    box = torch.tensor([[0.0, 0.0, 20.0, 20.0]] * 2)
    t = mask_targets([a, b], box, torch.tensor([1, 0]), torch.tensor([0, 1]), size=4)
    assert torch.equal(t[0], torch.tensor([[1.0, 1, 0, 0]] * 4))
    assert torch.equal(t[1], torch.tensor([[0.0] * 4] * 2 + [[1.0] * 4] * 2))


def test_mask_targets_follow_a_horizontal_flip_of_image_masks_and_boxes():
    """An L-shaped mask and a RoI around it: flipping mask and box gives the flipped target."""
    w = 48
    mask = torch.zeros(1, 32, w, dtype=torch.uint8)
    mask[0, 4:28, 6:12] = 1
    mask[0, 22:28, 6:30] = 1
    box = torch.tensor([[5.0, 3.0, 31.0, 29.0]])
    flipped_box = torch.stack([w - box[:, 2], box[:, 1], w - box[:, 0], box[:, 3]], 1)
    t = mask_targets([mask], box, torch.tensor([0]), torch.tensor([0]), size=14)
    tf = mask_targets([mask.flip(-1)], flipped_box, torch.tensor([0]), torch.tensor([0]), size=14)
    assert t.sum() > 20 and not torch.equal(t, t.flip(-1))  # not symmetric: the check means something
    assert torch.equal(tf, t.flip(-1))


def test_flipped_dataset_item_keeps_mask_targets_aligned(shapes_cache, monkeypatch):
    """Through the data path: an image flipped by the training transform has its masks flipped with it."""
    from rsdet.data.build import build_dataset

    monkeypatch.setenv("RSDET_CACHE", str(shapes_cache))
    cfg = _compose(["detector=mask_rcnn", "dataset.generate.num_train=4", "dataset.generate.num_val=2",
                    "dataset.generate.image_size=64"])
    plain = build_dataset(OmegaConf.merge(cfg.dataset, {"flip_prob": 0.0}), "train", train=True)
    flip = build_dataset(OmegaConf.merge(cfg.dataset, {"flip_prob": 1.0}), "train", train=True)
    i = next(k for k in range(len(plain)) if len(plain[k][1]["boxes"]))
    _, t = plain[i]
    _, tf = flip[i]
    n = len(t["boxes"])
    assert torch.equal(tf["masks"], t["masks"].flip(-1))
    t0 = mask_targets([t["masks"]], t["boxes"], torch.arange(n), torch.zeros(n, dtype=torch.long), 14)
    t1 = mask_targets([tf["masks"]], tf["boxes"], torch.arange(n), torch.zeros(n, dtype=torch.long), 14)
    # equal up to a rare bin whose average is exactly 0.5 (integer boxes) and rounds to either side
    assert (t1 != t0.flip(-1)).float().mean() < 0.01 and t0.sum() > 50


# ---------------------------------------------------------------- cap
def test_cap_keeps_every_positive_up_to_the_limit_and_draws_beyond_it():
    classes = torch.tensor([-1, 2, 0, -2, 1, 1, -1, 0])
    rows, drawn = cap_positive_rows(classes, 200)
    assert rows.tolist() == [1, 2, 4, 5, 7] and torch.equal(rows, drawn)
    torch.manual_seed(0)
    rows, drawn = cap_positive_rows(classes, 3)
    assert len(rows) == 3 and rows.tolist() == sorted(rows.tolist())
    assert set(rows.tolist()) <= {1, 2, 4, 5, 7} and sorted(drawn.tolist()) == rows.tolist()
    rows, _ = cap_positive_rows(classes, None)
    assert len(rows) == 5


# ---------------------------------------------------------------- mask term
RS = {"name": "rs", "cls": "rs", "delta": 0.5, "label": "iou", "box": "giou", "box_weight": 1.0, "weighting": "score",
      "delta_loc": None, "balance": "value", "box_normalizer": "weights", "stage_weights": {}, "prior_prob": None,
      "test_score_thresh": 0.4, "mask": "dice"}
MASK_SPEC = StageSpec("rcnn", 3, iou_threshold=0.5, masks=True)


def _mask_stage(weight_rows=None, label_masks=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    m, s = 8, 4
    ref = torch.rand(m, 2, generator=g) * 40
    ref = torch.cat([ref, ref + 10 + torch.rand(m, 2, generator=g) * 10], 1)
    gt = ref + torch.randn(m, 4, generator=g)
    classes = torch.tensor([0, -1, 2, -1, 1, 2, -1, -2])
    logits = torch.randn(m, 3, generator=g, requires_grad=True)
    deltas = (torch.randn(m, 4, generator=g) * 0.1).requires_grad_()
    rows = torch.tensor([0, 2, 4, 5])
    mask_logits = torch.randn(4, s, s, generator=g, requires_grad=True)
    targets = (torch.rand(4, s, s, generator=g) > 0.5).float()
    probs = tg = None
    if label_masks:
        probs = torch.zeros(m, s, s)
        tg = torch.zeros(m, s, s)
        probs[rows] = mask_logits.detach().sigmoid()
        tg[rows] = targets
    masks = MaskPrediction(mask_logits, targets, rows, rows if weight_rows is None else weight_rows, probs, tg)
    return StageOutput(MASK_SPEC, logits, deltas, ref, gt, classes, BoxCoder((10.0, 10.0, 5.0, 5.0)),
                       torch.zeros(m, dtype=torch.long), masks=masks)


def _dice_by_hand(p, t):
    return 1 - 2 * (p * t).sum() / ((p * p).sum() + (t * t).sum() + 1e-5)


def test_rs_mask_term_is_score_weighted_dice_balanced_to_the_ranking_value():
    out = _mask_stage()
    terms, _ = Criterion(OmegaConf.create(RS), [MASK_SPEC], detector="mask_rcnn")(out, 1)
    assert set(terms) == {"rcnn_rank", "rcnn_sort", "rcnn_box", "rcnn_mask"}
    m = out.masks
    dice = torch.stack([_dice_by_hand(m.logits[k].detach().sigmoid(), m.targets[k]) for k in range(4)])
    w = torch.stack([out.cls_logits[r].detach().sigmoid().max() for r in m.rows])
    direct = (w * dice).sum() / w.sum()
    ranking = terms["rcnn_rank"] + terms["rcnn_sort"]
    # value self-balance: λ_mask L_mask has the ranking loss' value; its gradient is λ_mask ∂L_mask
    assert torch.allclose(terms["rcnn_mask"], ranking, atol=1e-6)
    terms["rcnn_mask"].backward()
    lam = ranking.detach() / direct
    m.logits.grad, grad = None, m.logits.grad.clone()
    (lam * (w * torch.stack([_dice_by_hand(m.logits[k].sigmoid(), m.targets[k]) for k in range(4)])).sum()
     / w.sum()).backward()
    assert torch.allclose(grad, m.logits.grad, atol=1e-6)


def test_official_weight_order_pairs_masks_with_the_weights_in_draw_order():
    drawn = torch.tensor([5, 0, 4, 2])  # the order a cap drew the rows in; masks stay in row order
    cfg = OmegaConf.create({**RS, "balance": "constant"})
    fixed, _ = Criterion(cfg, [MASK_SPEC])(_mask_stage(), 1)
    quirk_out = _mask_stage(weight_rows=drawn)
    quirk, _ = Criterion(cfg, [MASK_SPEC])(quirk_out, 1)
    m = quirk_out.masks
    dice = torch.stack([_dice_by_hand(m.logits[k].detach().sigmoid(), m.targets[k]) for k in range(4)])
    w = torch.stack([quirk_out.cls_logits[r].detach().sigmoid().max() for r in drawn])
    assert torch.allclose(quirk["rcnn_mask"], (w * dice).sum() / w.sum(), atol=1e-6)
    assert not torch.allclose(quirk["rcnn_mask"], fixed["rcnn_mask"])


def test_ce_mask_term_is_the_mean_per_pixel_bce():
    cfg = OmegaConf.create({**RS, "cls": "ce", "label": "binary", "weighting": "none", "balance": "constant",
                            "box_normalizer": "sampled", "box_weight": 10.0, "mask": "bce"})
    out = _mask_stage()
    out.cls_logits = torch.randn(8, 4)  # softmax: background last
    terms, _ = Criterion(cfg, [MASK_SPEC])(out, 1)
    m = out.masks
    expected = torch.nn.functional.binary_cross_entropy_with_logits(m.logits, m.targets)
    assert torch.allclose(terms["rcnn_mask"], expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["dice", "iou_dice"])
def test_dice_label_is_the_detached_mask_dice_at_each_positive(kind):
    out = _mask_stage(label_masks=True)
    terms, _ = Criterion(OmegaConf.create({**RS, "label": kind}), [MASK_SPEC])(out, 1)
    m = out.masks
    dice = torch.stack([1 - _dice_by_hand(m.logits[k].detach().sigmoid(), m.targets[k]) for k in range(4)])
    if kind == "iou_dice":
        pred = out.box_coder.decode_single(out.box_deltas.detach(), out.ref_boxes)
        dice = (dice + L.box_iou_aligned(pred[m.rows], out.gt_boxes[m.rows])) / 2
    keep = out.gt_classes >= -1
    labels = torch.where(out.gt_classes >= 0, out.gt_classes, torch.full_like(out.gt_classes, 3))[keep]
    target = L.vectorise_targets(labels, 3, values=dice)
    rank, sort = L.build_cls_loss("rs", delta=0.5)(out.cls_logits[keep], target)
    assert torch.allclose(terms["rcnn_rank"], rank) and torch.allclose(terms["rcnn_sort"], sort)


# ---------------------------------------------------------------- the detector's toy batch
def _toy_batch():
    mask = torch.zeros(2, 64, 64, dtype=torch.uint8)
    mask[0, 10:40, 12:50] = 1
    mask[1, 44:60, 4:20] = 1
    mask[1, 50:60, 4:30] = 1
    boxes = torch.tensor([[12.0, 10.0, 50.0, 40.0], [4.0, 44.0, 30.0, 60.0]])
    return [{"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": mask}] * 2


def test_mask_rcnn_loss_on_a_toy_batch_equals_a_direct_per_roi_computation():
    from torchvision.ops import roi_align

    torch.manual_seed(0)
    cfg = _compose(["detector=mask_rcnn", "detector.mask.max_rois=5"])
    model = build_detector(cfg, 3).train()
    targets = _toy_batch()
    images = ImageList(torch.rand(2, 3, 64, 64), [(64, 64)] * 2)
    features = model.backbone(images.tensors)
    # proposals: each GT box shifted by 1..3 px (IoU > 0.5) and one far negative, per image
    shifts = torch.tensor([[1.0, 0, 1, 0], [0, 2, 0, 2], [-3, 0, -3, 0]])
    props = torch.cat([targets[0]["boxes"][:, None] + shifts, ], 1).reshape(-1, 4)
    props = torch.cat([props, torch.tensor([[0.0, 0, 6, 6]])])
    rpn_forward = model.rpn.forward
    model.rpn.forward = lambda imgs, feats, tgts=None: (  # the real RPN's stage output, our proposals
        [props, props.clone()], rpn_forward(imgs, feats, tgts)[1])
    torch.manual_seed(1)
    rpn_out, out = model.stage_outputs(images, features, targets)
    m = out.masks
    num_pos = int((out.gt_classes >= 0).sum())
    assert num_pos > 5 and len(m.rows) == 5  # the cap (200 in the RS recipe) drew 5 of the positives
    assert torch.all(out.gt_classes[m.rows] >= 0)
    # direct: per RoI, RoIAlign of its matched GT mask (IoU-best GT here), threshold 0.5, Dice of the
    # sigmoid at its class, score weights, weighted mean, value balance
    losses, weights = [], []
    for k, r in enumerate(m.rows.tolist()):
        box = out.ref_boxes[r]
        img = int(out.image_index[r])
        gt_masks = targets[img]["masks"]
        gt = int(torch.argmin((targets[img]["boxes"] - out.gt_boxes[r]).abs().sum(1)))
        crop = roi_align(gt_masks[gt][None, None].float(), [box[None]], (28, 28), 1.0, 1, True)[0, 0] >= 0.5
        assert torch.equal(m.targets[k], crop.float())
        per_image = [torch.zeros(0, 4)] * img + [box[None]]  # the RoI in its own image's feature maps
        roi_feat = model.mask_branch.roi_align(features, per_image, images.image_sizes)
        logit = model.mask_branch.head(roi_feat)[0, out.gt_classes[r]]
        assert torch.allclose(logit, m.logits[k], atol=1e-4)
        losses.append(_dice_by_hand(logit.sigmoid(), crop.float()))
        weights.append(out.cls_logits[r].detach().sigmoid().max())
    w = torch.stack(weights)
    direct = (w * torch.stack(losses)).sum() / w.sum()
    terms, _ = model.criterion(out, 2)
    lam = (terms["rcnn_rank"] + terms["rcnn_sort"]).detach() / direct.detach()
    assert torch.allclose(terms["rcnn_mask"], lam * direct, atol=1e-5)
    weight = model.mask_branch.head.predictor.weight  # same gradient as the direct computation
    g_criterion, = torch.autograd.grad(terms["rcnn_mask"], weight, retain_graph=True)
    g_direct, = torch.autograd.grad(lam * direct, weight)
    assert torch.allclose(g_criterion, g_direct, rtol=1e-3, atol=1e-6) and g_direct.abs().sum() > 0
    assert torch.allclose(direct.detach(), L.weighted_mean(L.dice_loss(m.logits.sigmoid(), m.targets), w), atol=1e-4)


def test_mask_rcnn_detections_carry_mask_probabilities_in_the_original_frame():
    torch.manual_seed(0)
    model = build_detector(_compose(["detector=mask_rcnn"]), 3).eval()
    model.score_thresh = 0.0
    dets = model([torch.rand(3, 80, 100)])
    assert dets[0]["masks"].shape == (len(dets[0]["boxes"]), 1, 80, 100)
    assert dets[0]["masks"].dtype == torch.float32
    assert float(dets[0]["masks"].min()) >= 0 and float(dets[0]["masks"].max()) <= 1


# ---------------------------------------------------------------- configuration
def test_mask_label_on_a_box_detector_is_a_clear_error():
    with pytest.raises(ConfigError, match="loss.label=dice .*detector=faster_rcnn predicts boxes only"):
        build_detector(_compose(["loss.label=dice"]), 3)


def test_mask_label_on_the_rpn_of_a_mask_detector_keeps_iou_unless_set_there():
    model = build_detector(_compose(["detector=mask_rcnn", "loss.label=dice"]), 3)
    assert model.criterion.cfg["rpn"].label == "iou" and model.criterion.cfg["rcnn"].label == "dice"
    with pytest.raises(ConfigError, match="loss.rpn.label=dice .*predicts no masks"):
        build_detector(_compose(["detector=mask_rcnn", "loss.rpn.label=dice"]), 3)


def test_segm_on_a_box_detector_is_a_clear_error_and_mask_detectors_default_to_it():
    with pytest.raises(RsdetError, match="mask AP needs a mask detector.*detector=faster_rcnn predicts boxes only"):
        check_iou_types(_compose(["eval.iou_types=[bbox,segm]"]))
    cfg = _compose(["detector=mask_rcnn"])
    assert list(cfg.eval.iou_types) == ["bbox", "segm"] and cfg.dataset.with_masks is True
    assert check_iou_types(cfg) == ["bbox", "segm"]
    box = _compose([])
    assert list(box.eval.iou_types) == ["bbox"] and box.dataset.with_masks is False
    assert list(_compose(["detector=mask_rcnn", "eval.iou_types=[bbox]"]).eval.iou_types) == ["bbox"]


def test_mask_recipes_thresholds_and_caps():
    rs = _compose(["detector=mask_rcnn"])
    assert rs.loss.test_score_thresh == 0.40 and rs.detector.mask.max_rois == 200 and rs.loss.mask == "dice"
    assert _compose(["detector=mask_rcnn", "dataset=shapes_lvis"]).loss.test_score_thresh == 0.60
    ce = _compose(["detector=mask_rcnn", "loss=ce"])
    assert ce.loss.test_score_thresh == 0.05 and ce.detector.mask.max_rois is None and ce.loss.mask == "bce"
    assert dict(ce.loss.default_sampler) == {"rpn": "random", "rcnn": "random"}
