"""paper-mini's plan (budget, --only, resumable) and generated document; the baseline lr grid's block."""

import os
import re
import runpy
import sys
from pathlib import Path

import pytest

from rsdet.report import mini, tuning
from rsdet.report.plots import is_png
from paper_fakes import box, fab_run, history, sweep

REPO = Path(__file__).resolve().parents[2]


def test_plan_fits_the_budget_in_priority_order_and_keeps_sweeps_with_their_trainings():
    kept, dropped = mini.plan(75, yolact=False)
    assert mini.estimate(kept) <= 75 and not dropped
    assert [it.table for it in kept[:8]] == ["s8"] * 8  # Table S8 first
    assert {it.table for it in kept} == {"s8", "s11", "s4", "s1", "s3"}
    sweeps = [it for it in kept if it.sweep]
    assert {it.name for it in sweeps} == {"s8/rs_none_seed0", "s8/ce_random_seed0", "s8/rs_none_seed1",
                                          "s8/ce_random_seed1"}
    small, dropped = mini.plan(12, only={"s8", "s11"}, yolact=False)
    assert mini.estimate(small) <= 12 and dropped
    trained = {it.name for it in small if not it.sweep}
    assert all(it.name in trained for it in small if it.sweep)  # never a sweep without its training
    assert all(it.table in ("s8", "s11") for it in small + dropped)
    sweeps_only, _ = mini.plan(1000, only={"s10"}, seeds=1, yolact=False)  # S10 = the S11 sweeps + their runs
    assert [(it.table, bool(it.sweep)) for it in sweeps_only] == [("s8", False)] * 2 + [("s11", True)] * 2
    full, dropped = mini.plan(75, yolact=True)  # S6's first seed comes before S1/S3's second; what is left over
    assert mini.estimate(full) <= 75 and [it.name for it in dropped] == ["s3/rank_1.0_seed1", "s6/binary_seed1",
                                                                         "s6/iou_seed1"]
    assert [it.name for it in full].index("s6/iou_seed0") < [it.name for it in full].index("s1/none_seed1")
    parallel, dropped = mini.plan(75, yolact=True, jobs=2)  # two trainings at a time: everything fits
    assert not dropped and len(parallel) == len(full) + 3
    assert mini.estimate(parallel, jobs=2) == pytest.approx(sum(
        it.minutes if it.sweep else it.minutes * mini.PARALLEL_SLOWDOWN / 2 for it in parallel))
    with_yolact, _ = mini.plan(1000, only={"s6"}, yolact=True)
    assert [it.detector for it in with_yolact] == ["yolact"] * 4
    assert "detector=yolact" in with_yolact[0].describe()


def test_done_items_cost_nothing_and_resume_from_a_checkpoint(tmp_path):
    items, _ = mini.plan(75, only={"s8"}, seeds=1, yolact=False)
    first = items[0]
    fab_run(first.run_dir(tmp_path), loss="rs", metrics=box(0.4))
    assert first.done(tmp_path) and not items[1].done(tmp_path)
    assert mini.estimate(items, tmp_path) == pytest.approx(mini.estimate(items[1:]))
    assert "done, skipped" in mini.format_plan(items, [], 75, tmp_path)
    (items[1].run_dir(tmp_path) / "checkpoints").mkdir(parents=True)
    (items[1].run_dir(tmp_path) / "checkpoints" / "last.pt").write_bytes(b"x")
    cmd = mini.command(items[1], tmp_path)
    assert cmd[-1] == "resume=true" and f"hydra.run.dir={items[1].run_dir(tmp_path)}" in cmd


