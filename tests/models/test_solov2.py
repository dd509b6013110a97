"""SOLOv2: training outputs of both recipes, Dice labels paired with their own masks when two instances'
cells interleave, the detection contract (masks in the original frame, boxes from the masks) and the
configuration errors of a box-less detector."""

import pytest
import torch
from hydra import compose, initialize_config_dir

from rsdet import losses as L
from rsdet.errors import ConfigError, DataError
from rsdet.models import build_detector
from rsdet.models.criterion import Criterion
from rsdet.models.detectors.solov2 import boxes_from_masks, peak_points
from rsdet.models.heads.solo import dynamic_masks
from rsdet.train_cli import CONF_DIR

SMALL = ["detector.backbone.fpn_channels=32", "detector.head.feat_channels=32", "detector.head.kernel_channels=16",
         "detector.mask_feat.channels=16", "dataset.min_size=64", "dataset.max_size=64"]
# one level: P3 at stride 8 with an 8 x 8 grid taking every instance
ONE_LEVEL = ["detector.head.grids=[8]", "detector.head.strides=[8]", "detector.head.feature_levels=[1]",
             "detector.head.scale_ranges=[[1,1000]]"]


def _cfg(loss="rs", extra=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=["detector=solov2", f"loss={loss}", *SMALL, *extra])


def _model(loss="rs", extra=()):
    cfg = _cfg(loss, extra)
    torch.manual_seed(0)
    return build_detector(cfg, 6)


def _square(rows, cols, size=64):
    mask = torch.zeros(size, size, dtype=torch.uint8)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return mask, torch.tensor([cols[0], rows[0], cols[1], rows[1]], dtype=torch.float32)


def _batch():
    """Two 64 x 64 images; in each, A (rows 8-23, cols 8-23) and B (same rows, cols 40-55): on an 8 x 8 grid
    A takes cells (1..2, 1..2) and B (1..2, 5..6), so in raster order their cells interleave A A B B A A B B."""
    (ma, ba), (mb, bb) = _square((8, 24), (8, 24)), _square((8, 24), (40, 56))
    target = {"boxes": torch.stack([ba, bb]), "labels": torch.tensor([1, 4]), "masks": torch.stack([ma, mb])}
    return [torch.rand(3, 64, 64), torch.rand(3, 64, 64)], [target, {k: v.clone() for k, v in target.items()}]


@pytest.mark.parametrize("loss", ["rs", "focal"])
def test_training_step_gives_the_recipe_terms_and_gradients_everywhere(loss):
    model = _model(loss).train()
    images, targets = _batch()
    terms, stats = model(images, targets)
    assert set(terms) == ({"head_rank", "head_sort", "head_mask"} if loss == "rs" else {"head_cls", "head_mask"})
    assert all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    for part in (model.head.kernel_out, model.head.cls_out, model.mask_feat.out[0]):
        assert part.weight.grad is not None and part.weight.grad.abs().sum() > 0
    cells = sum(g * g for g in model.grids)
    assert stats["head/num_pos"] + stats["head/num_neg"] == 2 * cells  # every cell of both images, no sampler
    assert model.head.cls_out.out_channels == 6  # C sigmoid logits per cell


def test_a_batch_without_instances_gives_zero_losses_with_gradients():
    model = _model().train()
    images, _ = _batch()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros(0, 64, 64, dtype=torch.uint8)}
    terms, stats = model(images, [empty, empty])
    assert stats["head/num_pos"] == 0 and all(float(v.detach()) == 0.0 for v in terms.values())
    sum(terms.values()).backward()


def test_dice_labels_and_weights_pair_each_positive_with_its_own_mask_when_cells_interleave():
    model = _model(extra=ONE_LEVEL).train()
    images, targets = _batch()
    image_list, resized = model.transform(images, targets)
    features = model.backbone(image_list.tensors)
    out = model.stage_outputs(image_list, features, resized)[0]
    rows = torch.nonzero(out.gt_classes >= 0).flatten()
    assert len(rows) == 16  # 4 cells per instance, 2 instances, 2 images
    owner = [1 if int(r) % 64 % 8 >= 4 else 0 for r in rows[:8]]  # image 0, raster order
    assert owner == [0, 0, 1, 1, 0, 0, 1, 1]  # interleaved: grid order (instance by instance) is 0 0 0 0 1 1 1 1
    assert out.masks.rows.tolist() == rows.tolist() and out.masks.weight_rows.tolist() == rows.tolist()
    # the criterion's Dice label of each positive = Dice of its own predicted mask with its own instance's GT
    masks = Criterion._label_masks(model.criterion.cfg["head"], out, rows)
    labels = L.continuous_labels("dice", **masks)
    with torch.no_grad():
        _, kernels, feat = model._predict(features, (64, 64))
        for k, r in enumerate(rows.tolist()):
            img, cell = divmod(r, 64)
            own = dynamic_masks(feat[img], kernels[img, cell][None]).sigmoid()[0]
            gt = torch.nn.functional.interpolate(resized[img]["masks"][1 if cell % 8 >= 4 else 0][None, None].float(),
                                                 size=(16, 16), mode="bilinear", align_corners=False)[0, 0] > 0.5
            assert torch.equal(masks["gt_masks"][k].bool(), gt)
            dice = 2 * (own * gt).sum() / ((own * own).sum() + gt.sum() + 1e-5)
            assert labels[k].item() == pytest.approx(dice.item(), rel=1e-4)
    assert float(labels.std()) > 0  # the cells' masks differ, so a mispairing would show


