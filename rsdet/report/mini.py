"""`make paper-mini`: CPU-sized versions of the supplementary's ablations, and docs/paper-mini.md.

The plan is a list of trainings (``rsdet train`` with overrides, one run directory each) and
score-threshold sweeps (``rsdet evaluate RUN_DIR --score-thresholds``), in priority order, each with an
estimated duration on 2 CPU cores; :func:`plan` keeps the items that fit the budget. Items whose record
is complete are skipped, so an interrupted paper-mini resumes where it stopped. :func:`write_document`
then lays every table out (ours, the paper's, the difference), draws the figures and states per table
whether the paper's finding holds (rsdet/report/findings.py).
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

from rsdet.errors import RsdetError
from rsdet.records import RunRecord, find_runs

#: Minutes per training at the CPU preset on 2 cores (measured: Faster R-CNN 900 iterations, ATSS 1300),
#: including the final evaluation; YOLACT 2400 iterations with its mask branch (docs/detectors.md).
TRAIN_MINUTES = {"faster_rcnn": 2.6, "atss": 2.9, "yolact": 6.8}
#: Process start, config composition and data loading per `rsdet train` / `rsdet evaluate` call
OVERHEAD_MINUTES = 0.15
#: One score-threshold sweep: inference at each threshold plus the fps measurement (7 thresholds)
SWEEP_MINUTES = 0.7
THRESHOLDS = "1e-4,1e-3,1e-2,0.1,0.4,0.6,0.8"
DEFAULT_BUDGET = 75.0
#: How much longer one training takes with one thread beside another training than alone with two
#: threads (measured on the 2-core CPU: Faster R-CNN 0.25 s per iteration against 0.16 s): two parallel
#: jobs finish 2 / 1.5 = 1.33x sooner than the same trainings one after the other
PARALLEL_SLOWDOWN = 1.5
DEFAULT_JOBS = 2
#: Tables in the document's order
TABLES = ("S8", "S7", "S11", "S10", "S4", "S1", "S3", "S6", "S9")
COMMON = ["logger=none"]
#: Tables made from another table's runs: S7 and S9 read the S8 trainings, S10 the S11 sweeps
ALIASES = {"s7": "s8", "s9": "s8", "s10": "s11"}


@dataclass
class Item:
    """One training (``sweep`` None) or one threshold sweep of the training ``run`` (``sweep`` set)."""

    table: str
    name: str                       # run directory under the output root: <table>/<name>
    overrides: list[str] = field(default_factory=list)
    detector: str = "faster_rcnn"
    sweep: str | None = None        # thresholds for `rsdet evaluate`; the item then evaluates `name`
    priority: int = 0               # lower first; items past the budget are dropped from the end
    extra_minutes: float = 0.0      # e.g. evaluations during training

    @property
    def minutes(self) -> float:
        base = SWEEP_MINUTES if self.sweep else TRAIN_MINUTES.get(self.detector, 3.0)
        return base + OVERHEAD_MINUTES + self.extra_minutes

    def wall_minutes(self, jobs: int = 1) -> float:
        """Its share of the wall time when trainings run ``jobs`` at a time (sweeps run alone)."""
        if self.sweep or jobs <= 1:
            return self.minutes
        return self.minutes * PARALLEL_SLOWDOWN / jobs

    def run_dir(self, root: Path) -> Path:
        return Path(root) / self.name

    def done(self, root: Path) -> bool:
        """A training is done when its record is completed with metrics; a sweep when its file exists."""
        d = self.run_dir(root)
        if self.sweep:
            return (d / "threshold_sweep.json").is_file()
        if not (d / "run.json").is_file():
            return False
        rec = RunRecord(d, create=False)
        return rec.status == "completed" and bool(rec.metrics)

    def describe(self) -> str:
        if self.sweep:
            return f"rsdet evaluate {self.name} --score-thresholds {self.sweep}"
        return "rsdet train " + " ".join(self.overrides)


def yolact_available() -> bool:
    """Whether this rsdet has a YOLACT detector (conf/detector/yolact.yaml); Table S6 needs it."""
    from rsdet.paths import conf_dir  # noqa: PLC0415

    return (conf_dir() / "detector" / "yolact.yaml").is_file()


def candidate_items(seeds: int = 2, yolact: bool | None = None) -> list[Item]:
    """Every item paper-mini would like to run, in priority order (see docs/paper-mini.md)."""
    items: list[Item] = []
    seed_list = list(range(seeds))
    # S8 (and S7 from the same runs' history): RS and CE x random/no samplers, Faster R-CNN
    for seed in seed_list:
        for loss in ("rs", "ce"):
            for sampler in ("random", "none"):
                items.append(Item("s8", f"s8/{loss}_{sampler}_seed{seed}",
                                  [f"loss={loss}", f"sampler={sampler}", f"seed={seed}"], priority=10 + seed))
    # S11 (and S10): threshold sweeps of each loss's recipe setting (RS without, CE with samplers)
    for seed in seed_list:
        for loss, sampler in (("rs", "none"), ("ce", "random")):
            items.append(Item("s11", f"s8/{loss}_{sampler}_seed{seed}", sweep=THRESHOLDS, priority=20 + seed))
    # S4 on RS-ATSS: δ_RS 0.25 / 0.5 / 1.0 (0.5 also fills S1's score-based/value cell)
    for seed in seed_list:
        for delta in (0.25, 0.5, 1.0):
            items.append(Item("s4", f"s4/delta{delta}_seed{seed}",
                              ["experiment=table_s4", f"loss.delta={delta}", f"seed={seed}"],
                              detector="atss", priority=30 + seed))
    # S1/S3 on RS-ATSS: no and ranking-based weighting (value balance); δ_loc 1.0 for the ranking weights
    for seed in seed_list:
        for name, extra in (("s1", ["loss.weighting=none"]), ("s1", ["loss.weighting=rank"]),
                            ("s3", ["loss.weighting=rank", "loss.delta_loc=1.0"])):
            tag = "_".join(e.split("=")[1] for e in extra)
            preset = "table_s1" if name == "s1" else "table_s3"
            items.append(Item(name, f"{name}/{tag}_seed{seed}",
                              [f"experiment={preset}", *extra, f"seed={seed}"],
                              detector="atss", priority=40 + 10 * seed))
    if yolact if yolact is not None else yolact_available():
        for seed in seed_list:
            for label in ("binary", "iou"):
                items.append(Item("s6", f"s6/{label}_seed{seed}",
                                  ["experiment=table_s6", "detector=yolact", f"loss.label={label}",
                                   f"seed={seed}"], detector="yolact", priority=45 + 10 * seed))
    return sorted(items, key=lambda it: it.priority)


def plan(budget_min: float = DEFAULT_BUDGET, only: set[str] | None = None, seeds: int = 2,
         yolact: bool | None = None, root: Path | None = None, jobs: int = 1) -> tuple[list[Item], list[Item]]:
    """(kept, dropped): the candidates of the ``only`` tables in priority order, kept while their
    estimated minutes (done items count 0) fit ``budget_min``; a sweep is dropped with its training."""
    items = candidate_items(seeds, yolact)
    if only:
        only = {ALIASES.get(t.lower(), t.lower()) for t in only}
        swept = {it.name for it in items if it.sweep and it.table in only}
        # a selected sweep brings the training it evaluates
        items = [it for it in items if it.table in only or (not it.sweep and it.name in swept)]
    kept, dropped, total = [], [], 0.0
    trained = set()
    for it in items:
        cost = 0.0 if root is not None and it.done(root) else it.wall_minutes(jobs)
        needs_training = it.sweep and it.name not in trained and not (root is not None and Item(
            it.table, it.name).done(root))
        if total + cost <= budget_min + 1e-9 and not needs_training:
            kept.append(it)
            total += cost
            if not it.sweep:
                trained.add(it.name)
        else:
            dropped.append(it)
    return kept, dropped


def estimate(items: list[Item], root: Path | None = None, jobs: int = 1) -> float:
    return sum(0.0 if root is not None and it.done(root) else it.wall_minutes(jobs) for it in items)


def format_plan(kept: list[Item], dropped: list[Item], budget_min: float, root: Path | None = None,
                jobs: int = 1) -> str:
    how = f"{jobs} trainings at a time" if jobs > 1 else "one training at a time"
    lines = [f"paper-mini plan: {len(kept)} items, estimated {estimate(kept, root, jobs):.1f} min "
             f"(budget {budget_min:g} min, 2 CPU cores, {how})"]
    for it in kept:
        state = "done, skipped" if root is not None and it.done(root) else f"{it.wall_minutes(jobs):.2f} min"
        lines.append(f"  [{it.table:>3}] {state:>14}  {it.describe()}")
    if dropped:
        lines.append(f"dropped to fit the budget ({estimate(dropped, jobs=jobs):.1f} min): "
                     + "; ".join(f"{it.table} {it.name}" + (" (sweep)" if it.sweep else "") for it in dropped))
    return "\n".join(lines)


def command(it: Item, root: Path) -> list[str]:
    d = it.run_dir(root)
    if it.sweep:
        return [sys.executable, "-m", "rsdet", "evaluate", str(d), "--score-thresholds", it.sweep]
    cmd = [sys.executable, "-m", "rsdet", "train", *it.overrides, *COMMON, f"hydra.run.dir={d}"]
    if (d / "checkpoints" / "last.pt").is_file():
        cmd.append("resume=true")  # an interrupted paper-mini continues the run
    return cmd


def execute(items: list[Item], root: Path, extra: list[str] | None = None, log=print, jobs: int = 1) -> list[str]:
    """Run the items that are not done; return the failures (the rest go on).

    Trainings run ``jobs`` at a time, each with ``cpu_count // jobs`` torch threads (two one-thread
    trainings on 2 cores finish sooner than two two-thread ones in a row: docs/paper-mini.md). The
    threshold sweeps come after every training, one at a time, because they measure fps.
    """
    failures = []
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    jobs = max(1, int(jobs))
    if jobs > 1:
        threads = str(max(1, (os.cpu_count() or jobs) // jobs))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OMP_WAIT_POLICY="PASSIVE")
    numbered = list(enumerate(items, 1))
    pending = [(k, it) for k, it in numbered if not it.sweep] + [(k, it) for k, it in numbered if it.sweep]
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
        # a sweep waits for every training (its own included) and runs alone
        limit = 1 if it.sweep else jobs
        while len(running) >= limit or (it.sweep and running):
            finished = next((e for e in running if e[2].poll() is not None), None)
            if finished is None:
                _time.sleep(0.5)
                continue
            running.remove(finished)
            finish(finished)
        cmd = command(it, root) + ([] if it.sweep else list(extra or []))
        log(f"[{k}/{len(items)}] {' '.join(cmd[2:])}")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL if not it.sweep else None)
        running.append((k, it, proc, _dt.datetime.now()))
    for entry in running:
        finish(entry)
    return failures


# ------------------------------------------------------------------------------------------ document
HEADER = """<!-- GENERATED by scripts/paper_mini.py: do not edit by hand. Regenerate with `{command}`. -->
# Paper-mini: the supplementary's ablations at CPU size

