"""Fuzzed run records through `rsdet report` and the record readers: a truncated or garbled run.json,
metrics.json, history.jsonl or config.yaml never raises, never yields a number the file does not hold,
and an unreadable run is named (file and folder) in the warnings."""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from report_fakes import make_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corruptions import corruption, fuzz_settings, write  # noqa: E402

from rsdet.records import UNREADABLE, find_runs  # noqa: E402
from rsdet.report.cli import main  # noqa: E402
from rsdet.report.metrics import metric_value  # noqa: E402

FILES = ("run.json", "metrics.json", "history.jsonl", "config.yaml")
HISTORY = [{"iteration": 10, "loss/total": 2.0, "lr": 0.01}, {"iteration": 20, "loss/total": 1.0, "lr": 0.01}]
METRICS = ("AP", "AP50", "oLRP", "train_seconds", "iterations", "history/loss/total", "history/lr")


def _squash(text: str) -> str:
    return "".join(text.split())  # rich wraps long lines at spaces


def _as_metric(value):
    """What a reader may report for a value found in a file: finite numbers (not bools) only."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


@st.composite
def corrupted_file(draw, run_dir: Path):
    name = draw(st.sampled_from(FILES))
    path = run_dir / name
    original = path.read_text(encoding="utf-8")
    if name == "config.yaml":
        at = draw(st.integers(0, len(original)))
        junk = draw(st.sampled_from(["", ":", "\t", "- x", "{", "!!python/object:os.system x", "\udcff", "[1, 2"]))
        return name, original[:at] + junk + (original[at:] if draw(st.booleans()) else ""), ()
    if name == "history.jsonl":
        rows = [json.loads(line) for line in original.splitlines()]
        k = draw(st.integers(0, len(rows) - 1))
        kind, text, where = draw(corruption(rows[k]))
        lines = [json.dumps(r) for r in rows]
        lines[k] = text.replace("\n", " ")
        return name, "\n".join(lines) + ("\n" if draw(st.booleans()) else ""), where
    kind, text, where = draw(corruption(json.loads(original)))
    return name, text, where


@fuzz_settings(150)
@given(data=st.data())
def test_fuzzed_run_record(tmp_path, capsys, data):
    root = Path(tempfile.mkdtemp(dir=tmp_path))  # same path length every time: the files embed it
    make_run(root / "good", loss="rs", ap=0.4)
    make_run(root / "victim", loss="ce", ap=0.3, history=HISTORY)
    name, text, _ = data.draw(corrupted_file(root / "victim"))
    write(root / "victim" / name, text)

    runs = {r.label: r for r in find_runs(root)}
    assert set(runs) == {"good", "victim"}
    good, victim = runs["good"], runs["victim"]
    assert good.status == "completed" and metric_value(good, "AP") == 0.4
    status, reason = victim.status, victim.reason
    assert isinstance(reason, (str, type(None)))
    for metric in METRICS:
        value = metric_value(victim, metric)
        assert value is None or (isinstance(value, float) and math.isfinite(value)), (metric, value)
    ap = metric_value(victim, "AP")
    if name == "metrics.json":  # the value the file holds, or nothing: never a made-up number
        try:
            doc = json.loads(text)
            held = _as_metric(doc["bbox"]["AP"])
        except Exception:
            held = None
        assert ap == held, (ap, held, text)
    else:
        assert ap == 0.3
    if name == "history.jsonl":  # the mean of the rows that still hold a number, skipping broken lines
        held = []
        for line in text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and _as_metric(row.get("loss/total")) is not None:
                held.append(_as_metric(row["loss/total"]))
        loss = metric_value(victim, "history/loss/total")
        assert loss == (sum(held) / len(held) if held else None), (loss, held)

    capsys.readouterr()
    rc = main([str(root), "--no-write", "--metric", ",".join(METRICS)])
    out, err = capsys.readouterr()
    assert rc in (0, 2), (rc, out, err)
    if status == UNREADABLE:
        assert _squash(str(root / "victim")) in _squash(err), err
        assert rc == 0 and "unreadable" in out, out  # listed, not fatal
