"""`rsdet report DIR --per-class`: a table per run and IoU type from metrics.json's per-class blocks,
written beside each run as per_class.md / per_class.csv."""

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
import evaluation_testdata as td  # noqa: E402

from paper_fakes import box, fab_run  # noqa: E402
from rsdet.evaluation import evaluate  # noqa: E402
from rsdet.records import find_runs  # noqa: E402
from rsdet.report.cli import main as report_main  # noqa: E402
from rsdet.report.per_class import blocks  # noqa: E402


@pytest.fixture(scope="module")
def evaluated():
    gt = td.synthetic_coco(seed=3)
    return (evaluate(gt, td.perturbed_detections(gt, seed=4), per_class=True),
            evaluate(gt, td.perturbed_detections(gt, seed=5, iou_type="segm"), iou_type="segm", per_class=True))


def test_tables_per_run_and_files_beside_it(tmp_path, evaluated, capsys):
    bbox, segm = evaluated
    root = tmp_path / "runs"
    fab_run(root / "rs", loss="rs", metrics={"bbox": bbox, "segm": segm, "iterations": 40})
    fab_run(root / "old", loss="ce", metrics=box(0.3))  # recorded before per-class metrics existed
    runs = {r.label: r for r in find_runs(root)}
    assert set(blocks(runs["rs"])) == {"bbox", "segm"} and blocks(runs["old"]) == {}

    assert report_main([str(root), "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "rs — box AP per class" in out and "rs — mask AP per class" in out
    assert "class1" in out and "oLRP_FN" in out and f"{100 * bbox['per_class'][1]['AP50']:.1f}" in out
    assert "old: no per-class metrics" in out
    md = (root / "rs" / "per_class.md").read_text()
    assert "### rs: box AP per class" in md and "### rs: mask AP per class" in md
    with open(root / "rs" / "per_class.csv") as fh:
        table = list(csv.DictReader(fh))
    assert {r["iou_type"] for r in table} == {"bbox", "segm"}
    first = next(r for r in table if r["iou_type"] == "segm" and r["id"] == "1")
    assert float(first["oLRP"]) == segm["per_class"][1]["oLRP"]
    assert int(first["num_gt"]) == segm["per_class"][1]["num_gt"]
    assert not (root / "old" / "per_class.md").exists() and not (root / "report.md").exists()


def test_no_write_only_prints(tmp_path, evaluated, capsys):
    root = tmp_path / "runs"
    fab_run(root / "rs", metrics={"bbox": evaluated[0]})
    assert report_main([str(root), "--per-class", "--no-write"]) == 0
    assert "box AP per class" in capsys.readouterr().out
    assert not (root / "rs" / "per_class.md").exists()


def test_help_text(capsys):
    assert report_main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--per-class" in text and "pr_curves.png" in text and "per_class.md" in text
