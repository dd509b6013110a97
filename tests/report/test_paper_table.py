"""`rsdet report --table sN [--paper]`: the paper's layout filled from run records."""

from rsdet.records import RunRecord
from rsdet.report.cli import main as report_main
from rsdet.report.paper_table import fill_table, table_rows


def _run(path, delta, ap, seed=0, detector="atss"):
    rec = RunRecord(path)
    rec.write_config({"seed": seed, "loss": {"name": "rs", "delta": delta}, "detector": {"name": detector}})
    rec.start(choices={"loss": "rs", "detector": detector}, overrides=[f"loss.delta={delta}", f"seed={seed}"])
    rec.write_metrics({"bbox": {"AP": ap}})
    rec.finish()
    return rec


def _sweep(root):
    # Table S4 cells 0.25 (two seeds) and 0.5; a Faster R-CNN run that matches no ATSS cell
    return [_run(root / "a", 0.25, 0.38), _run(root / "b", 0.25, 0.40, seed=1), _run(root / "c", 0.5, 0.41),
            _run(root / "d", 0.5, 0.99, detector="faster_rcnn")]


def test_cells_take_the_mean_of_matching_runs_and_show_the_paper_beside(tmp_path):
    runs = _sweep(tmp_path)
    spec, cells, used = fill_table(runs, "s4")
    assert used == 3  # the Faster R-CNN run is not an ATSS cell
    labels = [c["label"] for c in spec["cols"]]
    first, half = cells[0][labels.index("0.25")], cells[0][labels.index("0.50")]
    assert sorted(first.values) == [0.38, 0.40] and half.values == [0.41]
    assert first.paper == 39.0 and half.paper == 39.9  # Table S4 as printed
    header, rows = table_rows(spec, cells, paper=True)
    assert header[1:4] == ["0.25 (ours)", "0.25 (paper)", "0.25 (Δ)"]
    assert rows[0][1] == "39.0 ± 1.4" and rows[0][2] == "39.0" and rows[0][3] == "+0.0"
    j = header.index("0.50 (ours)")
    assert rows[0][j:j + 3] == ["41.0", "39.9", "+1.1"]
    assert rows[0][header.index("1.00 (ours)")] == "—"  # no run for that cell


def test_cli_writes_the_table_and_names_the_preset_when_runs_are_missing(tmp_path, capsys):
    _sweep(tmp_path)
    assert report_main([str(tmp_path), "--table", "s4", "--paper"]) == 0
    md = (tmp_path / "table_s4.md").read_text()
    assert "0.25 (paper)" in md and "39.9" in md
    assert (tmp_path / "table_s4.tex").read_text().startswith("\\begin{tabular}")
    capsys.readouterr()
    assert report_main([str(tmp_path), "--table", "s5", "--no-write"]) == 2
    assert "experiment=table_s5" in capsys.readouterr().err
    assert report_main([str(tmp_path), "--table", "s99", "--no-write"]) == 2


def test_a_run_that_changes_an_axis_the_table_holds_fixed_fills_no_cell(tmp_path):
    """Table S4 holds score-based weighting (the S1/S3 runs with rank weighting at δ_RS 0.5 are not S4's
    0.5 cell); a record without the key (an older rsdet) counts as the default."""
    runs = _sweep(tmp_path)
    rec = RunRecord(tmp_path / "rank")
    rec.write_config({"seed": 0, "loss": {"name": "rs", "delta": 0.5, "weighting": "rank", "balance": "value",
                                          "delta_loc": 1.5}, "detector": {"name": "atss"}})
    rec.start(choices={"loss": "rs", "detector": "atss"}, overrides=["loss.delta=0.5", "loss.weighting=rank",
                                                                     "loss.delta_loc=1.5"])
    rec.write_metrics({"bbox": {"AP": 0.10}})
    rec.finish()
    spec, cells, used = fill_table([*runs, rec], "s4")
    labels = [c["label"] for c in spec["cols"]]
    assert used == 3 and cells[0][labels.index("0.50")].values == [0.41]
    spec, cells, _ = fill_table([*runs, rec], "s1")
    rank_value = cells[[r["label"] for r in spec["rows"]].index("Ranking-based [13]")][3]
    assert rank_value.values == [0.10]   # ... but it is Table S1's ranking-based / value cell (δ_loc 1.5)


def test_table_s9_fills_the_solov2_light_row_from_its_focal_and_rs_runs(tmp_path):
    runs = []
    for loss, sec in (("focal", 0.2), ("rs", 0.3)):
        rec = RunRecord(tmp_path / loss)
        rec.write_config({"seed": 0, "loss": {"name": loss}, "detector": {"name": "solov2_light"}})
        rec.start(choices={"loss": loss, "detector": "solov2_light"}, overrides=[f"loss={loss}"])
        for it in (1, 2):
            rec.append_history({"iteration": it, "sec_per_iter": sec})
        rec.write_metrics({"segm": {"AP": 0.3}, "bbox": {"AP": 0.3}})
        rec.finish()
        runs.append(rec)
    spec, cells, used = fill_table(runs, "s9")
    row = [r["label"] for r in spec["rows"]].index("SOLOv2-light")
    labels = [c["label"] for c in spec["cols"]]
    assert used == 2
    assert cells[row][labels.index("Standard Loss (sec)")].values == [0.2]  # focal: SOLOv2's standard loss
    assert cells[row][labels.index("RS Loss (sec)")].values == [0.3]
    assert cells[row][labels.index("RS Loss (sec)")].paper == 0.9
