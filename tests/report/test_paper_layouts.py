"""Every `--table` layout S1-S11 on fabricated run records: rows, columns, labels, our value, the
paper's value and the difference; and the message naming the command when a table has no runs."""

import json

import pytest

from rsdet.errors import RsdetError
from rsdet.report.cli import main as report_main
from rsdet.report.paper_table import fill_table, label_columns, report_paper_table, table_rows
from paper_fakes import box, fab_run, history, sweep


def _table(runs, name):
    spec, cells, used = fill_table(runs, name)
    header, rows = table_rows(spec, cells, paper=True)
    k = label_columns(spec)  # Table S8's Loss | RPN | R-CNN are three columns, as printed
    return header, {" | ".join(r[:k]): dict(zip(header, r)) for r in rows}, used


def test_s1_rows_are_weightings_and_columns_balancing(tmp_path):
    runs = [fab_run(tmp_path / "a", detector="atss", loss_cfg={"weighting": "iou", "balance": "magnitude"},
                    metrics=box(0.30)),
            fab_run(tmp_path / "b", detector="atss", loss_cfg={"weighting": "none", "balance": "constant",
                                                             "box_weight": 2.0}, metrics=box(0.25)),
            fab_run(tmp_path / "c", detector="faster_rcnn", loss_cfg={"weighting": "iou", "balance": "magnitude"},
                    metrics=box(0.99))]  # not ATSS: no cell
    header, rows, used = _table(runs, "s1")
    assert used == 2
    assert list(rows) == ["No prioritization", "Centerness-based [18]", "Score-based [7]", "IoU-based [6]",
                          "Ranking-based [13]"]
    assert header[0] == "Instance-level importance weight (w^i)"
    cell = rows["IoU-based [6]"]
    assert cell["Self-balance (SB) / magnitude (ours)"] == "30.0"
    assert cell["Self-balance (SB) / magnitude (paper)"] == "39.6"
    assert cell["Self-balance (SB) / magnitude (Δ)"] == "-9.6"
    assert rows["No prioritization"]["Constant weighting / 2 (ours)"] == "25.0"
    assert rows["No prioritization"]["Constant weighting / 1 (ours)"] == "—"


def test_s2_reads_the_first_epoch_block_and_the_final_ap(tmp_path):
    runs = [fab_run(tmp_path / "a", loss="rs", metrics={**box(0.40), "epoch1": {"AP": 0.20}}),
            fab_run(tmp_path / "b", loss="alrp", metrics=box(0.35))]  # an old record: no epoch block
    header, rows, _ = _table(runs, "s2")
    assert "Heavy Training / Epoch 1 (ours)" in header and "Standard Training / Epoch 12 (paper)" in header
    assert rows["RS Loss"]["Standard Training / Epoch 1 (ours)"] == "20.0"
    assert rows["RS Loss"]["Standard Training / Epoch 1 (Δ)"] == "-2.0"
    assert rows["RS Loss"]["Standard Training / Epoch 12 (ours)"] == "40.0"
    assert rows["aLRP Loss [13]"]["Standard Training / Epoch 1 (ours)"] == "—"  # missing, shown as such
    assert rows["aLRP Loss [13]"]["Standard Training / Epoch 12 (ours)"] == "35.0"


def test_s3_and_s4_are_one_row_tables_over_delta(tmp_path):
    runs = [fab_run(tmp_path / "a", detector="atss", loss_cfg={"weighting": "rank", "delta_loc": 1.0},
                    metrics=box(0.41)),
            fab_run(tmp_path / "b", detector="atss", loss_cfg={"weighting": "rank", "delta_loc": None},
                    metrics=box(0.39)),
            fab_run(tmp_path / "c", detector="atss", loss_cfg={"delta": 0.25}, metrics=box(0.37)),
            fab_run(tmp_path / "d", detector="atss", loss_cfg={"delta": 0.25}, seed=1, metrics=box(0.39))]
    header, rows, _ = _table(runs, "s3")
    assert header[0] == "δ_loc" and rows["AP"]["1.00 (ours)"] == "41.0" and rows["AP"]["1.00 (paper)"] == "39.8"
    assert rows["AP"]["Default (ours)"] == "39.0" and rows["AP"]["Default (Δ)"] == "-0.5"
    header, rows, _ = _table(runs, "s4")
    assert rows["AP"]["0.25 (ours)"] == "38.0 ± 1.4" and rows["AP"]["0.25 (Δ)"] == "-1.0"


