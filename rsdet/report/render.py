"""Render a :class:`ReportTable` for the console (rich), Markdown, CSV and LaTeX (booktabs).

Console, Markdown and LaTeX repeat a row-axis value only when it changes, as the paper's tables do,
and mark the best value of each column in bold (max for AP-like, min for oLRP-like metrics).
CSV is for machines: every row carries all its axis values, a cell holds the mean in the table's
units (or the run status), and tables with replicates get ``std`` and ``n`` columns.

Every text that comes from a record (setting values, run names, error messages) is untrusted: it
goes through ``printable`` first, so a newline cannot add lines to a LaTeX or Markdown file and an
ESC byte cannot reach the terminal (docs/records.md, "Readers"). Files are written by replacing
them (``atomic_write_text``), so a symlink planted where an output goes is replaced, not followed.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from rsdet.records import atomic_write_text
from rsdet.report.table import ReportTable, _text
from rsdet.safe_text import printable  # noqa: F401 - also re-exported (rsdet.report.render.printable)


def _row_labels(table: ReportTable) -> list[list[str]]:
    """Row-axis values per row, blanked where they repeat the row above (grouped rows)."""
    out, prev = [], None
    for rk in table.row_keys:
        labels = []
        for level, value in enumerate(rk):
            same = prev is not None and prev[: level + 1] == rk[: level + 1]
            labels.append("" if same else printable(_text(value)))
        out.append(labels)
        prev = rk
    return out


def _row_headers(table: ReportTable) -> list[str]:
    return [printable(a) for a in table.row_axes]


# --------------------------------------------------------------------------------------------- rich
def to_rich(table: ReportTable, title: str | None = None):
    """A ``rich.table.Table`` (print it with a rich Console)."""
    from rich.table import Table
    from rich.text import Text

    rt = Table(title=Text(printable(title)) if title else None, header_style="bold", title_justify="left")
    for name in _row_headers(table):
        rt.add_column(name, style="cyan", no_wrap=True)
    for j in range(len(table.columns)):
        rt.add_column(Text("\n".join(printable(x) for x in table.column_label(j, sep="\n").split("\n"))),
                      justify="right")
    best = [table.best_rows(j) for j in range(len(table.columns))]
    for rk, labels in zip(table.row_keys, _row_labels(table)):
        cells = []
        for j in range(len(table.columns)):
            text = printable(table.cell_text(rk, j))
            cell = table.cell(rk, j)
            style = "bold green" if rk in best[j] else ("yellow" if cell.pending and not cell.values else "")
            cells.append(Text(text, style=style))
        rt.add_row(*[Text(x) for x in labels], *cells)
    return rt


def print_table(table: ReportTable, console=None, title: str | None = None) -> None:
    from rich.console import Console

    console = console or Console()
    console.print(to_rich(table, title))
    console.print(f"[dim]{_escape_rich(table.caption())}[/dim]")
    for note in table.notes:
        console.print(f"[dim]note: {_escape_rich(note)}[/dim]")
    for i, text in enumerate(table.footnotes, 1):
        console.print(f"[yellow][{i}][/yellow] {_escape_rich(text)}")


def _escape_rich(text: str) -> str:
    """Untrusted text for a rich markup string: control characters made visible, ``[`` escaped."""
    from rich.markup import escape

    return escape(printable(text))


# --------------------------------------------------------------------------------------------- Markdown
def _md(text: str) -> str:
    return printable(text).replace("|", "\\|")


def to_markdown(table: ReportTable, title: str | None = None) -> str:
    lines = []
    if title:
        lines += [f"### {_md(title)}", ""]
    lines += [f"_{_md(table.caption())}_", ""]
    headers = [_md(h) for h in _row_headers(table)] + [_md(table.column_label(j))
                                                        for j in range(len(table.columns))]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join([":---"] * len(table.row_axes) + ["---:"] * len(table.columns)) + "|")
    best = [table.best_rows(j) for j in range(len(table.columns))]
    for rk, labels in zip(table.row_keys, _row_labels(table)):
        cells = []
        for j in range(len(table.columns)):
            text = _md(table.cell_text(rk, j))
            cells.append(f"**{text}**" if rk in best[j] and text else text)
        lines.append("| " + " | ".join([_md(x) for x in labels] + cells) + " |")
    if table.notes or table.footnotes:
        lines.append("")
    lines += [f"- {_md(n)}" for n in table.notes]
    lines += [f"{i}. {_md(t)}" for i, t in enumerate(table.footnotes, 1)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- CSV
def to_csv(table: ReportTable) -> str:
    replicated = any(c.n > 1 for c in table.cells.values())
    header = list(table.row_axes)
    for j in range(len(table.columns)):
        label = table.column_label(j, sep=" ")
        label = printable(label)
        header += [label] + ([f"{label} std", f"{label} n"] if replicated else [])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([printable(h) for h in header])
    for rk in table.row_keys:
        row = [printable(_text(v)) for v in rk]
        for j in range(len(table.columns)):
            cell = table.cell(rk, j)
            if cell.values:
                value = f"{cell.mean:.6g}"
            elif cell.pending:
                value = printable("; ".join(sorted({s for s, _ in cell.pending})))
            else:
                value = "n/a" if cell.without_metric else ""
            row.append(value)
            if replicated:
                row += [f"{cell.std:.6g}" if cell.std is not None else "", str(cell.n)]
        writer.writerow(row)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- LaTeX
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "±": r"$\pm$", "—": "--", "·": r"$\cdot$", "×": r"$\times$", "δ": r"$\delta$", "λ": r"$\lambda$",
          "Δ": r"$\Delta$"}


def latex_escape(text: str) -> str:
    """``text`` safe inside a LaTeX table cell: special characters escaped, on one line (``printable``)."""
    return "".join(_LATEX.get(ch, ch) for ch in printable(text))


def _latex_cell(table: ReportTable, rk: tuple, j: int, bold: bool) -> str:
    cell = table.cell(rk, j)
    text = latex_escape(table.cell_text(rk, j))
    # footnote markers "[3]" become superscripts, as in a paper
    text = re.sub(r" \[([0-9,]+)\]", r"\\textsuperscript{\1}", text)
    if bold and cell.values:
        return rf"\textbf{{{text}}}"
    return text


def to_latex(table: ReportTable, title: str | None = None) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); notes follow as LaTeX comments."""
    n_rows, n_cols = len(table.row_axes), len(table.columns)
    lines = [f"% {latex_escape(title)}" if title else "% rsdet report",
             f"% {printable(table.caption())}",
             r"\begin{tabular}{" + "l" * n_rows + "r" * n_cols + "}", r"\toprule"]
    levels = [[_text(c.key[i]) for c in table.columns] for i in range(len(table.col_axes))]
    if table.multi_metric or not table.col_axes:
        levels.append([_display(c.metric) for c in table.columns])
    levels = [[latex_escape(x) for x in lvl] for lvl in levels]
    if table.col_axes:  # header line naming the column axes, like "Sampler: RPN / R-CNN"
        lines.append(" & " * n_rows + rf"\multicolumn{{{n_cols}}}{{c}}{{{latex_escape(' / '.join(table.col_axes))}}} \\")
        lines.append(rf"\cmidrule(lr){{{n_rows + 1}-{n_rows + n_cols}}}")
    for depth, level in enumerate(levels):
        last = depth == len(levels) - 1
        spans = []  # merge neighbours whose labels agree on this level and all levels above
        for j, label in enumerate(level):
            key = tuple(lv[j] for lv in levels[: depth + 1])
            if spans and spans[-1][0] == key and not last:
                spans[-1][2] += 1
            else:
                spans.append([key, label, 1])
        head = [latex_escape(h) for h in _row_headers(table)] if last else [""] * n_rows
        cells = [rf"\multicolumn{{{n}}}{{c}}{{{label}}}" if n > 1 else label for _, label, n in spans]
        lines.append(" & ".join(head + cells) + r" \\")
        if not last:
            col, rules = n_rows + 1, []
            for _, _, n in spans:
                if n > 1:
                    rules.append(rf"\cmidrule(lr){{{col}-{col + n - 1}}}")
                col += n
            if rules:
                lines.append(" ".join(rules))
    lines.append(r"\midrule")
    best = [table.best_rows(j) for j in range(n_cols)]
    for rk, labels in zip(table.row_keys, _row_labels(table)):
        cells = [_latex_cell(table, rk, j, rk in best[j]) for j in range(n_cols)]
        lines.append(" & ".join([latex_escape(x) for x in labels] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% note: {printable(n)}" for n in table.notes]  # one line each: a newline would end the comment
    lines += [f"% [{i}] {printable(t)}" for i, t in enumerate(table.footnotes, 1)]
    return "\n".join(lines) + "\n"


def _display(metric: str) -> str:
    from rsdet.report.metrics import display_name

    return display_name(metric)


# --------------------------------------------------------------------------------------------- files
def write_outputs(table: ReportTable, stem: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.tex``; returns {"md": path, ...}."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext, text in (("md", to_markdown(table, title)), ("csv", to_csv(table)), ("tex", to_latex(table, title))):
        path = stem.with_name(stem.name + "." + ext)
        atomic_write_text(path, text)  # replaces a planted symlink instead of writing through it
        paths[ext] = path
    return paths
