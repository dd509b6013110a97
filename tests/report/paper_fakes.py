"""Fabricated run records for the paper-table tests, written through the real RunRecord API in the
shape the engine writes them (Hydra choices in run.json, resolved config, metrics, history, sweep)."""

import json

from rsdet.records import RunRecord, dumps

SAMPLER_BUDGET = {"rpn": {"batch_per_image": 256, "positive_fraction": 0.5},
                  "rcnn": {"batch_per_image": 512, "positive_fraction": 0.25}}
DEFAULT_SAMPLER = {"rs": "none", "ce": "random", "focal": "none", "ap": "none", "alrp": "none"}


def fab_run(path, *, detector="faster_rcnn", loss="rs", seed=0, loss_cfg=None, sampler=None, metrics=None,
            history=None, sweep=None, status="completed", world_size=1, test_thresh=None):
    """One run. ``sampler``: {"rpn": kind, "rcnn": kind} or None for the recipe default ("auto");
    ``sweep``: threshold_sweep.json rows; ``metrics``: metrics.json (fractions)."""
    rec = RunRecord(path)
    default = DEFAULT_SAMPLER.get(loss, "none")
    cfg = {
        "seed": seed,
        "detector": {"name": detector},
        "loss": {"name": loss, "cls": loss, "delta": 0.5, "weighting": "score", "balance": "value",
                 "delta_loc": None, "label": "iou", "box_weight": 1.0,
                 "test_score_thresh": test_thresh if test_thresh is not None else (0.4 if loss == "rs" else 0.05),
                 "default_sampler": {"rpn": default, "rcnn": default}, **(loss_cfg or {})},
        "sampler": {"rpn": (sampler or {}).get("rpn", "auto"), "rcnn": (sampler or {}).get("rcnn", "auto"),
                    "budget": SAMPLER_BUDGET},
        "schedule": {"epochs": 2, "max_iters": 40},
        "eval": {"score_thresh": None},
    }
    rec.write_config(cfg)
    overrides = [f"loss={loss}", f"detector={detector}", f"seed={seed}"]
    overrides += [f"loss.{k}={v}" for k, v in (loss_cfg or {}).items()]
    overrides += [f"sampler.{k}={v}" for k, v in (sampler or {}).items()]
    rec.start(choices={"loss": loss, "detector": detector, "sampler": "auto", "schedule": "cpu_demo"},
              overrides=overrides, device="cpu", max_iters=40, world_size=world_size)
    for row in history or []:
        rec.append_history(row)
    if metrics is not None:
        rec.write_metrics(metrics)
    if sweep is not None:
        (rec.dir / "threshold_sweep.json").write_text(dumps({"device": "cpu", "rows": sweep}))
    rec.finish(status) if status != "running" else rec.update(iteration=10)
    return rec


def box(ap, **extra):
    """metrics.json with box AP ``ap`` (and AP50/AP75/oLRP derived from it)."""
    return {"bbox": {"AP": ap, "AP50": ap + 0.2, "AP75": ap + 0.05, "oLRP": 1.0 - ap, **extra}, "iterations": 40}


def sweep(aps, fps=None, thresholds=(1e-4, 1e-3, 1e-2, 0.1, 0.4, 0.6, 0.8), segm=None):
    """threshold_sweep.json rows as `rsdet evaluate RUN --score-thresholds` writes them."""
    rows = []
    for i, (t, ap) in enumerate(zip(thresholds, aps)):
        metrics = {"AP": ap, "AP50": ap + 0.1, "AP75": ap}
        if segm is not None:
            metrics = {"bbox": metrics, "segm": {"AP": segm[i], "APr": segm[i] / 2}}
        rows.append({"threshold": t, "metrics": metrics, "fps": None if fps is None else fps[i]})
    return rows


def history(epochs=2, per_epoch=4, rpn_task=10.0, rcnn_task=100.0, first_epoch_factor=2.0):
    """History rows: the first epoch's task ratios are ``first_epoch_factor`` × the later ones."""
    rows = []
    for e in range(epochs):
        f = first_epoch_factor if e == 0 else 1.0
        for k in range(per_epoch):
            it = e * per_epoch + (k + 1) * 5
            rows.append({"iteration": it, "epoch": e, "lr": 0.001, "sec_per_iter": 0.5 + 0.1 * e,
                         "loss/rpn_rank": 0.5 - 0.01 * it, "loss/rcnn_rank": 0.9 - 0.01 * it, "loss/total": 1.4,
                         "ratio/rpn/instance_neg_per_pos": rpn_task * f, "ratio/rpn/task_neg_per_pos": rpn_task * f,
                         "ratio/rcnn/instance_neg_per_pos": 3.0 * f, "ratio/rcnn/task_neg_per_pos": rcnn_task * f})
    return rows


def read_json(path):
    return json.loads(path.read_text())
