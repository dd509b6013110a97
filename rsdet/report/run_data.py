"""Values a paper table needs that are not a plain key of metrics.json.

- ``history_epoch1/<column>``: mean of a history.jsonl column over the rows of the first epoch
  (supplementary Table S7 averages the pos:neg ratios over the iterations of the first epoch).
- the score-threshold sweep that ``rsdet evaluate RUN_DIR --score-thresholds ...`` leaves in the run
  directory (``threshold_sweep.json``; Tables S10 and S11): AP per threshold, and fps.
- ``desired_ratio/<stage>_instance``: the negatives per positive a random sampler aims at (Table S7's
  "desired" columns), from the sampler budget in config.yaml; None for a stage without a sampler.

Records written by earlier rsdet versions lack some of this (no ``epoch`` in history rows, no sweep,
no sampler budget); the functions then return None, which tables show as a missing cell.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

from rsdet.records import RunRecord

log = logging.getLogger("rsdet.records")

SWEEP_FILE = "threshold_sweep.json"
SWEEP_SEGM_FILE = "threshold_sweep_segm.json"  # a mask sweep written on its own, if a writer does so


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _iters_per_epoch(run: RunRecord) -> float | None:
    """Iterations of one epoch from run.json's max_iters and config.yaml's schedule.epochs (older
    history rows carry no ``epoch``)."""
    cfg = run.config or {}
    sched = cfg.get("schedule") if isinstance(cfg.get("schedule"), Mapping) else {}
    epochs = _number(sched.get("epochs"))
    max_iters = _number(run.info.get("max_iters")) or _number(sched.get("max_iters"))
    if not epochs or not max_iters or epochs <= 0:
        return None
    return max_iters / epochs


def first_epoch_rows(run: RunRecord) -> list[dict]:
    """The history rows logged during the first epoch: ``epoch`` equal to the smallest epoch logged
    (0 in current records), or — for rows without ``epoch`` — iteration ≤ one epoch's iterations.
    [] when neither can be told."""
    rows = run.read_history()
    with_epoch = [r for r in rows if isinstance(r.get("epoch"), int) and not isinstance(r.get("epoch"), bool)]
    if with_epoch:
        first = min(r["epoch"] for r in with_epoch)
        return [r for r in with_epoch if r["epoch"] == first]
    per_epoch = _iters_per_epoch(run)
    if per_epoch is None:
        return []
    return [r for r in rows if _number(r.get("iteration")) is not None and r["iteration"] <= per_epoch + 1e-9]


def history_mean(rows: list[dict], column: str) -> float | None:
    """Mean of ``column`` over the rows that have it as a finite number (None when none has)."""
    values = [v for v in (_number(r.get(column)) for r in rows) if v is not None]
    return sum(values) / len(values) if values else None


# ------------------------------------------------------------------------------- score-threshold sweep
def sweep_rows(run: RunRecord) -> list[dict]:
    """The run's score-threshold sweep as ``[{"threshold", "bbox": {...}, "segm": {...}, "fps"}]``,
    sorted by threshold; [] when ``rsdet evaluate --score-thresholds`` has not been run on it.

    ``threshold_sweep.json`` rows hold ``metrics`` as the flat metrics of the file's ``iou_type``
    (bbox when absent) or as ``{"bbox": {...}, "segm": {...}}``; a mask sweep may also sit in
    ``threshold_sweep_segm.json``. A malformed file is skipped with a warning naming it."""
    cached = getattr(run, "_sweep_rows", None)
    if cached is not None:
        return cached
    merged: dict[float, dict] = {}
    for name, default_type in ((SWEEP_FILE, "bbox"), (SWEEP_SEGM_FILE, "segm")):
        path = Path(run.dir) / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
            rows = data["rows"] if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise ValueError("no 'rows' list")
        except (ValueError, KeyError, OSError, UnicodeDecodeError) as exc:
            log.warning("%s: cannot read the score-threshold sweep (%s); rerun `rsdet evaluate %s "
                        "--score-thresholds ...`", path, " ".join(str(exc).split()), run.dir)
            continue
        iou_type = data.get("iou_type") or default_type
        for row in rows:
            thr = _number(row.get("threshold")) if isinstance(row, dict) else None
            if thr is None:
                continue
            entry = merged.setdefault(thr, {"threshold": thr, "bbox": None, "segm": None, "fps": None})
            metrics = row.get("metrics")
            if isinstance(metrics, Mapping):
                if isinstance(metrics.get("bbox"), Mapping) or isinstance(metrics.get("segm"), Mapping):
                    for kind in ("bbox", "segm"):
                        if isinstance(metrics.get(kind), Mapping):
                            entry[kind] = dict(metrics[kind])
                else:
                    entry[iou_type] = dict(metrics)
            if isinstance(row.get("segm"), Mapping):
                entry["segm"] = dict(row["segm"])
            fps = _number(row.get("fps"))
            if fps is not None:
                entry["fps"] = fps
    result = [merged[t] for t in sorted(merged)]
    run._sweep_rows = result  # noqa: SLF001 - per-record cache; RunRecord.reload does not know it
    return result


def sweep_row_at(run: RunRecord, threshold: float) -> dict | None:
    for row in sweep_rows(run):
        if math.isclose(row["threshold"], threshold, rel_tol=1e-6, abs_tol=1e-12):
            return row
    return None


def sweep_metric(row: Mapping, metric: str) -> float | None:
    """``metric`` (``AP``, ``segm/APr``, ``fps``) of one sweep row; -1 (undefined) reads as None."""
    if metric == "fps":
        return row.get("fps")
    kind, _, name = metric.partition("/")
    if not name:
        kind, name = "bbox", metric
    block = row.get(kind)
    if not isinstance(block, Mapping):
        return None
    value = _number(block.get(name))
    return None if value is None or value < 0 else value


def eval_threshold(run: RunRecord) -> float | None:
    """The score threshold the run's own evaluation used: eval.score_thresh, else the loss recipe's
    test_score_thresh (RS 0.40, CE 0.05)."""
    cfg = run.config or {}
    evaluation = cfg.get("eval") if isinstance(cfg.get("eval"), Mapping) else {}
    loss = cfg.get("loss") if isinstance(cfg.get("loss"), Mapping) else {}
    return _number(evaluation.get("score_thresh")) or _number(loss.get("test_score_thresh"))


def run_fps(run: RunRecord) -> float | None:
    """Inference fps measured by the sweep at the run's own test threshold (Table S10's fps)."""
    thr = eval_threshold(run)
    row = sweep_row_at(run, thr) if thr is not None else None
    return row.get("fps") if row else None


# ------------------------------------------------------------------------------- desired sampler ratio
def desired_ratio(run: RunRecord, stage: str) -> float | None:
    """Negatives per positive that stage ``stage``'s random sampler aims at ((1 - f) / f for the
    positive fraction f of its budget); None without a sampler (Table S7 prints N/A)."""
    cfg = run.config or {}
    sampler = cfg.get("sampler") if isinstance(cfg.get("sampler"), Mapping) else None
    if sampler is None:
        return None
    kind = resolved_sampler(cfg, stage)
    if kind != "random":
        return None
    budget = sampler.get("budget") if isinstance(sampler.get("budget"), Mapping) else {}
    frac = _number((budget.get(stage) or {}).get("positive_fraction")) if isinstance(budget.get(stage), Mapping) else None
    if not frac or frac <= 0:
        return None
    return (1.0 - frac) / frac


def resolved_sampler(cfg: Mapping, stage: str) -> str | None:
    """``sampler.<stage>`` with ``auto`` replaced by the loss recipe's ``default_sampler``."""
    sampler = cfg.get("sampler") if isinstance(cfg.get("sampler"), Mapping) else {}
    kind = sampler.get(stage)
    if kind == "auto":
        loss = cfg.get("loss") if isinstance(cfg.get("loss"), Mapping) else {}
        default = loss.get("default_sampler") if isinstance(loss.get("default_sampler"), Mapping) else {}
        kind = default.get(stage, kind)
    return None if kind is None else str(kind)
