"""Evaluation during training (eval.every_epochs, Table S2) and the eval.iou_types check."""

from pathlib import Path

from rsdet import train_cli
from rsdet.records import find_runs


def _only_run():
    runs = find_runs(Path("outputs"))
    assert len(runs) == 1, [r.dir for r in runs]
    return runs[0]


def test_evaluation_every_epoch_is_recorded_and_reported(tiny_run, capsys):
    """Table S2 layout: AP after epoch 1 beside the final AP, from the run record alone."""
    from rsdet.report.cli import main as report_main

    # 12 training images, batch 2: 6 iterations per epoch; 8 iterations cross one epoch boundary
    overrides = [o for o in tiny_run if not o.startswith("schedule.max_iters")]
    assert train_cli.main([*overrides, "schedule.max_iters=8", "eval.every_epochs=1"]) == 0
    run = _only_run()
    rows = run.read_eval_history()
    assert [(r["epoch"], r["iteration"]) for r in rows] == [(1, 6)]
    assert "AP" in run.metrics["epoch1"] and "AP" in run.metrics["bbox"]
    # the epoch evaluation asks for PR curves (W&B plots them) but its history row keeps the summary only
    assert not {"per_class", "pr_curve"} & (set(rows[0]["bbox"]) | set(run.metrics["epoch1"]))
    assert "pr_curve" in run.metrics["bbox"]  # the final evaluation's own block stays in metrics.json
    assert (run.dir / "predictions_bbox_epoch1.json").is_file()
    capsys.readouterr()
    assert report_main(["outputs", "--rows", "loss", "--metric", "epoch1/AP,AP", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "epoch1/AP" in out and "AP" in out


def test_mask_evaluation_on_a_box_detector_is_a_clear_error(tiny_run):
    assert train_cli.main([*tiny_run, "eval.iou_types=[bbox,segm]"]) == 1
    assert "mask detector" in _only_run().info["error"]


def test_repeat_factor_sampling_trains_on_the_long_tailed_data(tiny_run):
    """dataset=shapes_lvis turns on repeat-factor sampling (threshold 0.125): an epoch is longer than the
    split, the run trains, and the LVIS protocol reports APr/APc/APf."""
    overrides = [o for o in tiny_run if not o.startswith("dataset.generate.num_")]
    assert train_cli.main(["dataset=shapes_lvis", "dataset.generate.num_train=24", "dataset.generate.num_val=8",
                           *overrides]) == 0
    run = _only_run()
    assert run.info["status"] == "completed"
    assert {"APr", "APc", "APf"} <= set(run.metrics["bbox"])
