"""Backbone weights come from local files only: an explicit path, the torch hub cache, or random init with a warning."""

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.models import resnet

from rsdet.errors import ConfigError
from rsdet.models.backbone import build_backbone, resolve_pretrained


def _cfg(**kw):
    base = dict(depth=18, pretrained=None, norm="frozen_bn", trainable_stages=3, returned_stages=[2, 3, 4],
                fpn_channels=32)
    base.update(kw)
    return OmegaConf.create(base)


def test_missing_explicit_weight_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        resolve_pretrained(str(tmp_path / "nope.pth"), 50)


def test_imagenet_without_cache_warns_and_trains_from_scratch(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.warns(UserWarning, match="random initialisation"):
        model = build_backbone(_cfg(pretrained="imagenet"))
    # random init falls back to trainable batch norm: frozen statistics of a random net are meaningless
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_local_weight_file_is_loaded_and_early_stages_frozen(tmp_path):
    reference = resnet.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = build_backbone(_cfg(pretrained=str(path)))
    assert torch.equal(model.body.conv1.weight, reference.conv1.weight)
    assert not model.body.conv1.weight.requires_grad and not model.body.layer1[0].conv1.weight.requires_grad
    assert model.body.layer2[0].conv1.weight.requires_grad
    feats = model(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats.values()] == [32] * 4  # 3 stages + the max-pooled P6


def test_torch_hub_cache_file_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save(resnet.resnet18().state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    assert resolve_pretrained("imagenet", 18) == tmp_path / "checkpoints" / "resnet18-f37072fd.pth"


def test_bad_depth_names_the_key():
    with pytest.raises(ConfigError, match="detector.backbone.depth=19"):
        build_backbone(_cfg(depth=19))
