"""`make paper-mini`: the supplementary's ablation tables at CPU size — the plan and its execution.

The plan is every key cell of every table (rsdet/report/mini_cells.py) turned into work items: one
``rsdet train`` per setting and seed (one run folder each), ``rsdet evaluate RUN --score-thresholds``
sweeps for Tables S11/S10, and Table S9's benchmark (scripts/bench_table_s9.py). Items are ordered seed
by seed (every table's first seed before any second one), each with an estimate from the measured
per-iteration costs of rsdet/report/mini_settings.py; :func:`plan` keeps what fits the budget and bills
each item to the first table that uses it (the plan prints minutes per table). Items whose output is
complete are skipped, so an interrupted paper-mini resumes where it stopped (interrupted trainings from
their checkpoint). The document is written by rsdet/report/mini_doc.py.

Three modes (:data:`MODES`): ``full`` (3 seeds, every key cell, ≤ 5 h on 2 free cores), ``quick`` (2 seeds,
the cells of one finding per table, half the iterations, its own folder) and ``smoke`` (1 seed, 5
iterations on a 16-image split: checks the whole path from runs to document).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import subprocess
import sys
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

from rsdet.records import RunRecord
from rsdet.report import mini_settings as S

#: Minutes per training of the Faster R-CNN-style CPU presets as shipped (train seconds + one evaluation;
#: the README's demo figures), for callers that plan whole preset trainings (rsdet/report/tuning.py)
TRAIN_MINUTES = {"faster_rcnn": (900 * S.SEC_PER_ITER[("faster_rcnn", "shapes")] + 4) / 60,
                 "atss": (1300 * S.SEC_PER_ITER[("atss", "shapes")] + 4) / 60,
                 "yolact": (2400 * S.SEC_PER_ITER[("yolact", "shapes")] + 8) / 60}
OVERHEAD_MINUTES = S.OVERHEAD_SECONDS / 60
PARALLEL_SLOWDOWN = S.PARALLEL_SLOWDOWN
DEFAULT_JOBS = S.DEFAULT_JOBS
DEFAULT_BUDGET = S.DEFAULT_BUDGET_MIN
COMMON = ["logger=none"]
BENCH_SCRIPT = "bench_table_s9.py"


@dataclass(frozen=True)
class Mode:
    name: str
    seeds: tuple[int, ...]
    root: str                       # default run folder, relative to the checkout
    doc: str                        # default document, relative to the checkout
    iter_scale: float = 1.0
    iters: int | None = None        # every training at this many iterations (smoke)
    overrides: tuple[str, ...] = ()
    bench: dict = field(default_factory=lambda: dict(S.BENCH))
    bench_minutes: float = S.BENCH_MINUTES
    quick_cells: bool = False       # only the cells of each table's first finding


MODES = {
    "full": Mode("full", S.SEEDS, "outputs/paper-mini", "docs/paper-mini.md"),
    "quick": Mode("quick", S.QUICK_SEEDS, "outputs/paper-mini-quick", "outputs/paper-mini-quick/paper-mini.md",
                  iter_scale=S.QUICK_ITER_SCALE, bench=dict(S.QUICK_BENCH), bench_minutes=S.QUICK_BENCH_MINUTES,
                  quick_cells=True),
    "smoke": Mode("smoke", S.SMOKE_SEEDS, "outputs/paper-mini-smoke", "outputs/paper-mini-smoke/paper-mini.md",
                  iters=S.SMOKE_ITERS, overrides=S.SMOKE_OVERRIDES, bench=dict(S.SMOKE_BENCH), bench_minutes=0.5),
}


@dataclass
class Item:
    """One training (``sweep`` and ``bench`` None), one threshold sweep of the training ``name`` (``sweep``:
    the thresholds), or Table S9's benchmark (``bench``: its settings)."""

    table: str
    name: str                       # run folder under the root (a sweep: the training it evaluates)
    overrides: list[str] = field(default_factory=list)
    detector: str = "faster_rcnn"
    sweep: str | None = None
    priority: int = 0
    extra_minutes: float = 0.0
    dataset: str = "shapes"
    iters: int | None = None        # None: a whole preset training (TRAIN_MINUTES)
    epoch_evals: int = 0            # evaluations during training
    bench: dict | None = None
    tables: tuple[str, ...] = ()    # every table whose cells it fills

    @property
    def kind(self) -> str:
        return "bench" if self.bench is not None else "sweep" if self.sweep else "train"

    @property
    def minutes(self) -> float:
        """Estimated minutes alone on 2 cores (rsdet/report/mini_settings.py: measured per-iteration costs)."""
        if self.kind == "bench":
            return float(self.extra_minutes)
        if self.kind == "sweep":
            n = len(self.sweep.split(","))
            det = "mask_rcnn" if self.detector == "mask_rcnn" else "faster_rcnn"
            return S.SWEEP_MINUTES[det] + S.SWEEP_MINUTES_PER_THRESHOLD[det] * n + OVERHEAD_MINUTES
        if self.iters is None:
            base = TRAIN_MINUTES.get(self.detector, 3.0)
        else:
            sec = S.SEC_PER_ITER.get((self.detector, self.dataset), 0.2)
            ev = S.EVAL_SECONDS_LVIS if self.dataset == "shapes_lvis" else S.EVAL_SECONDS.get(self.detector, 5.0)
            base = (self.iters * sec + ev * (1 + self.epoch_evals)) / 60
        return base + OVERHEAD_MINUTES + self.extra_minutes

    def wall_minutes(self, jobs: int = 1) -> float:
        """Its share of the wall time when trainings run ``jobs`` at a time (sweeps and benchmarks alone)."""
        if self.kind != "train" or jobs <= 1:
            return self.minutes
        return self.minutes * PARALLEL_SLOWDOWN / jobs

    def run_dir(self, root: Path) -> Path:
        return Path(root) / self.name

    def done(self, root: Path, ledger=None) -> bool:
        """A training is done when its record is completed with metrics; a sweep when its file has every
        threshold (and, for a mask detector, the mask file too); the benchmark when its JSON was written
        with these settings. With a ``ledger`` (rsdet/report/mini_ledger.py, resolved for the plan), also
        when the ledger may stand in for it."""
        if ledger is not None and self.ledger_id in ledger.valid:
            return True
        d = self.run_dir(root)
        if self.kind == "bench":
            path = d / "bench.json"
            try:
                return json.loads(path.read_text(encoding="utf-8")).get("settings") == _jsonable(self.bench)
            except (OSError, ValueError, AttributeError):
                return False
        if self.kind == "sweep":
            files = ["threshold_sweep.json"] + (["threshold_sweep_segm.json"] if self.detector == "mask_rcnn" else [])
            want = {float(t) for t in self.sweep.split(",")}
            for name in files:
                try:
                    rows = json.loads((d / name).read_text(encoding="utf-8")).get("rows") or []
                    have = {float(r["threshold"]) for r in rows if isinstance(r, dict) and "threshold" in r}
                except (OSError, ValueError, AttributeError, TypeError, KeyError):
                    return False
                if not all(any(math.isclose(t, h, rel_tol=1e-6) for h in have) for t in want):
                    return False
            return True
        if not (d / "run.json").is_file():
            return False
        rec = RunRecord(d, create=False)
        return rec.status == "completed" and bool(rec.metrics)

    @property
    def ledger_id(self) -> str:
        from rsdet.report.mini_ledger import item_id  # noqa: PLC0415

        return item_id(self)

    def describe(self) -> str:
        if self.kind == "bench":
            return f"python scripts/{BENCH_SCRIPT} " + " ".join(bench_args(self.bench))
        if self.kind == "sweep":
            return f"rsdet evaluate {self.name} --score-thresholds {self.sweep}"
        return "rsdet train " + " ".join(self.overrides)


