"""Whole-image masks: box crops, the padded-input -> original-frame mapping, and the generic path of
``Detector.forward`` for detectors that predict full-image masks (docs/detectors.md, "Detection output")."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from rsdet.errors import RsdetError
from rsdet.models.detectors.base import Detector
from rsdet.models.image_masks import box_region, crop_masks, image_masks_to_original
from rsdet.models.stage import StageSpec


def test_box_region_keeps_pixels_whose_centre_is_inside_the_box():
    box = torch.tensor([[1.2, 0.5, 2.8, 3.0]])
    region = box_region(box, 5, 5)[0]
    # centres x = 1.5, 2.5 in [1.2, 2.8]; y = 0.5, 1.5, 2.5 in [0.5, 3.0]
    expected = torch.zeros(5, 5)
    expected[0:3, 1:3] = 1
    assert torch.equal(region, expected)
    grown = box_region(box, 5, 5, padding=1.0)[0]  # x in [0.2, 3.8], y in [-0.5, 4.0]
    expected = torch.zeros(5, 5)
    expected[0:4, 0:4] = 1
    assert torch.equal(grown, expected)
    masks = torch.full((1, 5, 5), 0.7)
    assert torch.allclose(crop_masks(masks, box), 0.7 * box_region(box, 5, 5))



def _quarter_mask():
    """(1, 24, 32) probabilities over a 96 x 128 padded input at a quarter of its size: 1 on the
    quarter-pixels of rows 0-9 and columns 0-15 (padded pixels 0-39 x 0-63), 0 elsewhere."""
    probs = torch.zeros(1, 24, 32)
    probs[0, :10, :16] = 1.0
    return probs


def test_image_masks_are_resized_to_the_padded_input_cropped_to_the_image_and_resized_to_the_original():
    # a 50 x 80 image resized to 80 x 128 and padded to 96 x 128: the mask's edge at padded row 40 is the
    # middle of the resized image (80 rows), so row 25 of the original; had the 16 padding rows been kept
    # it would land at 40 / 96 * 50 = 20.8
    out = image_masks_to_original(_quarter_mask(), (80, 128), (96, 128), (50, 80))
    assert out.shape == (1, 1, 50, 80) and out.min() >= 0 and out.max() <= 1
    m = out[0, 0]
    assert m[:24, :39].min() > 0.5 and m[26:].max() < 0.5 and m[:, 41:].max() < 0.5
    assert m[21:24, :30].min() > 0.9  # would be below 0.5 with the padding rows kept
    step = nn.functional.interpolate(_quarter_mask()[None], size=(96, 128), mode="bilinear", align_corners=False)[0]
    resized = nn.functional.interpolate(step[None, :, :80], size=(50, 80), mode="bilinear", align_corners=False)[0]
    assert torch.equal(out[:, 0], resized.clamp(0, 1))  # exactly the documented steps
    cropped = image_masks_to_original(_quarter_mask(), (80, 128), (96, 128), (50, 80),
                                      boxes=torch.tensor([[0.0, 0.0, 20.0, 10.0]]))
    assert cropped[0, 0, 12:].max() == 0 and cropped[0, 0, :, 22:].max() == 0
    assert torch.equal(cropped[0, 0, :10, :20], m[:10, :20])
    assert image_masks_to_original(torch.zeros(0, 24, 32), (80, 128), (96, 128), (50, 80)).shape == (0, 1, 50, 80)
    with pytest.raises(RsdetError, match=r"\(n, h, w\)"):
        image_masks_to_original(torch.zeros(1, 1, 24, 32), (80, 128), (96, 128), (50, 80))


class FullImageMaskDetector(Detector):
    """A box-less mask detector as small as it gets: one conv as its backbone, a fixed mask over the
    padded input at a quarter of its size as its detection."""

    predicts_masks = True

    def __init__(self, cfg, num_classes):
        super().__init__(cfg, num_classes, [StageSpec("head", num_classes, dense=True, masks=True, boxes=False)])
        self.backbone = nn.Conv2d(3, 2, 1)
        self.seen = []

    def detect(self, images, features):
        self.seen.append((tuple(images.tensors.shape[-2:]), list(images.image_sizes)))
        return [{"boxes": torch.tensor([[0.0, 0.0, 64.0, 40.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1]), "image_masks": _quarter_mask()} for _ in images.image_sizes]


def _detector(cls=FullImageMaskDetector):
    cfg = OmegaConf.create({
        "detector": {"name": "full_image_masks", "min_size": 96, "max_size": 128},
        "dataset": {"min_size": 96, "max_size": 128}, "schedule": {},
        "loss": {"cls": "rs", "label": "iou", "weighting": "score", "balance": "value", "test_score_thresh": 0.4,
                 "head": {}}})
    return cls(cfg, 3).eval()


def test_detector_forward_maps_image_masks_of_the_padded_input_to_the_original_frame():
    model = _detector()
    det = model([torch.rand(3, 50, 80)])[0]
    assert model.seen == [((96, 128), [(80, 128)])]  # the image really was padded
    assert "image_masks" not in det and det["masks"].shape == (1, 1, 50, 80)
    assert torch.allclose(det["boxes"], torch.tensor([[0.0, 0.0, 40.0, 25.0]]))  # boxes mapped by the transform
    expected = image_masks_to_original(_quarter_mask(), (80, 128), (96, 128), (50, 80))
    assert torch.equal(det["masks"], expected)
    assert model.criterion.cfg["head"].label == "dice"  # the box-less stage's default label


def test_box_cropping_detectors_get_their_masks_zeroed_outside_the_box():
    class Cropping(FullImageMaskDetector):
        crop_image_masks_to_boxes = True

    det = _detector(Cropping)([torch.rand(3, 50, 80)])[0]
    outside = 1 - box_region(det["boxes"], 50, 80)
    assert (det["masks"][:, 0] * outside).abs().max() == 0 and det["masks"].max() > 0.9


def test_a_detection_with_both_mask_forms_is_an_error():
    class Both(FullImageMaskDetector):
        def detect(self, images, features):
            dets = super().detect(images, features)
            for d in dets:
                d["masks"] = torch.zeros(1, 1, 28, 28)
            return dets

    with pytest.raises(RsdetError, match="both masks .*and image_masks"):
        _detector(Both)([torch.rand(3, 50, 80)])
