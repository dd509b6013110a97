"""paper-mini's key cells: which training (and sweep, or benchmark) fills each cell of each table.

Every cell of a supplementary table that paper-mini reproduces is a :class:`Binding`: the table, the
paper's row and column labels, the metric, and the :class:`Setting` that trains it — a setup of
rsdet/report/mini_settings.py plus the values of the keys that setup varies, completed with their
defaults. Two cells with equal settings are filled by the same runs; nothing else is shared (Table S2's
RS runs evaluate after every epoch, so they are not Table S8's RS runs even though they train alike).

The cells come from the table's layout in paper_values.json: the table's ``setting``, the row's and the
column's ``config``. Cells paper-mini does not reproduce (Table S2's heavy-training columns, Table S10's
other backbones, detectors rsdet does not have) are listed by :func:`not_reproduced` with the reason.
:func:`fill` reads the values of every binding from the run folders: one value per seed, in the
paper's units (AP in percent, negatives per positive, seconds, fps).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from rsdet.records import RunRecord
from rsdet.report import mini_settings as S
from rsdet.report.paper import column_key, load_paper_tables

#: The tables in the document's order
TABLES = ("S8", "S7", "S2", "S5", "S11", "S10", "S1", "S3", "S4", "S6", "S9")
#: Config keys of a cell that choose the setup rather than vary within it
_SETUP_KEYS = {"detector", "dataset"}
_SHORT = {"loss": "", "loss.weighting": "", "loss.balance": "", "loss.box_weight": "w", "loss.delta": "d",
          "loss.delta_loc": "dl", "loss.label": "", "sampler.rpn": "rpn-", "sampler.rcnn": "rcnn-"}


@lru_cache(maxsize=None)
def recipe_sampler(loss: str, stage: str) -> str:
    """The sampler a loss recipe uses for ``stage`` when none is asked for (conf/loss/<loss>.yaml)."""
    import yaml  # noqa: PLC0415

    from rsdet.paths import conf_dir  # noqa: PLC0415

    data = yaml.safe_load((conf_dir() / "loss" / f"{loss}.yaml").read_text(encoding="utf-8")) or {}
    return str((data.get("default_sampler") or {}).get(stage, "none"))


def _value_text(v, short: bool = False) -> str:
    """A config value as an override writes it (floats keep their point: ``2.0``, so the config
    holds a float) or, ``short``, as a folder name shows it (``2``)."""
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:g}" if short else repr(v)
    return str(v)


@dataclass(frozen=True)
class Setting:
    """One training configuration: a setup and the values of the keys it varies (defaults filled in)."""

    setup: str
    values: tuple  # ((key, value), ...) in the setup's key order

    @classmethod
    def of(cls, setup: S.Setup, config: dict) -> "Setting":
        unknown = set(config) - set(setup.keys) - _SETUP_KEYS
        if unknown:
            raise ValueError(f"setup {setup.name!r} does not vary {sorted(unknown)} (mini_settings.SETUPS)")
        merged = {k: config.get(k, default) for k, default in setup.keys.items()}
        for k, v in merged.items():
            if v == S.RECIPE_DEFAULT:  # sampler.<stage>: the loss recipe's own sampler
                merged[k] = recipe_sampler(str(merged["loss"]), k.split(".", 1)[1])
        return cls(setup.name, tuple((k, merged[k]) for k in setup.keys))

    @property
    def config(self) -> dict:
        return dict(self.values)

    @property
    def name(self) -> str:
        """Folder name: the setup, then the values that differ from its defaults (``atss/rank_dl1.5``)."""
        setup = S.SETUPS[self.setup]
        parts = []
        for k, v in self.values:
            default = setup.keys[k]
            if k == "loss" or (default != S.RECIPE_DEFAULT and v != default) or default == S.RECIPE_DEFAULT:
                parts.append(f"{_SHORT.get(k, k.split('.')[-1] + '-')}{_value_text(v, short=True)}")
        return f"{self.setup}/{'_'.join(parts)}"

    def overrides(self, max_iters: int | None = None) -> list[str]:
        """The `rsdet train` overrides (without the seed)."""
        setup = S.SETUPS[self.setup]
        cfg = self.config
        out = [f"detector={setup.detector}", f"dataset={setup.dataset}", f"loss={cfg['loss']}",
               f"schedule.max_iters={setup.max_iters if max_iters is None else max_iters}"]
        for k, v in self.values:
            if k == "loss":
                continue
            if setup.keys[k] == S.RECIPE_DEFAULT or v != setup.keys[k]:
                out.append(f"{k}={_value_text(v)}")
        out += list(setup.extra) + list(setup.per_loss.get(cfg["loss"], ()))
        return out


@dataclass(frozen=True)
class Binding:
    """A key cell: where it sits in the paper's table and what fills it."""

    table: str
    row: str
    col: str                       # column_key: "Group / label" or the label
    metric: str
    setting: Setting | None = None   # a training (None: Table S9's benchmark)
    threshold: float | None = None   # read from the run's score-threshold sweep at this threshold
    bench: str | None = None         # Table S9: "standard" | "rs" of the detector in ``bench_detector``
    bench_detector: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.table, self.row, self.col)


