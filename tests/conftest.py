"""Shared fixtures: a tiny shapes dataset and overrides that train for a few iterations on the CPU."""

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Presets with detector.backbone.pretrained=shapes pretrain their ResNet on first use (~100 s); the suite
# checks the plumbing with a 2-iteration recipe (its own cache file; rsdet.models.pretrain.default_params).
os.environ.setdefault("RSDET_PRETRAIN_ITERS", "2")


@pytest.fixture(scope="session")
def shapes_cache(tmp_path_factory):
    """A cache folder shared by every end-to-end test, so the tiny dataset is generated once."""
    return tmp_path_factory.mktemp("rsdet-cache")


TINY = [
    "dataset.generate.num_train=12",
    "dataset.generate.num_val=6",
    "dataset.generate.image_size=96",
    "dataset.min_size=96",
    "dataset.max_size=96",
    "schedule.max_iters=4",
    "schedule.batch_size=2",
    "schedule.warmup_iters=2",
    "schedule.checkpoint_every=2",
    "logger=none",
    "logger.log_every=1",
    "detector.rpn.pre_nms_top_n_train=100",
    "detector.rpn.post_nms_top_n_train=50",
    "detector.rpn.pre_nms_top_n_test=100",
    "detector.rpn.post_nms_top_n_test=50",
]


@pytest.fixture
def tiny_run(shapes_cache, tmp_path, monkeypatch):
    """chdir into a fresh folder (runs go to ./outputs) and return the tiny overrides."""
    monkeypatch.setenv("RSDET_CACHE", str(shapes_cache))
    monkeypatch.chdir(tmp_path)
    return list(TINY)

# The same tiny run for detectors without an RPN (ATSS, PAA): only the detector-independent keys.
TINY_DENSE = [o for o in TINY if not o.startswith("detector.rpn.")]


@pytest.fixture
def tiny_dense_run(shapes_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("RSDET_CACHE", str(shapes_cache))
    monkeypatch.chdir(tmp_path)
    return list(TINY_DENSE)


@pytest.fixture(scope="session")
def trained_tiny_run(shapes_cache, tmp_path_factory):
    """One tiny Faster R-CNN run (TINY, 4 iterations on 96 px shapes) with W&B offline (3 media images)
    and every detection kept (eval.score_thresh=0), shared by the predict and W&B-logger tests:
    (run directory, validation image folder, validation annotation file)."""
    from rsdet import train_cli
    from rsdet.data.build import dataset_paths
    from rsdet.predict.model import read_run_config
    from rsdet.records import find_runs

    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSDET_CACHE", str(shapes_cache))
        mp.delenv("WANDB_DATA_DIR", raising=False)
        mp.chdir(root)
        overrides = [o for o in TINY if not o.startswith("logger")]
        assert train_cli.main([*overrides, "logger=wandb", "logger.log_every=2", "logger.media_images=3",
                               "eval.score_thresh=0.0"]) == 0
        run = find_runs(root / "outputs")[0].dir
        images, annotations = dataset_paths(read_run_config(run / "config.yaml").dataset, "val")
    return run, images, annotations