def test_s5_cascade_rows_and_olrp(tmp_path):
    runs = [fab_run(tmp_path / "a", detector="cascade_rcnn", loss="ce", metrics=box(0.30)),
            fab_run(tmp_path / "b", detector="cascade_rcnn", loss="rs", metrics=box(0.33))]
    header, rows, _ = _table(runs, "s5")
    assert list(rows) == ["Cascade R-CNN", "RS Cascade R-CNN"]
    assert rows["RS Cascade R-CNN"]["AP ↑ (ours)"] == "33.0"
    assert rows["RS Cascade R-CNN"]["oLRP ↓ (ours)"] == "67.0" and rows["RS Cascade R-CNN"]["oLRP ↓ (Δ)"] == "+0.4"


def test_s6_reads_mask_ap_from_the_segm_block(tmp_path):
    runs = [fab_run(tmp_path / "a", detector="yolact", loss_cfg={"label": "iou"},
                    metrics={**box(0.30), "segm": {"AP": 0.28, "AP50": 0.50, "AP75": 0.27}}),
            fab_run(tmp_path / "b", detector="yolact", loss_cfg={"label": "binary"}, metrics=box(0.31))]  # no segm
    header, rows, _ = _table(runs, "s6")
    assert rows["IoU"]["Segmentation / AP (ours)"] == "28.0" and rows["IoU"]["Segmentation / AP (paper)"] == "29.9"
    assert rows["IoU"]["Segmentation / AP (Δ)"] == "-1.9" and rows["IoU"]["Detection / AP (ours)"] == "30.0"
    assert rows["Binary"]["Segmentation / AP (ours)"] == "—" and rows["Binary"]["Detection / AP (ours)"] == "31.0"


def test_s7_averages_the_ratios_over_the_first_epoch_and_prints_them_as_in_the_paper(tmp_path):
    runs = [fab_run(tmp_path / "a", sampler={"rpn": "random", "rcnn": "random"}, metrics=box(0.40),
                    history=history(rpn_task=3.0, rcnn_task=350.0)),
            fab_run(tmp_path / "b", sampler={"rpn": "none", "rcnn": "none"}, metrics=box(0.42),
                    history=history(rpn_task=1000.0, rcnn_task=500.0))]
    header, rows, used = _table(runs, "s7")
    assert used == 2 and header[:3] == ["Dataset", "Sampler RPN", "Sampler R-CNN"]
    rr = rows["COCO | Random | Random"]
    # first epoch: 2x the later epochs' values (history()); the mean over all rows would be 1.5x
    assert rr["actual pos:neg task ratio / R-CNN (ours)"] == "1:700"
    assert rr["actual pos:neg task ratio / R-CNN (paper)"] == "1:702"
    assert rr["actual pos:neg task ratio / R-CNN (Δ)"] == "×1"
    assert rr["desired pos:neg instance ratio / RPN (ours)"] == "1:1"  # from the sampler budget
    assert rr["desired pos:neg instance ratio / R-CNN (ours)"] == "1:3"
    nn = rows["COCO | None | None"]
    assert nn["desired pos:neg instance ratio / RPN (ours)"] == "—"  # no sampler: N/A as in the paper
    assert nn["actual pos:neg task ratio / RPN (ours)"] == "1:2000"
    assert nn["AP (ours)"] == "42.0" and nn["AP (paper)"] == "39.6"


def test_s8_loss_by_sampler_with_auto_resolved_to_the_recipe_default(tmp_path):
    runs = [fab_run(tmp_path / "a", loss="ce", metrics=box(0.30)),  # sampler=auto → CE's random samplers
            fab_run(tmp_path / "b", loss="ce", seed=1, metrics=box(0.32)),
            fab_run(tmp_path / "c", loss="rs", sampler={"rpn": "none", "rcnn": "random"}, metrics=box(0.45)),
            fab_run(tmp_path / "d", loss="focal", sampler={"rpn": "none", "rcnn": "none"}, metrics=box(0.20),
                    status="failed")]  # failed: no cell
    header, rows, used = _table(runs, "s8")
    assert used == 3 and header[:6] == ["Loss", "RPN", "R-CNN", "AP (ours)", "AP (paper)", "AP (Δ)"]
    assert rows["Cross-entropy | Random | Random"]["AP (ours)"] == "31.0 ± 1.4"
    assert rows["Cross-entropy | Random | Random"]["AP (Δ)"] == "-6.6"
    assert rows["RS Loss (Ours) | None | Random"]["AP_50 (ours)"] == "65.0"
    assert rows["Focal Loss [9] | None | None"]["AP (ours)"] == "—"


