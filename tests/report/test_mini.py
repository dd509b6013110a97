"""paper-mini's plan: every key cell with n ≥ 3, shared cells only where the configs are equal, the budget
(full ≤ 5 h, quick ≤ 45 min), resumability, the dry run; its parallel execution; the baseline lr grid."""

import json
import os
import re
import runpy
import sys
from pathlib import Path

import pytest

from rsdet.report import mini, mini_cells, tuning
from rsdet.report import mini_settings as S
from rsdet.report.paper import column_key, load_paper_tables
from paper_fakes import box, fab_run

REPO = Path(__file__).resolve().parents[2]

#: Key cells of the issue: rows × columns of every ablation table that paper-mini must fill
KEY_CELLS = {"S1": 25, "S3": 6, "S4": 6, "S8": 27, "S5": 8, "S2": 4, "S11": 84, "S7": 28}


@pytest.fixture(scope="module")
def full():
    kept, dropped = mini.plan(mode="full", root=None, jobs=2)
    return kept, dropped


def test_the_full_plan_covers_every_key_cell_with_three_seeds_within_five_hours(full):
    kept, dropped = full
    assert not dropped and mini.estimate(kept, jobs=2) <= S.DEFAULT_BUDGET_MIN == 300
    trained = {it.name for it in kept if it.kind == "train"}
    swept = {it.name: it.sweep for it in kept if it.kind == "sweep"}
    bindings = mini_cells.catalogue()
    counts = {}
    for b in bindings:
        counts[b.table] = counts.get(b.table, 0) + 1
        if b.setting is None:
            continue
        dirs = [str(mini_cells.run_dir(Path(), b.setting, s)) for s in S.SEEDS]
        assert len(S.SEEDS) >= 3 and all(d in trained for d in dirs), b
        if b.threshold is not None:  # a Table S11 row: each seed's run swept at that threshold
            assert all(f"{b.threshold:g}" in swept[d].split(",") for d in dirs), b
    for table, n in KEY_CELLS.items():
        assert counts[table] == n, table
    # S6: 4 labels x (3 mask + 3 box) columns; S9: every detector rsdet has, standard and RS
    assert counts["S6"] == 24
    s9 = {b.bench_detector for b in bindings if b.table == "S9"}
    assert s9 == mini_cells.available_detectors() & {"faster_rcnn", "cascade_rcnn", "atss", "paa", "mask_rcnn",
                                                        "yolact", "solov2_light"}
    assert sum(it.kind == "bench" for it in kept) == 1
    assert S.BENCH["rounds"] >= 3 and S.BENCH["loss_sizes"]


def test_cells_share_runs_only_where_the_paper_s_cells_are_the_same_config():
    by_key = {b.key: b.setting for b in mini_cells.catalogue()}
    score_value = by_key[("S1", "Score-based [7]", "Self-balance (SB) / value")]
    assert by_key[("S4", "AP", "0.50")] == score_value                       # δ_RS 0.5 = S1's recipe cell
    rank_value = by_key[("S1", "Ranking-based [13]", "Self-balance (SB) / value")]
    assert by_key[("S3", "AP", "1.50")] == rank_value                        # S1's ranking row uses δ_loc 1.5
    assert rank_value.config["loss.delta_loc"] == 1.5 and "loss.delta_loc=1.5" in rank_value.overrides()
    assert by_key[("S3", "AP", "Default")] != rank_value
    rs_none = by_key[("S8", "RS Loss (Ours) | None | None", "AP")]
    assert by_key[("S7", "COCO | None | None", "AP")] == rs_none
    assert by_key[("S10", "Object Detection | RS-Faster R-CNN | R-50 | 12 | –", "fps")] == rs_none
    assert by_key[("S2", "RS Loss", "Standard Training / Epoch 12")] != rs_none   # evaluates every epoch
    lvis = by_key[("S7", "LVIS | None | None", "actual pos:neg task ratio / R-CNN")]
    assert lvis == by_key[("S11", "0.60", "RS-Mask R-CNN / AP_mask")] and lvis.setup == "mask_lvis"
    overrides = " ".join(lvis.overrides())
    assert "detector=mask_rcnn" in overrides and "dataset=shapes_lvis" in overrides
    # a constant-λ cell and the value cell of one weighting are different trainings
    assert by_key[("S1", "No prioritization", "Constant weighting / 2")].config["loss.box_weight"] == 2.0
    # every setting's folder name is unique
    settings = mini_cells.settings_in_order(mini_cells.catalogue())
    assert len({s.name for s in settings}) == len(settings) == 54


