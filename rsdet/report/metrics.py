"""Metric names → values in a run's metrics.json, and how to show them.

metrics.json stores fractions: ``{"bbox": {"AP": 0.396, "oLRP": 0.679, ...}, "segm": {...},
"train_seconds": 290.1}``. A bare name (``AP``, ``oLRP_FP``) is looked up in ``bbox`` first, then among
the top-level keys (``train_seconds``); ``segm/AP`` picks the mask results; ``history/<key>`` is the
mean of a history.jsonl column (e.g. ``history/ratio/rpn/task_neg_per_pos``, supplementary Table S7). Matching
ignores case, ``_`` and ``-`` so ``ap50``, ``AP_50`` and ``olrp_loc`` all work.

AP-, AR- and LRP-type values are shown ×100 with one decimal, as in the paper's tables. Higher is
better except for oLRP and its components (Oksuz et al.: LRP is an error), times and losses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from rsdet.records import RunRecord

IOU_TYPES = ("bbox", "segm")
_PERCENT = re.compile(r"^(ap|ar|olrp|lrp)", re.IGNORECASE)
_LOWER_BETTER = re.compile(r"(lrp|loss|seconds|time|sec_per_iter|error|memory|flops|params)", re.IGNORECASE)
#: the detector's size from run.json's ``complexity`` (rsdet/engine/complexity.py): metric -> (key, unit)
_COMPLEXITY = {"gflops": ("flops_per_image", 1e9), "params_m": ("parameters", 1e6)}


def _norm(name: str) -> str:
    return re.sub(r"[_\-\s]", "", name).lower()


def _lookup(mapping: Mapping, key: str):
    if key in mapping:
        return mapping[key]
    wanted = _norm(key)
    for k, v in mapping.items():
        if _norm(str(k)) == wanted:
            return v
    return None


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range (a garbled file): not a metric
        return None
    return value if math.isfinite(value) else None


def _history_mean(rows: list[dict], column: str) -> float | None:
    vals = [_number(_lookup(row, column)) for row in rows]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def metric_value(run: RunRecord, name: str) -> float | None:
    """The value of metric ``name`` for ``run`` (a fraction, as stored), or None if it has none.

    Besides metrics.json keys: ``history/<col>`` (mean over history.jsonl), ``history_epoch1/<col>``
    (mean over the first epoch's rows), ``fps`` (the score-threshold sweep at the run's test threshold),
    ``desired_ratio/<stage>_instance`` (the sampler's aim) and ``sec_per_iter`` (history mean when
    metrics.json has none), ``gflops`` / ``params_m`` (run.json's ``complexity``: FLOPs per image in
    10^9, parameters in 10^6; an IoU-type prefix such as ``segm/gflops`` names the same detector's);
    see rsdet/report/run_data.py."""
    from rsdet.report import run_data

    size = _COMPLEXITY.get(_norm(name.rsplit("/", 1)[-1]).replace("paramsm", "params_m"))
    if size is not None:
        found = _number(((run.info or {}).get("complexity") or {}).get(size[0]))
        return None if found is None else found / size[1]
    if name.startswith("history/"):
        return _history_mean(run.read_history(), name[len("history/"):])
    if name.startswith("history_epoch1/"):
        return _history_mean(run_data.first_epoch_rows(run), name[len("history_epoch1/"):])
    if name.startswith("desired_ratio/"):
        return run_data.desired_ratio(run, name[len("desired_ratio/"):].removesuffix("_instance"))
    metrics = run.metrics or {}
    if name == "fps" and _number(metrics.get("fps")) is None:
        return run_data.run_fps(run)
    if name == "sec_per_iter" and _number(metrics.get("sec_per_iter")) is None:
        return _history_mean(run.read_history(), "sec_per_iter")
    head, _, tail = name.partition("/")
    if tail:
        section = _lookup(metrics, head)
        if isinstance(section, Mapping):
            found = _number(_lookup(section, tail))
            if found is not None:
                return found
        return _number(_lookup(metrics, name))  # a flat key that itself contains "/"
    bbox = metrics.get("bbox")
    if isinstance(bbox, Mapping):
        found = _number(_lookup(bbox, name))
        if found is not None:
            return found
    return _number(_lookup(metrics, name))


def available_metrics(runs: list[RunRecord]) -> list[str]:
    """Every scalar metric name found in the runs: bbox keys bare, others as ``segm/AP``, top-level keys."""
    names: list[str] = []

    def add(n: str) -> None:
        if n not in names:
            names.append(n)

    for run in runs:
        metrics = run.metrics or {}
        for key, value in metrics.items():
            if isinstance(value, Mapping):
                for sub, v in value.items():
                    if _number(v) is not None:
                        add(sub if key == "bbox" else f"{key}/{sub}")
            elif _number(value) is not None:
                add(key)
    return names


def detection_metrics(runs: list[RunRecord]) -> list[str]:
    """What ``--metric all`` shows: the scalar bbox (and segm) results, without timings."""
    return [n for n in available_metrics(runs) if is_percent(n)]


def is_percent(name: str) -> bool:
    """AP/AR/LRP-type values are fractions shown ×100."""
    base = re.sub(r"^epoch\d+/", "", name)  # evaluations during training: epoch1/AP, epoch1/segm/AP
    base = base.split("/", 1)[1] if base.split("/", 1)[0] in IOU_TYPES else base
    return not name.startswith(("history/", "history_epoch1/", "desired_ratio/")) and "/" not in base and bool(_PERCENT.match(base))


def lower_is_better(name: str) -> bool:
    return bool(_LOWER_BETTER.search(name))


def display_name(name: str) -> str:
    """Column header: ``segm/AP`` → ``mask AP``; ``history/ratio/rpn/num_pos`` → ``ratio/rpn/num_pos (mean)``."""
    if name.startswith("segm/"):
        return "mask " + name[5:]
    if name.startswith("bbox/"):
        return name[5:]
    if name.startswith("history/"):
        return name[8:] + " (mean)"
    if name.startswith("history_epoch1/"):
        return name[len("history_epoch1/"):] + " (epoch 1 mean)"
    return name


def scale(name: str, value: float, raw: bool) -> float:
    return value * 100.0 if (is_percent(name) and not raw) else value


def fmt(name: str, value: float, raw: bool) -> str:
    """One number as the tables show it (value already scaled)."""
    if is_percent(name):
        return f"{value:.3f}" if raw else f"{value:.1f}"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}"