def _jsonable(obj):
    return json.loads(json.dumps(obj))


def bench_args(bench: dict) -> list[str]:
    args = ["--rounds", str(bench["rounds"]), "--iters", str(bench["iters"]), "--warmup", str(bench["warmup"]),
            "--sizes", ",".join(f"{n}:{p}" for n, p in bench["loss_sizes"]),
            "--loop-budget", f"{bench['loop_budget_s']:g}"]
    if not bench.get("iterations", True):
        args.append("--no-iterations")
    if bench.get("detectors"):
        args += ["--detectors", ",".join(bench["detectors"])]
    return args


def _thresholds_text(ts) -> str:
    return ",".join(f"{t:g}" for t in ts)


def items_for(mode: Mode, only: set[str] | None = None) -> list[Item]:
    """Every item of ``mode`` (the ``only`` tables' cells), in priority order: seed by seed, trainings
    then sweeps of that seed; Table S9's benchmark after the first seed."""
    from rsdet.report import mini_cells as C  # noqa: PLC0415

    bindings = C.catalogue()
    if mode.quick_cells:
        wanted = {(t, r, c) for t, cells in S.QUICK_CELLS.items() for r, c in cells}
        bindings = [b for b in bindings if b.key in wanted]
    if only:
        bindings = [b for b in bindings if b.table in only]
    settings = C.settings_in_order(bindings)
    users: dict = {}
    for b in bindings:
        if b.setting is not None:
            users.setdefault(b.setting, [])
            if b.table not in users[b.setting]:
                users[b.setting].append(b.table)
    sweeps = C.sweep_thresholds(bindings)
    want_bench = only is None or "S9" in only
    swept_by = {b.setting: b.table for b in bindings if b.setting is not None and b.table == "S11"}
    items: list[Item] = []
    for k, seed in enumerate(mode.seeds):
        for setting in settings:
            setup = S.SETUPS[setting.setup]
            iters = mode.iters or max(1, int(round(setup.max_iters * mode.iter_scale)))
            per_epoch = S.ITERS_PER_EPOCH.get(setup.dataset, 200)
            epoch_evals = (iters - 1) // per_epoch if setup.epoch_evals and mode.iters is None else 0
            # billed to the setup's own table (Table S11's Mask R-CNN runs also fill Table S7's LVIS row)
            tables = tuple(sorted(users[setting], key=lambda t: (t != setup.tables[0], C.TABLES.index(t))))
            items.append(Item(tables[0].lower(), f"{C.run_dir(Path(), setting, seed)}",
                              [*setting.overrides(iters), *mode.overrides, f"seed={seed}"], detector=setup.detector,
                              dataset=setup.dataset, iters=iters, epoch_evals=epoch_evals, tables=tables,
                              priority=len(items)))
        for setting, ts in sweeps.items():
            table = swept_by.get(setting, "S10")
            items.append(Item(table.lower(), f"{C.run_dir(Path(), setting, seed)}", sweep=_thresholds_text(ts),
                              detector=S.SETUPS[setting.setup].detector, dataset=S.SETUPS[setting.setup].dataset,
                              tables=(table,), priority=len(items)))
        if k == 0 and want_bench:
            items.append(Item("s9", "s9", bench=dict(mode.bench), extra_minutes=mode.bench_minutes, tables=("S9",),
                              priority=len(items)))
    return items