def test_s9_iteration_time_from_history_with_each_detectors_standard_loss(tmp_path):
    runs = [fab_run(tmp_path / "a", loss="ce", metrics=box(0.3), history=history()),
            fab_run(tmp_path / "b", loss="rs", metrics=box(0.4), history=history()),
            fab_run(tmp_path / "c", detector="atss", loss="focal", metrics=box(0.3), history=history()),
            fab_run(tmp_path / "d", detector="atss", loss="ce", metrics=box(0.3), history=history())]  # not ATSS's standard
    header, rows, used = _table(runs, "s9")
    assert used == 3
    assert rows["Faster R-CNN"]["Standard Loss (sec) (ours)"] == "0.55"  # mean of 0.5 and 0.6 s/iter
    assert rows["Faster R-CNN"]["Standard Loss (sec) (Δ)"] == "+0.13"
    assert rows["Faster R-CNN"]["RS Loss (sec) (paper)"] == "0.82"
    assert rows["ATSS"]["Standard Loss (sec) (ours)"] == "0.55" and rows["ATSS"]["RS Loss (sec) (ours)"] == "—"


def test_s10_fps_at_the_test_threshold_and_mask_rows_read_masks(tmp_path):
    fps = [10.0, 11.0, 12.0, 13.0, 20.0, 25.0, 30.0]
    runs = [fab_run(tmp_path / "a", loss="rs", metrics=box(0.40), sweep=sweep([0.4] * 7, fps)),
            fab_run(tmp_path / "b", detector="mask_rcnn", loss="rs",
                    metrics={**box(0.41), "segm": {"AP": 0.36, "oLRP": 0.70}})]
    header, rows, _ = _table(runs, "s10")
    frcnn = rows["Object Detection | RS-Faster R-CNN | R-50 | 12 | –"]
    assert frcnn["AP↑ (ours)"] == "40.0" and frcnn["fps (ours)"] == "20" and frcnn["fps (Δ)"] == "-2.5"
    mask_box = rows["Object Detection | RS-Mask R-CNN | R-50 | 12 | –"]
    mask_segm = rows["Instance Segmentation | RS-Mask R-CNN | R-50 | 12 | –"]
    assert mask_box["AP↑ (ours)"] == "41.0" and mask_segm["AP↑ (ours)"] == "36.0"
    assert mask_segm["oLRP↓ (ours)"] == "70.0" and mask_segm["fps (ours)"] == "—"  # no sweep
    # settings rsdet does not reproduce (R-101, "+" variants) never take a run
    assert rows["Object Detection | RS-Faster R-CNN | R-101-DCN | 36 | [480, 960]"]["AP↑ (ours)"] == "—"


def test_s11_one_row_per_threshold_from_the_sweep(tmp_path):
    rs_ap = [0.40, 0.40, 0.40, 0.40, 0.39, 0.38, 0.30]
    ce_ap = [0.30, 0.30, 0.29, 0.25, 0.18, 0.12, 0.05]
    fps = [5.0, 6.0, 7.0, 10.0, 20.0, 30.0, 40.0]
    runs = [fab_run(tmp_path / "rs", loss="rs", metrics=box(0.39), sweep=sweep(rs_ap, fps)),
            fab_run(tmp_path / "ce", loss="ce", metrics=box(0.29),
                    sweep=sweep(ce_ap, fps, segm=[0.2] * 7)),  # a mask sweep: the mask columns fill
            fab_run(tmp_path / "ce2", loss="ce", metrics=box(0.29))]  # never swept: no value
    header, rows, used = _table(runs, "s11")
    assert used == 2 and list(rows)[0] == "10^-4" and header[0] == "Score threshold"
    assert rows["0.40"]["RS-Mask R-CNN / AP_box (ours)"] == "39.0"
    assert rows["0.40"]["RS-Mask R-CNN / AP_box (paper)"] == "25.9"
    assert rows["0.40"]["RS-Mask R-CNN / fps (ours)"] == "20"
    assert rows["0.60"]["Mask R-CNN / AP_box (ours)"] == "12.0"
    assert rows["0.60"]["Mask R-CNN / AP_box (Δ)"] == "+5.6"
    assert rows["0.60"]["Mask R-CNN / AP_mask (ours)"] == "20.0"
    assert rows["0.60"]["Mask R-CNN / AP_r (ours)"] == "10.0"
    assert rows["0.60"]["RS-Mask R-CNN / AP_mask (ours)"] == "—"


