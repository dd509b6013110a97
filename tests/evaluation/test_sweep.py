"""Score-threshold sweeps and their Table S11-style Markdown / CSV / LaTeX / rich tables."""

import csv
import sys
from pathlib import Path

import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluation_testdata as td  # noqa: E402

from rsdet.evaluation import (default_columns, evaluate, render_table,  # noqa: E402
                              threshold_sweep, write_table)


@pytest.fixture(scope="module")
def data():
    gt = td.synthetic_coco(seed=3)
    return gt, td.perturbed_detections(gt, seed=4)


@pytest.fixture(scope="module")
def rows(data):
    gt, dets = data
    return threshold_sweep(gt, dets, [1e-4, 0.5, 0.999], fps={1e-4: 3.2, 0.5: 21.4})


def test_rows_equal_evaluate_on_kept_detections(data, rows):
    gt, dets = data
    assert [r["threshold"] for r in rows] == [1e-4, 0.5, 0.999]
    assert [r["fps"] for r in rows] == [3.2, 21.4, None]
    for r in rows:
        kept = [d for d in dets if d["score"] > r["threshold"]]  # strict, like mmdet / detectron2
        assert r["metrics"] == evaluate(gt, kept)
    assert rows[1]["metrics"]["AP"] < rows[0]["metrics"]["AP"]
    assert rows[2]["metrics"]["AP"] == 0.0 and rows[2]["metrics"]["oLRP"] == 1.0  # nothing kept


def test_write_table_formats(rows, tmp_path):
    paths = write_table(rows, tmp_path / "out", "sweep", ["AP", "AP50", "AP75", "fps"])
    assert sorted(paths) == ["csv", "md", "tex"] and all(p.is_file() for p in paths.values())
    ap = rows[0]["metrics"]["AP"]

    md = paths["md"].read_text().splitlines()
    assert md[0] == "| Score threshold | AP | AP50 | AP75 | fps |"
    assert md[2] == (f"| 1e-4 | {100 * ap:.1f} | {100 * rows[0]['metrics']['AP50']:.1f} | "
                     f"{100 * rows[0]['metrics']['AP75']:.1f} | 3.2 |")
    assert md[3].startswith("| 0.50 |") and md[4].startswith("| 0.999 |") and md[4].endswith("| – |")

    with paths["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert float(table[0]["AP"]) == ap and float(table[0]["threshold"]) == 1e-4
    assert table[2]["fps"] == "" and float(table[1]["fps"]) == 21.4

    tex = paths["tex"].read_text()
    assert r"\begin{tabular}{lrrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"$10^{-4}$ & " + f"{100 * ap:.1f}" in tex and r"$\mathrm{AP}_{50}$" in tex
    assert "\n0.50 & " in tex and "\n0.999 & 0.0 &" in tex  # two decimals, as in Table S11


def test_default_columns_and_rich_table(rows):
    assert default_columns("lvis") == ["AP", "APr", "APc", "APf", "fps"]
    assert default_columns("coco", with_fps=False) == ["AP", "AP50", "AP75"]
    table = render_table(rows, title="sweep")  # columns inferred: COCO rows with fps
    assert [c.header for c in table.columns] == ["Score threshold", "AP", "AP50", "AP75", "fps"]
    assert table.row_count == 3
    console = Console(record=True, width=100)
    console.print(table)
    text = console.export_text()
    assert "1e-4" in text and "21.4" in text and f"{100 * rows[0]['metrics']['AP']:.1f}" in text
