"""Score-based classification losses and box/mask losses."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from rsdet.losses import (binary_cross_entropy, dice_coefficient, dice_loss, giou_loss, l1_loss,
                          sigmoid_focal_loss, smooth_l1_loss, softmax_cross_entropy)


def _data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)
    targets = torch.zeros(6, 5)
    targets[0, 1] = targets[3, 4] = 1.0
    targets[5] = -1.0
    return logits, targets


def test_focal_matches_torchvision_and_ignores():
    logits, targets = _data()
    valid = targets >= 0
    ref = torchvision.ops.sigmoid_focal_loss(logits, targets.clamp(min=0), reduction="none")
    none = sigmoid_focal_loss(logits, targets, reduction="none")
    assert torch.allclose(none[valid], ref[valid]) and torch.all(none[~valid] == 0)
    assert sigmoid_focal_loss(logits, targets, reduction="sum").item() == pytest.approx(
        ref[valid].sum().item(), rel=1e-6)
    assert sigmoid_focal_loss(logits, targets, reduction="mean").item() == pytest.approx(
        ref[valid].mean().item(), rel=1e-6)
    assert sigmoid_focal_loss(logits, targets).item() == pytest.approx(    # pos_mean: 2 positives
        ref[valid].sum().item() / 2, rel=1e-6)
    x = logits.clone().requires_grad_()
    sigmoid_focal_loss(x, targets, reduction="sum").backward()
    assert torch.all(x.grad[5] == 0) and torch.any(x.grad[0] != 0)


def test_bce_matches_torch_and_ignores():
    logits, targets = _data()
    valid = targets >= 0
    ref = F.binary_cross_entropy_with_logits(logits[valid], targets[valid])
    assert binary_cross_entropy(logits, targets).item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.all(binary_cross_entropy(logits, targets, reduction="none")[5] == 0)
    weighted = binary_cross_entropy(logits, targets, reduction="sum", pos_weight=3.0)
    ref_w = F.binary_cross_entropy_with_logits(logits[valid], targets[valid], reduction="sum",
                                               pos_weight=torch.tensor(3.0))
    assert weighted.item() == pytest.approx(ref_w.item(), rel=1e-6)


def test_softmax_cross_entropy():
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, -1, 1])
    ref = F.cross_entropy(logits[[0, 1, 3]], labels[[0, 1, 3]])
    assert softmax_cross_entropy(logits, labels).item() == pytest.approx(ref.item(), rel=1e-6)
    assert softmax_cross_entropy(logits[:0], labels[:0]).item() == 0.0
    with pytest.raises(ValueError, match="integer"):
        softmax_cross_entropy(logits, labels.float())
    with pytest.raises(ValueError, match="reduction"):
        softmax_cross_entropy(logits, labels, reduction="pos_mean")


def test_giou_l1_smooth_l1():
    pred = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]], requires_grad=True)
    gt = torch.tensor([[1.0, 1, 3, 3], [0, 0, 1, 1]])
    giou = giou_loss(pred, gt)
    # box 0: IoU 1/7, enclosing area 9, union 7 -> GIoU = 1/7 - 2/9
    assert giou[0].item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-6)
    assert giou[1].item() == pytest.approx(0.0, abs=1e-6)
    assert giou_loss(pred, gt, reduction="mean").item() == pytest.approx(giou.mean().item())
    assert l1_loss(pred, gt).tolist() == [[1.0] * 4, [0.0] * 4]          # like F.l1_loss
    assert l1_loss(pred, gt, reduction="box").tolist() == pytest.approx([4.0, 0.0])
    assert l1_loss(pred, gt, reduction="mean").item() == pytest.approx(2.0)   # per box
    # |d| = 1 per coordinate: 0.5 * 1 / 2 each with beta 2 -> 1.0; beta 0.5: 1 - 0.25 each
    assert smooth_l1_loss(pred, gt, beta=2.0, reduction="box").tolist() == pytest.approx([1.0, 0])
    assert smooth_l1_loss(pred, gt, beta=0.5).sum(-1).tolist() == pytest.approx([3.0, 0.0])
    assert smooth_l1_loss(pred, gt, beta=0.5, reduction="sum").item() == pytest.approx(3.0)
    empty = giou_loss(pred[:0], gt[:0], reduction="mean")
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="4"):
        l1_loss(pred[:, :3], gt[:, :3])


def test_dice():
    p = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    t = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    expected = 2 * 1.5 / (1.25 + 2 + 1e-5)
    assert dice_coefficient(p, t).item() == pytest.approx(expected, rel=1e-6)
    assert dice_loss(p, t).item() == pytest.approx(1 - expected, rel=1e-6)
    # SOLOv2 form: 0.001 added to each squared sum == eps 0.002
    assert dice_coefficient(p, t, eps=0.002).item() == pytest.approx(3 / (1.251 + 2.001))
