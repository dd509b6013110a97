"""Weights from torchvision (rsdet/models/torchvision_init.py): a torchvision Faster R-CNN / Mask R-CNN with
random weights and rsdet's detector loaded from its state dict give the same detections on 4 images
under torchvision's test settings (docs/visualisation.md, "Weights from torchvision"); errors list what
does not fit."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from torchvision.models.detection import fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn, retinanet_resnet50_fpn

from rsdet.errors import ConfigError
from rsdet.models import build_detector
from rsdet.models.torchvision_init import init_detector, parse_init, read_state_dict
from rsdet.train_cli import CONF_DIR

NUM_CLASSES = 5  # rsdet's; torchvision's model has one more (the background)
SIZE = 160  # both models resize the shorter side to this (torchvision's default is 800)
#: detections per image (torchvision's default, 100, for Faster R-CNN); the Mask R-CNN test keeps 12, as
#: the mask head's four 256-channel convolutions per detection dominate the test's time
MASK_DETECTIONS = 12


def torchvision_settings(detector: str, init: str, norm: str = "bn") -> list[str]:
    """rsdet overrides that reproduce torchvision's test-time R-CNN (docs/visualisation.md)."""
    return [f"detector={detector}", "loss=ce", "schedule=1x", "detector.backbone.pretrained=null",
            f"detector.backbone.norm={norm}", "detector.rpn.box_coder_weights=[1,1,1,1]", "eval.score_thresh=0.05",
            f"dataset.min_size={SIZE}", f"dataset.max_size={int(SIZE * 1333 / 800)}", "logger=none",
            f"detector.init='{init}'"]


