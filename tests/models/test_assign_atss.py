import math

import pytest
import torch

from rsdet.models.assign import atss
from rsdet.models.assign.atss import (
    AssignerInputError,
    _nearest_k_indices,
    anchor_centers,
    atss_assign,
    atss_assign_boxes,
    pairwise_iou,
)


def _candidate_statistics(anchors, counts, gts, topk):
    """The assigner's internals as dense (A, G) IoU / candidate / inside matrices + thresholds."""
    cand, cand_ious, threshold, cand_inside = atss._candidate_statistics(anchors, counts, gts, topk)
    num_anchors, num_gts = len(anchors), len(gts)
    candidate = torch.zeros(num_anchors, num_gts, dtype=torch.bool)
    inside = torch.zeros(num_anchors, num_gts, dtype=torch.bool)
    for g in range(num_gts):
        assert len(set(cand[g].tolist())) == cand.shape[1]  # no anchor twice
        candidate[cand[g], g] = True
        inside[cand[g], g] = cand_inside[g]
        assert torch.allclose(cand_ious[g], pairwise_iou(anchors, gts)[cand[g], g])
    # IoU and inside for every pair (non-candidates too), as the tests' hand numbers list them
    ctr = anchor_centers(anchors)
    gaps = torch.stack((ctr[:, None, 0] - gts[:, 0], ctr[:, None, 1] - gts[:, 1],
                        gts[:, 2] - ctr[:, None, 0], gts[:, 3] - ctr[:, None, 1]), -1)
    all_inside = gaps.min(-1).values > 0.01
    assert torch.equal(inside, all_inside & candidate)
    return pairwise_iou(anchors, gts), candidate, threshold, all_inside


