"""docs/paper-mini.md from fabricated records in paper-mini's folders: the paper's rows and columns with
"ours ± CI (paper)" cells, wide tables split, cells.csv and findings.csv, figures, and the README block."""

import csv
import json
import re
from pathlib import Path

import pytest

from rsdet.report import mini_cells as C
from rsdet.report import mini_doc
from rsdet.report import mini_settings as S
from rsdet.report.mini_cells import Binding, MiniCell
from rsdet.report.plots import is_png
from rsdet.report.stats import summarize
from paper_fakes import box, fab_run, history, sweep

S8_AP = {("ce", "random", "random"): 0.30, ("ce", "none", "random"): 0.28, ("ce", "none", "none"): 0.25,
         ("focal", "random", "random"): 0.20, ("focal", "none", "random"): 0.21, ("focal", "none", "none"): 0.19,
         ("rs", "random", "random"): 0.47, ("rs", "none", "random"): 0.48, ("rs", "none", "none"): 0.49}


def _fabricate(root: Path) -> None:
    by_key = {b.key: b.setting for b in C.catalogue()}
    for (loss, rpn, rcnn), ap in S8_AP.items():
        label = {"ce": "Cross-entropy", "focal": "Focal Loss [9]", "rs": "RS Loss (Ours)"}[loss]
        setting = by_key[("S8", f"{label} | {rpn.title()} | {rcnn.title()}", "AP")]
        for seed in S.SEEDS:
            rec = fab_run(C.run_dir(root, setting, seed), loss=loss, seed=seed, sampler={"rpn": rpn, "rcnn": rcnn},
                          metrics=box(ap + 0.01 * seed), history=history(rpn_task=3.0 if rpn == "random" else 900.0))
            if (loss, rpn, rcnn) == ("rs", "none", "none"):  # Table S10's fps: a sweep at the RS threshold
                (rec.dir / "threshold_sweep.json").write_text(json.dumps({"rows": sweep([ap], [20.0 + seed],
                                                                                        thresholds=(0.4,))}))
    for loss, start in (("ce", 0.25), ("rs", 0.30)):
        setting = by_key[("S11", "0.60", f"{'RS-' if loss == 'rs' else ''}Mask R-CNN / AP_mask")]
        for seed in S.SEEDS:
            aps = [start] * 6 + [start * 0.6] if loss == "rs" else [start, start, start * 0.9, start * 0.6,
                                                                     start * 0.3, start * 0.2, start * 0.1]
            rows = sweep(aps, [5.0 + k for k in range(7)], segm=[a - 0.01 + 0.002 * seed for a in aps])
            fab_run(C.run_dir(root, setting, seed), detector="mask_rcnn", loss=loss, seed=seed,
                    metrics={**box(start), "segm": {"AP": start - 0.02}}, sweep=rows,
                    history=history(rcnn_task=5000.0))
    setting = by_key[("S4", "AP", "0.50")]
    for seed in S.SEEDS:
        fab_run(C.run_dir(root, setting, seed), detector="atss", seed=seed, metrics=box(0.30 + 0.005 * seed))
    bench = {"settings": {}, "iteration": {"atss": {"standard_loss": "focal", "standard": [0.10, 0.11, 0.10],
                                                    "rs": [0.10, 0.10, 0.11]}},
             "loss": [{"N": 40000, "P": 150, "fast_ms": [3.0, 3.1, 3.0], "loop_ms": [300.0, 310.0, 305.0],
                       "extrapolated": False}]}
    (root / "s9").mkdir(parents=True)
    (root / "s9" / "bench.json").write_text(json.dumps(bench))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("minidoc")
    root, doc = tmp / "runs", tmp / "docs" / "paper-mini.md"
    _fabricate(root)
    mini_doc.write_document(root, doc, "python scripts/paper_mini.py", plan_text="PLAN", failures=["x (exit 1)"],
                            estimate_min=280.0, elapsed_min=275.0)
    return tmp, doc


def test_cells_are_ours_with_ci_beside_the_paper_in_its_own_rows_and_columns(generated):
    _, doc = generated
    text = doc.read_text()
    ci = summarize([30.0, 31.0, 32.0]).ci95
    assert f"| Cross-entropy | Random | Random | 31.0 ± {ci:.1f} (37.6) |" in text
    assert "| Loss | RPN | R-CNN | AP | AP_50 | AP_75 |" in text
    assert "| Focal Loss [9] | None | None | 20.0 ± 2.5 (30.7) |" in text
    assert "| AP | — (39.0) | — (39.7) | 30.5 ± 1.2 (39.9) |" in text           # Table S4, one row
    # Table S11 is split into one table per detector, each with the paper's six columns
    s11 = text[text.index("## Table S11"):text.index("## Table S10")]
    assert "**Mask R-CNN**" in s11 and "**RS-Mask R-CNN**" in s11
    assert "| Score threshold | AP_mask | AP_r | AP_c | AP_f | AP_box | fps |" in s11
    assert re.search(r"\| 0\.60 \| 29\.2 ± 0\.5 \(25\.2\) \| 14\.6 ± 0\.2 \(16\.8\) \|", s11)
    # S7: ratios as 1:k; the LVIS row from the S11 Mask R-CNN runs
    assert re.search(r"\| LVIS \| None \| None \|.*\| 1:10000 ± 0\.0 \(1:10470\) \| 28\.0 ± 0\.0 \(25\.2\) \|", text)
    assert "| COCO | Random | Random | 1:1.0 ± 0.0 (1:1) | 1:3.0 ± 0.0 (1:3) |" in text  # mask AP for LVIS
    # S10: the RS Faster R-CNN row only, fps from the sweep at 0.40
    assert "21.0 ± 2.5 (22.5)" in text and "RS-Mask R-CNN | R-101" not in text
    assert "N/A" in text