def test_dry_run_prints_the_plan_and_its_estimate(capsys, tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        mod = runpy.run_path(str(REPO / "scripts" / "paper_mini.py"), run_name="paper_mini")
        # an empty root: runs a developer made under outputs/paper-mini must not count as done here
        assert mod["main"](["--dry-run", "--only", "s8", "--seeds", "1", "--budget-min", "6", "--jobs", "1",
                            "--root", str(tmp_path)]) == 0
    finally:
        sys.path.remove(str(REPO / "scripts"))
    out = capsys.readouterr().out
    assert re.search(r"paper-mini plan: 2 items, estimated 5\.5 min \(budget 6 min", out)
    assert "dropped to fit the budget" in out and "rsdet train loss=rs sampler=random seed=0" in out


def _fake_paper_mini(root):
    for seed in (0, 1):
        for loss, sampler, ap in (("rs", "random", 0.47), ("rs", "none", 0.48), ("ce", "random", 0.28),
                                  ("ce", "none", 0.24)):
            s = sweep([ap] * 4 + [ap * 0.99, ap * 0.98, ap * 0.7] if loss == "rs" else
                      [ap, ap, ap * 0.95, ap * 0.8, ap * 0.5, ap * 0.3, ap * 0.1], [5.0 + k for k in range(7)])
            fab_run(root / "s8" / f"{loss}_{sampler}_seed{seed}", loss=loss, seed=seed,
                    sampler={"rpn": sampler, "rcnn": sampler}, metrics=box(ap + 0.005 * seed),
                    history=history(rpn_task=3.0 if sampler == "random" else 2000.0),
                    sweep=s if (loss, sampler) in (("rs", "none"), ("ce", "random")) else None)
    for delta, ap in ((0.25, 0.38), (0.5, 0.40), (1.0, 0.39)):
        fab_run(root / "s4" / f"delta{delta}", detector="atss", loss_cfg={"delta": delta}, metrics=box(ap))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One generated document (figures take a few seconds) shared by the document tests."""
    tmp = tmp_path_factory.mktemp("mini")
    root, doc = tmp / "runs", tmp / "docs" / "paper-mini.md"
    _fake_paper_mini(root)
    mini.write_document(root, doc, "python scripts/paper_mini.py", plan_text="PLAN", failures=["x (exit 1)"])
    return tmp, doc


def test_document_has_every_table_the_papers_numbers_verdicts_and_figures(generated):
    _, doc = generated
    text = doc.read_text()
    assert text.startswith("<!-- GENERATED by scripts/paper_mini.py")
    for name in mini.TABLES:
        assert f"## Table {name}:" in text
    assert "| S8 | RS Loss is robust to removing the samplers while cross-entropy degrades (Table S8) | holds |" in text
    assert "| S11 |" in text and "| S4 | δ_RS has a mild optimum around 0.5 (Table S4) | holds |" in text
    assert "| S3 |" in text and "not tested (runs missing)" in text
    assert "| RS Loss (Ours) | None | None | 48.2 ± 0.4 | 39.6 | +8.6 |" in text  # Loss | RPN | R-CNN as printed
    assert "Runs that failed:** x (exit 1)" in text and "PLAN" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "paper-mini/s8_samplers.png" in links and "paper-mini/s11_thresholds.png" in links
    assert "paper-mini/s4_delta_rs.png" in links and any("/curves/" in link for link in links)
    assert all(is_png(doc.parent / link) for link in links)


def test_update_readme_fills_the_marked_block(generated):
    tmp_path, doc = generated
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{mini.README_BEGIN}\nold\n{mini.README_END}\nafter\n")
    mini.update_readme(readme, Path("docs/paper-mini.md"))
    text = readme.read_text()
    assert "\nold\n" not in text and text.endswith("after\n") and "**Finding (holds):**" in text
    assert "](docs/paper-mini/s8_samplers.png)" in text and "48.2 ± 0.4" in text
    assert doc.is_file()


def test_baseline_grid_picks_the_best_lr_and_rewrites_only_its_block(tmp_path):
    items = tuning.grid_items(("ce", "focal"), (0.0005, 0.001), seeds=1)
    assert [it.describe() for it in items][:2] == ["rsdet train loss=ce schedule.lr=0.0005 seed=0 eval.every_epochs=1",
                                                  "rsdet train loss=ce schedule.lr=0.001 seed=0 eval.every_epochs=1"]
    assert items[0].minutes == pytest.approx(mini.TRAIN_MINUTES["faster_rcnn"] + mini.OVERHEAD_MINUTES
                                             + tuning.EPOCH_EVAL_MINUTES)
    for it, ap in zip(items, (0.20, 0.25, 0.30, None)):
        if ap is not None:
            fab_run(it.run_dir(tmp_path), loss=it.overrides[0].split("=")[1], metrics=box(ap))
    curves = {}
    res = tuning.results(items, tmp_path, curves)
    assert res["ce"] == {0.0005: [20.0], 0.001: [25.0]} and res["focal"][0.001] == []
    assert tuning.best(res["ce"]) == (0.001, 25.0) and tuning.best(res["focal"]) == (0.0005, 30.0)
    doc = tmp_path / "baselines.md"
    doc.write_text("# Baselines\n\nhand-written notes\n")
    tuning.write_block(doc, tuning.block(res, (0.0005, 0.001), "cmd", curves=curves))
    first = doc.read_text()
    assert "hand-written notes" in first and "| ce | 20.0 | 25.0 | 0.001 | 25.0 | 25.0 | — |" in first
    assert "| focal | 30.0 | — | 0.0005 | 30.0 | 30.0 | — |" in first
    tuning.write_block(doc, tuning.block({"ce": {0.0005: [21.0]}}, (0.0005,), "cmd2"))
    second = doc.read_text()
    assert second.count(tuning.BEGIN) == 1 and "| ce | 21.0 | 0.0005 | 21.0 | — | — |" in second
    assert "hand-written notes" in second and "focal" not in second


def test_ap_curve_and_where_it_stops_rising(tmp_path):
    rec = fab_run(tmp_path / "r", loss="ce", metrics=box(0.26))
    rec.update(iteration=900)
    for epoch, ap in ((1, 0.10), (2, 0.20), (3, 0.252), (4, 0.255)):
        rec.append_eval({"epoch": epoch, "iteration": 200 * epoch, "bbox": {"AP": ap}})
    curve = tuning.ap_curve(rec)
    assert [it for it, _ in curve] == [200, 400, 600, 800, 900]
    assert [round(ap, 1) for _, ap in curve] == [10.0, 20.0, 25.2, 25.5, 26.0]
    assert tuning.stops_rising(curve) == 600  # 25.2 and everything after it is within 1 AP of the best, 26.0
    assert tuning.stops_rising([(200, 10.0), (400, 29.5), (600, 25.0), (900, 30.0)]) == 900  # the dip counts
    assert tuning.stops_rising([(200, 10.0), (400, 20.0), (900, 30.0)]) == 900  # still rising at the end
    assert tuning.stops_rising([(900, 30.0)]) is None


def test_execute_runs_trainings_in_parallel_and_sweeps_alone(tmp_path, monkeypatch):
    """--jobs 2: two trainings overlap, never three; a sweep starts only after every training ended,
    and each parallel training gets cores/jobs torch threads."""
    log = tmp_path / "events.txt"
    script = ("import os, sys, time; f = open(sys.argv[2], 'a'); "
              "f.write(f'start {sys.argv[1]} {time.time()} {os.environ[\"OMP_NUM_THREADS\"]}\\n'); f.flush(); "
              "time.sleep(0.4); f.write(f'end {sys.argv[1]} {time.time()} 0\\n')")
    monkeypatch.setattr(mini, "command", lambda it, root: [sys.executable, "-c", script, it.name.replace("/", "_"),
                                                            str(log)])
    items = [mini.Item("s8", f"s8/t{k}", [f"seed={k}"]) for k in range(3)]
    items.insert(1, mini.Item("s11", "s8/t0", sweep="0.1"))   # listed early, must still run last
    failures = mini.execute(items, tmp_path / "root", log=lambda *_: None, jobs=2)
    assert failures == []
    events = [ln.split() for ln in log.read_text().splitlines()]
    assert len(events) == 8
    live, peak = 0, 0
    for kind, _name, _t, _threads in sorted(events, key=lambda e: float(e[2])):
        live += 1 if kind == "start" else -1
        peak = max(peak, live)
    assert peak == 2
    assert events[-2][0] == "start" and events[-1][0] == "end"      # the sweep: alone, last
    sweep_start = float(events[-2][2])
    train_ends = [float(e[2]) for e in events[:-2] if e[0] == "end"]
    assert len(train_ends) == 3 and sweep_start >= max(train_ends)
    threads = {e[3] for e in events if e[0] == "start"}
    assert threads == {str(max(1, (os.cpu_count() or 2) // 2))}