def _cfg(overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def _random_stats(model):
    """Batch-norm statistics away from 0/1, so that a wrong mapping of them shows."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


def _images():
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(3, h, w, generator=gen) for h, w in ((120, 180), (160, 160), (150, 200), (190, 140))]


def _pairs(want: dict, got: dict) -> list[tuple[int, int]]:
    """(i, j): torchvision's detection i and rsdet's j with the same class (torchvision's label 0 is the
    background), boxes within 1e-3 px and scores within 1e-5, each used once. Detections of (nearly)
    equal score may come in either order: the pairing does not look at the order."""
    pairs, taken = [], set()
    for i in range(len(want["boxes"])):
        close = ((got["boxes"] - want["boxes"][i]).abs().max(1).values <= 1e-3) & \
                ((got["scores"] - want["scores"][i]).abs() <= 1e-5) & (got["labels"] + 1 == want["labels"][i])
        free = [j for j in close.nonzero().flatten().tolist() if j not in taken]
        if free:
            taken.add(free[0])
            pairs.append((i, free[0]))
    return pairs


@pytest.fixture(scope="module")
def torchvision_models(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tv")
    out = {}
    for name, make, top in (("fasterrcnn_resnet50_fpn", fasterrcnn_resnet50_fpn, 100),
                            ("maskrcnn_resnet50_fpn", maskrcnn_resnet50_fpn, MASK_DETECTIONS)):
        tv = _random_stats(make(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1, min_size=SIZE,
                                max_size=int(SIZE * 1333 / 800), box_detections_per_img=top)).eval()
        # small class logits: softmax scores spread over ~0.1-0.8 instead of saturating at 1.0, where the
        # order of exactly tied detections (NMS, the top 100) would be arbitrary in both models
        torch.nn.init.normal_(tv.roi_heads.box_predictor.cls_score.weight, std=0.001)
        path = root / f"{name}.pth"
        torch.save(tv.state_dict(), path)
        out[name] = (tv, path)
    return out


@pytest.mark.parametrize("name, detector", [("fasterrcnn_resnet50_fpn", "faster_rcnn"),
                                            ("maskrcnn_resnet50_fpn", "mask_rcnn")])
def test_rsdet_loaded_from_torchvision_detects_what_torchvision_detects(torchvision_models, name, detector):
    tv, path = torchvision_models[name]
    top = [f"detector.roi.detections_per_img={MASK_DETECTIONS}"] if detector == "mask_rcnn" else []
    cfg = _cfg([*torchvision_settings(detector, f"torchvision:{name}:{path}"), *top])
    model = build_detector(cfg, NUM_CLASSES)
    assert init_detector(model, cfg)
    model.eval()
    with torch.no_grad():
        for image in _images():
            want, got = tv([image])[0], model([image])[0]
            assert len(want["boxes"]) > 10  # random weights: plenty of detections above 0.05
            assert len(got["boxes"]) == len(want["boxes"])
            pairs = _pairs(want, got)
            assert len(pairs) == len(want["boxes"])  # each detection of one model has its twin in the other
            for i, j in pairs:
                if detector == "mask_rcnn":
                    assert (got["masks"][j] - want["masks"][i]).abs().max() <= 1e-5


def test_frozen_batch_norm_is_kept_and_a_backbone_goes_into_a_one_stage_detector(torchvision_models, tmp_path):
    from torchvision.ops import FrozenBatchNorm2d

    tv, path = torchvision_models["fasterrcnn_resnet50_fpn"]
    cfg = _cfg(torchvision_settings("faster_rcnn", f"torchvision:fasterrcnn_resnet50_fpn:{path}", norm="frozen_bn"))
    model = build_detector(cfg, NUM_CLASSES)
    assert isinstance(model.backbone.body.bn1, FrozenBatchNorm2d)  # not the random-init fallback to trainable BN
    init_detector(model, cfg)
    assert torch.equal(model.backbone.body.bn1.running_var, tv.backbone.body.bn1.running_var)
    retina = _random_stats(retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3))
    torch.save(retina.state_dict(), tmp_path / "retina.pth")
    cfg = _cfg(["detector=atss", "schedule=1x", "detector.backbone.pretrained=null",
                f"detector.init=torchvision:retinanet_resnet50_fpn-backbone:{tmp_path / 'retina.pth'}"])
    atss = build_detector(cfg, NUM_CLASSES)
    keys = init_detector(atss, cfg)
    assert keys and all(k.startswith("backbone.") for k in keys)
    assert torch.equal(atss.backbone.fpn.extra_blocks.p7.weight, retina.backbone.fpn.extra_blocks.p7.weight)


def test_what_does_not_fit_is_listed(torchvision_models, tmp_path):
    _, frcnn = torchvision_models["fasterrcnn_resnet50_fpn"]
    _, mask = torchvision_models["maskrcnn_resnet50_fpn"]
    # the CPU preset's ResNet-10 FPN-64 is not torchvision's ResNet-50 FPN-256
    cfg = _cfg(["loss=ce", "detector.rpn.box_coder_weights=[1,1,1,1]", f"detector.init=torchvision:fasterrcnn_resnet50_fpn:{frcnn}"])
    with pytest.raises(ConfigError, match=r"weights of the file map to nothing.*backbone\.body\.layer1\.0\.conv3.*"
                                          r"differ in shape.*schedule=1x"):
        init_detector(build_detector(cfg, NUM_CLASSES), cfg)
    # a Mask R-CNN file for a Faster R-CNN: its mask weights map nowhere
    cfg = _cfg(torchvision_settings("faster_rcnn", f"torchvision:fasterrcnn_resnet50_fpn:{mask}"))
    with pytest.raises(ConfigError, match="holds a maskrcnn_resnet50_fpn state dict"):
        init_detector(build_detector(cfg, NUM_CLASSES), cfg)
    state = torch.load(mask, weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("roi_heads.mask_predictor")}
    torch.save(state, tmp_path / "partial.pth")
    cfg = _cfg(torchvision_settings("mask_rcnn", f"torchvision:maskrcnn_resnet50_fpn:{tmp_path / 'partial.pth'}"))
    with pytest.raises(ConfigError, match=r"4 weights of detector=mask_rcnn are not in the file.*mask_branch\.head\.upsample"):
        init_detector(build_detector(cfg, NUM_CLASSES), cfg)
    # settings torchvision's weights need
    for bad, message in (("loss=rs", "softmax recipe loss=ce"), ("detector.rpn.box_coder_weights=null", r"\[1,1,1,1\]")):
        cfg = _cfg([*torchvision_settings("faster_rcnn", f"torchvision:fasterrcnn_resnet50_fpn:{frcnn}"), bad])
        with pytest.raises(ConfigError, match=message):
            init_detector(build_detector(cfg, NUM_CLASSES), cfg)
    cfg = _cfg(["detector=atss", "schedule=1x", "detector.backbone.pretrained=null",
                f"detector.init=torchvision:fasterrcnn_resnet50_fpn:{frcnn}"])
    with pytest.raises(ConfigError, match="fills a whole detector=faster_rcnn, not detector=atss.*-backbone"):
        init_detector(build_detector(cfg, NUM_CLASSES), cfg)


def test_the_init_syntax_files_and_old_key_names(tmp_path):
    spec = parse_init("torchvision:retinanet_resnet50_fpn-backbone:~/w.pth")
    assert spec.model == "retinanet_resnet50_fpn" and spec.backbone_only and spec.path.name == "w.pth"
    assert parse_init("torchvision:fasterrcnn_resnet50_fpn=/a=b.pth").path.as_posix() == "/a=b.pth"
    assert parse_init(None) is None
    for bad, message in (("fasterrcnn_resnet50_fpn:/x.pth", "is not understood"), ("torchvision:yolo:/x", "not one of"),
                         ("torchvision:retinanet_resnet50_fpn:/x", "no RetinaNet"), ("torchvision:fasterrcnn_resnet50_fpn", "names no file")):
        with pytest.raises(ConfigError, match=message):
            parse_init(bad)
    with pytest.raises(ConfigError, match="does not exist; give a local file"):
        read_state_dict(tmp_path / "none.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read as a torch state dict"):
        read_state_dict(tmp_path / "bad.pth")
    old = {"rpn.head.conv.weight": torch.zeros(1), "backbone.fpn.inner_blocks.2.bias": torch.zeros(1),
           "roi_heads.mask_head.mask_fcn3.weight": torch.zeros(1)}
    torch.save({"model": old}, tmp_path / "old.pth")
    assert set(read_state_dict(tmp_path / "old.pth")) == {"rpn.head.conv.0.0.weight", "backbone.fpn.inner_blocks.2.0.bias",
                                                         "roi_heads.mask_head.2.0.weight"}


def _backbone_equal(model, tv) -> int:
    """How many backbone (ResNet + FPN) tensors ``model`` holds; each equals torchvision's of the same name."""
    mine, theirs = model.backbone.state_dict(), tv.backbone.state_dict()
    keys = [k for k in mine if not k.endswith("num_batches_tracked")]
    for key in keys:
        assert torch.equal(mine[key], theirs[key]), key
    return len(keys)


@pytest.mark.parametrize("detector, source", [("cascade_rcnn", "fasterrcnn_resnet50_fpn"),
                                              ("yolact", "retinanet_resnet50_fpn")])
def test_a_backbone_goes_into_cascade_rcnn_and_yolact_and_their_heads_keep_their_own_weights(
        torchvision_models, tmp_path, detector, source):
    if source in torchvision_models:
        tv, path = torchvision_models[source]
    else:
        tv = _random_stats(retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3))
        path = tmp_path / "retina.pth"
        torch.save(tv.state_dict(), path)
    overrides = [f"detector={detector}", "schedule=1x", "detector.backbone.pretrained=null",
                 f"detector.init=torchvision:{source}-backbone:{path}"]
    cfg = _cfg(overrides)
    model = build_detector(cfg, NUM_CLASSES)
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    keys = init_detector(model, cfg)
    assert keys and all(k.startswith("backbone.") for k in keys)
    assert _backbone_equal(model, tv) == len([k for k in keys if not k.endswith("num_batches_tracked")])
    heads = [k for k, v in model.state_dict().items() if not k.startswith("backbone.") and torch.is_tensor(v)]
    assert heads and all(torch.equal(model.state_dict()[k], before[k]) for k in heads)  # untouched
    assert not all(torch.equal(model.state_dict()[k], before[k]) for k in keys)  # the file's, not the init's
