"""LVIS protocol on real LVIS v0.5 val annotations (100 images, 1,230 categories, federated lists):
rsdet.evaluation.evaluate equals the lvis package's LVISEval, and oLRP follows the same rules."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluation_testdata as td  # noqa: E402

from rsdet.evaluation import evaluate, metric_keys  # noqa: E402


@pytest.fixture(scope="module")
def gt():
    return td.load_lvis()


@pytest.fixture(scope="module")
def bbox_dets(gt):
    return td.perturbed_detections(gt, seed=7, iou_type="bbox", federated=True)


@pytest.fixture(scope="module")
def bbox_result(gt, bbox_dets):
    return evaluate(gt, bbox_dets, protocol="lvis", per_class=True)


def test_fixture_is_the_shared_real_data_subset(gt):
    assert (len(gt["images"]), len(gt["annotations"]), len(gt["categories"])) == (100, 977, 1230)
    shared = td.HERE.parents[1] / ".." / "shared" / "data" / "lvis_v0.5_val_100.json"
    if not shared.is_file():
        pytest.skip(f"{shared} not present; the committed fixture is used")
    sys.path.insert(0, str(td.HERE / "data"))
    from derive_lvis_fixture import derive

    assert derive(json.loads(shared.read_text())) == gt


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_equals_lvis_eval(gt, bbox_dets, bbox_result, iou_type):
    if iou_type == "bbox":
        dets, ours = bbox_dets, bbox_result
    else:
        dets = td.perturbed_detections(gt, seed=8, iou_type="segm", federated=True)
        ours = evaluate(gt, dets, iou_type="segm", protocol="lvis", per_class=True)
    ref = td.lvis_reference(dets, iou_type)
    assert [k for k in ours if k not in ("per_class", "pr_curve")] == list(metric_keys("lvis"))
    for key in td.LVIS_AP_KEYS:
        assert ours[key] == pytest.approx(float(ref.results[key]), abs=1e-12), key
    for key, ref_key in td.LVIS_AR_KEYS.items():
        assert ours[key] == pytest.approx(float(ref.results[ref_key.format(300)]), abs=1e-12), key
    assert 0.2 < ours["AR300"] < 1 and ours["AR300"] >= ours["AP"]
    assert 0.2 < ours["AP"] < 0.9  # a meaningful mix of hits and misses, not a degenerate case

    lrp = td.reference_olrp(ref, "lvis", iou_type)
    assert set(ours["per_class"]) == set(lrp)
    for cat, (olrp, loc, fp, fn, thr) in lrp.items():
        c = ours["per_class"][cat]
        assert c["oLRP"] == pytest.approx(olrp, abs=1e-9)
        assert c["oLRP_FN"] == pytest.approx(fn, abs=1e-9)
        assert c["lrp_optimal_threshold"] == pytest.approx(-1.0 if thr != thr else thr, abs=1e-12)
    for i, key in enumerate(("oLRP", "oLRP_Loc", "oLRP_FP", "oLRP_FN")):
        assert ours[key] == pytest.approx(td.mean_defined(v[i] for v in lrp.values()), abs=1e-9)
    freq = {c["id"]: c["frequency"] for c in gt["categories"]}
    for g in "rcf":
        want = td.mean_defined(v[0] for cat, v in lrp.items() if freq[cat] == g)
        assert ours[f"oLRP{g}"] == pytest.approx(want, abs=1e-9)


def test_per_class_ap_matches_lvis_precision(gt, bbox_result):
    per_class = bbox_result["per_class"]
    freq = {c["id"]: c["frequency"] for c in gt["categories"]}
    rare = [c["AP"] for cat, c in per_class.items() if freq[cat] == "r"]
    assert bbox_result["APr"] == pytest.approx(sum(rare) / len(rare), abs=1e-12)
    assert per_class[next(iter(per_class))]["name"] == next(
        c["name"] for c in gt["categories"] if c["id"] == next(iter(per_class)))


def test_federated_rules(gt, bbox_dets, bbox_result):
    """Detections of unannotated categories are dropped and unmatched detections of
    not-exhaustively annotated ones ignored (no change); negative categories count as FPs."""
    with_gt = {a["category_id"] for a in gt["annotations"]}
    free, negative = [], None
    for img in gt["images"]:
        present = {a["category_id"] for a in gt["annotations"] if a["image_id"] == img["id"]}
        listed = present | set(img["neg_category_ids"])
        unlisted = next(c["id"] for c in gt["categories"] if c["id"] not in listed)
        free.append({"image_id": img["id"], "category_id": unlisted, "bbox": [0, 0, 40, 40],
                     "score": 0.999})
        for cat in img["not_exhaustive_category_ids"]:
            free.append({"image_id": img["id"], "category_id": cat, "bbox": [0, 0, 2, 2],
                         "score": 0.999})
        if negative is None:
            negative = next(({"image_id": img["id"], "category_id": c, "bbox": [0, 0, 40, 40],
                              "score": 0.999} for c in img["neg_category_ids"] if c in with_gt),
                            None)
    assert any(c["category_id"] in im["not_exhaustive_category_ids"] for c in free
               for im in gt["images"] if im["id"] == c["image_id"])
    assert evaluate(gt, bbox_dets + free, protocol="lvis", per_class=True) == bbox_result

    cat = negative["category_id"]
    hurt = evaluate(gt, bbox_dets + [negative], protocol="lvis", per_class=True)
    before, after = bbox_result["per_class"][cat], hurt["per_class"][cat]
    assert after["AP"] < before["AP"]
    assert after["oLRP_FP"] > before["oLRP_FP"] or after["oLRP"] > before["oLRP"]


def test_max_dets_and_empty_detections(gt, bbox_dets):
    ours = evaluate(gt, bbox_dets, protocol="lvis", max_dets=2)
    ref = td.lvis_reference(bbox_dets, "bbox", max_dets=2)
    for key in td.LVIS_AP_KEYS:
        assert ours[key] == pytest.approx(float(ref.results[key]), abs=1e-12), key
    for key, ref_key in td.LVIS_AR_KEYS.items():
        assert ours[key] == pytest.approx(float(ref.results[ref_key.format(2)]), abs=1e-12), key
    assert ours["AR300"] < evaluate(gt, bbox_dets, protocol="lvis")["AR300"]

    empty = evaluate(gt, [], protocol="lvis")
    assert all(empty[k] == 0.0 for k in (*td.LVIS_AP_KEYS, *td.LVIS_AR_KEYS))
    assert (empty["oLRP"], empty["oLRP_FN"], empty["oLRP_Loc"], empty["oLRP_FP"]) == (
        1.0, 1.0, -1.0, -1.0)
    assert (empty["oLRPr"], empty["oLRPc"], empty["oLRPf"]) == (1.0, 1.0, 1.0)