Generated {date} by `{command}` from the run records under `{root}` ({n_runs} runs). The runs use the CPU
preset (shallow random-init backbones, the embedded shapes data, a few minutes each) — the paper's numbers
are COCO/LVIS with ResNet-50 for 12 epochs, so absolute values differ by design; what can carry over is
the direction of each finding. Each table shows our mean ± std over seeds, the published value and the
difference (AP points; ratios as a factor). The verdicts are computed from the numbers by the rules in
`rsdet/report/findings.py`: two means within {same} AP are "the same", a drop of at least {drop} AP is a
"drop".
"""


def write_document(root: Path, out: Path, command_text: str, plan_text: str | None = None,
                   failures: list[str] | None = None) -> Path:
    """docs/paper-mini.md (and its figures in a folder named after it) from the runs under ``root``."""
    from rsdet.report.findings import finding
    from rsdet.report.paper_table import fill_table, label_columns, render, table_rows
    from rsdet.report.plots import figures_markdown, write_plots

    runs = find_runs(root) if Path(root).is_dir() else []
    out = Path(out)
    fig_dir = out.with_suffix("")  # docs/paper-mini/
    for stale in [*fig_dir.glob("*.png"), *fig_dir.glob("curves/*.png")]:  # the folder is generated too
        stale.unlink()
    from rsdet.report.findings import DROP_AP, SAME_AP

    parts = [HEADER.format(command=command_text, date=_dt.date.today().isoformat(), root=root, n_runs=len(runs),
                           same=SAME_AP, drop=DROP_AP)]
    summary = []
    body = []
    for name in TABLES:
        spec, cells, used = fill_table(runs, name)
        body.append(f"\n## Table {name}: {spec['title']}\n")
        verdict = finding(runs, name)
        if verdict is not None:
            body.append(verdict.sentence() + "\n\n")
            summary.append(f"| {name} | {verdict.claim} | {verdict.verdict()} |")
        if used == 0:
            body.append(f"_No run for this table in this paper-mini ({_why_missing(name)})._\n")
            continue
        header, rows = table_rows(spec, cells, paper=True)
        if name in ("S10", "S9"):  # keep the rows we can fill; the rest are other backbones/detectors
            k = label_columns(spec)
            rows = [r for r in rows if any(c != "—" for c in r[k::3])]
        body.append(render(header, rows, "md"))
        figs = [] if name == "S10" else write_plots(runs, name, fig_dir, stem=name.lower(), curves=name == "S8")
        # (S10's fps curve is S11's figure)
        plots = [f for f in figs if "/curves/" not in f.path.as_posix()]
        curves = [f for f in figs if "/curves/" in f.path.as_posix()]
        if plots:
            body.append("\n" + figures_markdown(plots, out.parent))
        if curves:
            body.append("\n<details><summary>Training curves of these runs (loss terms, learning rate, "
                        "pos:neg task ratio per stage)</summary>\n\n" + figures_markdown(curves, out.parent)
                        + "\n</details>\n")
    parts.append("\n## Summary\n\n| table | the paper's finding | on the embedded data |\n|---|---|---|\n"
                 + "\n".join(summary) + "\n")
    if failures:
        parts.append("\n**Runs that failed:** " + "; ".join(failures) + "\n")
    parts += body
    if plan_text:
        parts.append("\n## The plan that produced these runs\n\n```\n" + plan_text + "\n```\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(parts), encoding="utf-8")
    return out


def _why_missing(name: str) -> str:
    if name == "S6" and not yolact_available():
        return "this rsdet has no YOLACT detector: `detector=yolact` is not in conf/detector/"
    if name == "S10":
        return "needs an RS Faster R-CNN run with a threshold sweep"
    return "not in the plan's budget or --only selection"


# ------------------------------------------------------------------------------------------ README
README_BEGIN = "<!-- paper-mini:begin (written by scripts/paper_mini.py --update-readme) -->"
README_END = "<!-- paper-mini:end -->"


def update_readme(readme: Path, doc: Path, table: str = "S8") -> bool:
    """Replace the marked block of the README with one table and one figure of the generated document."""
    text = readme.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        raise RsdetError(f"{readme} has no paper-mini block; add the lines {README_BEGIN!r} and {README_END!r}")
    doc = Path(doc) if Path(doc).is_absolute() else readme.parent / doc
    doc_text = doc.read_text(encoding="utf-8")
    marker = f"\n## Table {table}:"
    start = doc_text.find(marker)
    if start < 0:
        raise RsdetError(f"{doc} has no Table {table} section; run paper-mini with {table.lower()} first")
    end = doc_text.find("\n## ", start + 1)
    section = doc_text[start:end if end > 0 else None]
    keep = [ln for ln in section.splitlines()
            if ln.startswith(("|", "**Finding")) or (ln.startswith("![") and "/curves/" not in ln)]
    rel = doc.parent.resolve().relative_to(readme.parent.resolve())

    def fix(ln: str) -> str:  # figure paths are relative to docs/; the README sits one level up
        return ln.replace("](", f"]({rel.as_posix()}/", 1) if ln.startswith("![") else ln

    finding_lines = [ln for ln in keep if ln.startswith("**Finding")]
    table_lines = [ln for ln in keep if ln.startswith("|")]
    figure_lines = [fix(ln) for ln in keep if ln.startswith("![")]
    block = "\n".join([README_BEGIN, f"_Table {table} and its figure from `{rel.as_posix()}/{doc.name}` (generated "
                        "by `make paper-mini`):_", "", *finding_lines, "", *table_lines, "", *figure_lines, README_END])
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(head + block + tail, encoding="utf-8")
    return True