def plan(budget_min: float = DEFAULT_BUDGET, only: set[str] | None = None, mode: str | Mode = "full",
         root: Path | None = None, jobs: int = DEFAULT_JOBS, ledger=None) -> tuple[list[Item], list[Item]]:
    """(kept, dropped): the items of ``mode`` (``only`` some tables: ``{"S8", "S11"}``) in priority order,
    kept while their estimated wall minutes (done items count 0) fit ``budget_min``; a sweep is dropped
    with its training. A ``ledger`` (rsdet/report/mini_ledger.py) is resolved against the items here:
    those it may stand in for count as done."""
    mode = MODES[mode] if isinstance(mode, str) else mode
    only = {t.upper() if t.upper().startswith("S") else f"S{t}" for t in only} if only else None
    kept, dropped, total = [], [], 0.0
    trained = set()
    items = items_for(mode, only)
    if ledger is not None and root is not None:
        ledger.resolve(items, Path(root))
    for it in items:
        is_done = root is not None and it.done(root, ledger)
        cost = 0.0 if is_done else it.wall_minutes(jobs)
        orphan = it.kind == "sweep" and it.name not in trained
        if total + cost <= budget_min + 1e-9 and not orphan:
            kept.append(it)
            total += cost
            if it.kind == "train":
                trained.add(it.name)
        else:
            dropped.append(it)
    return kept, dropped


