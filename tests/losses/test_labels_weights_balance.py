"""Continuous labels, instance weights, task balancers and the loss factory."""

import pytest
import torch

from rsdet.errors import ConfigError
from rsdet.losses import (ALRPSelfBalance, alrp_loc_loss, alrp_loss, box_iou_aligned,
                          build_cls_loss, build_task_balancer, centerness_weights,
                          continuous_labels, giou_loss, instance_weights, rank_sort_loss,
                          ranking_gradient_l1, ranking_weights, score_weights, vectorise_targets,
                          weighted_mean)

BOX_P = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1], [5, 5, 6, 6]])
BOX_G = torch.tensor([[1.0, 1, 3, 3], [0, 0, 1, 1], [0, 0, 1, 1]])


def test_box_iou_aligned_and_labels():
    assert box_iou_aligned(BOX_P, BOX_G).tolist() == pytest.approx([1 / 7, 1.0, 0.0])
    p = BOX_P.clone().requires_grad_()
    iou = continuous_labels("iou", pred_boxes=p, gt_boxes=BOX_G)
    assert not iou.requires_grad and iou.tolist() == pytest.approx([1 / 7, 1.0, 0.0])
    assert continuous_labels("binary", pred_boxes=p).tolist() == [1.0, 1.0, 1.0]
    assert continuous_labels("binary", num=2).tolist() == [1.0, 1.0]
    masks = torch.zeros(3, 2, 2)
    masks[:, 0, 0] = 1
    dice = continuous_labels("dice", pred_masks=masks, gt_masks=masks)
    assert dice.tolist() == pytest.approx([1.0] * 3, abs=1e-4)
    mean = continuous_labels("iou_dice", pred_boxes=BOX_P, gt_boxes=BOX_G, pred_masks=masks,
                             gt_masks=masks)
    assert mean.tolist() == pytest.approx([(1 / 7 + 1) / 2, 1.0, 0.5], abs=1e-4)
    with pytest.raises(ConfigError, match="binary"):
        continuous_labels("giou")


def test_iou_zero_label_becomes_negative_unless_clamped():
    labels = torch.tensor([0, 3, 1])          # C = 3: row 1 is background
    ious = continuous_labels("iou", pred_boxes=BOX_P[[0, 2]], gt_boxes=BOX_G[[0, 2]])
    faithful = vectorise_targets(labels, 3, values=ious)
    assert faithful[2, 1].item() == 0.0       # IoU 0 -> negative entry (official; docs/losses.md)
    clamped = continuous_labels("iou", pred_boxes=BOX_P[[0, 2]], gt_boxes=BOX_G[[0, 2]],
                                min_value=1e-6)
    assert vectorise_targets(labels, 3, values=clamped)[2, 1].item() > 0


def test_vectorise_targets():
    labels = torch.tensor([2, 3, 0, 3])
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0])
    out = vectorise_targets(labels, 3, weights, values=torch.tensor([0.7, 0.4]))
    assert torch.allclose(out, torch.tensor([[0, 0, 0.7], [0, 0, 0], [0.4, 0, 0], [-1, -1, -1]]))
    assert vectorise_targets(labels, 3)[0].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="background"):
        vectorise_targets(torch.tensor([4]), 3)
    with pytest.raises(ValueError, match="positive row"):
        vectorise_targets(labels, 3, values=torch.ones(3))


def test_weighted_mean_eps_rule():
    v = torch.tensor([1.0, 3.0], requires_grad=True)
    assert weighted_mean(v, torch.tensor([1.0, 3.0])).item() == pytest.approx(2.5)
    # sum of weights below eps: denominator 1 (docs/losses.md)
    assert weighted_mean(v, torch.tensor([1e-13, 0.0]), eps=1e-12).item() == pytest.approx(1e-13)
    empty = weighted_mean(v[:0], torch.zeros(0))
    assert empty.item() == 0.0 and empty.requires_grad


def test_instance_weights_kinds():
    centres = torch.tensor([[2.0, 2.0], [1.0, 3.0], [9.0, 9.0]])
    gt = torch.tensor([[0.0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 4, 4]])
    c = centerness_weights(centres, gt)
    assert c.tolist() == pytest.approx([1.0, (1 / 3 * 1 / 3) ** 0.5, 0.0])
    logits = torch.tensor([[0.0, 2.0], [-1.0, -3.0]], requires_grad=True)
    s = score_weights(logits)
    assert not s.requires_grad and s.tolist() == pytest.approx(torch.sigmoid(
        torch.tensor([2.0, -1.0])).tolist())
    assert instance_weights("none", pred_boxes=BOX_P).tolist() == [1.0, 1.0, 1.0]
    assert instance_weights("iou", pred_boxes=BOX_P, gt_boxes=BOX_G).tolist() == pytest.approx(
        [1 / 7, 1.0, 0.0])
    assert instance_weights("centerness", anchor_centers=centres, gt_boxes=gt).tolist() == \
        pytest.approx(c.tolist())
    with pytest.raises(ConfigError):
        instance_weights("focal", num=2)
    with pytest.raises(ValueError, match="missing"):
        instance_weights("score")


