"""scripts/bench_torchvision.py: the two Faster R-CNNs it times run at the settings its docstring
matches (docs/performance.md, "rsdet vs torchvision")."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_torchvision as bench  # noqa: E402


@pytest.fixture(scope="module")
def models():
    return bench.build_rsdet("ce", 128), bench.build_torchvision(128)


def test_rpn_roi_and_transform_settings_match(models):
    ours, tv = models
    assert ours.rpn._pre_nms_top_n == tv.rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert ours.rpn._post_nms_top_n == tv.rpn._post_nms_top_n == {"training": 1000, "testing": 1000}
    assert ours.rpn.nms_thresh == tv.rpn.nms_thresh == 0.7
    assert ours.rpn.anchor_generator.sizes == tv.rpn.anchor_generator.sizes
    assert ours.rpn.anchor_generator.aspect_ratios == tv.rpn.anchor_generator.aspect_ratios
    assert ours.rpn.sampler == {"kind": "random", "batch_per_image": tv.rpn.fg_bg_sampler.batch_size_per_image,
                                "positive_fraction": tv.rpn.fg_bg_sampler.positive_fraction}
    roi = ours.roi_head
    assert roi.sampler == {"kind": "random", "batch_per_image": tv.roi_heads.fg_bg_sampler.batch_size_per_image,
                           "positive_fraction": tv.roi_heads.fg_bg_sampler.positive_fraction}
    assert roi.roi_align.output_size == tv.roi_heads.box_roi_pool.output_size
    assert roi.roi_align.sampling_ratio == tv.roi_heads.box_roi_pool.sampling_ratio
    assert roi.box_head.fc6.out_features == tv.roi_heads.box_head.fc6.out_features == 1024
    assert roi.cls_score.out_features == tv.roi_heads.box_predictor.cls_score.out_features == 81
    assert (roi.nms_thresh, roi.detections_per_img, ours.score_thresh) == (
        tv.roi_heads.nms_thresh, tv.roi_heads.detections_per_img, tv.roi_heads.score_thresh)
    assert (ours.transform.min_size, ours.transform.max_size) == (tv.transform.min_size, tv.transform.max_size)


def test_same_network_size_and_trainable_batch_norm(models):
    ours, tv = models

    def count(module):
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    assert count(ours.backbone) == count(tv.backbone)  # every ResNet stage and the FPN trainable in both
    assert count(ours.rpn.head) == count(tv.rpn.head)
    # class-specific deltas: torchvision also predicts the background's 4
    assert count(ours.roi_head) == count(tv.roi_heads) - 4 * (1024 + 1)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.backbone.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in tv.backbone.modules())