def estimate(items: list[Item], root: Path | None = None, jobs: int = 1, ledger=None) -> float:
    return sum(0.0 if root is not None and it.done(root, ledger) else it.wall_minutes(jobs) for it in items)


def per_table(items: list[Item], root: Path | None = None, jobs: int = 1, ledger=None) -> dict[str, dict]:
    """{table: {"train": n, "sweep": n, "bench": n, "done": n, "minutes": wall minutes left}} billed to the
    first table that uses each item."""
    out: dict[str, dict] = {}
    for it in items:
        t = (it.tables[0] if it.tables else it.table).upper()
        row = out.setdefault(t, {"train": 0, "sweep": 0, "bench": 0, "done": 0, "minutes": 0.0})
        row[it.kind] += 1
        if root is not None and it.done(root, ledger):
            row["done"] += 1
        else:
            row["minutes"] += it.wall_minutes(jobs)
    return out


def format_plan(kept: list[Item], dropped: list[Item], budget_min: float, root: Path | None = None,
                jobs: int = 1, items: bool = True, mode: str = "full", ledger=None) -> str:
    how = f"{jobs} trainings at a time" if jobs > 1 else "one training at a time"
    seeds = MODES[mode].seeds if mode in MODES else ()
    budget = f"budget {budget_min:g} min" if budget_min < 1e8 else "no budget"
    lines = [f"paper-mini plan ({mode}, seeds {', '.join(map(str, seeds))}): {len(kept)} items, estimated "
             f"{estimate(kept, root, jobs, ledger):.1f} min ({budget}, 2 CPU cores, {how}; sweeps and "
             "the benchmark alone)", "", "| table | trainings | sweeps | benchmark | done | minutes |",
             "|---|---|---|---|---|---|"]
    from rsdet.report.mini_cells import TABLES  # noqa: PLC0415

    rows = per_table(kept, root, jobs, ledger)
    for t in [*TABLES, *sorted(set(rows) - set(TABLES))]:
        if t in rows:
            r = rows[t]
            lines.append(f"| {t} | {r['train']} | {r['sweep']} | {r['bench']} | {r['done']} | {r['minutes']:.1f} |")
    lines.append("(tables missing above take their runs from another table's: S7 from S8 and S11, S10 from S8)")
    if ledger is not None:
        reused = sum(1 for it in kept if root is not None and not it.done(root) and it.done(root, ledger))
        if reused:
            lines.append(f"{reused} items come from the ledger in {ledger.folder} (finished in an earlier checkout "
                         "by the same code; `--no-ledger` runs them again)")
        stale = ledger.stale(kept)
        if stale:
            lines.append(f"{len(stale)} ledger items are run again: their command or code differs from this "
                         f"checkout's (code {ledger.code}): " + ", ".join(stale[:5]) + (" …" if len(stale) > 5 else ""))
    if items:
        lines.append("")
        for it in kept:
            if root is not None and it.done(root):
                state = "done, skipped"
            elif root is not None and it.done(root, ledger):
                state = "in the ledger"
            else:
                state = f"{it.wall_minutes(jobs):.2f} min"
            lines.append(f"  [{it.table:>3}] {state:>14}  {it.describe()}")
    if dropped:
        lines.append(f"dropped to fit the budget ({estimate(dropped, jobs=jobs):.1f} min): "
                     + "; ".join(f"{it.name}" + (f" ({it.kind})" if it.kind != "train" else "") for it in dropped))
    return "\n".join(lines)


