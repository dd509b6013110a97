"""Per-class metrics and PR curves of ``evaluate(..., per_class=True)``, checked against pycocotools'
own precision array, and their tables (rsdet.evaluation.per_class)."""

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluation_testdata as td  # noqa: E402

from rsdet.evaluation import evaluate  # noqa: E402
from rsdet.evaluation import per_class as tables  # noqa: E402


@pytest.fixture(scope="module")
def coco():
    gt = td.synthetic_coco(seed=3)
    dets = td.perturbed_detections(gt, seed=4)
    return gt, dets, evaluate(gt, dets, per_class=True), td.coco_reference(gt, dets)


def test_per_class_entries_follow_the_official_precision_array(coco):
    gt, _, ours, ref = coco
    precision = ref.eval["precision"][:, :, :, 0, -1]   # (T, R, K) at area all, 100 detections
    for k, cat in enumerate(ref.params.catIds):
        p = precision[:, :, k]
        if cat not in ours["per_class"]:
            assert (p == -1).all()  # a class without ground truth has no entry
            continue
        entry = ours["per_class"][cat]
        assert entry["AP"] == float(p[p > -1].mean())
        assert entry["AP50"] == float(p[0][p[0] > -1].mean())
        assert entry["num_gt"] == sum(1 for a in gt["annotations"] if a["category_id"] == cat and not a["iscrowd"])
        assert entry["name"] == f"class{cat}" and "frequency" not in entry
        assert set(entry) == {"name", "AP", "AP50", "oLRP", "oLRP_Loc", "oLRP_FP", "oLRP_FN",
                              "lrp_optimal_threshold", "num_gt"}


def test_pr_curve_is_the_class_mean_of_the_interpolated_precision(coco):
    _, _, ours, ref = coco
    curve = ours["pr_curve"]
    assert curve["recall"] == [float(r) for r in ref.params.recThrs]
    precision = ref.eval["precision"][:, :, :, 0, -1]
    defined = precision[0, 0] > -1
    assert curve["AP50"] == pytest.approx(precision[0][:, defined].mean(axis=1).tolist(), abs=1e-12)
    assert curve["AP75"] == pytest.approx(precision[5][:, defined].mean(axis=1).tolist(), abs=1e-12)
    assert curve["AP"] == pytest.approx(precision[:, :, defined].mean(axis=(0, 2)).tolist(), abs=1e-12)
    # every class has all 101 points, so a curve's mean height is its AP; interpolated: non-increasing
    for key in ("AP", "AP50", "AP75"):
        assert np.mean(curve[key]) == pytest.approx(ours[key], abs=1e-12)
        assert all(a >= b - 1e-15 for a, b in zip(curve[key], curve[key][1:]))


def test_lvis_entries_carry_the_frequency_group():
    gt = td.load_lvis()
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5}
            for a in gt["annotations"][:200]]
    m = evaluate(gt, dets, protocol="lvis", per_class=True)
    freq = {c["id"]: c["frequency"] for c in gt["categories"]}
    assert all(e["frequency"] == freq[cat] for cat, e in m["per_class"].items())
    assert sum(e["num_gt"] for e in m["per_class"].values()) == len(gt["annotations"])


def test_tables_from_a_json_round_trip(coco):
    _, _, ours, _ = coco
    block = json.loads(json.dumps({str(k): v for k, v in ours["per_class"].items()}))  # as in metrics.json
    block["10"] = {"name": "a|b", "AP": 0.5, "oLRP": -1.0}     # an older record: no AP50 / num_gt
    rows = tables.rows(block)
    assert [r["id"] for r in rows] == ["1", "2", "3", "10"]    # numeric order of the string ids
    assert [h for _, h in tables.columns(rows)] == ["id", "name", "GT", "AP", "AP50", "oLRP", "oLRP_Loc",
                                                    "oLRP_FP", "oLRP_FN", "LRP thr"]
    assert tables.cell(rows[-1], "AP") == "50.0" and tables.cell(rows[-1], "oLRP") == "–"
    assert tables.cell(rows[-1], "AP50") == "–" and tables.cell(rows[0], "num_gt") == str(rows[0]["num_gt"])

    md = tables.markdown(block, title="box AP per class").splitlines()
    assert md[0] == "### box AP per class" and md[2].startswith("| id | name | GT | AP |")
    assert md[-1].startswith("| 10 | a\\|b | – | 50.0 | – | – |")
    assert f"| {100 * ours['per_class'][1]['AP']:.1f} |" in md[4]

    table = list(csv.DictReader(io.StringIO(tables.csv_text({"bbox": block}))))
    assert table[0]["iou_type"] == "bbox" and float(table[0]["AP"]) == ours["per_class"][1]["AP"]
    assert table[-1]["AP50"] == "" and table[-1]["name"] == "a|b"

    console = Console(record=True, width=160)
    console.print(tables.rich_table(block, title="per class"))
    text = console.export_text()
    assert "class1" in text and "a|b" in text and "oLRP_Loc" in text and "lower is better" in text
