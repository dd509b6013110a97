"""Repeat-factor sampling: hand-computed factors on a toy annotation set, stochastic rounding that
is deterministic per (seed, epoch), and build_train_sampler from the dataset config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rsdet.data.coco_dataset import CocoDetectionDataset
from rsdet.data.sampling import RepeatFactorSampler, build_train_sampler, category_repeat_factors, repeat_factors
from rsdet.errors import ConfigError

# Ten images; A is in 8 of them, B in 2, C in 1, D in 1 (twice); image 8 has no object.
A, B, C, D = 5, 7, 9, 11
TOY = [[A, B], [A, B, B], [A, C], [A], [A], [A], [A], [A], [], [D, D]]
# Threshold 0.3: f(A) = 0.8 → r = 1 (never below 1); f(B) = 0.2 → sqrt(0.3 / 0.2) = sqrt(1.5);
# f(C) = f(D) = 0.1 → sqrt(3). An image takes the largest factor of its categories.
R_B, R_C = math.sqrt(1.5), math.sqrt(3.0)
EXPECTED = [R_B, R_B, R_C, 1, 1, 1, 1, 1, 1, R_C]


def test_hand_computed_repeat_factors():
    assert category_repeat_factors(TOY, 0.3) == pytest.approx({A: 1.0, B: R_B, C: R_C, D: R_C})
    assert repeat_factors(TOY, 0.3) == pytest.approx(EXPECTED)
    assert R_B == pytest.approx(1.2247449) and R_C == pytest.approx(1.7320508)
    # LVIS' threshold 1e-3 on 2000 images: a category in 1 image has f = 5e-4 → r = sqrt(2); one in 2 images
    # has f = 1e-3 = t → r = 1.
    labels = [[1]] + [[2]] * 2 + [[3]] * 1997
    assert repeat_factors(labels, 1e-3)[:3] == pytest.approx([math.sqrt(2), 1, 1])


def test_stochastic_rounding_is_deterministic_per_seed_and_epoch():
    sampler = RepeatFactorSampler(EXPECTED, seed=4)
    assert sampler.expected_length == pytest.approx(6 + 2 * R_B + 2 * R_C)
    first = list(sampler)
    assert len(sampler) == len(first)
    assert list(RepeatFactorSampler(EXPECTED, seed=4)) == first  # same seed, same epoch
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sampler.epoch == 1
    sampler.set_epoch(0)
    assert list(sampler) == first  # an epoch replays (resumed runs)
    assert list(RepeatFactorSampler(EXPECTED, seed=5)) != first
    counts = np.zeros((400, len(EXPECTED)), dtype=np.int64)
    for epoch in range(400):
        sampler.set_epoch(epoch)
        counts[epoch] = np.bincount(list(sampler), minlength=len(EXPECTED))
    # Each epoch rounds each factor down or up ...
    assert np.all(counts >= np.floor(EXPECTED)) and np.all(counts <= np.ceil(EXPECTED))
    # ... with the probability that makes the mean the factor.
    assert counts.mean(0) == pytest.approx(EXPECTED, abs=0.06)
    unshuffled = RepeatFactorSampler([1, 2, 1], shuffle=False)
    assert list(unshuffled) == [0, 1, 1, 2]
    with pytest.raises(ValueError, match=">= 1"):
        RepeatFactorSampler([1, 0.5])


def _toy_dataset(tmp_path) -> CocoDetectionDataset:
    images = [{"id": i + 1, "file_name": f"{i}.png", "width": 20, "height": 20} for i in range(len(TOY))]
    anns = [{"image_id": i + 1, "category_id": c, "bbox": [1, 1, 5, 5]} for i, cats in enumerate(TOY) for c in cats]
    anns.append({"image_id": 6, "category_id": C, "bbox": [1, 1, 5, 5], "iscrowd": 1})  # crowd: not counted
    anns.append({"image_id": 7, "category_id": C, "bbox": [1, 1, 0, 5]})  # degenerate: dropped, not counted
    data = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in (A, B, C, D)]}
    (tmp_path / "toy.json").write_text(json.dumps(data))
    return CocoDetectionDataset(tmp_path, tmp_path / "toy.json")


def test_build_train_sampler_from_the_dataset_config(tmp_path):
    ds = _toy_dataset(tmp_path)
    assert ds.image_labels()[:3] == [[0, 1], [0, 1, 1], [0, 2]] and ds.image_labels()[8] == []
    sampler = build_train_sampler(ds, OmegaConf.create({"repeat_factor_threshold": 0.3}), seed=0)
    assert isinstance(sampler, RepeatFactorSampler) and sampler.factors == pytest.approx(EXPECTED)
    assert build_train_sampler(ds, OmegaConf.create({"repeat_factor_threshold": None}), seed=0) is None
    assert build_train_sampler(ds, {"name": "shapes"}, seed=0) is None  # key absent: off
    for bad in (0, -0.1, 1.5, "1e-3", True):
        with pytest.raises(ConfigError, match=r"dataset\.repeat_factor_threshold=.* must be a fraction"):
            build_train_sampler(ds, {"repeat_factor_threshold": bad}, seed=0)
    with pytest.raises(ConfigError, match="image_labels"):
        build_train_sampler([1, 2], {"repeat_factor_threshold": 0.1}, seed=0)
    lvis = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "dataset" / "lvis.yaml")
    assert lvis.repeat_factor_threshold == 0.001  # the official LVIS recipe
    assert build_train_sampler(ds, lvis, seed=0).factors.tolist() == [1.0] * 10  # every f(c) >= 0.1 > t here
    # In a DataLoader: batches follow the sampler, and set_epoch changes them.
    loader = torch.utils.data.DataLoader(ds, batch_size=3, sampler=sampler, collate_fn=lambda b: b)
    assert len(loader) == math.ceil(len(sampler) / 3)
    order = [i for i in sampler]
    sampler.set_epoch(3)
    assert [i for i in sampler] != order