@pytest.mark.parametrize("table, command", [
    ("s4", "experiment=table_s4"), ("s6", "detector=yolact"), ("s7", "experiment=table_s8"),
    ("s9", "loss=rs,ce"), ("s10", "--score-thresholds 0.4"), ("s11", "rsdet evaluate RUN_DIR --score-thresholds"),
])
def test_a_table_without_runs_names_the_command_that_makes_them(tmp_path, table, command):
    runs = [fab_run(tmp_path / "x", detector="paa", loss="ap", metrics=box(0.3))]
    with pytest.raises(RsdetError, match="produce them with") as err:
        report_paper_table(runs, table, paper=True, out_stem=None, console=_quiet())
    assert command in str(err.value)


def test_cli_writes_every_format_of_a_group_headed_table(tmp_path):
    fab_run(tmp_path / "rs", loss="rs", metrics=box(0.39), sweep=sweep([0.4] * 7, [1.0] * 7))
    assert report_main([str(tmp_path), "--table", "s11", "--paper", "--out", str(tmp_path / "out" / "s11")]) == 0
    md = (tmp_path / "out" / "s11.md").read_text()
    assert "| RS-Mask R-CNN / AP_box (ours) |" in md.splitlines()[0]
    assert "10^-4" in md
    tex = (tmp_path / "out" / "s11.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    csv_head = (tmp_path / "out" / "s11.csv").read_text().splitlines()[0]
    assert csv_head.startswith("Score threshold,Mask R-CNN / AP_mask (ours)")


def _quiet():
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=200)


def test_s11_mask_columns_from_a_separate_mask_sweep_file(tmp_path):
    # a mask detector's `rsdet evaluate --score-thresholds` writes the mask rows to threshold_sweep_segm.json
    run = fab_run(tmp_path / "m", detector="mask_rcnn", loss="rs", metrics=box(0.4),
                  sweep=sweep([0.40, 0.40], [2.0, 9.0], thresholds=(1e-4, 0.6)))
    rows = [{"threshold": t, "metrics": {"AP": ap, "APr": ap - 0.1, "APbox": 0.4}, "fps": f}
            for t, ap, f in ((1e-4, 0.30, 2.0), (0.6, 0.29, 9.0))]
    (run.dir / "threshold_sweep_segm.json").write_text(
        json.dumps({"device": "cpu", "iou_type": "segm", "rows": rows}))
    header, table, _ = _table([run], "s11")
    assert table["10^-4"]["RS-Mask R-CNN / AP_mask (ours)"] == "30.0"
    assert table["0.60"]["RS-Mask R-CNN / AP_r (ours)"] == "19.0"
    assert table["0.60"]["RS-Mask R-CNN / AP_box (ours)"] == "40.0" and table["0.60"]["RS-Mask R-CNN / fps (ours)"] == "9"


def test_s9_and_s10_carry_the_detectors_flops_from_run_json(tmp_path):
    from rsdet.records import RunRecord
    from rsdet.report.metrics import metric_value

    runs = [fab_run(tmp_path / "a", loss="rs", metrics=box(0.40), history=history()),
            fab_run(tmp_path / "b", detector="mask_rcnn", loss="rs", metrics={**box(0.41), "segm": {"AP": 0.36}})]
    RunRecord(runs[0].dir, create=False).update(complexity={"parameters": 6_029_677, "flops_per_image": 1_974_237_568})
    runs = [RunRecord(r.dir, create=False) for r in runs]
    assert metric_value(runs[0], "gflops") == pytest.approx(1.974237568)
    assert metric_value(runs[0], "params_m") == pytest.approx(6.029677)
    assert metric_value(runs[1], "gflops") is None  # a record written before run.json had `complexity`
    _, rows, _ = _table(runs, "s9")
    assert rows["Faster R-CNN"]["GFLOPs (rsdet) (ours)"] == "1.97" and rows["Faster R-CNN"]["GFLOPs (rsdet) (paper)"] == "—"
    _, rows, _ = _table(runs, "s10")
    assert rows["Object Detection | RS-Faster R-CNN | R-50 | 12 | –"]["GFLOPs (rsdet) (ours)"] == "1.97"
    assert rows["Object Detection | RS-Mask R-CNN | R-50 | 12 | –"]["GFLOPs (rsdet) (ours)"] == "—"