def test_what_paper_mini_does_not_reproduce_is_listed_with_its_reason():
    s2 = mini_cells.not_reproduced("S2")
    assert len(s2) == 4 and all("heavy training" in why for *_, why in s2)
    assert all("does not reproduce" in why or "LVIS-style" in why for *_, why in mini_cells.not_reproduced("S10"))
    spec = load_paper_tables()["S8"]
    assert not mini_cells.not_reproduced("S8") and len(spec["rows"]) * len(spec["cols"]) == 27


def test_per_table_minutes_and_the_budget_drops_the_last_seed_first(full):
    kept, _ = full
    rows = mini.per_table(kept, jobs=2)
    assert set(rows) == {"S8", "S2", "S5", "S11", "S10", "S1", "S3", "S4", "S6", "S9"}
    assert rows["S1"]["train"] == 75 and rows["S3"]["train"] == 15 and rows["S4"]["train"] == 15  # shared cells
    assert rows["S11"] == {"train": 6, "sweep": 6, "bench": 0, "done": 0, "minutes": pytest.approx(
        sum(it.wall_minutes(2) for it in kept if it.tables and it.tables[0] == "S11"))}
    assert sum(r["minutes"] for r in rows.values()) == pytest.approx(mini.estimate(kept, jobs=2))
    small, dropped = mini.plan(100, mode="full", jobs=2)
    assert mini.estimate(small, jobs=2) <= 100 and dropped
    assert not any(it.name.endswith("seed0") for it in dropped)          # every cell keeps its first seed
    assert any(it.name.endswith("seed2") for it in dropped)
    assert all(any(k.name == it.name and k.kind == "train" for k in small) for it in small if it.kind == "sweep")


def test_an_item_costs_its_iterations_at_the_measured_rate():
    it = next(i for i in mini.items_for(mini.MODES["full"]) if i.detector == "atss")
    want = (600 * S.SEC_PER_ITER[("atss", "shapes")] + S.EVAL_SECONDS["atss"] + S.OVERHEAD_SECONDS) / 60
    assert it.iters == 600 and it.minutes == pytest.approx(want)
    assert it.wall_minutes(2) == pytest.approx(want * S.PARALLEL_SLOWDOWN / 2)
    s2 = next(i for i in mini.items_for(mini.MODES["full"], {"S2"}) if i.kind == "train")
    assert s2.epoch_evals == 4 and "eval.every_epochs=1" in s2.overrides   # after epochs 1-4 of 4.5


def test_quick_is_one_finding_per_table_with_two_seeds_in_45_minutes():
    kept, dropped = mini.plan(1e9, mode="quick", jobs=2)
    assert not dropped and mini.estimate(kept, jobs=2) <= 45
    tables = {t for it in kept for t in it.tables}
    assert tables >= {"S1", "S2", "S3", "S4", "S5", "S6", "S8", "S9", "S11"}  # S7 reads S8's quick runs
    assert {it.name.rsplit("seed", 1)[1] for it in kept if it.kind == "train"} == {"0", "1"}
    atss = next(it for it in kept if it.detector == "atss")
    assert atss.iters == 300 and "schedule.max_iters=300" in atss.overrides
    sweep = next(it for it in kept if it.kind == "sweep")
    assert sweep.sweep == "0.0001,0.6"              # only the thresholds of its finding
    assert mini.MODES["quick"].root != mini.MODES["full"].root


def test_smoke_runs_every_cell_once_at_a_tiny_size():
    kept, _ = mini.plan(1e9, mode="smoke", jobs=2)
    trains = [it for it in kept if it.kind == "train"]
    assert len(trains) == 54 and all("schedule.max_iters=5" in it.overrides for it in trains)
    assert all("eval.max_images=4" in it.overrides and "seed=0" in it.overrides for it in trains)
    assert next(it for it in kept if it.kind == "bench").bench["detectors"] == ("faster_rcnn",)


