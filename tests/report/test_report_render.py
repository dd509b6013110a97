"""Markdown, CSV and LaTeX outputs are well-formed and carry the table's numbers."""

import csv
import io
import re

import pytest
from report_fakes import make_run, make_sweep

from rsdet.records import find_runs
from rsdet.report.render import latex_escape, to_csv, to_latex, to_markdown, to_rich, write_outputs
from rsdet.report.table import build_table


@pytest.fixture
def table(tmp_path):
    return build_table(find_runs(make_sweep(tmp_path / "sweep")), rows=["loss", "sampler"], metric="AP,oLRP")


def _md_rows(text):
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]


def test_markdown(table):
    md = to_markdown(table, title="Table S8")
    rows = _md_rows(md)
    assert rows[0] == ["loss", "sampler", "AP", "oLRP"]
    assert all(len(r) == 4 for r in rows)
    assert rows[2] == ["rs", "none", "**41.0 ± 1.4 (n=2)**", "**29.0 ± 1.4 (n=2)**"]
    assert rows[3][:2] == ["", "random"]                      # repeated row value blanked
    assert rows[4][2].startswith("30.0; failed [")
    assert "### Table S8" in md and "1. 5: failed at iteration 12" in md
    assert re.search(r"^\d\. 7: .*metrics\.json", md, re.M)


def test_csv_parses_with_std_and_n(table):
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert list(rows[0]) == ["loss", "sampler", "AP", "AP std", "AP n", "oLRP", "oLRP std", "oLRP n"]
    first = rows[0]
    assert (first["loss"], first["sampler"]) == ("rs", "none")
    assert float(first["AP"]) == pytest.approx(41.0) and float(first["AP std"]) == pytest.approx(1.41421, 1e-4)
    assert first["AP n"] == "2"
    ce_random = rows[3]
    assert (ce_random["loss"], ce_random["sampler"]) == ("ce", "random") and ce_random["AP n"] == "1"
    assert len(rows) == 4


def test_csv_status_cells(tmp_path):
    make_run(tmp_path / "0", loss="rs")
    make_run(tmp_path / "1", loss="ce", ap=None)
    rows = list(csv.reader(io.StringIO(to_csv(build_table(find_runs(tmp_path))))))
    assert rows == [["loss", "AP"], ["rs", "40"], ["ce", "failed"]]


def _unescaped_amps(line):
    return len(re.findall(r"(?<!\\)&", line))


def test_latex_booktabs(table):
    tex = to_latex(table, title="Table S8")
    body = tex[tex.index(r"\begin{tabular}"):tex.index(r"\end{tabular}")]
    assert r"\begin{tabular}{llrr}" in tex
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1
    data = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert all(_unescaped_amps(line) == 3 for line in data)   # 4 columns on every line
    assert r"\textbf{41.0 $\pm$ 1.4 (n=2)}" in tex and tex.count(r"\textbf") == 2
    assert re.search(r"30\.0; failed\\textsuperscript\{\d\}", tex)
    assert tex.count(r"\begin{") == tex.count(r"\end{")


def test_latex_grouped_column_header(tmp_path):
    runs = find_runs(make_sweep(tmp_path))
    tex = to_latex(build_table(runs, rows=["loss"], cols=["sampler"], metric="AP,train_seconds"))
    assert r"\multicolumn{4}{c}{sampler}" in tex
    assert r"\multicolumn{2}{c}{none} & \multicolumn{2}{c}{random}" in tex
    assert r"loss & AP & train\_seconds & AP & train\_seconds \\" in tex
    assert r"\cmidrule(lr){2-3} \cmidrule(lr){4-5}" in tex


def test_latex_escape():
    assert latex_escape("a_b & 50% #1 ~ {x}") == r"a\_b \& 50\% \#1 \textasciitilde{} \{x\}"


def test_rich_and_write_outputs(table, tmp_path):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    console.print(to_rich(table))
    out = console.file.getvalue()
    assert "41.0 ± 1.4 (n=2)" in out and "failed [" in out
    paths = write_outputs(table, tmp_path / "out" / "s8")
    assert sorted(p.name for p in paths.values()) == ["s8.csv", "s8.md", "s8.tex"]
    assert all(p.read_text() for p in paths.values())