def _row_metric(row: dict, metric: str) -> str:
    from rsdet.report.metrics import is_percent  # noqa: PLC0415

    if row.get("iou_type") == "segm" and is_percent(metric) and not metric.startswith("segm/"):
        return f"segm/{metric}"
    return metric


def _setup_for(table: str, detector: str | None) -> S.Setup | None:
    for setup in S.SETUPS.values():
        if table in setup.tables and (detector is None or setup.detector == detector):
            return setup
    return None


def available_detectors() -> set[str]:
    from rsdet.paths import conf_dir  # noqa: PLC0415

    return {p.stem for p in (conf_dir() / "detector").glob("*.yaml")}


def _spec_cells(table: str, spec: dict):
    """(row, col, merged config, metric, why not reproduced or None) for every cell of a table."""
    some_rows_configured = any(r.get("config") for r in spec["rows"])
    for row in spec["rows"]:
        for col in spec["cols"]:
            cfg = {**(spec.get("setting") or {}), **(row.get("config") or {}), **(col.get("config") or {})}
            metric = _row_metric(row, col.get("metric") or (spec.get("metrics") or ["AP"])[0])
            why = None
            if some_rows_configured and not row.get("config"):
                why = "a backbone, schedule or variant rsdet does not reproduce"
            elif table == "S2" and col.get("group") == "Heavy Training":
                why = "heavy training (100 epochs, SSD-style augmentation) is not run on the CPU"
            yield row, col, cfg, metric, why


def catalogue() -> list[Binding]:
    """Every key cell of every table paper-mini reproduces, in the document's table order."""
    tables = load_paper_tables()
    detectors = available_detectors()
    out: list[Binding] = []
    for table in TABLES:
        spec = tables[table]
        for row, col, cfg, metric, why in _spec_cells(table, spec):
            if why is not None:
                continue
            threshold = cfg.pop("score_threshold", None)
            if table == "S9":
                det = cfg["detector"]
                if det in detectors:
                    kind = "standard" if cfg.get("loss") == "standard" else "rs"
                    out.append(Binding(table, row["label"], column_key(col), metric, bench=kind, bench_detector=det))
                continue
            setup = _setup_for(table, cfg.get("detector"))
            if setup is None:
                continue
            if table == "S10":  # the RS runs' own settings; fps from a sweep at their test threshold
                cfg = {k: v for k, v in cfg.items() if k in ("loss",)}
            else:
                cfg = {k: v for k, v in cfg.items() if k not in _SETUP_KEYS}
            out.append(Binding(table, row["label"], column_key(col), metric, Setting.of(setup, cfg), threshold))
    return out


def not_reproduced(table: str) -> list[tuple[str, str, str]]:
    """(row, column, reason) of the cells of ``table`` that paper-mini leaves empty."""
    spec = load_paper_tables()[table]
    keys = {b.key for b in catalogue() if b.table == table}
    detectors = available_detectors()
    out = []
    for row, col, cfg, _metric, why in _spec_cells(table, spec):
        if (table, row["label"], column_key(col)) in keys:
            continue
        if why is None:
            det = cfg.get("detector")
            if table == "S9" and det not in detectors:
                why = f"rsdet has no {det} detector (conf/detector/)"
            elif table == "S10":
                why = "paper-mini's Mask R-CNN runs are on the LVIS-style data (Table S11), not COCO-style"
            else:
                why = "no setup in rsdet/report/mini_settings.py"
        out.append((row["label"], column_key(col), why))
    return out


def sweep_thresholds(bindings: list[Binding]) -> dict[Setting, tuple[float, ...]]:
    """The score thresholds each setting's runs must be swept at (Table S11's rows, Table S10's fps)."""
    need: dict[Setting, set] = {}
    for b in bindings:
        if b.setting is None:
            continue
        if b.threshold is not None:
            need.setdefault(b.setting, set()).add(float(b.threshold))
        elif b.metric == "fps":
            need.setdefault(b.setting, set()).update(S.S10_THRESHOLDS)
    return {k: tuple(sorted(v)) for k, v in need.items()}


def settings_in_order(bindings: list[Binding]) -> list[Setting]:
    seen: dict[Setting, None] = {}
    for b in bindings:
        if b.setting is not None:
            seen.setdefault(b.setting, None)
    return list(seen)


def run_dir(root: Path, setting: Setting, seed: int) -> Path:
    return Path(root) / setting.name / f"seed{seed}"


# ------------------------------------------------------------------------------------------ values
@dataclass
class MiniCell:
    """The values of one key cell, one per replicate (seed; timing round for Table S9), in the paper's units."""

    binding: Binding
    paper: float | str | None
    values: dict = field(default_factory=dict)    # replicate -> value
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return self.binding.metric


