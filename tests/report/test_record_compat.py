"""Run records written by earlier rsdet versions still appear in every report, with the fields they lack
shown as missing cells, never dropped silently."""

import json

from rsdet.records import find_runs
from rsdet.report.cli import main as report_main
from rsdet.report.paper_table import fill_table, label_columns, table_rows
from rsdet.report.plots import training_curves
from rsdet.report.run_data import first_epoch_rows, sweep_rows


def _old_run(path, loss, sampler, ap, *, run_json=True, history=None):
    """A record as rsdet 0.0.x wrote it: no world_size/max_iters/rsdet_version in run.json, no epoch blocks
    or segm block in metrics.json, history rows without epoch or ratios, no sweep."""
    path.mkdir(parents=True)
    cfg = (f"seed: 0\ndetector:\n  name: faster_rcnn\nloss:\n  name: {loss}\n  delta: 0.5\n"
           f"sampler:\n  rpn: {sampler}\n  rcnn: {sampler}\nschedule:\n  epochs: 2\n  max_iters: 40\n")
    (path / "config.yaml").write_text(cfg)
    (path / "metrics.json").write_text(json.dumps({"bbox": {"AP": ap, "AP50": ap + 0.2}}))
    if run_json:
        (path / "run.json").write_text(json.dumps({
            "status": "completed", "choices": {"loss": loss, "detector": "faster_rcnn"},
            "overrides": [f"loss={loss}", f"sampler={sampler}"], "iteration": 40}))
    if history is not None:
        (path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))


def _old_history():
    # no "epoch", no ratio columns (older versions logged loss terms and lr only)
    return [{"iteration": it, "lr": 0.001, "loss/rcnn_rank": 1.0 / it, "sec_per_iter": 0.3} for it in (10, 20, 30, 40)]


def test_old_records_fill_their_cells_and_missing_fields_show_as_missing(tmp_path):
    _old_run(tmp_path / "rs_none", "rs", "none", 0.40, history=_old_history())
    _old_run(tmp_path / "ce_random", "ce", "random", 0.30)
    _old_run(tmp_path / "legacy", "rs", "random", 0.38, run_json=False)  # config.yaml + metrics.json only
    runs = find_runs(tmp_path)
    assert len(runs) == 3 and all(r.status == "completed" for r in runs)

    spec, cells, used = fill_table(runs, "s8")
    assert used == 3  # none dropped, the legacy one matched through config.yaml's loss.name
    header, rows = table_rows(spec, cells, paper=True)
    by = {" | ".join(r[:label_columns(spec)]): dict(zip(header, r)) for r in rows}
    assert by["RS Loss (Ours) | None | None"]["AP (ours)"] == "40.0"
    assert by["RS Loss (Ours) | Random | Random"]["AP (ours)"] == "38.0"
    assert by["Cross-entropy | Random | Random"]["AP_75 (ours)"] == "—"  # not recorded then

    # Table S7: ratios are missing, AP is there, the first epoch comes from schedule.epochs
    spec, cells, used = fill_table(runs, "s7")
    header, rows = table_rows(spec, cells, paper=False)
    nn = dict(zip(header, rows[2]))
    assert nn["AP"] == "40.0" and nn["actual pos:neg task ratio / R-CNN"] == "—"
    assert [r["iteration"] for r in first_epoch_rows(runs[-1] if runs[-1].label == "rs_none" else
                                                     next(r for r in runs if r.label == "rs_none"))] == [10, 20]
    # Table S9 reads sec/iteration from the old history; S11 has no sweep: a clear error, not a crash
    spec, cells, _ = fill_table(runs, "s9")
    assert cells[0][1].values == [0.3]
    assert all(sweep_rows(r) == [] for r in runs)

    curves = training_curves(next(r for r in runs if r.label == "rs_none"))
    assert curves["task_ratio"] == {} and curves["lr"] == [0.001] * 4


def test_old_records_appear_in_the_generic_report_and_with_plots(tmp_path, capsys):
    _old_run(tmp_path / "rs_none", "rs", "none", 0.40, history=_old_history())
    _old_run(tmp_path / "legacy", "ce", "random", 0.30, run_json=False)
    assert report_main([str(tmp_path), "--metric", "AP,AP50", "--out", str(tmp_path / "rep"), "--plot"]) == 0
    md = (tmp_path / "rep.md").read_text()
    assert "40.0" in md and "30.0" in md
    assert "curves/rep_rs_none.png" in md  # the old history still gives training curves
    assert report_main([str(tmp_path), "--table", "s11", "--no-write"]) == 2
    assert "--score-thresholds" in capsys.readouterr().err


def test_a_garbled_byte_or_a_huge_number_does_not_lose_the_record(tmp_path, capsys):
    # found by the run-record fuzz test: an invalid UTF-8 byte inside a key, an integer beyond float range
    _old_run(tmp_path / "bytes", "rs", "none", 0.40)
    (tmp_path / "bytes" / "metrics.json").write_bytes(b'{"bbox": {"AP": 0.3, "\xffAP75": 0.35}}')
    _old_run(tmp_path / "huge", "ce", "none", 0.30)
    (tmp_path / "huge" / "metrics.json").write_text('{"bbox": {"AP": 0.2}, "iterations": 1' + "0" * 400 + "}")
    runs = {r.label: r for r in find_runs(tmp_path)}
    assert runs["bytes"].status == "completed" and runs["bytes"].metrics["bbox"]["AP"] == 0.3
    assert report_main([str(tmp_path), "--metric", "AP", "--no-write"]) == 0  # the huge value is no metric
    out = capsys.readouterr().out
    assert "30.0" in out and "20.0" in out