def _t(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


# Two-level toy, topk = 2, one box g = [0, 0, 40, 10] (centre (20, 5), area 400), class 7.
#   level 0 (3 anchors):  a0 [15, 0, 25, 10]  centre (20, 5)  distance 0  IoU 100/400 = 0.25
#                         a1 [10, 0, 20, 10]  centre (15, 5)  distance 5  IoU 100/400 = 0.25
#                         a2 [ 6, 0, 46, 10]  centre (26, 5)  distance 6  IoU 340/460 = 0.739130
#   level 1 (1 anchor, fewer than topk):
#                         a3 [10, -5, 30, 15] centre (20, 5)  distance 0  IoU 200/600 = 1/3
# Candidates: the 2 nearest of level 0 (a0, a1; a2 is third) and all of level 1 (a3).
# mean = (1/4 + 1/4 + 1/3) / 3 = 5/18 = 0.277778
# unbiased var = ((1/36)^2 + (1/36)^2 + (1/18)^2) / 2 = 1/432  ->  std = 0.048113
# threshold = 0.277778 + 0.048113 = 0.325890: only a3 (0.3333) reaches it; its centre is inside.
# a2 has by far the highest IoU but is never a candidate, so it stays negative.
TWO_LEVEL_ANCHORS = [[15, 0, 25, 10], [10, 0, 20, 10], [6, 0, 46, 10], [10, -5, 30, 15]]
TWO_LEVEL_GT = [[0, 0, 40, 10]]


def test_two_level_toy_candidates_threshold_and_assignment():
    anchors, gts = _t(TWO_LEVEL_ANCHORS), _t(TWO_LEVEL_GT)
    ious, candidate, threshold, inside = _candidate_statistics(anchors, [3, 1], gts, topk=2)
    assert ious[:, 0].tolist() == pytest.approx([0.25, 0.25, 17 / 23, 1 / 3], abs=1e-6)
    assert candidate[:, 0].tolist() == [True, True, False, True]
    assert threshold.item() == pytest.approx(5 / 18 + math.sqrt(1 / 432), abs=1e-6)
    assert threshold.item() == pytest.approx(0.325890, abs=1e-6)
    assert inside[:, 0].all()

    gt_classes, matched = atss_assign(anchors, [3, 1], gts, torch.tensor([7]), topk=2)
    assert gt_classes.tolist() == [-1, -1, -1, 7]
    assert matched.tolist() == [-1, -1, -1, 0]
    assert gt_classes.dtype == matched.dtype == torch.long


def test_topk_large_enough_makes_the_high_iou_anchor_a_candidate():
    # topk = 3 takes all of level 0: IoUs 0.25, 0.25, 0.739130, 1/3
    # mean = 1.572464/4 = 0.393116; squared deviations 0.020482, 0.020482, 0.119726, 0.003574
    # sum 0.164264, / 3 -> std 0.233998; threshold = 0.627114: now a2 is the one positive
    # (a3 falls below the threshold).
    anchors, gts = _t(TWO_LEVEL_ANCHORS), _t(TWO_LEVEL_GT)
    _, _, threshold, _ = _candidate_statistics(anchors, [3, 1], gts, topk=3)
    vals = torch.tensor([0.25, 0.25, 17 / 23, 1 / 3], dtype=torch.float64)
    assert threshold.item() == pytest.approx((vals.mean() + vals.std()).item(), abs=1e-6)
    assert threshold.item() == pytest.approx(0.627114, abs=1e-6)
    gt_classes, matched = atss_assign(anchors, [3, 1], gts, torch.tensor([7]), topk=3)
    assert matched.tolist() == [-1, -1, 0, -1]
    assert gt_classes.tolist() == [-1, -1, 7, -1]


# One level, topk = 5 (all 5 anchors are candidates), box g = [0, 0, 10, 10], class 3.
#   a0 varies (below), a1 [1, 1, 4, 4] (IoU 9/100 = 0.09, centre inside), a2..a4 far away (IoU 0).
# With a0 = [-6, 0, 4, 10]: IoU 40/160 = 0.25; mean = 0.34/5 = 0.068, squared deviations
#   0.182^2 + 0.022^2 + 3 * 0.068^2 = 0.047480, / 4 -> std 0.108950, threshold 0.176950: a0 passes
#   the IoU test,
#   but its centre x = -1 is left of the box, so it is rejected and nothing is positive.
# With a0 = [-5, 0, 5, 10] (IoU 1/3, threshold 0.229035) its centre x = 0 lies ON the left side:
#   not strictly inside, rejected.  Centre x = 0.005 (gap <= 0.01): rejected.  Centre x = 0.02
#   (gap > 0.01): IoU 0.335113 >= threshold 0.230158 and inside, so a0 becomes the positive.
FAR = [[20, 0, 30, 10], [30, 0, 40, 10], [-30, 0, -20, 10]]


@pytest.mark.parametrize(
    "a0, iou, threshold, positive",
    [
        ([-6, 0, 4, 10], 0.25, 0.176950, False),
        ([-5, 0, 5, 10], 1 / 3, 0.229035, False),
        ([-4.995, 0, 5.005, 10], 0.333778, 0.229315, False),
        ([-4.98, 0, 5.02, 10], 0.335113, 0.230158, True),
    ],
)
def test_centre_must_be_strictly_inside_the_box(a0, iou, threshold, positive):
    anchors, gts = _t([a0, [1, 1, 4, 4]] + FAR, torch.float64), _t([[0, 0, 10, 10]], torch.float64)
    ious, candidate, thr, inside = _candidate_statistics(anchors, [5], gts, topk=5)
    assert candidate.all()
    assert ious[0, 0].item() == pytest.approx(iou, abs=1e-6)
    assert thr.item() == pytest.approx(threshold, abs=1e-6)
    assert ious[0, 0] >= thr[0]  # a0 always passes the IoU test ...
    assert ious[1, 0] < thr[0]
    assert bool(inside[0, 0]) is positive  # ... and the centre rule decides
    gt_classes, matched = atss_assign(anchors, [5], gts, torch.tensor([3]), topk=5)
    assert matched.tolist() == ([0] if positive else [-1]) + [-1] * 4
    assert gt_classes.tolist() == ([3] if positive else [-1]) + [-1] * 4


def test_threshold_of_the_first_centre_case_by_hand():
    # the arithmetic of the comment above, so that a wrong hand number fails here
    vals = [0.25, 0.09, 0.0, 0.0, 0.0]
    mean = sum(vals) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / 4)
    assert mean + std == pytest.approx(0.176950, abs=1e-6)


# Two overlapping boxes g0 = [0, 0, 20, 20] (class 5) and g1 = [2, 0, 22, 20] (class 2); one level
# of 7 anchors, topk = 7: a0 [1, 0, 21, 20], a1 [2, 0, 22, 20] (= g1), five far anchors (IoU 0).
#   IoU(a0, g0) = 380/420 = 0.904762 = IoU(a0, g1) exactly (an exact tie)
#   IoU(a1, g0) = 360/440 = 0.818182,  IoU(a1, g1) = 1
# g0: mean = 1.722944/7 = 0.246135, std = 0.421098, threshold 0.667232 -> a0, a1 positive
# g1: mean = 1.904762/7 = 0.272109, std = 0.465527, threshold 0.737636 -> a0, a1 positive
# a1 is positive for both and goes to g1 (IoU 1 > 0.818182); a0's exact tie goes to the
# lower box index.
TIE_ANCHORS = [[1, 0, 21, 20], [2, 0, 22, 20]] + [[100 + 20 * i, 100, 110 + 20 * i, 110]
                                                  for i in range(5)]