def to_paper_units(metric: str, value: float | None) -> float | None:
    from rsdet.report.metrics import is_percent  # noqa: PLC0415

    if value is None or not math.isfinite(value):
        return None
    if is_percent(metric):  # -1 marks an undefined AP/oLRP (e.g. no ground truth of a size): no value
        return None if value < 0 else 100.0 * value
    return value


def _completed(path: Path) -> RunRecord | None:
    if not (path / "run.json").is_file():
        return None
    rec = RunRecord(path, create=False)
    return rec if rec.status == "completed" and rec.metrics else None


def read_bench(root: Path) -> dict | None:
    """Table S9's benchmark results (scripts/bench_table_s9.py), or None."""
    path = Path(root) / "s9" / "bench.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fill(root: Path, seeds, bindings: list[Binding] | None = None) -> dict[tuple, MiniCell]:
    """Every binding's values from the runs under ``root`` (missing runs leave a cell empty)."""
    from rsdet.report.metrics import metric_value  # noqa: PLC0415
    from rsdet.report.paper import paper_cell  # noqa: PLC0415
    from rsdet.report.run_data import sweep_metric, sweep_row_at  # noqa: PLC0415

    bindings = catalogue() if bindings is None else bindings
    bench = read_bench(root)
    runs: dict[Path, RunRecord | None] = {}
    out: dict[tuple, MiniCell] = {}
    for b in bindings:
        cell = MiniCell(b, paper_cell(b.table, b.row, b.col))
        if b.bench is not None:
            rounds = ((bench or {}).get("iteration") or {}).get(b.bench_detector, {}).get(b.bench) or []
            cell.values = {k: float(v) for k, v in enumerate(rounds) if isinstance(v, (int, float))}
        else:
            for seed in seeds:
                path = run_dir(root, b.setting, seed)
                if path not in runs:
                    runs[path] = _completed(path)
                rec = runs[path]
                if rec is None:
                    continue
                if b.threshold is not None:
                    row = sweep_row_at(rec, float(b.threshold))
                    value = sweep_metric(row, b.metric) if row else None
                else:
                    value = metric_value(rec, b.metric)
                value = to_paper_units(b.metric, value)
                if value is not None:
                    cell.values[seed] = value
                    cell.runs.append(rec)
        out[b.key] = cell
    return out


def loss_row(n: int, p: int) -> str:
    """Row label of the loss benchmark at N negatives+positives and P positives: ``N=4e4, P=150``."""
    mant, _, exp = f"{n:.0e}".partition("e")
    return f"N={mant}e{int(exp)}, P={p}"


LOOP_COL, FAST_COL = "per-positive loop (ms)", "rsdet (ms)"


def bench_cells(root: Path) -> dict[tuple, MiniCell]:
    """Table S9's loss benchmark as cells of their own (not in the paper's table): per N, P, the
    per-positive loop's and rsdet's forward+backward in ms, one value per timing round."""
    out: dict[tuple, MiniCell] = {}
    for entry in (read_bench(root) or {}).get("loss") or []:
        try:
            n, p = int(entry["N"]), int(entry["P"])
        except (KeyError, TypeError, ValueError):
            continue
        row = loss_row(n, p) + (" (loop on a prefix, scaled)" if entry.get("extrapolated") else "")
        for col, key, kind in ((LOOP_COL, "loop_ms", "loop"), (FAST_COL, "fast_ms", "fast")):
            b = Binding("S9", row, col, "ms", bench=kind)
            vals = entry.get(key) or []
            out[b.key] = MiniCell(b, None, {k: float(v) for k, v in enumerate(vals) if isinstance(v, (int, float))})
    return out


def as_fill_table(table: str, cells: dict):
    """``(spec, cells, used)`` as :func:`rsdet.report.paper_table.fill_table` returns them (values as
    stored: AP as fractions), from paper-mini's own cells, for the figures of rsdet/report/plots.py."""
    from rsdet.report.metrics import is_percent  # noqa: PLC0415
    from rsdet.report.paper_table import PaperCell  # noqa: PLC0415

    spec = load_paper_tables()[table]
    out, used = [], set()
    for i, row in enumerate(spec["rows"]):
        line = []
        for j, col in enumerate(spec["cols"]):
            cell = cells.get((table, row["label"], column_key(col)))
            metric = cell.metric if cell is not None else _row_metric(row, col.get("metric") or "AP")
            pc = PaperCell(paper=spec["values"][i][j], metric=metric)
            if cell is not None:
                scale = 100.0 if is_percent(metric) else 1.0
                for seed in sorted(cell.values, key=str):
                    pc.values.append(cell.values[seed] / scale)
                pc.runs = list(cell.runs)
                used.update(r.dir for r in cell.runs)
            line.append(pc)
        out.append(line)
    return spec, out, len(used)
