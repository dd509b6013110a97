"""YOLACT's mask pieces: head and protonet shapes, mask assembly, box crops and the row-aligned mask branch."""

import pytest
import torch

from rsdet.errors import ConfigError
from rsdet.models.heads.protonet import ProtoNet, YolactHead, assemble_masks, gt_masks_at, prototype_mask_prediction
from rsdet.models.image_masks import box_region


def test_head_outputs_logits_deltas_and_tanh_coefficients_per_anchor():
    head = YolactHead(16, num_anchors=3, num_cls_outputs=7, num_protos=32, num_convs=1, feat_channels=8)
    feats = [torch.randn(2, 16, 8, 8), torch.randn(2, 16, 4, 4)]
    cls, reg, coef = head(feats)
    n = (64 + 16) * 3
    assert cls.shape == (2, n, 7) and reg.shape == (2, n, 4) and coef.shape == (2, n, 32)
    assert coef.abs().max() < 1
    assert torch.allclose(head.cls_out.bias, torch.zeros(21))  # Xavier init with zero bias (YOLACT)
    prior = YolactHead(16, 3, 6, prior_prob=0.1)
    assert torch.allclose(prior.cls_out.bias.sigmoid(), torch.full((18,), 0.1))
    with pytest.raises(ConfigError, match="prior_prob"):
        YolactHead(16, 3, 6, prior_prob=1.5)


def test_protonet_doubles_p3_and_gives_non_negative_prototypes():
    protos = ProtoNet(16, channels=8, num_protos=32, num_convs=3)(torch.randn(2, 16, 12, 10))
    assert protos.shape == (2, 32, 24, 20) and protos.min() >= 0


def test_masks_are_the_sigmoid_of_the_prototype_combination():
    protos = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[0.0, 1.0], [1.0, 0.0]]])  # k = 2, 2 x 2
    coeffs = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    masks = assemble_masks(protos, coeffs)
    expected = torch.sigmoid(torch.tensor([[[1.0, -1.0], [-1.0, 2.0]], [[0.5, 0.0], [0.0, 1.0]]]))
    assert torch.allclose(masks, expected)


def test_gt_masks_are_padded_resized_and_thresholded():
    mask = torch.zeros(1, 6, 8, dtype=torch.uint8)
    mask[0, 0:4, 0:4] = 1
    small = gt_masks_at(mask, (8, 8), (4, 4))  # the image is 6 x 8, padded to 8 x 8, masks at 4 x 4
    expected = torch.zeros(1, 4, 4)
    expected[0, 0:2, 0:2] = 1
    assert torch.equal(small, expected)
    assert gt_masks_at(mask[:0], (8, 8), (4, 4)).shape == (0, 4, 4)


def test_prototype_mask_prediction_pairs_each_positive_with_its_image_and_gt_mask():
    torch.manual_seed(0)
    protos = torch.rand(2, 3, 4, 4)
    coeffs = torch.randn(5, 3, requires_grad=True)
    gt_masks = (torch.rand(3, 4, 4) > 0.5).float()
    boxes = torch.tensor([[0.0, 0, 2, 2], [1, 1, 4, 4], [0, 0, 4, 4], [2, 2, 3, 3], [0, 0, 1, 4]])
    image_index = torch.tensor([0, 1, 0, 1, 1])
    gt_index = torch.tensor([0, 2, -1, 1, 2])
    rows = torch.tensor([0, 1, 3])  # images 0, 1, 1
    out = prototype_mask_prediction(protos, coeffs, image_index, rows, gt_masks, gt_index, boxes, padding=0.0)
    assert torch.equal(out.rows, rows) and torch.equal(out.weight_rows, rows)
    probs = out.probs()
    for i, r in enumerate(rows.tolist()):
        b = int(image_index[r])
        logit = torch.einsum("khw,k->hw", protos[b], coeffs[r].detach())
        region = box_region(boxes[r:r + 1], 4, 4)[0]
        assert torch.allclose(out.logits[i], logit, atol=1e-6)
        assert torch.allclose(probs[i], torch.sigmoid(logit) * region, atol=1e-6)  # zero outside the GT box
        assert torch.equal(out.targets[i], gt_masks[gt_index[r]]) and torch.equal(out.crop[i], region)
    probs.sum().backward()
    assert coeffs.grad[[0, 1, 3]].abs().sum() > 0 and coeffs.grad[[2, 4]].abs().sum() == 0
    sub = out.select(torch.tensor([1, 3]), 5)  # stage rows 1 and 3 -> 0 and 1
    assert sub.rows.tolist() == [0, 1] and torch.equal(sub.targets, gt_masks[[2, 1]])
    label_probs, label_targets = out.label_masks(torch.tensor([3, 0]))
    assert torch.equal(label_probs, probs.detach()[[2, 0]]) and torch.equal(label_targets, out.targets[[2, 0]])
    with pytest.raises(Exception, match="no mask row"):
        out.label_masks(torch.tensor([2]))
    with pytest.raises(ConfigError, match="no matched"):
        prototype_mask_prediction(protos, coeffs, image_index, torch.tensor([2]), gt_masks, gt_index, boxes)
    empty = prototype_mask_prediction(protos, coeffs, image_index, rows[:0], gt_masks, gt_index, boxes)
    assert empty.logits.shape == (0, 4, 4) and empty.logits.requires_grad


def test_head_tower_can_use_group_norm():
    head = YolactHead(16, 9, 6, num_protos=8, num_convs=2, feat_channels=16, norm="gn")
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in head.tower) == 2
    cls, reg, coef = head([torch.randn(1, 16, 4, 4)])
    assert cls.shape == (1, 144, 6) and coef.shape == (1, 144, 8)
    with pytest.raises(ConfigError, match="detector.head.norm"):
        YolactHead(16, 3, 6, norm="bn")
    split = YolactHead(16, 3, 6, num_protos=8, num_convs=1, feat_channels=16, norm="gn", cls_convs=1)
    assert len(split.cls_tower) == 3 and split([torch.randn(1, 16, 4, 4)])[0].shape == (1, 48, 6)