def test_each_table_states_its_runs_why_the_cpu_differs_and_its_findings(generated):
    _, doc = generated
    text = doc.read_text()
    assert text.startswith("<!-- GENERATED by scripts/paper_mini.py")
    for name in C.TABLES:
        section = text[text.index(f"## Table {name}:"):]
        assert "*Why the CPU setting may differ:*" in section.split("\n## ")[0]
    assert "*Runs:* `detector=faster_rcnn` on `shapes`, 900 iterations; seeds 0, 1, 2." in text
    assert "**S8.2 (holds):** cross-entropy drops once the samplers are removed." in text
    assert "“the performance significantly drops once the samplers are removed for Cross-entropy Loss” (S3.5)" in text
    assert "| S8 | S8.2 cross-entropy drops once the samplers are removed | holds | CE None \\| Random" in text
    assert "| S9 | S9.1 RS's training overhead comes from its per-positive algorithm | holds |" in text
    assert "| S3 | S3.1 smoothing the ranking-based weights (δ_loc) can help | not tested |" in text
    assert "heavy training (100 epochs, SSD-style augmentation) is not run on the CPU" in text
    assert "The ranking-based row trains with δ_loc 1.5" in text
    assert "| N=4e4, P=150 | 305 ± 12.4 | 3.03 ± 0.143 | ×" in text
    assert "estimated at 280 min" in text and "this run took 275 min" in text
    assert "Runs that failed:** x (exit 1)" in text and "PLAN" in text


def test_cells_and_findings_csv_are_written_with_the_document(generated):
    _, doc = generated
    folder = doc.with_suffix("")
    with open(folder / "cells.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["table", "row", "column", "metric", "mean", "ci95", "n", "paper"]
    ce = next(r for r in rows if r["table"] == "S8" and r["row"] == "Cross-entropy | Random | Random"
              and r["column"] == "AP")
    assert float(ce["mean"]) == pytest.approx(31.0) and ce["n"] == "3" and float(ce["paper"]) == 37.6
    lvis = next(r for r in rows if r["row"] == "LVIS | None | None" and r["column"].endswith("task ratio / R-CNN"))
    assert float(lvis["paper"]) == 10470 and float(lvis["mean"]) == pytest.approx(10000.0)
    empty = next(r for r in rows if r["table"] == "S1" and r["row"] == "No prioritization")
    assert empty["n"] == "0" and empty["mean"] == ""
    assert {r["table"] for r in rows} >= {"S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11"}
    with open(folder / "findings.csv", newline="") as fh:
        found = list(csv.DictReader(fh))
    assert list(found[0]) == ["table", "finding", "verdict", "evidence"]
    assert len(found) == 21 and {f["verdict"] for f in found} <= {"holds", "does not hold", "inconclusive",
                                                                   "not tested"}
    s82 = next(f for f in found if f["finding"].startswith("S8.2"))
    assert s82["verdict"] == "holds" and "[" in s82["evidence"]


def test_figures_are_pngs_referenced_from_the_document(generated):
    _, doc = generated
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text())
    assert "paper-mini/s8_samplers.png" in links and "paper-mini/s11_thresholds.png" in links
    assert "paper-mini/s4_delta_rs.png" in links and sum("/curves/" in link for link in links) == 3
    assert all(is_png(doc.parent / link) for link in links)


def test_update_readme_lists_every_finding(generated):
    tmp_path, doc = generated
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{mini_doc.README_BEGIN}\nold\n{mini_doc.README_END}\nafter\n")
    mini_doc.update_readme(readme, Path("docs/paper-mini.md"))
    text = readme.read_text()
    assert "\nold\n" not in text and text.endswith("after\n") and "[docs/paper-mini.md](docs/paper-mini.md)" in text
    assert sum(ln.startswith("| S") for ln in text.splitlines()) == 21
    assert "| S8 | S8.2 cross-entropy drops once the samplers are removed | holds |" in text


def test_a_wide_table_without_groups_is_split_in_halves_and_one_seed_has_no_ci():
    key = ("S10", "Object Detection | RS-Faster R-CNN | R-50 | 12 | –", "AP↑")
    cells = {key: MiniCell(Binding(*key, metric="AP"), 39.6, {0: 41.0})}
    text = mini_doc.render_table("S10", cells, keep_empty_rows=False)
    assert text.count("| Task | Method |") == 2 and "| 41.0 (39.6) |" in text and "R-101" not in text
    assert mini_doc.cell_text(None, None) == "N/A" and mini_doc.cell_text(None, 39.0) == "— (39.0)"


def test_model_size_cells_keep_three_significant_digits():
    cell = MiniCell(Binding("S9", "ATSS", "GFLOPs (rsdet)", metric="gflops"), None, {0: 0.2134, 1: 0.2134})
    assert mini_doc.cell_text(cell, None) == "0.213 ± 0 (N/A)"  # not "0.2 ± 0.0": the presets differ in the 2nd digit
    ap = MiniCell(Binding("S9", "ATSS", "AP", metric="AP"), None, {0: 41.04})
    assert mini_doc.ours_text(ap) == "41.0"
