"""paper-mini's ledger: the per-seed values of every finished item, committed beside the document.

A full paper-mini needs more wall time than one working session may have, and its run records (checkpoints,
histories, predictions) stay out of git. The ledger is what carries a finished item from one checkout to
the next: two CSV files in the document's folder (docs/paper-mini/):

* ``runs.csv`` — one row per finished item (a training, a threshold sweep, Table S9's benchmark): its id,
  the exact command that produced it, the fingerprint of the code that ran it, when it finished, and its
  training seconds and iterations (the document's measured costs);
* ``seeds.csv`` — one row per value of a key cell: table, row, column, metric, replicate (the seed; the
  timing round for Table S9), value in the paper's units, and the id of the item it came from. The
  document's ``cells.csv`` is its mean ± CI; from this file anyone can recompute every paired difference.

An item is reused from the ledger — not run again — only when its command is the plan's command for it and
its code fingerprint equals the fingerprint of the checkout that reads it (:func:`code_fingerprint`: every
file of the package except the report layer, the configs, the S9 benchmark script, the torch and numba
versions). Any change to what trains or evaluates a run therefore retrains it. A training whose sweep is
still to run is not reused (the sweep needs its run folder). See docs/paper.md ("Across sessions").
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from rsdet.errors import RsdetError
from rsdet.records import atomic_write_text

RUNS_FILE = "runs.csv"
SEEDS_FILE = "seeds.csv"
RUN_COLUMNS = ["item", "kind", "command", "code", "finished", "train_seconds", "iterations"]
SEED_COLUMNS = ["table", "row", "column", "metric", "replicate", "value", "item"]
#: Parts of the package that only read runs (the document, tables and figures): not in the fingerprint
_NOT_TRAINING = ("report",)
_SUFFIXES = {".py", ".json", ".yaml", ".yml"}


def code_fingerprint(pkg: Path | None = None, conf: Path | None = None) -> str:
    """16 hex digits over everything that decides a run's numbers: the package's files except
    rsdet/report/, conf/, scripts/bench_table_s9.py beside the package, and the torch and numba versions
    (``pkg``, ``conf``: other trees than the installed ones, for tests)."""
    if pkg is None:
        import rsdet  # noqa: PLC0415

        pkg = Path(rsdet.__file__).resolve().parent
    if conf is None:
        from rsdet.paths import conf_dir  # noqa: PLC0415

        conf = Path(conf_dir())
    pkg, conf = Path(pkg), Path(conf)
    files: list[tuple[str, Path]] = []
    for p in pkg.rglob("*"):
        rel = p.relative_to(pkg)
        if p.is_file() and p.suffix in _SUFFIXES and "__pycache__" not in rel.parts and rel.parts[0] not in _NOT_TRAINING:
            files.append((f"rsdet/{rel.as_posix()}", p))
    files += [(f"conf/{p.relative_to(conf).as_posix()}", p) for p in conf.rglob("*") if p.is_file()
              and p.suffix in _SUFFIXES]
    from rsdet.report.mini import BENCH_SCRIPT  # noqa: PLC0415

    bench = pkg.parent / "scripts" / BENCH_SCRIPT
    if bench.is_file():
        files.append((f"scripts/{BENCH_SCRIPT}", bench))
    h = hashlib.sha256()
    for label, p in sorted(files):
        h.update(label.encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(_versions().encode())
    return h.hexdigest()[:16]


def _versions() -> str:
    import torch  # noqa: PLC0415

    try:
        import numba  # noqa: PLC0415

        nb = numba.__version__
    except ImportError:  # pragma: no cover - numba is a dependency
        nb = "none"
    return f"torch {torch.__version__} numba {nb}"


def item_id(item) -> str:
    """A plan item's id in the ledger: the run folder of a training, ``<folder> sweep`` for its
    threshold sweep, ``s9`` for Table S9's benchmark."""
    if item.kind == "sweep":
        return f"{item.name} sweep"
    return item.name


def binding_item(binding, seed) -> str:
    """The id of the item whose output holds ``binding``'s value for ``seed``."""
    from rsdet.report import mini_cells as C  # noqa: PLC0415

    if binding.setting is None:
        return "s9"
    name = C.run_dir(Path(), binding.setting, seed).as_posix()
    return f"{name} sweep" if binding.threshold is not None or binding.metric == "fps" else name


