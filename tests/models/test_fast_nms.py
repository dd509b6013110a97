"""Fast NMS (YOLACT §3.4) against hand-worked examples and against greedy NMS where they must agree."""

import torch

from rsdet.models.fast_nms import fast_nms, standard_nms

# A, B, C slide right by 1 px: IoU(A, B) = IoU(B, C) = 90/110 = 0.818, IoU(A, C) = 80/120 = 0.667
BOXES = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [50, 50, 60, 60]])


def test_an_already_suppressed_box_still_suppresses_in_fast_nms():
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    rows, labels, kept = fast_nms(BOXES, scores, iou_thresh=0.7, score_thresh=0.05)
    # C's largest IoU with a higher-scored box is 0.818 (with B, itself suppressed by A): removed
    assert rows.tolist() == [0, 3] and labels.tolist() == [0, 0]
    assert torch.allclose(kept, torch.tensor([0.9, 0.6]))
    # greedy NMS keeps C: only A survives above it, at IoU 0.667 < 0.7
    assert standard_nms(BOXES, scores, iou_thresh=0.7, score_thresh=0.05)[0].tolist() == [0, 2, 3]


def test_classes_are_suppressed_separately_and_sorted_by_score():
    scores = torch.tensor([[0.9, 0.0], [0.1, 0.8], [0.0, 0.7], [0.3, 0.02]])
    rows, labels, kept = fast_nms(BOXES, scores, iou_thresh=0.5, score_thresh=0.05)
    # class 0: A (0.9) suppresses B (0.1), D (0.3) is far away; class 1: B (0.8) suppresses C; D's 0.02 < threshold
    assert list(zip(rows.tolist(), labels.tolist())) == [(0, 0), (1, 1), (3, 0)]
    assert torch.allclose(kept, torch.tensor([0.9, 0.8, 0.3]))


def test_top_k_and_max_dets_and_empty_input():
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    rows, _, _ = fast_nms(BOXES, scores, iou_thresh=0.95, score_thresh=0.05, top_k=2)
    assert rows.tolist() == [0, 1]  # only the 2 best of the class enter
    rows, _, _ = fast_nms(BOXES, scores, iou_thresh=0.95, score_thresh=0.05, max_dets=3)
    assert rows.tolist() == [0, 1, 2]
    rows, labels, kept = fast_nms(BOXES[:0], scores[:0], 0.5)
    assert rows.numel() == labels.numel() == kept.numel() == 0


def test_fast_and_greedy_nms_agree_without_chains():
    torch.manual_seed(0)
    xy = torch.rand(30, 2) * 200
    boxes = torch.cat([xy, xy + 8 + torch.rand(30, 2) * 4], 1)  # small, rarely overlapping boxes
    scores = torch.rand(30, 3)
    a, b = fast_nms(boxes, scores, 0.5, 0.05), standard_nms(boxes, scores, 0.5, 0.05)
    assert sorted(zip(a[0].tolist(), a[1].tolist())) == sorted(zip(b[0].tolist(), b[1].tolist()))