def scripts_dir() -> Path:
    """scripts/ of the checkout rsdet runs from (Table S9's benchmark lives there)."""
    import rsdet  # noqa: PLC0415

    return Path(rsdet.__file__).resolve().parent.parent / "scripts"


def command(it: Item, root: Path) -> list[str]:
    d = it.run_dir(root)
    if it.kind == "bench":
        return [sys.executable, str(scripts_dir() / BENCH_SCRIPT), "--json", str(d / "bench.json"),
                *bench_args(it.bench)]
    if it.kind == "sweep":
        return [sys.executable, "-m", "rsdet", "evaluate", str(d), "--score-thresholds", it.sweep]
    cmd = [sys.executable, "-m", "rsdet", "train", *it.overrides, *COMMON, f"hydra.run.dir={d}"]
    if (d / "checkpoints" / "last.pt").is_file():
        cmd.append("resume=true")  # an interrupted paper-mini continues the run
    return cmd


def execute(items: list[Item], root: Path, extra: list[str] | None = None, log=print, jobs: int = 1,
            ledger=None) -> list[str]:
    """Run the items that are not done; return the failures (the rest go on).

    Trainings run ``jobs`` at a time, each with ``cpu_count // jobs`` torch threads (two one-thread
    trainings on 2 cores finish sooner than two two-thread ones in a row: rsdet/report/mini_settings.py).
    Sweeps and the benchmark come after every training, one at a time, because they time inference
    and iterations.
    """
    failures = []
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    jobs = max(1, int(jobs))
    train_env = dict(env)
    if jobs > 1:
        threads = str(max(1, (os.cpu_count() or jobs) // jobs))
        train_env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OMP_WAIT_POLICY="PASSIVE")
    numbered = list(enumerate(items, 1))
    pending = [(k, it) for k, it in numbered if it.kind == "train"] + [(k, it) for k, it in numbered
                                                                       if it.kind != "train"]
    running: list[tuple[int, Item, subprocess.Popen, _dt.datetime]] = []

    def finish(entry) -> None:
        k, it, proc, start = entry
        rc = proc.wait()
        log(f"    [{k}/{len(items)}] exit {rc} after {(_dt.datetime.now() - start).total_seconds() / 60:.1f} min")
        if rc != 0:
            failures.append(f"{it.describe()} (exit {rc}; log in {it.run_dir(root)})")

    for k, it in pending:
        if it.done(root):
            log(f"[{k}/{len(items)}] done already: {it.describe()}")
            continue
        if it.done(root, ledger):
            log(f"[{k}/{len(items)}] in the ledger ({ledger.runs[it.ledger_id].get('finished', '')}): {it.describe()}")
            continue
        alone = it.kind != "train"
        limit = 1 if alone else jobs
        while len(running) >= limit or (alone and running):
            finished = next((e for e in running if e[2].poll() is not None), None)
            if finished is None:
                _time.sleep(0.5)
                continue
            running.remove(finished)
            finish(finished)
        cmd = command(it, root) + (list(extra or []) if it.kind == "train" else [])
        if it.kind == "bench":
            it.run_dir(root).mkdir(parents=True, exist_ok=True)
        log(f"[{k}/{len(items)}] {' '.join(cmd[2:] if it.kind != 'bench' else cmd[1:])}")
        proc = subprocess.Popen(cmd, env=env if alone else train_env,
                                stdout=subprocess.DEVNULL if it.kind == "train" else None)
        running.append((k, it, proc, _dt.datetime.now()))
    for entry in running:
        finish(entry)
    return failures


# Back-compatible entry points: the document and the README block live in rsdet/report/mini_doc.py
def write_document(*args, **kwargs):
    from rsdet.report.mini_doc import write_document as _write  # noqa: PLC0415

    return _write(*args, **kwargs)


def update_readme(*args, **kwargs):
    from rsdet.report.mini_doc import update_readme as _update  # noqa: PLC0415

    return _update(*args, **kwargs)