def test_eval_gives_masks_in_the_original_frame_and_boxes_from_their_extents():
    model = _model(extra=["detector.test_score_thresh=0.0"]).eval()
    det = model([torch.rand(3, 40, 50)])[0]  # resized to 64 x 80 by the transform, mapped back here
    n = len(det["boxes"])
    assert 0 < n <= 100 and det["scores"].shape == (n,) and det["labels"].shape == (n,)
    assert det["labels"].min() >= 0 and det["labels"].max() < 6
    assert det["masks"].shape == (n, 1, 40, 50) and 0 <= det["masks"].min() and det["masks"].max() <= 1
    assert bool((det["scores"][:-1] >= det["scores"][1:]).all()) and det["scores"].min() >= 0.05  # update thr
    binary = det["masks"][:, 0] > 0.5
    extents = boxes_from_masks(binary)
    assert torch.allclose(det["boxes"], extents, atol=1.5)  # the box of the evaluated mask (bilinear resizes)


def test_peak_points_keep_the_maxima_of_2x2_windows():
    probs = torch.tensor([[[[0.1, 0.9, 0.2], [0.3, 0.4, 0.8], [0.5, 0.2, 0.1]]]])
    kept = peak_points(probs)[0, 0]
    # each cell is compared with itself and its up, left and up-left neighbours: 0.8 loses to 0.9 above-left
    assert torch.equal(kept, probs[0, 0] * torch.tensor([[1.0, 1, 0], [1, 0, 0], [1, 0, 0]]))


def test_boxes_from_masks():
    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:7] = True
    assert boxes_from_masks(masks).tolist() == [[2.0, 1.0, 7.0, 3.0], [0.0, 0.0, 0.0, 0.0]]


def test_training_without_masks_says_how_to_load_them():
    model = _model().train()
    images, targets = _batch()
    with pytest.raises(DataError, match="dataset.with_masks=true"):
        model(images, [{k: t[k] for k in ("boxes", "labels")} for t in targets])


def test_multi_scale_training_draws_a_short_side_and_tests_at_min_size():
    model = _model(extra=["detector.train_min_sizes=[32,96]"])
    images, targets = _batch()
    model.train()(images, targets)
    assert model.transform.min_size == (32, 96)
    model.eval()([images[0]])
    assert model.transform.min_size == (64,)


@pytest.mark.parametrize("override, message", [
    ("loss.weighting=iou", "use none, score or rank"),
    ("loss.head.box=l1", "loss.mask / loss.mask_weight"),
    ("loss.head.label=iou", "use binary or dice"),
    ("loss.label=iou_dice", "use binary or dice"),
    ("detector.head.grids=[8,4]", "one entry per level"),
    ("detector.head.feature_levels=[0,1,2,3,7]", "are not FPN outputs"),
    ("detector.backbone.extra_levels=p6p7", "P2-P6"),
    ("detector.test.kernel=box", "gaussian, linear"),
])
def test_box_only_and_inconsistent_options_are_config_errors_naming_the_choices(override, message):
    with pytest.raises(ConfigError, match=message):
        _model(extra=[override])


@pytest.mark.parametrize("loss, message", [("ce", "softmax"), ("alrp", "no box regression")])
def test_losses_that_need_a_softmax_or_boxes_are_refused_with_the_valid_ones(loss, message):
    with pytest.raises(ConfigError, match=message) as err:
        _model(loss)
    assert "focal" in str(err.value) and "rs" in str(err.value)


def test_light_and_r101_variants_are_the_same_detector_with_the_release_sizes():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        light = compose("train", overrides=["detector=solov2_light", "schedule=1x"])
        r101 = compose("train", overrides=["detector=solov2_r101", "schedule=3x"])
    assert light.detector.name == "solov2_light" and light.detector.backbone.depth == 34
    assert light.detector.head.num_convs == 2 and light.detector.head.kernel_channels == 128
    assert r101.detector.backbone.depth == 101 and r101.detector.head.feat_channels == 512
    assert r101.schedule.grad_clip == 35.0 and list(r101.schedule.steps) == [27, 33]
    assert r101.loss.lr == 0.006 and r101.loss.test_score_thresh == 0.2
