"""End to end for the one-stage detectors: every valid loss trains, evaluates and writes a complete record;
an invalid combination fails with a message that names the valid ones."""

import json
from pathlib import Path

import pytest

from rsdet import train_cli
from rsdet.records import find_runs


def _only_run():
    runs = find_runs(Path("outputs"))
    assert len(runs) == 1, [r.dir for r in runs]
    return runs[0]


@pytest.mark.parametrize("detector", ["atss", "paa"])
@pytest.mark.parametrize("loss", ["rs", "focal", "ap", "alrp"])
def test_one_stage_recipe_trains_and_writes_a_complete_record(tiny_dense_run, detector, loss):
    assert train_cli.main([f"detector={detector}", f"loss={loss}", *tiny_dense_run]) == 0
    run = _only_run()
    assert run.info["status"] == "completed" and run.info["iteration"] == 4
    assert run.info["choices"]["detector"] == detector
    history = run.read_history()
    assert [row["iteration"] for row in history] == [1, 2, 3, 4]
    terms = {k for k in history[0] if k.startswith("loss/")}
    if loss == "rs":
        assert {"loss/head_rank", "loss/head_sort", "loss/head_box"} <= terms
    else:
        assert {"loss/head_cls", "loss/head_box"} <= terms
    aux = {"atss": "loss/head_centerness", "paa": "loss/head_iou"}[detector]
    assert (aux in terms) == (loss == "focal")  # the quality branch belongs to the standard baselines only
    assert {"ratio/head/num_pos", "ratio/head/task_neg_per_pos"} <= set(history[0])
    assert run.metrics["score_thresh"] == 0.05
    for k in ("AP", "AP50", "oLRP"):
        assert k in run.metrics["bbox"]
    assert isinstance(json.loads(run.predictions_path("bbox").read_text()), list)


def test_cross_entropy_on_a_one_stage_detector_is_a_config_error(tiny_dense_run):
    assert train_cli.main(["detector=atss", "loss=ce", *tiny_dense_run]) == 1
    run = _only_run()
    assert run.info["status"] == "failed"
    assert "ConfigError" in run.info["error"] and "loss=focal" in run.info["error"]
    assert "rs" in run.info["error"] and "Traceback" not in run.info["error"]


def test_stage_override_for_a_stage_the_detector_lacks_names_its_stages(tiny_dense_run):
    assert train_cli.main(["detector=atss", "loss.rcnn.delta=0.25", *tiny_dense_run]) == 1
    error = _only_run().info["error"]
    assert "loss.rcnn.delta" in error and "head" in error

