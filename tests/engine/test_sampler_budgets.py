"""The CPU presets' R-CNN samplers keep a share of the proposals, as the standard recipe's 512 of 1000 do:
a budget at or above the proposal count would make `sampler.<stage>=random` the same as `none`
(docs/samplers.md, "CPU presets")."""

import pytest
import torch
from hydra import compose, initialize_config_dir

from rsdet.models.samplers import resolve_stage_sampler, sample_instances
from rsdet.train_cli import CONF_DIR

STAGES = {"faster_rcnn": ("rcnn",), "mask_rcnn": ("rcnn",), "cascade_rcnn": ("stage1", "stage2", "stage3")}


def _cfg(detector: str, schedule: str = "cpu_demo"):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"detector={detector}", "loss=ce", f"schedule={schedule}"])


@pytest.mark.parametrize("detector", sorted(STAGES))
def test_every_cpu_preset_samples_about_half_of_its_training_proposals(detector):
    cfg = _cfg(detector)
    proposals = int(cfg.detector.rpn.post_nms_top_n_train)
    for stage in STAGES[detector]:
        s = resolve_stage_sampler(cfg.sampler, cfg.loss, stage)   # loss=ce: the recipe's random sampler
        assert s["kind"] == "random"
        assert s["batch_per_image"] < proposals, f"{detector} {stage}: random would keep every RoI"
        assert 0.4 <= s["batch_per_image"] / proposals <= 0.6      # the standard 512 / 1000 + gt
        assert s["positive_fraction"] == 0.25


@pytest.mark.parametrize("detector", sorted(STAGES))
def test_the_paper_schedules_keep_the_standard_512_of_1000(detector):
    cfg = _cfg(detector, "1x")
    assert int(cfg.detector.rpn.post_nms_top_n_train) == 1000
    for stage in STAGES[detector]:
        assert resolve_stage_sampler(cfg.sampler, cfg.loss, stage)["batch_per_image"] == 512


def test_at_the_cpu_preset_random_keeps_fewer_rois_than_none():
    cfg = _cfg("faster_rcnn")
    rois = int(cfg.detector.rpn.post_nms_top_n_train) + 3          # proposals + the ground truth boxes
    torch.manual_seed(0)
    classes = torch.full((2 * rois,), -1, dtype=torch.long)       # negatives ...
    classes[torch.randperm(2 * rois)[:20]] = 1                     # ... and about 10 positives per image
    images = torch.arange(2).repeat_interleave(rois)
    random = resolve_stage_sampler(cfg.sampler, cfg.loss, "rcnn")
    kept = sample_instances(classes, images, 2, "random", random["batch_per_image"], random["positive_fraction"])
    none = sample_instances(classes, images, 2, "none")
    assert int(kept.numel()) == 2 * random["batch_per_image"] < int(none.numel()) == 2 * rois
