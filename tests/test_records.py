"""Run record: atomic writes, crash-tolerant history, forgiving reads, discovery."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rsdet.errors import DataError
from rsdet.records import RunRecord, dumps, find_runs, is_run_dir, to_jsonable


def test_lifecycle_writes_every_file(tmp_path):
    rec = RunRecord(tmp_path / "run")
    rec.write_config({"loss": {"name": "rs", "delta": np.float32(0.5)}, "seed": 0})
    info = rec.start(choices={"loss": "rs", "sampler": "none"}, overrides=["loss=rs", "sampler=none"],
                     multirun={"sweep_dir": "multirun/x", "job_num": 3}, device="cpu")
    assert info["status"] == "running" and info["iteration"] == 0 and info["device"] == "cpu"
    assert info["host"] and info["rsdet_version"] and info["started"] and info["finished"] is None
    rec.append_history({"iteration": 10, "loss/rpn_rank": np.float32(0.5), "lr": torch.tensor(0.01)})
    rec.append_history({"iteration": 20, "loss/rpn_rank": float("nan")})
    rec.update(iteration=20)
    rec.write_metrics({"bbox": {"AP": np.float64(0.312), "oLRP": torch.tensor(0.7)}, "iterations": np.int64(20)})
    rec.finish()

    # a fresh reader sees exactly what was written
    again = RunRecord(tmp_path / "run", create=False)
    on_disk = json.loads((tmp_path / "run" / "run.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["iteration"] == 20 and on_disk["finished"]
    assert on_disk["choices"] == {"loss": "rs", "sampler": "none"}
    assert on_disk["multirun"] == {"sweep_dir": "multirun/x", "job_num": 3}
    assert again.status == "completed" and again.reason is None
    assert again.config == {"loss": {"name": "rs", "delta": 0.5}, "seed": 0}
    assert again.metrics["bbox"]["AP"] == pytest.approx(0.312)
    assert again.metrics["iterations"] == 20
    hist = again.read_history()
    assert [h["iteration"] for h in hist] == [10, 20]
    assert hist[0]["lr"] == pytest.approx(0.01) and hist[1]["loss/rpn_rank"] is None  # NaN -> null
    assert again.predictions_path().name == "predictions_bbox.json"
    assert again.predictions_path("segm").name == "predictions_segm.json"
    assert again.checkpoint_dir == tmp_path / "run" / "checkpoints"
    # no temporary files are left behind by the atomic writes
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.yaml", "history.jsonl", "metrics.json", "run.json"]


def test_dictconfig_is_resolved(tmp_path):
    rec = RunRecord(tmp_path)
    cfg = OmegaConf.create({"base_lr": 0.02, "optim": {"lr": "${base_lr}"}, "note": None})
    rec.write_config(cfg)
    assert RunRecord(tmp_path, create=False).config == {"base_lr": 0.02, "optim": {"lr": 0.02}, "note": None}


def test_failure_keeps_message_and_traceback(tmp_path):
    rec = RunRecord(tmp_path)
    rec.start(choices={}, overrides=[])
    rec.update(iteration=7)
    try:
        raise FloatingPointError("loss/rcnn_rank is NaN at iteration 7")
    except FloatingPointError as exc:
        rec.finish("failed", error=exc)
    info = RunRecord(tmp_path, create=False).info
    assert info["status"] == "failed"
    assert info["error"] == "FloatingPointError: loss/rcnn_rank is NaN at iteration 7"
    assert "Traceback" in info["traceback"] and "test_records.py" in info["traceback"]
    reread = RunRecord(tmp_path, create=False)
    assert reread.status == "failed" and "iteration 7" in reread.reason and "NaN" in reread.reason


def test_resume_keeps_started(tmp_path):
    rec = RunRecord(tmp_path)
    first = rec.start(choices={"loss": "rs"}, overrides=[])
    rec.update(iteration=40)
    rec.finish("interrupted", error="KeyboardInterrupt")
    second = RunRecord(tmp_path).start(choices={"loss": "rs"}, overrides=["resume=true"])
    assert second["started"] == first["started"] and len(second["resumed"]) == 1
    assert second["status"] == "running" and second["error"] is None and second["iteration"] == 40


def test_invalid_status_rejected(tmp_path):
    rec = RunRecord(tmp_path)
    with pytest.raises(ValueError, match="status must be one of"):
        rec.finish("done")


def test_truncated_history_line_is_skipped(tmp_path, caplog):
    rec = RunRecord(tmp_path)
    rec.append_history({"iteration": 1})
    with rec.history_path.open("a") as fh:
        fh.write('{"iteration": 2, "lo')  # process killed mid-write
    with caplog.at_level(logging.WARNING, logger="rsdet.records"):
        assert rec.read_history() == [{"iteration": 1}]
    assert "history.jsonl:2" in caplog.text


def test_resume_moves_the_rows_after_the_checkpoint_aside(tmp_path):
    rec = RunRecord(tmp_path / "run")
    for it in (2, 4, 6, 8):
        rec.append_history({"iteration": it, "loss/total": it / 10})
    with rec.history_path.open("a") as fh:  # the line a kill cut short
        fh.write('{"iteration": 10, "loss/to')
    assert rec.drop_history_after(4) == 3
    assert [r["iteration"] for r in rec.read_history()] == [2, 4]
    dropped = (rec.dir / "history.dropped.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in dropped[:2]] == [6, 8]
    assert dropped[2] == '{"iteration": 10, "loss/to'
    rec.append_history({"iteration": 6, "loss/total": 0.5})  # the resumed run's rows follow cleanly
    assert [r["iteration"] for r in rec.read_history()] == [2, 4, 6]
    assert rec.drop_history_after(6) == 0
    assert RunRecord(tmp_path / "none").drop_history_after(0) == 0


@pytest.mark.parametrize("name,content", [
    ("metrics.json", "{not json"),
    ("metrics.json", "[1, 2]"),
    ("run.json", '{"status": "comp'),
    ("config.yaml", "a: [1, 2\n"),
])
def test_malformed_files_make_the_run_unreadable_not_crash(tmp_path, caplog, name, content):
    rec = RunRecord(tmp_path / "r")
    rec.write_config({"loss": {"name": "rs"}})
    rec.start(choices={"loss": "rs"}, overrides=[])
    rec.write_metrics({"bbox": {"AP": 0.3}})
    rec.finish()
    (tmp_path / "r" / name).write_text(content)
    with caplog.at_level(logging.WARNING, logger="rsdet.records"):
        runs = find_runs(tmp_path)
        assert len(runs) == 1
        assert runs[0].status == "unreadable"
        assert name in runs[0].reason
    assert name in caplog.text and "fix or delete" in caplog.text


def test_unknown_status_is_unreadable(tmp_path):
    (tmp_path / "run.json").write_text('{"status": "weird"}')
    rec = RunRecord(tmp_path, create=False)
    assert rec.status == "unreadable" and "unknown status" in rec.reason


def test_find_runs_recurses_and_skips(tmp_path):
    for job in ["0", "1", "2", "10"]:
        r = RunRecord(tmp_path / "sweep" / job)
        r.start(choices={}, overrides=[])
    # legacy run: config + metrics without run.json
    legacy = tmp_path / "old"
    legacy.mkdir()
    (legacy / "config.yaml").write_text("seed: 1\n")
    (legacy / "metrics.json").write_text('{"bbox": {"AP": 0.1}}')
    # decoys: Hydra's copy of the config, W&B and checkpoint folders, a config without metrics
    for decoy in ["sweep/0/.hydra", "wandb/run-1", "old2/checkpoints", "cfg_only"]:
        (tmp_path / decoy).mkdir(parents=True, exist_ok=True)
    for decoy in ["wandb/run-1", "old2/checkpoints"]:
        (tmp_path / decoy / "run.json").write_text("{}")
    (tmp_path / "cfg_only" / "config.yaml").write_text("a: 1\n")
    labels = [r.label for r in find_runs(tmp_path)]
    assert labels == ["old", "sweep/0", "sweep/1", "sweep/2", "sweep/10"]
    assert find_runs(tmp_path)[0].status == "completed"
    assert is_run_dir(legacy) and not is_run_dir(tmp_path / "cfg_only")
    # a run directory passed directly is found too
    assert [r.dir for r in find_runs(legacy)] == [legacy]


def test_find_runs_missing_root(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        find_runs(tmp_path / "nope")
    with pytest.raises(DataError, match="does not exist"):
        RunRecord(tmp_path / "nope", create=False)


def test_to_jsonable_handles_odd_values(tmp_path):
    out = to_jsonable({"a": np.array([1.0, np.inf]), "b": np.bool_(True), "c": tmp_path, "d": (1, 2),
                       "e": torch.tensor([[1, 2]]), "f": math.nan, 3: ValueError("x")})
    assert out == {"a": [1.0, None], "b": True, "c": str(tmp_path), "d": [1, 2], "e": [[1, 2]], "f": None,
                   "3": "ValueError: x"}
    assert json.loads(dumps({"x": float("inf")})) == {"x": None}


def test_running_reason_mentions_dead_process(tmp_path):
    rec = RunRecord(tmp_path)
    rec.start(choices={}, overrides=[])
    rec.update(iteration=5, pid=2**22 + 12345)  # pid that cannot exist (above pid_max default)
    reason = RunRecord(tmp_path, create=False).reason
    assert reason.startswith("running at iteration 5") and "resume=true" in reason


def test_config_yaml_parsed_like_omegaconf(tmp_path):
    from rsdet.records import load_config_yaml

    text = "lr: 1e-3\nwd: 1.0e-4\nday: 2026-01-05\nn: 5\nflag: true\nname: '1e-3'\nlist: [1, 2]\n"
    assert load_config_yaml(text) == OmegaConf.to_container(OmegaConf.create(text))
    assert load_config_yaml("a: 2\nb: ${a}\n") == {"a": 2, "b": "${a}"}  # never resolved (untrusted records)


def test_run_json_with_fields_of_the_wrong_type_is_unreadable_and_named(tmp_path):
    import json as _json

    from rsdet.records import RunRecord as _RunRecord

    rec = _RunRecord(tmp_path / "run")
    rec.start(choices={"loss": "rs"}, overrides=["loss=rs"])
    info = _json.loads((rec.dir / "run.json").read_text())
    (rec.dir / "run.json").write_text(_json.dumps({**info, "choices": {"loss": ["rs"]}}))
    again = _RunRecord(rec.dir, create=False)
    assert again.status == "unreadable"
    assert "run.json" in again.reason and "'choices'" in again.reason