def test_anchor_positive_for_two_boxes_goes_to_highest_iou_and_exact_ties_to_lowest_index():
    anchors = _t(TIE_ANCHORS)
    gts = _t([[0, 0, 20, 20], [2, 0, 22, 20]])
    ious, _, threshold, _ = _candidate_statistics(anchors, [7], gts, topk=7)
    assert ious[0, 0] == ious[0, 1]
    assert threshold.tolist() == pytest.approx([0.667232, 0.737636], abs=1e-6)
    gt_classes, matched = atss_assign(anchors, [7], gts, torch.tensor([5, 2]), topk=7)
    assert matched.tolist() == [0, 1] + [-1] * 5
    assert gt_classes.tolist() == [5, 2] + [-1] * 5

    # swap the boxes: a1 still follows its IoU-1 box (now index 0), the tie follows the index
    gt_classes, matched = atss_assign(anchors, [7], gts.flip(0), torch.tensor([2, 5]), topk=7)
    assert matched.tolist() == [0, 0] + [-1] * 5
    assert gt_classes.tolist() == [2, 2] + [-1] * 5


def test_no_ground_truth_gives_all_negatives():
    anchors = _t(TWO_LEVEL_ANCHORS)
    gt_classes, matched = atss_assign(anchors, [3, 1], torch.zeros(0, 4),
                                      torch.zeros(0, dtype=torch.long))
    assert gt_classes.tolist() == [-1] * 4 and matched.tolist() == [-1] * 4
    assert gt_classes.dtype == matched.dtype == torch.long


def test_single_candidate_uses_zero_std_and_empty_levels_are_skipped():
    # one anchor in all (the other level is empty): threshold = its own IoU, so it is positive
    # when its centre is inside (torch.std of one value would be NaN and reject it)
    anchors = _t([[0, 0, 10, 10]])
    gts = _t([[2, 2, 12, 12]])
    _, _, threshold, _ = _candidate_statistics(anchors, [0, 1], gts, topk=9)
    assert threshold.item() == pytest.approx(64 / 136)
    gt_classes, matched = atss_assign(anchors, [0, 1], gts, torch.tensor([4]), topk=9)
    assert gt_classes.tolist() == [4] and matched.tolist() == [0]


def test_equal_distances_are_broken_towards_the_lower_anchor_index():
    # three anchors per location share a centre: distances 1, 1, 1, 0.5 -> k = 2 takes anchor 3
    # (nearest) and anchor 0 (first of the tied ones)
    d = torch.tensor([[1.0, 1.0, 1.0, 0.5], [2.0, 1.0, 1.0, 3.0]])
    assert _nearest_k_indices(d, 2).tolist() == [[0, 3], [1, 2]]
    assert _nearest_k_indices(d, 4).tolist() == [[0, 1, 2, 3]] * 2
    # with one anchor per location (no ties) the chosen set equals torch.topk's
    d = torch.rand(5, 50, generator=torch.Generator().manual_seed(1))
    got = _nearest_k_indices(d, 9)
    assert torch.equal(got, d.topk(9, dim=1, largest=False).indices.sort(dim=1).values)


