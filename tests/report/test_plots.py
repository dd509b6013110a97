"""`--plot`: the plotted data come from the records (data functions), and the files are real PNGs that the
Markdown references."""

import re

import pytest

from rsdet.records import find_runs
from rsdet.report.cli import main as report_main
from rsdet.report.plots import (delta_rs_curve, is_png, sampler_bars, threshold_curves, training_curves,
                                write_plots)
from rsdet.report.run_data import desired_ratio, first_epoch_rows, sweep_rows
from paper_fakes import box, fab_run, history, sweep


def test_delta_rs_curve_has_every_paper_delta_and_our_mean_where_runs_exist(tmp_path):
    runs = [fab_run(tmp_path / "a", detector="atss", loss_cfg={"delta": 0.5}, metrics=box(0.40)),
            fab_run(tmp_path / "b", detector="atss", loss_cfg={"delta": 0.5}, seed=1, metrics=box(0.42)),
            fab_run(tmp_path / "c", detector="atss", loss_cfg={"delta": 1.0}, metrics=box(0.35))]
    data = delta_rs_curve(runs)
    assert data["delta"] == [0.25, 0.4, 0.5, 0.6, 0.75, 1.0]
    assert data["paper"] == [39.0, 39.7, 39.9, 39.7, 39.8, 39.4]
    assert data["ap"][2] == pytest.approx(41.0) and data["std"][2] == pytest.approx(1.41421, rel=1e-4)
    assert data["ap"][5] == pytest.approx(35.0) and data["std"][5] is None and data["n"] == [0, 0, 2, 0, 0, 1]
    assert data["ap"][0] is None


def test_threshold_curves_per_loss_with_fps_and_the_papers_values(tmp_path):
    runs = [fab_run(tmp_path / "rs", loss="rs", metrics=box(0.4), sweep=sweep([0.4] * 7, [1, 2, 3, 4, 5, 6, 7])),
            fab_run(tmp_path / "ce", loss="ce", metrics=box(0.3), sweep=sweep([0.3, 0.3, 0.3, 0.2, 0.1, 0.05, 0.0]))]
    data = threshold_curves(runs)
    assert set(data) == {"rs", "ce"}
    assert data["rs"]["threshold"] == [1e-4, 1e-3, 1e-2, 0.1, 0.4, 0.6, 0.8]
    assert data["rs"]["ap"] == pytest.approx([40.0] * 7) and data["rs"]["fps"] == [1, 2, 3, 4, 5, 6, 7]
    assert data["ce"]["ap"][4] == pytest.approx(10.0) and data["ce"]["fps"] == [None] * 7
    assert data["ce"]["paper_ap"][4] == 8.9 and data["rs"]["paper_fps"][-1] == 21.2
    assert data["rs"]["segm_ap"] == [None] * 7


def test_sampler_bars_follow_table_s8_rows(tmp_path):
    runs = [fab_run(tmp_path / "a", loss="rs", sampler={"rpn": "none", "rcnn": "none"}, metrics=box(0.45)),
            fab_run(tmp_path / "b", loss="ce", metrics=box(0.30))]
    data = sampler_bars(runs)
    assert set(data) == {"rs", "ce"}  # focal has no run
    assert data["rs"]["setting"] == ["Random | Random", "None | Random", "None | None"]
    assert data["rs"]["ap"] == [None, None, pytest.approx(45.0)] and data["rs"]["paper"] == [38.5, 39.3, 39.6]
    assert data["ce"]["ap"][0] == pytest.approx(30.0)


def test_training_curves_read_every_loss_term_lr_and_task_ratio(tmp_path):
    run = fab_run(tmp_path / "a", metrics=box(0.4), history=history(epochs=2, per_epoch=2))
    data = training_curves(run)
    assert data["iteration"] == [5, 10, 7, 12]  # as logged (history() spaces them by epoch)
    assert set(data["loss"]) == {"rpn_rank", "rcnn_rank"}  # loss/total is not a term
    assert data["task_ratio"]["rcnn"] == [200.0, 200.0, 100.0, 100.0]
    assert data["lr"] == [0.001] * 4


def test_run_data_first_epoch_sweep_and_desired_ratio(tmp_path):
    run = fab_run(tmp_path / "a", loss="ce", metrics=box(0.3), history=history(epochs=3, per_epoch=2),
                  sweep=sweep([0.3, 0.2], [9.0, 10.0], thresholds=(0.4, 0.05)))
    assert {r["epoch"] for r in first_epoch_rows(run)} == {0} and len(first_epoch_rows(run)) == 2
    rows = sweep_rows(run)
    assert [r["threshold"] for r in rows] == [0.05, 0.4]  # sorted
    assert rows[0]["bbox"]["AP"] == 0.2 and rows[0]["fps"] == 10.0 and rows[0]["segm"] is None
    assert desired_ratio(run, "rpn") == 1.0 and desired_ratio(run, "rcnn") == 3.0  # CE: random via auto
    (run.dir / "threshold_sweep.json").write_text('{"rows": [')  # cut by a kill
    run._sweep_rows = None
    assert sweep_rows(run) == []


def test_write_plots_and_the_cli_markdown_reference_real_pngs(tmp_path):
    root = tmp_path / "runs"
    fab_run(root / "rs", loss="rs", metrics=box(0.4), history=history(), sweep=sweep([0.4] * 7, [5.0] * 7))
    fab_run(root / "ce", loss="ce", metrics=box(0.3), history=history(), sweep=sweep([0.3] * 7, [4.0] * 7))
    figs = write_plots(find_runs(root), "s11", tmp_path / "figs", stem="t")
    names = sorted(f.path.name for f in figs)
    assert names == ["t_ce.png", "t_rs.png", "t_thresholds.png"]
    assert all(is_png(f.path) and f.path.stat().st_size > 5000 for f in figs)

    out = tmp_path / "out" / "table_s8"
    assert report_main([str(root), "--table", "s8", "--paper", "--plot", "--out", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "table_s8_samplers.png" in links and "curves/table_s8_rs.png" in links
    for link in links:
        assert is_png(out.parent / link)
