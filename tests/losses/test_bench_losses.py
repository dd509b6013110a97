"""scripts/bench_losses.py (make bench): the grid with both thread settings, in one process, and
the loop check (float32 gradients within 1e-6 of the per-positive loop)."""

import json
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        yield runpy.run_path(str(REPO / "scripts" / "bench_losses.py"), run_name="bench_losses")
    finally:
        sys.path.remove(str(REPO / "scripts"))


def test_grid_with_both_thread_settings(bench, tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    assert bench["main"](["--sizes", "3000:30,5000:200", "--threads", "1,3", "--repeats", "1",
                          "--loop-budget", "2", "--no-memory", "--inputs", "wide",
                          "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "threads = 1\n" in text and "threads = 3\n" in text
    assert "threads=3 rs: worst rs/focal" in text and "1.0x target" in text
    rows = json.loads(out_json.read_text())
    assert [(r["N"], r["P"], r["threads"]) for r in rows] == [
        (3000, 30, 1), (3000, 30, 3), (5000, 200, 1), (5000, 200, 3)]
    for r in rows:
        assert all(r[f"{k}/focal"] > 0 for k in ("rs", "ap", "alrp"))
        if r["threads"] == 3:         # the loop runs once per point, with the last setting
            for k in ("rs", "ap", "alrp"):
                assert r[f"{k}_loop_max_grad_diff"] <= 1e-6


def test_thread_settings_and_timer_checks(bench):
    parse, default = bench["parse_threads"], bench["DEFAULT_THREADS"]
    assert parse("1,default,1") == ([1] if default == 1 else [1, default])
    assert parse("4, 2") == [4, 2]
    with pytest.raises(SystemExit):
        bench["main"](["--timer", "thread", "--threads", "1,2", "--sizes", "100:2"])
