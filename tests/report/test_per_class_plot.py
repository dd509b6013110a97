"""`rsdet report ... --plot`: each run's precision-recall curves (metrics.json's pr_curve blocks) as
pr_curves.png beside the run, linked from the report's Markdown."""

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
import evaluation_testdata as td  # noqa: E402

from paper_fakes import box, fab_run  # noqa: E402
from rsdet.evaluation import evaluate  # noqa: E402
from rsdet.records import find_runs  # noqa: E402
from rsdet.report.cli import main as report_main  # noqa: E402
from rsdet.report.plots import is_png  # noqa: E402
from rsdet.report.pr_curves import FILE, curves, write_pr_curves  # noqa: E402


def _metrics():
    gt = td.synthetic_coco(seed=3)
    return {"bbox": evaluate(gt, td.perturbed_detections(gt, seed=4), per_class=True),
            "segm": evaluate(gt, td.perturbed_detections(gt, seed=5, iou_type="segm"), iou_type="segm",
                             per_class=True), "iterations": 40}


def test_curves_read_the_blocks_and_skip_malformed_ones(tmp_path):
    metrics = _metrics()
    run = fab_run(tmp_path / "a", metrics=metrics)
    data = curves(find_runs(tmp_path / "a")[0])
    assert set(data) == {"bbox", "segm"}
    assert data["bbox"]["AP50"] == metrics["bbox"]["pr_curve"]["AP50"] and len(data["segm"]["recall"]) == 101
    assert data["segm"]["metrics"]["AP75"] == metrics["segm"]["AP75"]

    broken = json.loads((run.dir / "metrics.json").read_text())
    broken["bbox"]["pr_curve"]["AP"] = broken["bbox"]["pr_curve"]["AP"][:50]    # wrong length
    broken["segm"]["pr_curve"]["AP50"][3] = "x"                                 # not a number
    (run.dir / "metrics.json").write_text(json.dumps(broken))
    assert curves(find_runs(tmp_path / "a")[0]) == {}
    assert write_pr_curves(find_runs(tmp_path / "a")) == []


def test_plot_writes_a_png_beside_each_run_and_links_it(tmp_path):
    root = tmp_path / "runs"
    fab_run(root / "rs", loss="rs", metrics=_metrics())
    fab_run(root / "ce", loss="ce", metrics=box(0.3))  # no curves: no figure
    assert report_main([str(root), "--plot"]) == 0
    png = root / "rs" / FILE
    assert is_png(png) and png.stat().st_size > 10000
    assert not (root / "ce" / FILE).exists()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (root / "report.md").read_text())
    assert "rs/pr_curves.png" in links

    png.unlink()
    assert report_main([str(root), "--per-class", "--plot", "--no-write"]) == 0  # writes nothing
    assert not png.exists() and not (root / "rs" / "per_class.md").exists()
    assert report_main([str(root), "--per-class", "--plot"]) == 0
    assert is_png(png) and (root / "rs" / "per_class.md").is_file()
