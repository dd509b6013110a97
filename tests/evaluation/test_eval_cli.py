"""``rsdet evaluate`` (rsdet.evaluation.cli.main): files, sweeps, run directories, errors."""

import json
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluation_testdata as td  # noqa: E402

from rsdet.evaluation import evaluate  # noqa: E402
from rsdet.evaluation.cli import main  # noqa: E402


@pytest.fixture()
def coco_files(tmp_path):
    gt = td.synthetic_coco(seed=3)
    dets = td.perturbed_detections(gt, seed=4)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    return tmp_path / "gt.json", tmp_path / "dets.json"


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--iou-type", "--protocol", "--max-dets", "--per-class", "--score-thresholds",
                   "--out", "--device", "--backend", "official", "oLRP", "examples:"):
        assert option in out


def test_results_file_with_sweep(coco_files, tmp_path, capsys):
    gt, dets = coco_files
    out = tmp_path / "eval"
    assert main([str(gt), str(dets), "--per-class", "--score-thresholds", "1e-3,0.5",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = evaluate(gt, dets, per_class=True)
    assert metrics["bbox"]["AP"] == expected["AP"] and metrics["bbox"]["oLRP"] == expected["oLRP"]
    assert set(metrics["bbox"]["per_class"]) == {str(c) for c in expected["per_class"]}
    for name in ("threshold_sweep.md", "threshold_sweep.csv", "threshold_sweep.tex",
                 "threshold_sweep.json"):
        assert (out / name).is_file(), name
    sweep = json.loads((out / "threshold_sweep.json").read_text())
    assert [r["threshold"] for r in sweep["rows"]] == [1e-3, 0.5]
    printed = capsys.readouterr().out
    assert "oLRP" in printed and "AP75" in printed and "1e-3" in printed and "class1" in printed


def test_backend_option(coco_files, tmp_path, capsys):
    gt, dets = coco_files
    for backend in ("official", "fast"):
        assert main([str(gt), str(dets), "--backend", backend, "--per-class", "--score-thresholds", "0.3,0.6",
                     "--out", str(tmp_path / backend)]) == 0
    read = lambda b, name: json.loads((tmp_path / b / name).read_text())  # noqa: E731
    assert read("official", "metrics.json") == read("fast", "metrics.json")
    assert read("official", "threshold_sweep.json") == read("fast", "threshold_sweep.json")
    assert "class1" in capsys.readouterr().out  # --per-class prints the per-class table
    with pytest.raises(SystemExit) as exit_:
        main([str(gt), str(dets), "--backend", "pycoco"])
    assert exit_.value.code == 2 and "auto" in capsys.readouterr().err


def test_lvis_protocol_is_detected_and_results_dir_is_the_default_out(tmp_path, capsys):
    gt = td.load_lvis()
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 0.5} for a in gt["annotations"]]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert main([str(td.LVIS_FIXTURE), str(tmp_path / "dets.json")]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())["bbox"]
    assert metrics["AP"] == pytest.approx(1.0) and metrics["oLRP"] == pytest.approx(0.0)
    assert "APr" in metrics and "oLRPf" in metrics
    assert "bbox (lvis)" in capsys.readouterr().out


def test_errors_are_reported_not_raised(coco_files, tmp_path, capsys):
    gt, _ = coco_files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}]))
    assert main([str(gt), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.json" in err and "record 0" in err and "4 values" in err
    with pytest.raises(SystemExit) as exit_:
        main([str(gt)])  # RESULTS missing
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        main([str(gt), str(bad), "--score-thresholds", "0.1,abc"])
    assert "comma-separated" in capsys.readouterr().err


def test_run_directory_goes_to_the_engine(tmp_path, monkeypatch, capsys):
    calls = []

    def evaluate_run(path, score_thresholds=None, out_dir=None, device="auto", **extra):
        calls.append((path, score_thresholds, out_dir, device, extra))
        return {"bbox": {"AP": 0.25, "AP50": 0.5, "oLRP": 0.75}}

    fake = types.ModuleType("rsdet.engine.inference")
    fake.evaluate_run = evaluate_run
    monkeypatch.setitem(sys.modules, "rsdet.engine.inference", fake)
    assert main([str(tmp_path), "--score-thresholds", "0.1,0.6", "--device", "cpu"]) == 0
    assert calls == [(str(tmp_path), [0.1, 0.6], None, "cpu", {})]  # the run's own eval.backend
    assert "25.0" in capsys.readouterr().out
    assert main([str(tmp_path), "--backend", "official"]) == 0
    assert calls[-1][-1] == {"backend": "official"}

    with pytest.raises(SystemExit):  # a run directory takes no RESULTS
        main([str(tmp_path), "extra.json"])
    assert main([str(tmp_path / "missing.pt")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_run_directory_without_engine(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rsdet.engine.inference", None)  # import fails
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "rsdet.engine.inference" in err and "RESULTS" in err
