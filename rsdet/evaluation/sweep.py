"""AP against the test-time score threshold, and the tables that show it.

Supplementary Table S11 of the Rank & Sort Loss paper lists, per score threshold (10^-4 ...
0.80), AP, AP_r/AP_c/AP_f (LVIS) and inference fps: RS-trained models keep their AP up to a high
threshold, which then makes NMS (and so inference) faster. :func:`threshold_sweep` produces the
rows from one set of detections; fps is measured by whoever ran inference (the engine) and
passed in. :func:`write_table` writes Markdown, CSV and LaTeX; :func:`render_table` builds the
same layout as a ``rich`` table for the terminal.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from rich.table import Table

from rsdet.evaluation.evaluator import (check_options, evaluate_prepared, fast_outcome, finish,
                                       resolve_backend)
from rsdet.evaluation.io import load_detections, load_ground_truth, validate_detections
from rsdet.records import atomic_write_text

# Display names: (markdown / terminal, LaTeX).
_LABELS = {
    "threshold": ("Score threshold", "Score threshold"),
    "AP": ("AP", r"$\mathrm{AP}$"),
    "AP50": ("AP50", r"$\mathrm{AP}_{50}$"),
    "AP75": ("AP75", r"$\mathrm{AP}_{75}$"),
    "APs": ("AP_S", r"$\mathrm{AP}_{S}$"),
    "APm": ("AP_M", r"$\mathrm{AP}_{M}$"),
    "APl": ("AP_L", r"$\mathrm{AP}_{L}$"),
    "APr": ("AP_r", r"$\mathrm{AP}_{r}$"),
    "APc": ("AP_c", r"$\mathrm{AP}_{c}$"),
    "APf": ("AP_f", r"$\mathrm{AP}_{f}$"),
    "APbox": ("AP_box", r"$\mathrm{AP}_{box}$"),
    "oLRP": ("oLRP", r"$\mathrm{oLRP}$"),
    "oLRP_Loc": ("oLRP_Loc", r"$\mathrm{oLRP}_{\mathrm{Loc}}$"),
    "oLRP_FP": ("oLRP_FP", r"$\mathrm{oLRP}_{\mathrm{FP}}$"),
    "oLRP_FN": ("oLRP_FN", r"$\mathrm{oLRP}_{\mathrm{FN}}$"),
    "fps": ("fps", "fps"),
}


def default_columns(protocol: str, with_fps: bool = True) -> list[str]:
    """Table S11's columns: AP, AP_r/c/f for LVIS or AP50/75 for COCO, then fps."""
    cols = ["AP", "APr", "APc", "APf"] if protocol == "lvis" else ["AP", "AP50", "AP75"]
    return cols + (["fps"] if with_fps else [])


def _fps_for(fps: Mapping[float, float] | None, thr: float) -> float | None:
    if not fps:
        return None
    for key, value in fps.items():
        if math.isclose(float(key), thr, rel_tol=1e-9, abs_tol=1e-15):
            return float(value)
    return None


def threshold_sweep(gt: str | Path | dict, detections: str | Path | list,
                    thresholds: Iterable[float], iou_type: str = "bbox", protocol: str = "coco",
                    fps: Mapping[float, float] | None = None, max_dets: int | None = None,
                    verbose: bool = False, backend: str = "auto") -> list[dict[str, Any]]:
    """Evaluate the same detections at several test score thresholds.

    At threshold ``t`` only detections with ``score > t`` are kept (the strict comparison of
    mmdetection's and detectron2's test ``score_thr``), before the per-image ``max_dets`` cut,
    as in a detector. A results file holds nothing below the threshold it was produced with,
    so rows below it repeat that row; for the true curve produce results at a low threshold
    (the engine's ``evaluate_run`` runs inference once at the lowest threshold and measures fps
    per threshold).

    The fast backend matches the detections once: a threshold keeps a prefix of every ranked
    (image, category) list and of every category's ranking, so each row only re-accumulates
    (docs/evaluation.md, "The fast path"); the official backend evaluates each row afresh.

    Args:
        thresholds: score thresholds, evaluated in the given order.
        fps: optional ``{threshold: images_per_second}`` measured during inference.
        backend: ``"auto"``/``"fast"`` or ``"official"`` (as :func:`rsdet.evaluation.evaluate`).
        Others: as :func:`rsdet.evaluation.evaluate`.

    Returns:
        One row per threshold: ``{"threshold": t, "metrics": evaluate(...) dict, "fps": f or None}``.
    """
    max_dets = check_options(iou_type, protocol, max_dets)
    dataset, _ = load_ground_truth(gt, protocol, check_masks=iou_type == "segm")
    records, source = load_detections(detections)
    dets = validate_detections(records, dataset, source, iou_type)
    thresholds = [float(t) for t in thresholds]
    rows = []
    if resolve_backend(backend) == "fast":
        from rsdet.evaluation.fast import FastEvaluation  # noqa: PLC0415

        if thresholds:  # nothing at or below the lowest threshold takes part in any row
            low = min(thresholds)
            dets = [d for d in dets if d["score"] > low]
        fast = FastEvaluation(dataset, dets, iou_type, protocol, max_dets)
        for thr in thresholds:
            metrics = finish(fast_outcome(fast.summary(thr), protocol), dataset, protocol, False)
            rows.append({"threshold": thr, "metrics": metrics, "fps": _fps_for(fps, thr)})
        return rows
    for thr in thresholds:
        kept = [d for d in dets if d["score"] > thr]
        metrics = evaluate_prepared(dataset, kept, iou_type, protocol, max_dets, verbose=verbose,
                                    backend="official")
        rows.append({"threshold": thr, "metrics": metrics, "fps": _fps_for(fps, thr)})
    return rows


