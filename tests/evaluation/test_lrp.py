"""Optimal LRP (Oksuz et al., TPAMI 2021): hand-checked examples and the definition, brute force.

    LRP = (sum_TP (1 - IoU) / (1 - 0.5) + N_FP + N_FN) / (N_TP + N_FP + N_FN), first minimum over
    prefixes of the ranking; Loc = sum_TP (1 - IoU) / N_TP, FP = N_FP / (N_TP + N_FP),
    FN = N_FN / N_GT at that prefix.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluation_testdata as td  # noqa: E402

from rsdet.evaluation import evaluate, optimal_lrp  # noqa: E402


def _lrp(labels, ious, scores, num_gt):
    tp = np.array([lab == "tp" for lab in labels])
    fp = np.array([lab == "fp" for lab in labels])
    return optimal_lrp(np.array(scores, float), tp, fp, np.array(ious, float), num_gt)


def test_hand_example_minimum_at_first_detection():
    # ranking: TP(IoU .9), FP, TP(IoU .6), FP; 3 ground truths
    # prefix 1: TP1 FP0 FN2 -> (0.1/0.5 + 0 + 2) / 3 = 2.2/3 = 0.7333  <- minimum
    # prefix 2: TP1 FP1 FN2 -> (0.2 + 1 + 2) / 4      = 0.8
    # prefix 3: TP2 FP1 FN1 -> (0.5/0.5 + 1 + 1) / 4  = 0.75
    # prefix 4: TP2 FP2 FN1 -> (1 + 2 + 1) / 5        = 0.8
    r = _lrp(["tp", "fp", "tp", "fp"], [0.9, 0, 0.6, 0], [0.9, 0.8, 0.7, 0.6], 3)
    assert r.olrp == pytest.approx(2.2 / 3, abs=1e-12)
    assert r.loc == pytest.approx(0.1, abs=1e-12)  # mean 1 - IoU, not divided by 1 - tau
    assert r.fp == 0.0
    assert r.fn == pytest.approx(2 / 3, abs=1e-12)
    assert r.threshold == 0.9


def test_ties_are_not_grouped_and_the_first_minimum_wins():
    # two perfect TPs at the same score: prefix 1 -> (0 + 0 + 1)/2 = 0.5, prefix 2 -> 0
    r = _lrp(["tp", "tp"], [1.0, 1.0], [0.9, 0.9], 2)
    assert (r.olrp, r.loc, r.fp, r.fn, r.threshold) == (0.0, 0.0, 0.0, 0.0, 0.9)
    # an ignored detection after the TP leaves LRP at 0; the first prefix (score .9) is kept
    r = _lrp(["tp", "ign"], [1.0, 0.0], [0.9, 0.8], 1)
    assert (r.olrp, r.threshold) == (0.0, 0.9)


@pytest.mark.parametrize("labels", [[], ["fp", "fp"], ["ign", "fp"]])
def test_class_without_true_positive(labels):
    r = _lrp(labels, [0.0] * len(labels), [0.5] * len(labels), 2)
    assert (r.olrp, r.fn) == (1.0, 1.0)
    assert math.isnan(r.loc) and math.isnan(r.fp) and math.isnan(r.threshold)


def test_degenerate_iou_exactly_tau():
    # FP(.9) then TP with IoU exactly .5: prefix 1 -> (0 + 1 + 1)/2 = 1, prefix 2 -> (1 + 1 + 0)/2 = 1
    # the first minimum is prefix 1, where there is no TP: Loc undefined, FP = 1/1, FN = 1/1
    r = _lrp(["fp", "tp"], [0.0, 0.5], [0.9, 0.8], 1)
    assert (r.olrp, r.fp, r.fn, r.threshold) == (1.0, 1.0, 1.0, 0.9)
    assert math.isnan(r.loc)


def test_class_without_ground_truth_is_rejected():
    with pytest.raises(ValueError):
        _lrp(["fp"], [0.0], [0.5], 0)


def _hand_dataset():
    """Two images; class 1 with a crowd region, class 2, class 3 without any object."""
    images = [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}]
    boxes = [(1, 1, [0, 0, 10, 10], 0), (1, 1, [50, 50, 20, 20], 0), (1, 2, [20, 20, 10, 10], 0),
             (1, 1, [70, 0, 30, 30], 1), (2, 1, [0, 0, 40, 40], 0)]
    anns = [{"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3],
             "iscrowd": crowd} for i, (im, c, b, crowd) in enumerate(boxes)]
    cats = [{"id": c, "name": n} for c, n in ((1, "a"), (2, "b"), (3, "c"))]
    dets = [
        (1, 1, [0, 0, 10, 8], 0.9),     # TP, IoU 80/100 = .8
        (1, 1, [72, 2, 10, 10], 0.85),  # inside the crowd region: ignored
        (1, 1, [50, 50, 20, 12], 0.8),  # TP, IoU 240/400 = .6
        (2, 1, [60, 60, 10, 10], 0.75),  # FP
        (2, 1, [0, 0, 40, 40], 0.7),    # TP, IoU 1
        (1, 2, [20, 20, 10, 7], 0.6),   # TP, IoU .7
        (2, 2, [0, 0, 5, 5], 0.65),     # FP (no class-2 object in image 2)
        (1, 3, [0, 0, 5, 5], 0.99),     # class 3 has no ground truth: skipped
    ]
    dets = [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in dets]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def test_hand_example_through_cocoeval_matching():
    gt, dets = _hand_dataset()
    m = evaluate(gt, dets, per_class=True)
    # class 1 (3 non-crowd objects), ranking .9 TP(.8), .85 ignored, .8 TP(.6), .75 FP, .7 TP(1):
    #   prefixes: (.4+0+2)/3=.8, .8, (1.2+0+1)/3=.733, (1.2+1+1)/4=.8, (1.2+1+0)/4=.55 <- min
    #   Loc = (.2+.4+0)/3 = .2, FP = 1/4, FN = 0, threshold .7
    # class 2 (1 object), ranking .65 FP, .6 TP(.7):
    #   prefixes: (0+1+1)/2 = 1, (.6+1+0)/2 = .8 <- min; Loc .3, FP 1/2, FN 0, threshold .6
    c1, c2 = m["per_class"][1], m["per_class"][2]
    assert (c1["oLRP"], c1["oLRP_Loc"], c1["oLRP_FP"], c1["oLRP_FN"]) == pytest.approx(
        (0.55, 0.2, 0.25, 0.0), abs=1e-12)
    assert (c2["oLRP"], c2["oLRP_Loc"], c2["oLRP_FP"], c2["oLRP_FN"]) == pytest.approx(
        (0.8, 0.3, 0.5, 0.0), abs=1e-12)
    assert (c1["lrp_optimal_threshold"], c2["lrp_optimal_threshold"]) == (0.7, 0.6)
    assert set(m["per_class"]) == {1, 2}  # class 3 has no ground truth
    assert (c1["name"], c2["name"]) == ("a", "b")
    # dataset values: means over the two classes
    assert (m["oLRP"], m["oLRP_Loc"], m["oLRP_FP"], m["oLRP_FN"]) == pytest.approx(
        (0.675, 0.25, 0.375, 0.0), abs=1e-12)


def test_no_true_positive_component_means_skip_undefined():
    gt, dets = _hand_dataset()
    dets = [d for d in dets if d["category_id"] != 2] + [
        {"image_id": 2, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.5}]
    m = evaluate(gt, dets, per_class=True)
    c2 = m["per_class"][2]
    assert (c2["oLRP"], c2["oLRP_FN"], c2["oLRP_Loc"], c2["oLRP_FP"]) == (1.0, 1.0, -1.0, -1.0)
    assert c2["lrp_optimal_threshold"] == -1.0
    assert m["oLRP"] == pytest.approx((0.55 + 1.0) / 2, abs=1e-12)
    assert m["oLRP_Loc"] == pytest.approx(0.2, abs=1e-12)  # class 2's undefined Loc is skipped
    assert m["oLRP_FP"] == pytest.approx(0.25, abs=1e-12)
    assert m["oLRP_FN"] == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_matches_brute_force_definition_on_synthetic_coco(iou_type):
    gt = td.synthetic_coco(seed=3)
    dets = td.perturbed_detections(gt, seed=4, iou_type=iou_type)
    ours = evaluate(gt, dets, iou_type=iou_type, per_class=True)
    ref = td.reference_olrp(td.coco_reference(gt, dets, iou_type), "coco", iou_type)
    _assert_same(ours, ref)


def _assert_same(ours, ref):
    assert set(ours["per_class"]) == set(ref)
    for cat, (olrp, loc, fp, fn, thr) in ref.items():
        c = ours["per_class"][cat]
        for key, want in (("oLRP", olrp), ("oLRP_Loc", loc), ("oLRP_FP", fp), ("oLRP_FN", fn),
                          ("lrp_optimal_threshold", thr)):
            assert c[key] == pytest.approx(-1.0 if math.isnan(want) else want, abs=1e-9), (cat, key)
    for i, key in enumerate(("oLRP", "oLRP_Loc", "oLRP_FP", "oLRP_FN")):
        assert ours[key] == pytest.approx(td.mean_defined(v[i] for v in ref.values()), abs=1e-9)
