"""A stage without box regression (``StageSpec(boxes=False)``) through the real criterion.

The stage comes from a tiny SOLO-style module: an S x S grid of cells, each with C class logits and
one whole-image mask map (docs/detectors.md, "The model layer"). The criterion must add no box
term, rank the positives by the Dice of their detached masks and refuse box-only options."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from rsdet import losses as L
from rsdet.errors import ConfigError, RsdetError
from rsdet.models.criterion import Criterion, stage_loss_config
from rsdet.models.stage import MaskPrediction, StageOutput, StageSpec

RS = {"name": "rs", "cls": "rs", "delta": 0.5, "label": "iou", "box": "giou", "box_weight": 1.0, "weighting": "score",
      "delta_loc": None, "balance": "value", "box_normalizer": "weights", "stage_weights": {}, "prior_prob": None,
      "lr": 0.01, "test_score_thresh": 0.4, "default_sampler": {}, "head": {}}
FOCAL = dict(RS, name="focal", cls="focal", label="binary", weighting="none", balance="constant", box_weight=2.0,
             mask_weight=3.0)
SPEC = StageSpec("head", 3, dense=True, masks=True, boxes=False)
GRID, SIZE = 3, 12


class GridMaskHead(nn.Module):
    """Per cell of a GRID x GRID map: C class logits and a SIZE x SIZE mask (SOLO's decoupled idea,
    shrunk): one 1x1 conv to the logits, one to GRID² mask channels on the upsampled features."""

    def __init__(self, channels=4, num_classes=3):
        super().__init__()
        self.cls = nn.Conv2d(channels, num_classes, 1)
        self.mask = nn.Conv2d(channels, GRID * GRID, 1)

    def forward(self, feats):
        logits = self.cls(feats).permute(0, 2, 3, 1).reshape(-1, self.cls.out_channels)  # rows: image, y, x
        up = nn.functional.interpolate(feats, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        masks = self.mask(up).reshape(-1, SIZE, SIZE)  # row b * GRID² + cell
        return logits, masks


def _stage(with_pos=True, seed=0, aux=None):
    """Two images of GRID² cells; positives: cells 1 and 4 of image 0, cell 7 of image 1."""
    torch.manual_seed(seed)
    head = GridMaskHead()
    logits, mask_logits = head(torch.randn(2, 4, GRID, GRID))
    m = 2 * GRID * GRID
    classes = torch.full((m,), -1)
    if with_pos:
        classes[[1, 4, 9 + 7]] = torch.tensor([0, 2, 1])
    classes[5] = -2  # ignored
    rows = torch.nonzero(classes >= 0).flatten()
    gt = torch.zeros(len(rows), SIZE, SIZE)
    for k in range(len(rows)):
        gt[k, 2 * k:2 * k + 6, 3:9] = 1.0
    masks = MaskPrediction(logits=mask_logits[rows], targets=gt, rows=rows, weight_rows=rows)
    out = StageOutput(SPEC, cls_logits=logits, gt_classes=classes,
                      image_index=torch.arange(2).repeat_interleave(GRID * GRID), masks=masks,
                      aux={} if aux is None else aux)
    return out, head


def _criterion(cfg, group_images=None):
    return Criterion(OmegaConf.create(cfg), [SPEC], group_images=group_images, detector="grid")


def test_rs_on_a_boxless_stage_has_no_box_term_and_ranks_by_the_dice_of_the_masks():
    crit = _criterion(RS)
    assert crit.cfg["head"].label == "dice"  # the recipe's IoU label is the Dice label without boxes
    out, head = _stage()
    terms, stats = crit(out, 2)
    assert set(terms) == {"head_rank", "head_sort", "head_mask"}
    assert stats["head/num_pos"] == 3 and stats["head/num_neg"] == 14
    keep = out.gt_classes >= -1
    pos = torch.nonzero(out.gt_classes >= 0).flatten()
    probs = out.masks.logits.detach().sigmoid()
    target = torch.zeros(out.cls_logits.shape)
    target[pos, out.gt_classes[pos]] = L.dice_coefficient(probs, out.masks.targets)
    rank, sort = L.rank_sort_loss(out.cls_logits.detach()[keep], target[keep], delta=0.5)
    assert torch.allclose(terms["head_rank"], rank) and torch.allclose(terms["head_sort"], sort)
    # the score-weighted Dice mask term, value self-balanced against L_RS
    assert torch.allclose(terms["head_mask"], rank + sort, atol=1e-6)
    sum(terms.values()).backward()
    assert head.cls.weight.grad.abs().sum() > 0 and head.mask.weight.grad.abs().sum() > 0


def test_focal_on_a_boxless_stage_adds_the_constant_weighted_dice_mask_loss():
    out, _ = _stage()
    terms, _ = _criterion(FOCAL)(out, 2)
    assert set(terms) == {"head_cls", "head_mask"}
    dice = L.dice_loss(out.masks.logits.sigmoid(), out.masks.targets)
    assert torch.allclose(terms["head_mask"], 3.0 * dice.mean(), atol=1e-6)


def test_a_boxless_batch_without_positives_gives_zero_valued_zero_gradient_terms():
    out, head = _stage(with_pos=False)
    terms, stats = _criterion(RS)(out, 2)
    total = sum(terms.values())
    total.backward()
    assert float(total.detach()) == 0.0 and stats["head/num_pos"] == 0
    assert head.cls.weight.grad.abs().sum() == 0


def test_ranking_groups_split_a_boxless_stage_by_image():
    out, _ = _stage()
    grouped, _ = _criterion(RS, group_images=1)(out, 2)
    halves = [_criterion(RS)(out.select(torch.nonzero(out.image_index == k).flatten(), k), 1)[0] for k in (0, 1)]
    assert out.select(torch.arange(9, 18), 1).box_deltas is None
    for name in grouped:
        assert torch.allclose(grouped[name], (halves[0][name] + halves[1][name]) / 2, atol=1e-6)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"head": {"label": "iou"}}, r"loss.head.label=iou needs the box IoU .*use binary or dice"),
    ({"label": "iou_dice"}, r"loss.label=iou_dice needs the box IoU .*use binary or dice"),
    ({"weighting": "iou"}, r"loss.weighting=iou .*no box regression; use none, score or rank"),
    ({"head": {"weighting": "centerness"}}, r"loss.weighting=centerness .*use none, score or rank"),
    ({"head": {"box": "l1"}}, r"loss.head.box=l1 configures the box term.*loss.mask"),
    ({"head": {"box_weight": 2.0}}, r"loss.head.box_weight=2.0 configures the box term"),
    ({"cls": "alrp", "delta": 1.0}, r"loss.cls=alrp needs the box localisation .*\['ap', 'focal', 'rs'\]"),
    ({"cls": "ce"}, r"loss.cls=ce needs a softmax classifier .*\['ap', 'focal', 'rs'\]"),
])
def test_box_only_options_on_a_boxless_stage_are_errors_naming_the_choices(overrides, match):
    cfg = {**RS, **overrides, "head": {**RS["head"], **overrides.get("head", {})}}
    with pytest.raises(ConfigError, match=match):
        _criterion(cfg)


def test_boxless_defaults_and_the_valid_choices():
    assert stage_loss_config(OmegaConf.create(dict(RS, label="binary")), SPEC).label == "binary"
    assert stage_loss_config(OmegaConf.create(dict(RS, head={"label": "dice"})), SPEC).label == "dice"
    no_masks = StageSpec("cls_only", 3, boxes=False)
    assert stage_loss_config(OmegaConf.create(dict(RS, cls_only={})), no_masks).label == "binary"
    for weighting in ("none", "score", "rank"):
        out, _ = _stage()
        terms, _ = _criterion(dict(RS, weighting=weighting))(out, 2)
        assert torch.isfinite(terms["head_mask"])


def test_a_boxless_stage_trains_no_aux_branch():
    out, _ = _stage(aux={"centerness": torch.zeros(18)})
    with pytest.raises(ConfigError, match="centerness branch .*no box regression"):
        _criterion(RS)(out, 2)


def test_stage_outputs_match_their_declared_box_fields():
    logits, classes, image = torch.zeros(4, 3), torch.full((4,), -1), torch.zeros(4, dtype=torch.long)
    with pytest.raises(RsdetError, match="declared without boxes .*sets box_deltas"):
        StageOutput(SPEC, logits, torch.zeros(4, 4), gt_classes=classes, image_index=image)
    with pytest.raises(RsdetError, match="box stage 'rcnn' lacks ref_boxes, gt_boxes, box_coder"):
        StageOutput(StageSpec("rcnn", 3), logits, torch.zeros(4, 4), gt_classes=classes, image_index=image)
    with pytest.raises(RsdetError, match="needs gt_classes and image_index"):
        StageOutput(SPEC, logits)
