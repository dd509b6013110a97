"""Records from someone else's folder are untrusted input to `rsdet report`: control characters never
reach the terminal or add lines to Markdown/LaTeX, interpolations are never resolved, and planted
symlinks are replaced instead of written through."""

import unicodedata

from hypothesis import given, strategies as st

from report_fakes import make_run
from rsdet.records import RunRecord
from rsdet.report.cli import main
from rsdet.report.render import _md, latex_escape, printable

_SHOWN_AS_IS = {"Cc", "Zl", "Zp"}
_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))


def _harmless(text: str) -> bool:
    return not any(unicodedata.category(ch) in _SHOWN_AS_IS or ord(ch) in _BIDI for ch in text)


@given(st.text())
def test_any_text_comes_out_on_one_line_without_control_characters(text):
    for out in (printable(text), _md(text), latex_escape(text)):
        assert _harmless(out) and len(out.splitlines()) <= 1
    assert "\\x1b" in printable("\x1b[2J") and printable("a\r\nb") == "a b"


HOSTILE = "TrainingError: boom\n\\end{tabular}\\input{/etc/passwd}\n| injected | row |\x1b]0;pwned\x07\x1b[2J\u202e"


def test_an_error_message_cannot_inject_lines_or_escape_sequences(tmp_path, capsys):
    make_run(tmp_path / "ok", loss="rs", seed=0, ap=0.4)
    bad = make_run(tmp_path / "bad", loss="ce", seed=0, ap=None)
    bad.finish("failed", error=HOSTILE)
    assert main([str(tmp_path), "--rows", "loss"]) == 0
    out = capsys.readouterr()
    assert "\x1b]0;" not in out.out + out.err and "\x1b[2J" not in out.out + out.err and "\u202e" not in out.out
    tex = (tmp_path / "report.tex").read_text()
    assert [line for line in tex.splitlines() if line.startswith("\\end{tabular}")] == ["\\end{tabular}"]
    assert not any(line.startswith("\\input") for line in tex.splitlines())
    md = (tmp_path / "report.md").read_text()
    assert "\x1b" not in md and not any(line.startswith("| injected") for line in md.splitlines())


