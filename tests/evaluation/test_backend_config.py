"""``eval.backend`` and the per-class block through the engine (rsdet.engine.inference.evaluate_model,
which training and ``rsdet evaluate RUN`` use), with inference replaced by fixed detections."""

import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluation_testdata as td  # noqa: E402

import rsdet.data.build  # noqa: E402
from rsdet.engine import inference  # noqa: E402
from rsdet.errors import RsdetError  # noqa: E402
from rsdet.evaluation import evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def stubbed(monkeypatch, tmp_path):
    gt = td.synthetic_coco(seed=3)
    dets = td.perturbed_detections(gt, seed=4)
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr("rsdet.evaluation.evaluate", spy)  # evaluate_model imports it when called
    monkeypatch.setattr(rsdet.data.build, "dataset_eval_info",
                        lambda dataset, split: {"ann_file": "gt.json", "protocol": "coco"})
    monkeypatch.setattr(inference, "run_inference", lambda *a, **k: [dict(d) for d in dets])
    monkeypatch.setattr(inference, "ground_truth_for", lambda ann_file, dataset, max_images: gt)
    monkeypatch.setattr(inference, "eval_score_thresh", lambda cfg: 0.05)

    def cfg(**eval_cfg):
        return OmegaConf.create({"detector": {"name": "faster_rcnn"}, "dataset": {"with_masks": False},
                                 "eval": {"iou_types": ["bbox"], "split": "val", **eval_cfg}})

    return cfg, calls, gt, dets, tmp_path


def test_per_class_block_and_backend_reach_the_evaluator(stubbed):
    cfg, calls, gt, dets, tmp = stubbed
    result = inference.evaluate_model(cfg(backend="official"), None, None, "cpu", tmp / "p.json",
                                      per_class=True)
    assert calls[-1]["backend"] == "official" and calls[-1]["per_class"] is True
    assert result["bbox"] == evaluate(gt, dets, per_class=True, backend="fast")  # same numbers either way
    assert {"per_class", "pr_curve"} <= set(result["bbox"])
    # evaluations during training (eval.every_epochs) stay lean; a config without eval.backend is auto
    lean = inference.evaluate_model(cfg(), None, None, "cpu", tmp / "p.json")
    assert calls[-1]["backend"] == "auto" and "per_class" not in lean["bbox"]


def test_bad_backend_fails_before_training(stubbed):
    cfg = stubbed[0]
    with pytest.raises(RsdetError, match="eval.backend='pycoco'"):
        inference.check_iou_types(cfg(backend="pycoco"))
    assert inference.check_iou_types(cfg(backend="fast")) == ["bbox"]


def test_train_config_declares_the_backend():
    train = OmegaConf.load(REPO / "conf" / "train.yaml")
    assert train.eval.backend == "auto"


def test_evaluate_run_uses_the_runs_backend_unless_overridden(stubbed, monkeypatch):
    cfg, calls, gt, dets, tmp = stubbed
    run_cfg = cfg(backend="official")
    monkeypatch.setattr(inference, "load_trained", lambda path, dev, **kw: (run_cfg, None, None, tmp))
    monkeypatch.setattr(inference, "measure_fps", lambda *a, **k: 1.0)
    result = inference.evaluate_run(tmp, device="cpu")
    assert calls[-1]["backend"] == "official" and "per_class" in result["bbox"]
    inference.evaluate_run(tmp, device="cpu", backend="fast")
    assert calls[-1]["backend"] == "fast"

    seen = []

    def sweep(*args, **kwargs):
        seen.append(kwargs["backend"])
        from rsdet.evaluation.sweep import threshold_sweep
        return threshold_sweep(*args, **kwargs)

    monkeypatch.setattr("rsdet.evaluation.threshold_sweep", sweep)  # evaluate_run imports it when called
    rows = inference.evaluate_run(tmp, score_thresholds=[0.1, 0.5], device="cpu", backend="official")["rows"]
    assert seen == ["official"] and [r["threshold"] for r in rows] == [0.1, 0.5]
