"""The shapes-pretrained backbone (detector.backbone.pretrained=shapes): trained once, cached, safe to
load, from images the detector never sees."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rsdet.data import cli as data_cli
from rsdet.models import pretrain
from rsdet.models.backbone import build_backbone, resolve_pretrained

TINY = {**pretrain.default_params(10), "iters": 3, "batch": 2, "crop": 32, "held_out": 4}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_trained_once_then_reused_and_loads_as_plain_tensors(tmp_path, one_thread):
    path, manifest, trained = pretrain.ensure_shapes_backbone(tmp_path, TINY, progress=False)
    assert trained and path.is_file() and path.parent == tmp_path / "backbones"
    assert manifest["hash"] == pretrain.params_hash(TINY) and 0.0 <= manifest["held_out_accuracy"] <= 1.0
    assert json.loads(path.with_suffix(".json").read_text()) == manifest
    mtime = path.stat().st_mtime_ns
    again, _, trained_again = pretrain.ensure_shapes_backbone(tmp_path, TINY, progress=False)
    assert again == path and not trained_again and path.stat().st_mtime_ns == mtime
    state = torch.load(path, weights_only=True)              # tensors only: no code runs on load
    assert all(torch.is_tensor(v) for v in state.values())
    assert not any(k.startswith("fc.") for k in state) and "layer4.0.bn2.running_var" in state
    # the detector's backbone takes every tensor, BN statistics included (frozen_bn keeps them)
    cfg = OmegaConf.create({"depth": 10, "pretrained": str(path), "norm": "frozen_bn", "trainable_stages": 3,
                            "returned_stages": [2, 3, 4], "fpn_channels": 32})
    body = build_backbone(cfg).body
    assert torch.equal(body["conv1"].weight, state["conv1.weight"])
    assert torch.equal(body["layer3"][0].bn1.running_mean, state["layer3.0.bn1.running_mean"])


def test_the_same_recipe_gives_the_same_weights(tmp_path, one_thread):
    a, _, _ = pretrain.ensure_shapes_backbone(tmp_path / "a", TINY, progress=False)
    b, _, _ = pretrain.ensure_shapes_backbone(tmp_path / "b", TINY, progress=False)
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    other = {**TINY, "seed": 1}
    assert pretrain.weights_path(tmp_path, other) != pretrain.weights_path(tmp_path, TINY)


def test_a_damaged_manifest_means_train_again(tmp_path, one_thread):
    path, _, _ = pretrain.ensure_shapes_backbone(tmp_path, TINY, progress=False)
    path.with_suffix(".json").write_text("{not json")
    _, manifest, trained = pretrain.ensure_shapes_backbone(tmp_path, TINY, progress=False)
    assert trained and manifest["hash"] == pretrain.params_hash(TINY)


def test_pretraining_images_are_not_detection_images():
    """The pretraining stream is its own seed stream: its first image is not the shapes train/val image 0."""
    from rsdet.data import shapes
    from rsdet.data.shapes_draw import draw_image

    draw = pretrain._draw_params(192)
    mine, _ = draw_image(draw, np.random.default_rng([0, pretrain._STREAM, 0]))
    for code in shapes._SPLIT_CODES.values():
        theirs, _ = draw_image(draw, np.random.default_rng([0, code, 0]))
        assert not np.array_equal(mine, theirs)
    crops, labels = pretrain._batch(draw, 0, 0, 2, 32)
    assert crops.shape[1:] == (3, 32, 32) and len(crops) == len(labels)
    assert labels.min() >= 0 and labels.max() < len(draw.classes)


def test_pretrained_shapes_resolves_to_the_cached_file(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("RSDET_CACHE", str(tmp_path))
    monkeypatch.setattr(pretrain, "default_params", lambda depth=10: {**TINY, "depth": depth})
    path = resolve_pretrained("shapes", 10)
    assert path == pretrain.weights_path(tmp_path, TINY) and path.is_file()


def test_cli_trains_and_reports(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setenv("RSDET_CACHE", str(tmp_path))
    monkeypatch.setattr(pretrain, "default_params", lambda depth=10: {**TINY, "depth": depth})
    assert data_cli.main(["pretrain-backbone"]) == 0
    out = capsys.readouterr().out
    assert "trained in" in out and "held-out objects" in out and "pretrained=shapes" in out
    assert data_cli.main(["pretrain-backbone"]) == 0
    assert "already trained (cached)" in capsys.readouterr().out
    assert data_cli.main(["pretrain-backbone", "--depth", "7"]) == 1
    assert "--depth must be one of" in capsys.readouterr().err


def test_quick_recipe_from_the_environment(monkeypatch):
    monkeypatch.setenv("RSDET_PRETRAIN_ITERS", "5")
    quick = pretrain.default_params(10)
    assert quick["iters"] == 5 and quick["held_out"] == 40
    monkeypatch.delenv("RSDET_PRETRAIN_ITERS")
    full = pretrain.default_params(10)
    assert full["iters"] == 500 and pretrain.params_hash(full) != pretrain.params_hash(quick)
    monkeypatch.setenv("RSDET_PRETRAIN_ITERS", "many")
    with pytest.raises(Exception, match="RSDET_PRETRAIN_ITERS='many' must be a positive integer"):
        pretrain.default_params(10)
