"""The paper tables on real records: a tiny sweep trained by `rsdet train` (a few iterations), swept by
`rsdet evaluate RUN --score-thresholds`, then laid out by `rsdet report --table sN --plot`."""

import re

import pytest

from conftest import TINY, TINY_DENSE
from rsdet import train_cli
from rsdet.evaluation.cli import main as evaluate_main
from rsdet.records import find_runs
from rsdet.report.cli import main as report_main
from rsdet.report.paper_table import fill_table, label_columns, table_rows
from rsdet.report.plots import is_png

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_sweep(shapes_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-real")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSDET_CACHE", str(shapes_cache))
        mp.chdir(root)
        # Tables S7-S11: RS and CE on Faster R-CNN, each with and without samplers
        assert train_cli.main(["-m", "loss=rs,ce", "sampler=none,random", *TINY]) == 0
        # Tables S1, S3, S4 on RS-ATSS: δ_RS 0.5 and 1.0; ranking-based weights with δ_loc 1.0
        assert train_cli.main(["-m", "experiment=table_s4", "loss.delta=0.5,1.0", *TINY_DENSE]) == 0
        assert train_cli.main(["experiment=table_s3", "loss.delta_loc=1.0", *TINY_DENSE]) == 0
        runs = find_runs(root / "outputs")
        for run in runs:
            choices = run.info["choices"]
            if choices["detector"] == "faster_rcnn" and run.config["sampler"]["rpn"] == (
                    "none" if choices["loss"] == "rs" else "random"):
                assert evaluate_main([str(run.dir), "--score-thresholds", "1e-4,0.4,0.6"]) == 0
    return root / "outputs", runs


def _cells(runs, table):
    spec, cells, used = fill_table(runs, table)
    header, rows = table_rows(spec, cells, paper=True)
    k = label_columns(spec)
    return used, {" | ".join(r[:k]): dict(zip(header, r)) for r in rows}


def test_every_reproducible_table_fills_from_real_records(tiny_sweep):
    _, runs = tiny_sweep
    assert len(runs) == 7 and all(r.status == "completed" for r in runs)
    used, s8 = _cells(runs, "s8")
    assert used == 4
    for row in ("Cross-entropy | Random | Random", "Cross-entropy | None | None", "RS Loss (Ours) | Random | Random",
                "RS Loss (Ours) | None | None"):
        assert re.fullmatch(r"\d+\.\d", s8[row]["AP (ours)"]) and s8[row]["AP (paper)"] != "—"
    assert s8["Focal Loss [9] | None | None"]["AP (ours)"] == "—"

    used, s7 = _cells(runs, "s7")
    rr, nn = s7["COCO | Random | Random"], s7["COCO | None | None"]
    assert rr["desired pos:neg instance ratio / R-CNN (ours)"] == "1:3"
    assert re.fullmatch(r"1:\d+", nn["actual pos:neg task ratio / RPN (ours)"])
    assert re.fullmatch(r"×\S+", nn["actual pos:neg task ratio / RPN (Δ)"])

    _, s9 = _cells(runs, "s9")
    assert s9["Faster R-CNN"]["Standard Loss (sec) (ours)"] != "—" and s9["Faster R-CNN"]["RS Loss (sec) (ours)"] != "—"
    assert s9["ATSS"]["RS Loss (sec) (ours)"] != "—"

    _, s10 = _cells(runs, "s10")
    row = s10["Object Detection | RS-Faster R-CNN | R-50 | 12 | –"]
    assert row["AP↑ (ours)"] != "—" and row["fps (ours)"] != "—" and row["oLRP_FN↓ (ours)"] != "—"

    used, s11 = _cells(runs, "s11")
    assert used == 2
    for thr in ("10^-4", "0.40", "0.60"):
        for group in ("Mask R-CNN", "RS-Mask R-CNN"):
            assert s11[thr][f"{group} / AP_box (ours)"] != "—" and s11[thr][f"{group} / fps (ours)"] != "—"
    assert s11["10^-3"]["RS-Mask R-CNN / AP_box (ours)"] == "—"  # not swept
    assert s11["0.40"]["RS-Mask R-CNN / AP_mask (ours)"] == "—"  # a box detector: no mask AP

    _, s4 = _cells(runs, "s4")
    assert s4["AP"]["0.50 (ours)"] != "—" and s4["AP"]["1.00 (ours)"] != "—" and s4["AP"]["0.25 (ours)"] == "—"
    _, s3 = _cells(runs, "s3")
    assert s3["AP"]["1.00 (ours)"] != "—" and s3["AP"]["Default (ours)"] == "—"
    _, s1 = _cells(runs, "s1")
    assert s1["Score-based [7]"]["Self-balance (SB) / value (ours)"] != "—"  # the δ_RS 0.5 default run
    # S1 holds δ_RS at 0.5 (and its ranking row is δ_loc 1.5): the δ_RS 1.0 run and the S3 run (δ_loc 1.0) fill
    # no S1 cell
    assert s1["Ranking-based [13]"]["Self-balance (SB) / value (ours)"] == "—"
    score_cell = fill_table(runs, "s1")[1][2][3]
    assert len(score_cell.values) == 1 and score_cell.runs[0].config["loss"]["delta"] == 0.5


@pytest.mark.parametrize("table, figure", [("s4", "delta_rs"), ("s8", "samplers"), ("s11", "thresholds")])
def test_report_plot_on_real_records(tiny_sweep, tmp_path, table, figure):
    outputs, _ = tiny_sweep
    stem = tmp_path / f"table_{table}"
    assert report_main([str(outputs), "--table", table, "--paper", "--plot", "--out", str(stem)]) == 0
    md = stem.with_suffix(".md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert f"table_{table}_{figure}.png" in links and any(link.startswith("curves/") for link in links)
    assert all(is_png(tmp_path / link) for link in links)
    assert stem.with_suffix(".tex").read_text().count("\\midrule") == 1
