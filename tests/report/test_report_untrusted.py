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
