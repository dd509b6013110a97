"""scripts/demo_figures.py: README's demo block keeps one dated row per command, `--only` replaces just
its rows, and a block of the older layout (one date for all rows) is read without losing a row."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import demo_figures as df  # noqa: E402

LEGACY = """
Measured by `python scripts/demo_figures.py --detectors` on 2026-11-28, 2-core x86_64 CPU (AMD EPYC), torch threads default, one run at a time:

| command | wall time (train + eval) | train | eval | iterations | AP | AP50 | AP75 | APs | APm | APl | oLRP | mask AP |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| `rsdet train` | 2.5 min | 143 s | 4 s | 900 | 52.0 | 70.5 | 60.8 | 45.2 | 57.2 | 65.3 | 61.5 | – |
| `rsdet train detector=atss` | 2.8 min | 160 s | 4 s | 1300 | 27.8 | 40.3 | 31.3 | 21.7 | 34.8 | 40.6 | 78.5 | – |
| `rsdet train detector=yolact` | 6.5 min | 380 s | 8 s | 2400 | 28.3 | 44.6 | 30.5 | 25.0 | 28.5 | 45.6 | 79.9 | 25.4 |

(dataset generation before the timed runs: 2 s, cached afterwards; run records: `outputs/runs/2026-11-28/a`, `outputs/runs/2026-11-28/b`, `outputs/runs/2026-11-28/c`)
"""


def _metrics(ap, segm=None):
    m = {"train_seconds": 201.4, "eval_seconds": 4.2, "iterations": 1300,
         "bbox": {k: ap for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "oLRP")}}
    if segm is not None:
        m["segm"] = {"AP": segm}
    return m


def test_legacy_block_rows_get_its_date_and_records_in_row_order():
    rows, records = df.parse_block(LEGACY)
    assert list(rows) == ["rsdet train", "rsdet train detector=atss", "rsdet train detector=yolact"]
    assert all(r.endswith("| 2026-11-28 |") for r in rows.values())
    assert records == {"rsdet train": "outputs/runs/2026-11-28/a", "rsdet train detector=atss": "outputs/runs/2026-11-28/b",
                       "rsdet train detector=yolact": "outputs/runs/2026-11-28/c"}


def test_only_replaces_its_rows_and_keeps_the_others_with_their_dates():
    cmd = "rsdet train detector=atss"
    new = {cmd: df.table_row(cmd, 210.0, _metrics(0.442), "2026-12-03"),
           "rsdet train detector=solov2": df.table_row("rsdet train detector=solov2", 400.0, _metrics(0.3, 0.283),
                                                       "2026-12-03")}
    block = df.merge_block(LEGACY, new, {cmd: "outputs/runs/new", "rsdet train detector=solov2": "outputs/runs/s"},
                           "2-core x86_64 CPU (AMD EPYC), torch threads default", 1.0, 0.0)
    lines = [ln for ln in block.splitlines() if ln.startswith("| `")]
    assert [df._row_command(ln) for ln in lines] == [
        "rsdet train", cmd, "rsdet train detector=yolact", "rsdet train detector=solov2"]  # table order
    assert lines[0] == ("| `rsdet train` | 2.5 min | 143 s | 4 s | 900 | 52.0 | 70.5 | 60.8 | 45.2 | 57.2 | 65.3 "
                        "| 61.5 | – | 2026-11-28 |")
    assert lines[1] == ("| `rsdet train detector=atss` | 3.5 min | 201 s | 4 s | 1300 | 44.2 | 44.2 | 44.2 | 44.2 "
                        "| 44.2 | 44.2 | 44.2 | – | 2026-12-03 |")
    assert lines[3].endswith("| 28.3 | 2026-12-03 |")
    assert "`rsdet train detector=atss` in `outputs/runs/new`" in block
    assert "`rsdet train` in `outputs/runs/2026-11-28/a`" in block
    assert "outputs/runs/2026-11-28/b" not in block  # the replaced row's old record is gone
    # the new layout reads back to the same rows and records
    rows, records = df.parse_block(block)
    assert list(rows.values()) == lines and records["rsdet train detector=solov2"] == "outputs/runs/s"


def test_only_rejects_unknown_rows():
    with pytest.raises(SystemExit, match="unknown row.*fcos.*choose from default, atss"):
        df._selected("atss,fcos", False)
    assert df._selected(None, True) == list(df.DETECTORS)
    assert df._selected(None, False) == ["default"]
    assert df._selected(" paa ,atss", False) == ["paa", "atss"]


def test_update_readme_rewrites_only_the_block(tmp_path, monkeypatch):
    (tmp_path / "README.md").write_text(f"# top\n\n{df.BEGIN}{LEGACY}{df.END}\n\ntail\n")
    monkeypatch.setattr(df, "ROOT", tmp_path)
    monkeypatch.setattr(df.subprocess, "run", lambda *a, **k: None)
    measured = []

    def fake_measure(overrides, env, date):
        measured.append(overrides)
        cmd = df.command(overrides)
        return df.table_row(cmd, 200.0, _metrics(0.5), date), tmp_path / "outputs" / "runs" / "d" / "r"

    monkeypatch.setattr(df, "_measure", fake_measure)
    assert df.main(["--only", "paa", "--update-readme"]) == 0
    assert measured == [["detector=paa"]]
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("# top\n\n" + df.BEGIN + "\n") and text.endswith(df.END + "\n\ntail\n")
    assert "`rsdet train detector=paa` | 3.3 min" in text and "| 27.8 |" in text
    assert "`rsdet train detector=paa` in `outputs/runs/d/r`" in text