def test_vectorised_result_matches_a_per_box_loop_on_a_random_scene():
    gen = torch.Generator().manual_seed(0)
    levels = []
    for stride, size in ((8, 32), (16, 64), (32, 128)):
        ys, xs = torch.meshgrid(torch.arange(0, 128, stride), torch.arange(0, 128, stride),
                                indexing="ij")
        ctr = torch.stack((xs, ys), -1).reshape(-1, 2).float() + stride / 2
        levels.append(torch.cat((ctr - size / 2, ctr + size / 2), 1))
    anchors = torch.cat(levels)
    counts = [len(lv) for lv in levels]
    xy = torch.rand(6, 2, generator=gen) * 100
    wh = torch.rand(6, 2, generator=gen) * 60 + 8
    gts = torch.cat((xy, xy + wh), 1)
    labels = torch.arange(6)
    gt_classes, matched = atss_assign(anchors, counts, gts, labels, topk=9)

    # reference: one box at a time, with torch.topk/torch.std, then best IoU over boxes
    ious = pairwise_iou(anchors, gts)
    a_ctr, g_ctr = anchor_centers(anchors), anchor_centers(gts)
    best = torch.full((len(anchors),), -1.0)
    ref = torch.full((len(anchors),), -1, dtype=torch.long)
    for g in range(len(gts)):
        dist = (a_ctr - g_ctr[g]).norm(dim=1)
        cand, start = [], 0
        for n in counts:
            cand.append(dist[start:start + n].topk(9, largest=False).indices + start)
            start += n
        cand = torch.cat(cand)
        thr = ious[cand, g].mean() + ious[cand, g].std()
        for i in cand.tolist():
            cx, cy = a_ctr[i].tolist()
            x1, y1, x2, y2 = gts[g].tolist()
            inside = min(cx - x1, cy - y1, x2 - cx, y2 - cy) > 0.01
            if ious[i, g] >= thr and inside and ious[i, g] > best[i]:
                best[i], ref[i] = ious[i, g], g
    assert (matched >= 0).sum() > 6
    assert matched.tolist() == ref.tolist()
    assert gt_classes.tolist() == torch.where(ref >= 0, labels[ref.clamp(min=0)], -1).tolist()


def test_bad_inputs_raise_clear_errors():
    anchors = _t(TWO_LEVEL_ANCHORS)
    with pytest.raises(AssignerInputError, match=r"sums to 3 but there are 4 anchors"):
        atss_assign(anchors, [2, 1], _t(TWO_LEVEL_GT), torch.tensor([0]))
    with pytest.raises(AssignerInputError, match="gt_labels must be"):
        atss_assign(anchors, [3, 1], _t(TWO_LEVEL_GT), torch.tensor([0, 1]))
    with pytest.raises(AssignerInputError, match="topk must be >= 1"):
        atss_assign(anchors, [3, 1], _t(TWO_LEVEL_GT), torch.tensor([0]), topk=0)


@pytest.mark.parametrize("seed", range(6))
def test_a_batch_is_assigned_exactly_as_image_by_image(seed):
    """atss_assign_images on B images that share the anchors == atss_assign per image (the same box in
    two images, an image without boxes, boxes off the grid and nested boxes included)."""
    from rsdet.models.anchors import dense_anchor_sizes, grid_anchors
    from rsdet.models.assign.atss import atss_assign_boxes_images, atss_assign_images

    gen = torch.Generator().manual_seed(seed)
    strides = [8, 16, 32]
    levels = grid_anchors([(12, 12), (6, 6), (3, 3)], strides, dense_anchor_sizes(strides), torch.device("cpu"))
    anchors, per_level = torch.cat(levels), [len(a) for a in levels]
    shared = torch.tensor([[20.0, 20, 60, 52]])
    boxes, labels = [], []
    for n in (2, 0, 5, 3):
        xy = torch.rand((n, 2), generator=gen) * 90
        b = torch.cat([xy, xy + torch.rand((n, 2), generator=gen) * 50 + 4], 1)
        if n:
            b[0] = shared[0]  # the same box in several images
        boxes.append(b)
        labels.append(torch.randint(0, 6, (n,), generator=gen))
    topk = int(torch.randint(1, 10, (1,), generator=gen))
    classes, index = atss_assign_images(anchors, per_level, torch.cat(boxes), torch.cat(labels),
                                        [len(b) for b in boxes], topk)
    want_classes, want_index, offset = [], [], 0
    for b, lab in zip(boxes, labels):
        c, i = atss_assign(anchors, per_level, b, lab, topk)
        want_classes.append(c)
        want_index.append(torch.where(i >= 0, i + offset, i))
        offset += len(b)
    assert torch.equal(classes, torch.cat(want_classes)) and torch.equal(index, torch.cat(want_index))
    assert (classes >= 0).any()
    c, matched, i = atss_assign_boxes_images(anchors, per_level, boxes, labels, topk)
    want_boxes = torch.cat([atss_assign_boxes(anchors, per_level, b, lab, topk)[1] for b, lab in zip(boxes, labels)])
    assert torch.equal(c, classes) and torch.equal(i, index) and torch.equal(matched, want_boxes)


def test_batch_counts_must_add_up():
    from rsdet.models.assign.atss import atss_assign_images

    anchors = _t(TWO_LEVEL_ANCHORS)
    with pytest.raises(AssignerInputError, match="counts"):
        atss_assign_images(anchors, [3, 1], _t(TWO_LEVEL_GT), torch.tensor([0]), [2], topk=2)