@dataclass
class Ledger:
    """The two files of a document's folder, read (or empty when absent)."""

    folder: Path
    runs: dict[str, dict] = field(default_factory=dict)        # item id -> runs.csv row
    seeds: list[dict] = field(default_factory=list)            # seeds.csv rows
    code: str = ""                                             # the reading checkout's fingerprint
    valid: set[str] = field(default_factory=set)               # ids reusable for the current plan

    @classmethod
    def load(cls, folder: Path) -> "Ledger":
        folder = Path(folder)
        led = cls(folder, code=code_fingerprint())
        runs_path, seeds_path = folder / RUNS_FILE, folder / SEEDS_FILE
        for path, columns in ((runs_path, RUN_COLUMNS), (seeds_path, SEED_COLUMNS)):
            if not path.is_file():
                continue
            try:
                rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
            except (OSError, UnicodeDecodeError, csv.Error) as e:
                raise RsdetError(f"paper-mini ledger {path} cannot be read ({e}); delete it (its items are then "
                                 "run again) or restore it from git") from None
            if rows and set(columns) - set(rows[0]):
                raise RsdetError(f"paper-mini ledger {path} lacks the columns {sorted(set(columns) - set(rows[0]))}; "
                                 "delete it (its items are then run again) or restore it from git")
            if path == runs_path:
                led.runs = {r["item"]: r for r in rows}
            else:
                led.seeds = rows
        return led

    # ------------------------------------------------------------------ reuse
    def resolve(self, items: list, root: Path, running: bool = True) -> set[str]:
        """The ids of ``items`` the ledger may stand in for: same command, same code; when ``running`` (a
        plan), a training only when none of its sweeps still has to run on its folder. Sets and returns
        :attr:`valid`."""
        ok = set()
        for it in items:
            row = self.runs.get(item_id(it))
            if row is not None and row.get("command") == it.describe() and row.get("code") == self.code:
                ok.add(item_id(it))
        for it in items if running else ():
            if it.kind == "sweep" and item_id(it) not in ok and not it.done(root):
                ok.discard(it.name)  # the sweep evaluates the training's checkpoint: train it here
        self.valid = ok
        return ok

    def stale(self, items: list) -> list[str]:
        """Ids of the plan's items the ledger holds but may not reuse (another command or other code)."""
        return [item_id(it) for it in items if item_id(it) in self.runs and item_id(it) not in self.valid]

    def overlay(self, cells: dict, from_root: set[tuple], seeds) -> int:
        """Add the ledger's values of valid items to ``cells`` where the run folders gave none
        (``from_root``: (cell key, replicate) pairs already filled); returns how many were added."""
        from rsdet.report import mini_cells as C  # noqa: PLC0415

        added = 0
        allowed = {int(s) for s in seeds}
        for r in self.seeds:
            if r.get("item") not in self.valid:
                continue
            key = (r["table"], r["row"], r["column"])
            try:
                rep, value = int(r["replicate"]), float(r["value"])
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value) or (key, rep) in from_root or (r["item"] != "s9" and rep not in allowed):
                continue
            cell = cells.get(key)
            if cell is None:
                if key[0] != "S9":
                    continue  # a cell the current catalogue no longer has
                cell = cells[key] = C.MiniCell(C.Binding(*key, r["metric"], bench="ledger"), None)
            cell.values[rep] = value
            added += 1
        return added

    def rates(self, setup: str, skip: set[str] = frozenset()) -> list[float]:
        """Seconds per iteration of the setup's valid ledger trainings (runs.csv), except the ids ``skip``."""
        out = []
        for k in sorted(self.valid - set(skip)):
            row = self.runs.get(k) or {}
            if row.get("kind") != "train" or not k.startswith(f"{setup}/"):
                continue
            try:
                sec, its = float(row["train_seconds"]), float(row["iterations"])
            except (KeyError, TypeError, ValueError):
                continue
            if its > 0 and math.isfinite(sec):
                out.append(sec / its)
        return out

    # ------------------------------------------------------------------ writing
    def record(self, items: list, root: Path, cells: dict, from_root: set[tuple]) -> set[str]:
        """Take every item finished under ``root`` into the ledger (replacing its earlier rows) with the
        values it gave ``cells``; rows of items not under ``root`` are kept. Writes both files and returns
        the ids of the items finished under ``root``."""
        from rsdet.records import RunRecord  # noqa: PLC0415

        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        fresh: dict[str, dict] = {}
        for it in items:
            if not it.done(root):
                continue
            row = {"item": item_id(it), "kind": it.kind, "command": it.describe(), "code": self.code,
                   "finished": now, "train_seconds": "", "iterations": ""}
            if it.kind != "train":  # when its file was written (not when the ledger was)
                out = it.run_dir(root) / ("bench.json" if it.kind == "bench" else "threshold_sweep.json")
                try:
                    row["finished"] = _dt.datetime.fromtimestamp(out.stat().st_mtime, _dt.timezone.utc).replace(
                        microsecond=0).isoformat()
                except OSError:
                    pass
            else:
                rec = RunRecord(it.run_dir(root), create=False)
                m = rec.metrics or {}
                row["finished"] = str(rec.info.get("finished") or now)
                for k in ("train_seconds", "iterations"):
                    if isinstance(m.get(k), (int, float)):
                        row[k] = f"{float(m[k]):.6g}"
            fresh[row["item"]] = row
        values = []
        for (key, rep) in sorted(from_root, key=lambda x: (x[0], str(x[1]))):
            cell = cells.get(key)
            if cell is None or rep not in cell.values:
                continue
            item = binding_item(cell.binding, rep)
            if item not in fresh:
                continue
            values.append({"table": key[0], "row": key[1], "column": key[2], "metric": cell.metric,
                           "replicate": str(rep), "value": repr(float(cell.values[rep])), "item": item})
        kept_runs = {k: v for k, v in self.runs.items() if k not in fresh}
        kept_seeds = [r for r in self.seeds if r.get("item") not in fresh]
        self.runs = {**kept_runs, **fresh}
        self.seeds = kept_seeds + values
        self.write()
        return set(fresh)

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, columns, rows in ((RUNS_FILE, RUN_COLUMNS, [self.runs[k] for k in sorted(self.runs)]),
                                    (SEEDS_FILE, SEED_COLUMNS, self.seeds)):
            buf = io.StringIO()
            w = csv.DictWriter(buf, columns, lineterminator="\n", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
            atomic_write_text(self.folder / name, buf.getvalue())