def test_done_items_cost_nothing_and_resume_from_a_checkpoint(tmp_path):
    items, _ = mini.plan(1e9, only={"S8"}, mode="full")
    first = items[0]
    fab_run(first.run_dir(tmp_path), loss="ce", metrics=box(0.3))
    assert first.done(tmp_path) and not items[1].done(tmp_path)
    assert mini.estimate(items, tmp_path) == pytest.approx(mini.estimate(items[1:]))
    assert "done, skipped" in mini.format_plan(items, [], 75, tmp_path)
    (items[1].run_dir(tmp_path) / "checkpoints").mkdir(parents=True)
    (items[1].run_dir(tmp_path) / "checkpoints" / "last.pt").write_bytes(b"x")
    cmd = mini.command(items[1], tmp_path)
    assert cmd[-1] == "resume=true" and f"hydra.run.dir={items[1].run_dir(tmp_path)}" in cmd
    sweep = mini.Item("s11", "a/seed0", sweep="0.1,0.6", detector="mask_rcnn")
    d = sweep.run_dir(tmp_path)
    d.mkdir(parents=True)
    (d / "threshold_sweep.json").write_text('{"rows": [{"threshold": 0.1}, {"threshold": 0.6}]}')
    assert not sweep.done(tmp_path)                 # a mask detector's sweep needs its mask file too
    (d / "threshold_sweep_segm.json").write_text('{"rows": [{"threshold": 0.1}]}')
    assert not sweep.done(tmp_path)                 # ... with every threshold
    (d / "threshold_sweep_segm.json").write_text('{"rows": [{"threshold": 0.1}, {"threshold": 0.6}]}')
    assert sweep.done(tmp_path)
    bench = mini.Item("s9", "s9", bench=dict(S.QUICK_BENCH), extra_minutes=1.0)
    (tmp_path / "s9").mkdir()
    (tmp_path / "s9" / "bench.json").write_text(json.dumps({"settings": mini._jsonable(S.BENCH)}))
    assert not bench.done(tmp_path)                 # written with other settings (the full run's)
    (tmp_path / "s9" / "bench.json").write_text(json.dumps({"settings": mini._jsonable(S.QUICK_BENCH)}))
    assert bench.done(tmp_path) and mini.command(bench, tmp_path)[1].endswith("bench_table_s9.py")


def test_dry_run_prints_the_plan_per_table_and_its_estimate(capsys, tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        mod = runpy.run_path(str(REPO / "scripts" / "paper_mini.py"), run_name="paper_mini")
        # an empty root: runs a developer made under outputs/paper-mini must not count as done here
        # ... nor items of the committed ledger (docs/paper-mini/runs.csv): this test counts the whole plan
        assert mod["main"](["--dry-run", "--only", "s5", "--jobs", "1", "--root", str(tmp_path), "--no-ledger"]) == 0
        with pytest.raises(SystemExit):
            mod["main"](["--dry-run", "--only", "s12"])
    finally:
        sys.path.remove(str(REPO / "scripts"))
    out = capsys.readouterr()
    want = sum(it.minutes for it in mini.plan(300, {"S5"}, jobs=1)[0])
    assert re.search(rf"paper-mini plan \(full, seeds 0, 1, 2\): 6 items, estimated {want:.1f} min \(budget 300", out.out)
    assert "| S5 | 6 | 0 | 0 | 0 |" in out.out
    assert "rsdet train detector=cascade_rcnn dataset=shapes loss=ce schedule.max_iters=600 seed=0" in out.out
    assert "not a paper-mini table" in out.err


def test_execute_runs_trainings_in_parallel_and_sweeps_alone(tmp_path, monkeypatch):
    """--jobs 2: two trainings overlap, never three; a sweep starts only after every training ended,
    and each parallel training gets cores/jobs torch threads."""
    log = tmp_path / "events.txt"
    script = ("import os, sys, time; f = open(sys.argv[2], 'a'); "
              "f.write(f'start {sys.argv[1]} {time.time()} {os.environ.get(\"OMP_NUM_THREADS\", \"-\")}\\n'); "
              "f.flush(); time.sleep(0.4); f.write(f'end {sys.argv[1]} {time.time()} 0\\n')")
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
    starts = sorted((e for e in events if e[0] == "start"), key=lambda e: float(e[2]))
    assert {e[3] for e in starts[:3]} == {str(max(1, (os.cpu_count() or 2) // 2))}   # the trainings


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


def test_every_table_cell_key_is_a_paper_column():
    tables = load_paper_tables()
    for b in mini_cells.catalogue():
        spec = tables[b.table]
        assert b.row in [r["label"] for r in spec["rows"]] and b.col in [column_key(c) for c in spec["cols"]]
