"""End to end for Cascade R-CNN: RS-Cascade and the standard Cascade (CE) train, evaluate and write a
complete record with the loss terms and pos:neg statistics of every stage."""

import json
from pathlib import Path

import pytest

from rsdet import train_cli
from rsdet.records import find_runs

STAGES = ("rpn", "stage1", "stage2", "stage3")


@pytest.mark.parametrize("loss", ["rs", "ce"])
def test_cascade_recipe_trains_and_writes_a_complete_record(tiny_run, loss):
    assert train_cli.main(["detector=cascade_rcnn", f"loss={loss}", *tiny_run]) == 0
    runs = find_runs(Path("outputs"))
    assert len(runs) == 1
    run = runs[0]
    assert run.info["status"] == "completed" and run.info["iteration"] == 4
    assert run.info["choices"]["detector"] == "cascade_rcnn"
    history = run.read_history()
    assert [row["iteration"] for row in history] == [1, 2, 3, 4]
    parts = ("rank", "sort", "box") if loss == "rs" else ("cls", "box")
    terms = {k for k in history[0] if k.startswith("loss/")}
    assert terms == {"loss/total"} | {f"loss/{s}_{p}" for s in STAGES for p in parts}
    for stage in STAGES:
        assert {f"ratio/{stage}/num_pos", f"ratio/{stage}/task_neg_per_pos"} <= set(history[0])
    if loss == "ce":  # random samplers: at most 50 RoIs per image in every stage at CPU size (2 images)
        for stage in STAGES[1:]:
            assert history[0][f"ratio/{stage}/num_pos"] + history[0][f"ratio/{stage}/num_neg"] <= 2 * 50
    assert run.metrics["score_thresh"] == (0.40 if loss == "rs" else 0.05)
    for k in ("AP", "AP50", "AP75", "oLRP"):
        assert k in run.metrics["bbox"]
    assert isinstance(json.loads(run.predictions_path("bbox").read_text()), list)