def _threshold_text(thr: float, latex: bool = False) -> str:
    """10^-4 style for small powers of ten, as in Table S11; two decimals (or as many as needed)."""
    if thr > 0:
        exp = math.log10(thr)
        if exp <= -2 and abs(exp - round(exp)) < 1e-9:
            return f"$10^{{{round(exp)}}}$" if latex else f"1e{round(exp)}"
    return f"{thr:.2f}" if abs(round(thr, 2) - thr) < 1e-12 else f"{thr:g}"


def _value(row: Mapping[str, Any], col: str) -> float | None:
    if col == "threshold":
        return row["threshold"]
    if col == "fps":
        return row.get("fps")
    value = row["metrics"].get(col)
    return None if value is None or value < 0 else float(value)  # -1 marks undefined


def _cell(row: Mapping[str, Any], col: str, latex: bool = False) -> str:
    if col == "threshold":
        return _threshold_text(row["threshold"], latex)
    value = _value(row, col)
    if value is None:
        return "--" if latex else "–"
    return f"{value:.1f}" if col == "fps" else f"{100 * value:.1f}"  # percent, as in the paper


def columns_for(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """:func:`default_columns` for sweep rows: LVIS columns if the rows carry APr, fps if measured."""
    lvis = any("APr" in r["metrics"] for r in rows)
    return default_columns("lvis" if lvis else "coco",
                           with_fps=any(r.get("fps") is not None for r in rows))


def write_table(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, stem: str,
                columns: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``{stem}.md``, ``{stem}.csv`` and ``{stem}.tex`` under ``out_dir``; return the paths.

    Rows are thresholds (first column), columns the given metric keys and ``"fps"`` (default:
    :func:`columns_for`, i.e. Table S11's layout). Markdown and LaTeX (booktabs) show metrics in
    percent with one decimal, like the paper; the CSV keeps the raw fractions (−1 = undefined,
    empty fps = not measured) for further processing.
    """
    columns = list(columns) if columns is not None else columns_for(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = ["threshold", *columns]
    paths = {fmt: out_dir / f"{stem}.{fmt}" for fmt in ("md", "csv", "tex")}

    md = ["| " + " | ".join(_LABELS.get(c, (c, c))[0] for c in cols) + " |",
          "|" + "|".join(":--" if c == "threshold" else "--:" for c in cols) + "|"]
    md += ["| " + " | ".join(_cell(r, c) for c in cols) + " |" for r in rows]
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(cols)
    for r in rows:
        raw = [r["threshold"] if c == "threshold" else
               r.get("fps") if c == "fps" else r["metrics"].get(c) for c in cols]
        writer.writerow(["" if v is None else repr(float(v)) for v in raw])

    tex = [r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule",
           " & ".join(_LABELS.get(c, (c, c))[1] for c in cols) + r" \\", r"\midrule"]
    tex += [" & ".join(_cell(r, c, latex=True) for c in cols) + r" \\" for r in rows]
    tex += [r"\bottomrule", r"\end{tabular}"]
    # each file replaces its predecessor (a planted symlink in a shared run folder is not followed)
    for fmt, text in (("md", "\n".join(md) + "\n"), ("csv", buf.getvalue()), ("tex", "\n".join(tex) + "\n")):
        atomic_write_text(paths[fmt], text)
    return paths


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                 title: str | None = None) -> Table:
    """The sweep as a ``rich`` table (print it with ``rich.console.Console().print``)."""
    columns = list(columns) if columns is not None else columns_for(rows)
    table = Table(title=title)
    for c in ["threshold", *columns]:
        table.add_column(_LABELS.get(c, (c, c))[0], justify="left" if c == "threshold" else "right")
    for r in rows:
        table.add_row(*(_cell(r, c) for c in ["threshold", *columns]))
    return table


def metrics_table(metrics: Mapping[str, Any], keys: Sequence[str], title: str | None = None,
                  horizontal: bool = False) -> Table:
    """One evaluation's metrics (percent, one decimal; – where undefined) as a ``rich`` table:
    one row per metric, or with ``horizontal`` one column per metric (the end-of-training summary)."""
    table = Table(title=title, caption="oLRP*: lower is better" if any(k.startswith("oLRP") for k in keys) else None)
    cells = ["–" if not _is_number(metrics.get(k)) or metrics[k] < 0 else f"{100 * metrics[k]:.1f}" for k in keys]
    if horizontal:
        for k in keys:
            table.add_column(k, justify="right")
        table.add_row(*cells)
        return table
    table.add_column("Metric")
    table.add_column("Value (%)", justify="right")
    for k, cell in zip(keys, cells):
        table.add_row(k, cell)
    return table


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