def test_interpolations_in_a_record_are_shown_not_resolved(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RSDET_TEST_SECRET", "hunter2")
    make_run(tmp_path / "a", loss="rs", seed=0, ap=0.4, extra={"note": "${oc.env:RSDET_TEST_SECRET}"})
    make_run(tmp_path / "b", loss="rs", seed=1, ap=0.5, extra={"note": "plain"})
    assert RunRecord(tmp_path / "a", create=False).config["note"] == "${oc.env:RSDET_TEST_SECRET}"
    assert main([str(tmp_path), "--rows", "note"]) == 0
    out = capsys.readouterr().out + "".join(p.read_text() for p in tmp_path.glob("report.*"))
    assert "hunter2" not in out and "oc.env:RSDET_TEST_SECRET" in out


def test_report_outputs_replace_planted_symlinks(tmp_path, capsys):
    make_run(tmp_path / "runs" / "a", loss="rs", seed=0, ap=0.4)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for ext in ("md", "csv", "tex"):
        (tmp_path / "runs" / f"report.{ext}").symlink_to(victim)
    assert main([str(tmp_path / "runs")]) == 0
    assert victim.read_text() == "precious\n"
    for ext in ("md", "csv", "tex"):
        path = tmp_path / "runs" / f"report.{ext}"
        assert not path.is_symlink() and path.stat().st_size > 0


def _plant(path, victim):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(victim)
    return path


def _replaced(path, victim, text="precious\n"):
    assert victim.read_text() == text, f"{path} was written through its symlink"
    assert not path.is_symlink() and path.stat().st_size > 0


def test_every_report_writer_replaces_a_planted_symlink_itself(tmp_path):
    """Each writer, called directly (not only behind the command line's unlinking): the paper tables, the
    per-class files, the figures (pr_curves.png and the table figures), the threshold-sweep tables, the
    paper-mini document blocks and rsdet predict's / browse's PNGs."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import torch

    from rsdet.evaluation.sweep import write_table
    from rsdet.records import find_runs
    from rsdet.report import per_class, tuning
    from rsdet.report.paper_table import report_paper_table
    from rsdet.report.plots import _save
    from rsdet.report.pr_curves import FILE, write_pr_curves
    from rsdet.vis.draw import save_png

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    rec = RunRecord(tmp_path / "runs" / "a")
    rec.write_config({"seed": 0, "loss": {"name": "rs", "delta": 0.25}, "detector": {"name": "atss"}})
    rec.start(choices={"loss": "rs", "detector": "atss"}, overrides=["loss.delta=0.25"])
    curve = {"recall": [0.0, 0.5, 1.0], "AP": [1.0, 0.5, 0.0], "AP50": [1.0, 0.8, 0.1], "AP75": [0.9, 0.4, 0.0]}
    rec.write_metrics({"bbox": {"AP": 0.4, "pr_curve": curve,
                                "per_class": {"1": {"name": "cat", "AP": 0.4, "num_gt": 3}}}})
    rec.finish()
    runs = find_runs(tmp_path / "runs")
    out = tmp_path / "out"

    stem = out / "table_s4"
    planted = [_plant(out / f"table_s4.{k}", victim) for k in ("md", "csv", "tex")]
    report_paper_table(runs, "s4", True, stem)
    planted += [_plant(rec.dir / per_class.MARKDOWN_FILE, victim), _plant(rec.dir / per_class.CSV_FILE, victim)]
    per_class.report(runs, _quiet_console())
    planted.append(_plant(rec.dir / FILE, victim))
    assert write_pr_curves(runs)
    fig = plt.figure()
    planted.append(_plant(out / "figure.png", victim))
    _save(fig, out / "figure.png")
    planted += [_plant(out / "sweep" / f"s11.{k}", victim) for k in ("md", "csv", "tex")]
    write_table([{"threshold": 0.4, "metrics": {"AP": 0.4}, "fps": 10.0}], out / "sweep", "s11", columns=["AP"])
    planted.append(_plant(out / "doc.md", victim))
    tuning.write_block(out / "doc.md", f"{tuning.BEGIN}\nx\n{tuning.END}")
    planted.append(_plant(out / "drawn" / "x.png", victim))
    save_png(torch.zeros((3, 4, 4), dtype=torch.uint8), out / "drawn" / "x.png")
    for path in planted:
        _replaced(path, victim)
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temporary file left behind


def _quiet_console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=200)


def test_a_hostile_run_name_and_class_name_cannot_inject_lines_or_escapes_into_per_class_outputs(tmp_path):
    import csv
    import io

    from rich.console import Console

    from rsdet.report.paper_table import render

    run_dir = tmp_path / "runs" / "bad\nname\x1b[2J"
    rec = RunRecord(run_dir)
    rec.write_config({"seed": 0, "loss": {"name": "rs"}})
    rec.start(choices={"loss": "rs"}, overrides=[])
    rec.write_metrics({"bbox": {"AP": 0.4, "per_class": {"1": {"name": HOSTILE, "AP": 0.4, "num_gt": 3},
                                                         "2\x1b[31m": {"name": "ok", "AP": 0.1, "num_gt": 1}}}})
    rec.finish()
    buf = io.StringIO()
    assert main([str(tmp_path / "runs"), "--per-class"]) == 0
    from rsdet.records import find_runs
    from rsdet.report import per_class

    per_class.report(find_runs(tmp_path / "runs"), Console(file=buf, width=300, force_terminal=True))
    shown = buf.getvalue()
    assert "\x1b]0;" not in shown and "\x1b[2J" not in shown and "\x1b[31m" not in shown and "\u202e" not in shown
    md = (run_dir / "per_class.md").read_text()
    assert "\x1b" not in md and "\u202e" not in md
    assert not any(line.startswith(("| injected", "\\end", "name")) for line in md.splitlines())
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table_lines) == 4  # header, rule, two classes: one line each
    rows = list(csv.reader(io.StringIO((run_dir / "per_class.csv").read_text())))
    assert len(rows) == 3 and all("\n" not in c and "\x1b" not in c for row in rows for c in row)
    # the paper tables' files put every cell on its line too
    header, rows = ["row", "AP (ours)"], [[HOSTILE, "40.0"]]
    for kind in ("md", "csv", "tex"):
        text = render(header, rows, kind)
        assert "\x1b" not in text and "\u202e" not in text and len(text.splitlines()) == (7 if kind == "tex" else
                                                                                          3 if kind == "md" else 2)


def test_paper_mini_escapes_failure_messages_and_writes_by_replacing(tmp_path):
    from rsdet.report import mini_doc

    assert mini_doc._esc("a\nb|c\x1b") == "a b\\|c\\x1b"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    doc = _plant(tmp_path / "docs" / "paper-mini.md", victim)
    mini_doc.write_document(tmp_path / "none", doc, "cmd", failures=[HOSTILE], mode="smoke")
    _replaced(doc, victim)
    text = doc.read_text()
    assert "\x1b" not in text and not any(line.startswith(("| injected", "\\input")) for line in text.splitlines())