def test_ranking_weights_hand_checked_vector():
    logits = torch.tensor([3.0, 2.0, -1.0, -3.0])
    ranks = torch.tensor([1.0, 2.0, 5.0, 7.0])
    w = ranking_weights(logits, ranks, delta_loc=0.0)
    assert w.tolist() == pytest.approx([0.460714, 0.210714, 0.085714, 0.035714], abs=1e-6)
    assert (w / w.sum()).tolist() == pytest.approx([0.5811, 0.2658, 0.1081, 0.0450], abs=1e-4)
    assert ranking_weights(logits, ranks).tolist() == pytest.approx(w.tolist())  # default
    assert instance_weights("rank", pos_logits=logits, ranks=ranks, delta_loc=0.0).tolist() == \
        pytest.approx(w.tolist())
    flat = ranking_weights(logits, ranks, delta_loc=100.0)
    assert flat.max() / flat.min() < w.max() / w.min()       # larger delta_loc flattens
    # ties: delta_loc = 0 counts H(0) = 1 both ways; default breaks ties by sort order
    tied = ranking_weights(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0]), delta_loc=0.0)
    assert tied.tolist() == pytest.approx([0.5, 0.5])


def test_default_ranking_weights_reproduce_alrp_loc_loss():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, generator=g)
    targets = torch.zeros(300)
    targets[:40] = 1
    errors = torch.rand(40, generator=g)
    out = alrp_loss(logits, targets, errors)
    w = ranking_weights(logits[:40], out.rank)
    assert (w * errors).sum().item() == pytest.approx(
        alrp_loc_loss(errors, out.rank, out.order).item(), rel=1e-6)


def test_constant_value_magnitude_balance():
    cls = torch.tensor(0.6, requires_grad=True) * 1.0
    box_out = torch.tensor([[0.0, 0, 1, 1]], requires_grad=True)
    box = giou_loss(box_out, torch.tensor([[0.0, 0, 2, 2]]), reduction="mean")
    assert build_task_balancer("constant", value=2.0)(cls, box).item() == 2.0
    lam = build_task_balancer("value")(cls, box)
    assert not lam.requires_grad and lam.item() == pytest.approx(0.6 / box.item())
    zero_box = box * 0.0
    assert torch.isfinite(build_task_balancer("value")(cls, zero_box))      # guarded
    # magnitude: RS numerator in closed form == autograd numerator
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, generator=g, requires_grad=True)
    t = torch.zeros(500)
    t[:20] = torch.rand(20, generator=g) + 0.05
    rank, sort = rank_sort_loss(logits, t)
    mag = build_task_balancer("magnitude")
    closed = mag(rank + sort, box, box_outputs=box_out, cls_grad_l1=ranking_gradient_l1(rank))
    auto = mag(rank + sort, box, box_outputs=box_out, cls_outputs=logits)
    box_grad = torch.autograd.grad(box, box_out, retain_graph=True)[0].abs().sum()
    assert closed.item() == pytest.approx(auto.item(), rel=1e-5)
    expected = torch.autograd.grad(rank + sort, logits, retain_graph=True)[0].abs().sum() / box_grad
    assert closed.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="box_outputs"):
        mag(rank, box)
    with pytest.raises(ConfigError, match="choose"):
        build_task_balancer("grad")
    with pytest.raises(ConfigError, match="bad options"):
        build_task_balancer("value", lam=1)


def test_alrp_self_balance_period_and_resume():
    sb = ALRPSelfBalance(period=3)
    assert sb.weight == 50.0
    cls, loc = torch.tensor(0.8), torch.tensor(0.2)
    assert sb(cls, loc).item() == 50.0
    assert sb(cls, torch.tensor(0.4)).item() == 50.0
    # third call completes the period and already uses the new weight (official order)
    assert sb(cls, torch.tensor(0.3)).item() == pytest.approx((0.3 + 0.8) / 0.3)
    state = sb.state_dict()
    resumed = ALRPSelfBalance(period=3)
    sb.update(1.0, 0.5)
    resumed.load_state_dict(state)
    resumed.update(1.0, 0.5)
    assert resumed.state_dict() == sb.state_dict()
    sb.update(1.0, 0.0)
    assert sb.update(1.0, 0.0) > 0                      # mean L_loc floored, no ZeroDivision
    with pytest.raises(ConfigError):
        ALRPSelfBalance(period=0)
    with pytest.raises(ConfigError, match="lacks"):
        resumed.load_state_dict({"weight": 1.0})


def test_build_cls_loss():
    rs = build_cls_loss("rs", delta=0.25)
    out = rs(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert out.ranking_loss.item() == 0.0
    assert build_cls_loss("focal", gamma=1.0, reduction="sum").keywords == {
        "gamma": 1.0, "reduction": "sum"}
    with pytest.raises(ConfigError, match="valid options"):
        build_cls_loss("ap", sigma=1.0)
    with pytest.raises(ConfigError, match="choose one of"):
        build_cls_loss("softmax")
