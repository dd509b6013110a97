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
