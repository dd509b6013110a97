"""Fake run directories for the report tests, written through the real RunRecord API."""

from rsdet.records import RunRecord

# AP per (loss, sampler, seed); None = the job failed; "bad" = its metrics.json is malformed
SWEEP = {
    ("rs", "none", 0): 0.40, ("rs", "none", 1): 0.42,
    ("rs", "random", 0): 0.38, ("rs", "random", 1): 0.38,
    ("ce", "none", 0): 0.30, ("ce", "none", 1): None,
    ("ce", "random", 0): 0.36, ("ce", "random", 1): "bad",
}


def make_run(path, *, loss="rs", sampler="none", seed=0, ap=0.4, status=None, overrides=None, extra=None,
             history=None, segm=None):
    """One run as the engine would leave it. ``ap=None`` → failed run; ``ap="bad"`` → malformed metrics."""
    rec = RunRecord(path)
    cfg = {
        "seed": seed,
        "loss": {"name": loss, "delta": 0.5 if loss == "rs" else None, "rpn_weight": 0.2 if loss == "rs" else 1.0},
        "sampler": {"rpn": sampler, "rcnn": sampler},
        "optimizer": {"lr": 0.012 if loss == "rs" else 0.02},
        "output_dir": str(path),                      # noise: differs per job
        "logger": {"id": f"run-{path.name}", "mode": "offline"},
        "dataset": {"root": "/data/shapes", "name": "shapes"},
    }
    cfg.update(extra or {})
    rec.write_config(cfg)
    rec.start(choices={"loss": loss, "sampler": sampler, "detector": "faster_rcnn", "hydra/launcher": "basic",
                       "logger": "wandb"},
              overrides=overrides if overrides is not None else [f"loss={loss}", f"sampler={sampler}", f"seed={seed}"],
              device="cpu")
    for row in history or []:
        rec.append_history(row)
    if status == "running":
        rec.update(iteration=30)
        return rec
    if ap is None:
        rec.update(iteration=12)
        rec.finish("failed", error="TrainingError: loss/rcnn_rank is NaN at iteration 12")
        return rec
    if ap == "bad":
        rec.write_metrics({"bbox": {"AP": 0.0}})
        (rec.dir / "metrics.json").write_text('{"bbox": {"AP": 0.3')  # truncated by a full disk
    else:
        metrics = {"bbox": {"AP": ap, "AP50": ap + 0.2, "AP75": ap + 0.05, "oLRP": 1.0 - ap - 0.3},
                   "train_seconds": 100.0 + 10 * seed, "iterations": 50}
        if segm is not None:
            metrics["segm"] = {"AP": segm}
        rec.write_metrics(metrics)
    rec.finish()
    return rec


def make_sweep(root):
    """The 2×2 loss × sampler multirun with two seeds per cell, one failed and one malformed job."""
    for job, ((loss, sampler, seed), ap) in enumerate(SWEEP.items()):
        make_run(root / str(job), loss=loss, sampler=sampler, seed=seed, ap=ap)
    return root
