import pytest
import torch

from rsdet.errors import ConfigError
from rsdet.models.samplers import resolve_stage_sampler, sample_instances


def _classes():
    # image 0: 3 positives, 10 negatives, 2 ignored; image 1: 0 positives, 6 negatives
    cls = torch.tensor([0, 2, 1] + [-1] * 10 + [-2, -2] + [-1] * 6)
    img = torch.tensor([0] * 15 + [1] * 6)
    return cls, img


def test_none_keeps_every_non_ignored_instance():
    cls, img = _classes()
    keep = sample_instances(cls, img, 2, "none")
    assert keep.tolist() == [i for i in range(len(cls)) if cls[i] >= -1]


def test_random_respects_budget_and_fraction_and_pads_with_negatives():
    cls, img = _classes()
    torch.manual_seed(0)
    keep = sample_instances(cls, img, 2, "random", batch_per_image=4, positive_fraction=0.25)
    kept = cls[keep]
    per_image = img[keep]
    assert (per_image == 0).sum() == 4 and (per_image == 1).sum() == 4
    assert (kept[per_image == 0] >= 0).sum() == 1  # 4 * 0.25 positives
    assert (kept == -2).sum() == 0  # ignored never sampled
    assert keep.tolist() == sorted(keep.tolist())


def test_random_with_scarce_positives_fills_with_negatives():
    cls, img = _classes()
    keep = sample_instances(cls, img, 2, "random", batch_per_image=8, positive_fraction=0.75)
    kept = cls[keep][img[keep] == 0]
    assert (kept >= 0).sum() == 3 and len(kept) == 8


def test_unknown_sampler_is_a_config_error():
    with pytest.raises(ConfigError, match="sampler.rpn='hard'"):
        resolve_stage_sampler({"rpn": "hard"}, {}, "rpn")


def test_auto_takes_the_recipe_default_and_a_random_sampler_needs_a_budget():
    loss = {"default_sampler": {"rpn": "random"}}
    budget = {"budget": {"rpn": {"batch_per_image": 8, "positive_fraction": 0.25}}}
    assert resolve_stage_sampler({"rpn": "auto", **budget}, loss, "rpn") == \
        {"kind": "random", "batch_per_image": 8, "positive_fraction": 0.25}
    assert resolve_stage_sampler({}, loss, "head") == {"kind": "none"}  # stage the recipe does not name
    with pytest.raises(ConfigError, match="sampler.budget.head"):
        resolve_stage_sampler({"head": "random"}, loss, "head")


# ---------------------------------------------------------------- OHEM (the standard YOLACT, 3:1)
def _ohem(cls, img, losses, num_images=1, ratio=3.0):
    return sample_instances(torch.tensor(cls), torch.tensor(img), num_images, "ohem", neg_pos_ratio=ratio,
                            losses=torch.tensor(losses)).tolist()


def test_ohem_keeps_every_positive_and_the_highest_loss_negatives_at_3_to_1():
    #          0    1    2    3    4    5    6    7    8    9
    cls = [0, -1, -1, -1, 2, -1, -1, -2, -1, -1]
    losses = [0.1, 0.5, 2.0, 0.3, 0.2, 1.5, 0.9, 9.0, 0.05, 1.0]
    # 2 positives -> 6 negatives of the 7 (row 7 is ignored despite its loss); row 8 (0.05) is dropped
    assert _ohem(cls, [0] * 10, losses) == [0, 1, 2, 3, 4, 5, 6, 9]
    assert _ohem(cls, [0] * 10, losses, ratio=1.0) == [0, 2, 4, 5]


def test_ohem_ties_go_to_the_lower_row_and_images_are_separate():
    cls = [1, -1, -1, -1, -1, -1, 0, -1, -1]
    img = [0, 0, 0, 0, 0, 0, 1, 1, 1]
    losses = [0.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0, 0.2, 0.2]
    # image 0: 1 positive, 3 of the four tied negatives (rows 1, 2, 3); image 1: both of its 2 negatives (< 3)
    assert _ohem(cls, img, losses, num_images=2) == [0, 1, 2, 3, 6, 7, 8]


def test_ohem_image_without_positives_contributes_nothing():
    assert _ohem([-1, -1, -1], [0, 0, 0], [3.0, 2.0, 1.0]) == []
    assert _ohem([-1, -1, 0, -1], [0, 0, 1, 1], [3.0, 2.0, 0.0, 1.0], num_images=2) == [2, 3]


def test_ohem_needs_losses_and_a_ratio():
    with pytest.raises(ConfigError, match="sampler.head=ohem"):
        resolve_stage_sampler({"head": "ohem"}, {}, "head")
    assert resolve_stage_sampler({"head": "ohem", "budget": {"head": {"neg_pos_ratio": 3}}}, {}, "head") == \
        {"kind": "ohem", "neg_pos_ratio": 3.0}
    with pytest.raises(ConfigError, match="one-stage heads"):  # an R-CNN stage computes no loss before sampling
        sample_instances(torch.tensor([0, -1]), torch.tensor([0, 0]), 1, "ohem", neg_pos_ratio=3)


def test_ohem_row_losses_are_softmax_ce_or_summed_bce():
    import torch.nn.functional as F

    from rsdet.models.samplers import ohem_row_losses

    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, -1.0]])
    classes = torch.tensor([1, -1])
    ce = ohem_row_losses(logits, classes, softmax=True)  # background = last column
    assert torch.allclose(ce, F.cross_entropy(logits, torch.tensor([1, 2]), reduction="none"))
    bce = ohem_row_losses(logits, classes, softmax=False)
    target = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(bce, F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1))
