"""paper-mini's ledger (rsdet/report/mini_ledger.py): the per-seed values of finished items, committed
beside the document, stand in for run folders an earlier checkout had — only for the same command and code."""

import csv
import json
import shutil
import re
from pathlib import Path

import pytest

from rsdet.errors import RsdetError
from rsdet.report import mini, mini_doc, mini_ledger
from rsdet.report import mini_cells as C
from rsdet.report import mini_settings as S
from test_mini_doc import _fabricate


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open(encoding="utf-8")))


@pytest.fixture(scope="module")
def _once(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ledger")
    root, doc = tmp / "runs", tmp / "docs" / "paper-mini.md"
    _fabricate(root)
    bench = json.loads((root / "s9" / "bench.json").read_text())
    bench["settings"] = mini._jsonable(S.BENCH)  # noqa: SLF001 - written by the full run's benchmark
    (root / "s9" / "bench.json").write_text(json.dumps(bench))
    for f in root.glob("*/*/seed*/metrics.json"):  # the trainer's cost figures (the document's measured cost)
        m = json.loads(f.read_text())
        f.write_text(json.dumps({**m, "train_seconds": 90.0, "iterations": 900}))
    for f in root.glob("mask_lvis/*/seed*/threshold_sweep.json"):  # a mask detector's sweep writes both files
        shutil.copy(f, f.with_name("threshold_sweep_segm.json"))
    mini_doc.write_document(root, doc, "python scripts/paper_mini.py")
    return tmp


@pytest.fixture()
def written(_once, tmp_path):
    shutil.copytree(_once, tmp_path, dirs_exist_ok=True)
    return tmp_path / "runs", tmp_path / "docs" / "paper-mini.md"


def test_a_document_records_every_finished_item_and_each_value_it_gave(written):
    root, doc = written
    folder = doc.with_suffix("")
    runs = {r["item"]: r for r in _rows(folder / "runs.csv")}
    items = {it.ledger_id: it for it in mini.items_for(mini.MODES["full"])}
    done = {k for k, it in items.items() if it.done(root)}
    assert done and set(runs) == done                      # every finished item, nothing else
    code = mini_ledger.code_fingerprint()
    for k, row in runs.items():
        assert row["command"] == items[k].describe() and row["code"] == code and row["kind"] == items[k].kind
    assert any(k.endswith(" sweep") for k in runs) and "s9" in runs
    seeds = _rows(folder / "seeds.csv")
    cells = {(r["table"], r["row"], r["column"]): r for r in _rows(folder / "cells.csv")}
    # the ledger's values are the cells' replicates: their mean is cells.csv's mean
    by_cell: dict = {}
    for r in seeds:
        assert r["item"] in runs
        by_cell.setdefault((r["table"], r["row"], r["column"]), []).append(float(r["value"]))
    for key, vals in by_cell.items():
        assert float(cells[key]["mean"]) == pytest.approx(sum(vals) / len(vals), rel=1e-5)
        assert int(cells[key]["n"]) == len(vals)


def test_without_the_run_folders_the_ledger_gives_the_same_tables_findings_and_curves(written, tmp_path):
    root, doc = written
    folder = doc.with_suffix("")
    before = {n: (folder / n).read_text(encoding="utf-8") for n in ("cells.csv", "findings.csv")}
    curves = sorted(p.name for p in (folder / "curves").glob("*.png"))
    assert curves and "Measured cost" in doc.read_text(encoding="utf-8")
    shutil.rmtree(root)                                    # a later checkout: the ledger is all there is
    mini_doc.write_document(root, doc, "python scripts/paper_mini.py")
    for name, text in before.items():
        assert (folder / name).read_text(encoding="utf-8") == text
    assert sorted(p.name for p in (folder / "curves").glob("*.png")) == curves
    text = doc.read_text(encoding="utf-8")
    assert re.search(r"\(0 runs, and \d+ trainings of earlier checkouts from the ledger \[", text)
    assert all(f"curves/{c}" in text for c in curves)
    assert "Measured cost" in text                         # the trainings' rates come from runs.csv


def test_the_plan_takes_ledger_items_as_done_and_execute_skips_them(written, tmp_path):
    root, doc = written
    shutil.rmtree(root)
    book = mini_ledger.Ledger.load(doc.with_suffix(""))
    kept, _ = mini.plan(1e9, only={"S8", "S10"}, mode="full", root=root, ledger=book)
    in_ledger = [it for it in kept if it.done(root, book)]
    assert in_ledger and all(not it.done(root) for it in in_ledger)
    assert mini.estimate(kept, root, ledger=book) == pytest.approx(
        mini.estimate([it for it in kept if it not in in_ledger]))
    text = mini.format_plan(kept, [], 1e9, root, ledger=book)
    assert "in the ledger" in text and f"{len(in_ledger)} items come from the ledger" in text
    logs: list[str] = []
    assert mini.execute(in_ledger, root, log=logs.append, ledger=book) == []
    assert len(logs) == len(in_ledger) and all("in the ledger" in line for line in logs)   # nothing ran


def test_a_training_whose_sweep_is_not_in_the_ledger_is_trained_again(written):
    root, doc = written
    folder = doc.with_suffix("")
    shutil.rmtree(root)
    rows = [r for r in _rows(folder / "runs.csv") if not r["item"].endswith(" sweep")]
    book = mini_ledger.Ledger.load(folder)
    book.runs = {r["item"]: r for r in rows}
    kept, _ = mini.plan(1e9, only={"S10"}, mode="full", root=root, ledger=book)
    trainings = [it for it in kept if it.kind == "train"]
    assert trainings and not any(it.done(root, book) for it in trainings)   # its sweep needs the checkpoint


def test_other_code_or_another_command_is_not_reused_and_the_plan_says_so(written):
    root, doc = written
    shutil.rmtree(root)
    folder = doc.with_suffix("")
    book = mini_ledger.Ledger.load(folder)
    book.code = "0" * 16                                   # the code changed since the ledger was written
    kept, _ = mini.plan(1e9, only={"S8"}, mode="full", root=root, ledger=book)
    assert not any(it.done(root, book) for it in kept)
    assert "ledger items are run again" in mini.format_plan(kept, [], 1e9, root, ledger=book)
    book = mini_ledger.Ledger.load(folder)
    for row in book.runs.values():                         # e.g. the table's iterations were retuned
        row["command"] = row["command"].replace("schedule.max_iters=900", "schedule.max_iters=800")
    kept, _ = mini.plan(1e9, only={"S8"}, mode="full", root=root, ledger=book)
    assert not any(it.done(root, book) for it in kept)
    # ... and the document does not use values of stale items
    book.write()
    mini_doc.write_document(root, doc, "x")
    s8 = [r for r in _rows(folder / "cells.csv") if r["table"] == "S8"]
    assert s8 and all(r["n"] == "0" and r["mean"] == "" for r in s8)


def test_a_damaged_ledger_is_named_with_the_fix(tmp_path):
    (tmp_path / "runs.csv").write_text("item,kind\nx,train\n", encoding="utf-8")
    with pytest.raises(RsdetError, match=r"runs\.csv lacks the columns .*delete it"):
        mini_ledger.Ledger.load(tmp_path)
    (tmp_path / "runs.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(RsdetError, match=r"runs\.csv cannot be read"):
        mini_ledger.Ledger.load(tmp_path)
    assert mini_ledger.Ledger.load(tmp_path / "absent").runs == {}


def test_the_fingerprint_covers_what_trains_and_not_the_report_layer(tmp_path):
    pkg, conf = tmp_path / "rsdet", tmp_path / "conf"
    for p, text in ((pkg / "losses" / "rs.py", "x = 1\n"), (pkg / "report" / "mini_doc.py", "y = 1\n"),
                    (conf / "loss" / "rs.yaml", "delta: 0.5\n")):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    base = mini_ledger.code_fingerprint(pkg, conf)
    assert len(base) == 16 and base == mini_ledger.code_fingerprint(pkg, conf)
    (pkg / "report" / "mini_doc.py").write_text("y = 2\n")
    assert mini_ledger.code_fingerprint(pkg, conf) == base
    (pkg / "losses" / "rs.py").write_text("x = 2\n")
    changed = mini_ledger.code_fingerprint(pkg, conf)
    assert changed != base
    (conf / "loss" / "rs.yaml").write_text("delta: 0.4\n")
    assert mini_ledger.code_fingerprint(pkg, conf) != changed


def test_item_ids_name_the_run_folder_its_sweep_and_the_benchmark():
    items = mini.items_for(mini.MODES["full"], {"S10", "S9"})
    sweep = next(it for it in items if it.kind == "sweep")
    assert sweep.ledger_id == f"{sweep.name} sweep"
    assert next(it for it in items if it.kind == "bench").ledger_id == "s9"
    b = next(b for b in C.catalogue() if b.table == "S10" and b.metric == "fps")
    assert mini_ledger.binding_item(b, 1).endswith("/seed1 sweep")
