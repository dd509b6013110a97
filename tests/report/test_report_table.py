"""Pivoting run records into tables: values, aggregation, statuses, metric lookup."""

import pytest
from report_fakes import make_run, make_sweep

from rsdet.errors import ConfigError
from rsdet.records import find_runs
from rsdet.report.table import build_table


@pytest.fixture
def sweep(tmp_path):
    return find_runs(make_sweep(tmp_path / "sweep"))


def test_default_pivot_is_loss_by_sampler(sweep):
    t = build_table(sweep)
    assert t.row_axes == ["loss"] and t.col_axes == ["sampler"] and t.metrics == ["AP"]
    assert t.row_keys == [("rs",), ("ce",)]
    assert [c.key for c in t.columns] == [("none",), ("random",)]
    rs_none = t.cell(("rs",), 0)
    assert rs_none.values == pytest.approx([40.0, 42.0])          # percentages
    assert rs_none.mean == pytest.approx(41.0) and rs_none.std == pytest.approx(1.41421, abs=1e-4)
    assert t.cell_text(("rs",), 0) == "41.0 ± 1.4 (n=2)"
    assert t.cell_text(("rs",), 1) == "38.0 ± 0.0 (n=2)"


def test_failed_and_unreadable_runs_are_listed_not_dropped(sweep):
    t = build_table(sweep)
    failed = t.cell(("ce",), 0)
    assert failed.values == [30.0] and [s for s, _ in failed.pending] == ["failed"]
    note = failed.pending[0][1]
    assert "NaN at iteration 12" in t.footnotes[note - 1] and t.footnotes[note - 1].startswith("5:")
    assert t.cell_text(("ce",), 0) == f"30.0; failed [{note}]"
    bad = t.cell(("ce",), 1)
    assert [s for s, _ in bad.pending] == ["unreadable"]
    assert "metrics.json" in t.footnotes[bad.pending[0][1] - 1]
    assert t.n_runs == 8
    assert any("mean ± std over seed" in n for n in t.notes)


def test_cell_with_only_a_failed_run(tmp_path):
    make_run(tmp_path / "0", loss="rs", ap=0.4)
    make_run(tmp_path / "1", loss="ce", ap=None)
    make_run(tmp_path / "2", loss="ap", status="running")
    t = build_table(find_runs(tmp_path))
    assert t.row_axes == ["loss"] and [c.metric for c in t.columns] == ["AP"]
    assert t.cell_text(("rs",), 0) == "40.0"
    assert t.cell_text(("ce",), 0) == "failed [1]"
    assert t.cell_text(("ap",), 0) == "running [2]"
    assert t.footnotes[1].startswith("2: running at iteration 30")


def test_best_per_column_respects_direction(sweep):
    t = build_table(sweep, rows=["loss", "sampler"], metric="AP,oLRP")
    assert [c.metric for c in t.columns] == ["AP", "oLRP"] and t.col_axes == []
    assert t.best_rows(0) == {("rs", "none")}   # highest AP
    assert t.best_rows(1) == {("rs", "none")}   # lowest oLRP (= 1 - AP - 0.3)
    assert t.cell(("rs", "none"), 1).mean == pytest.approx(29.0)


def test_explicit_cols_and_multi_metrics(sweep):
    t = build_table(sweep, rows=["loss"], cols=["sampler"], metric=["AP", "AP50"])
    assert [(c.key, c.metric) for c in t.columns] == [
        (("none",), "AP"), (("none",), "AP50"), (("random",), "AP"), (("random",), "AP50")]
    assert t.column_label(1) == "none · AP50"
    assert t.cell(("rs",), 1).mean == pytest.approx(61.0)


def test_metric_all_and_defaults_with_several_metrics(sweep):
    t = build_table(sweep, metric="all")
    assert t.metrics == ["AP", "AP50", "AP75", "oLRP"]        # detection metrics, not timings
    assert t.row_axes == ["loss", "sampler"] and t.col_axes == []


def test_dotted_cols_spell_out_the_group(sweep):
    t = build_table(sweep, rows=["loss"], cols=["sampler.rpn", "sampler.rcnn"])
    assert [c.key for c in t.columns] == [("none", "none"), ("random", "random")]
    assert not any("averaged over" in n for n in t.notes)     # sampler is determined by the columns


def test_leaving_an_axis_out_says_it_was_averaged(sweep):
    t = build_table(sweep, rows=["loss"], cols=[])
    assert t.cell(("rs",), 0).n == 4
    assert any(n.startswith("averaged over sampler (none, random)") for n in t.notes)


def test_filters(sweep):
    t = build_table(sweep, filters=["loss=rs"])
    assert t.row_axes == ["sampler"] and t.n_runs == 4
    t = build_table(sweep, filters=["seed!=1", "sampler=none,random"])
    assert t.n_runs == 4 and all(c.n <= 1 for c in t.cells.values())
    with pytest.raises(ConfigError, match="no run matches"):
        build_table(sweep, filters=["loss=focal"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        build_table(sweep, filters=["loss"])


def test_raw_fractions_and_other_metric_sources(tmp_path):
    hist = [{"iteration": 10, "ratio/rpn_task": 6000.0}, {"iteration": 20, "ratio/rpn_task": 7000.0}]
    make_run(tmp_path / "a", loss="rs", ap=0.396, segm=0.364, history=hist)
    make_run(tmp_path / "b", loss="ce", ap=0.376)
    runs = find_runs(tmp_path)
    assert build_table(runs, raw=True).cell_text(("rs",), 0) == "0.396"
    t = build_table(runs, metric="segm/AP,train_seconds,history/ratio/rpn_task,ap50")
    assert t.cell_text(("rs",), 0) == "36.4"
    assert t.cell_text(("ce",), 0) == "n/a"                    # box-only run has no mask AP
    assert t.cell_text(("rs",), 1) == "100"                    # seconds are not scaled
    assert t.cell_text(("rs",), 2) == "6500"                   # mean over history rows
    assert t.cell_text(("rs",), 3) == "59.6"                   # case-insensitive lookup
    assert t.column_label(0) == "mask AP"


def test_errors_name_the_problem(sweep):
    with pytest.raises(ConfigError, match="no run has a metric called 'APx'.*AP50"):
        build_table(sweep, metric="APx")
    with pytest.raises(ConfigError, match="both a row and a column"):
        build_table(sweep, rows=["loss"], cols=["loss"])
    with pytest.raises(ConfigError, match="no run has a setting called 'lss'"):
        build_table(sweep, rows=["lss"])


def test_nothing_varies_lists_runs(tmp_path):
    make_run(tmp_path / "a", overrides=[])
    make_run(tmp_path / "b", overrides=[])
    t = build_table(find_runs(tmp_path))
    assert t.row_axes == ["run"] and t.row_keys == [("a",), ("b",)]
