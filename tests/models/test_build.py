"""The detector registry and the config presets that go with each detector."""

import pytest
import torch
from hydra import compose, initialize_config_dir

from rsdet.errors import ConfigError
from rsdet.models import available_detectors, build_detector
from rsdet.train_cli import CONF_DIR


def _compose(overrides=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_registry_lists_every_detector_and_unknown_names_get_the_options():
    assert {"faster_rcnn", "cascade_rcnn", "atss", "paa", "mask_rcnn"} <= set(available_detectors())
    cfg = _compose()
    cfg.detector.name = "yolo"
    with pytest.raises(ConfigError, match="detector='yolo'.*atss, cascade_rcnn, faster_rcnn, mask_rcnn, paa"):
        build_detector(cfg, 6)


@pytest.mark.parametrize("detector", ["faster_rcnn", "atss", "paa"])
def test_cpu_preset_sizes_each_detector_and_the_paper_schedule_restores_r50(detector):
    cpu = _compose([f"detector={detector}"])
    assert cpu.detector.backbone.depth == 10 and cpu.detector.backbone.fpn_channels in (64, 128)
    paper = _compose([f"detector={detector}", "schedule=1x"])
    assert paper.detector.backbone.depth == 50 and paper.detector.backbone.fpn_channels == 256
    if detector != "faster_rcnn":
        assert paper.detector.head.octave_base_scale == 4 and paper.detector.head.scales_per_octave == 3
        assert paper.detector.backbone.extra_levels == "p6p7" and paper.detector.test_score_thresh == 0.05


@pytest.mark.parametrize(("detector", "loss", "aux", "lr"), [
    ("atss", "rs", "none", 0.008), ("atss", "focal", "centerness", 0.01),
    ("paa", "rs", "none", 0.008), ("paa", "focal", "iou", 0.01)])
def test_recipes_per_detector(detector, loss, aux, lr):
    cfg = _compose([f"detector={detector}", f"loss={loss}", "schedule=1x"])
    assert cfg.detector.head.aux == aux and cfg.loss.lr == lr
    if (detector, loss) == ("atss", "focal"):  # standard ATSS: GIoU x 2 weighted by centerness targets
        assert cfg.loss.weighting == "centerness" and cfg.loss.box_weight == 2.0
    # a command-line override still wins over the recipe
    assert _compose([f"detector={detector}", f"loss={loss}", "loss.lr=0.5"]).loss.lr == 0.5


def test_state_dict_holds_the_rpn_head_once_and_the_loss_state():
    cfg = _compose(["loss=alrp"])
    model = build_detector(cfg, 6)
    keys = list(model.state_dict())
    assert not [k for k in keys if "_proposals" in k]
    assert sum(k.startswith("rpn.head.") for k in keys) == 6  # conv, cls_logits, bbox_pred: weight + bias each
    assert "criterion._extra_state" in keys
    # the aLRP self-balance state survives a state-dict round trip
    model.criterion.balancers["rcnn"].load_state_dict({**model.criterion.balancers["rcnn"].state_dict()})
    other = build_detector(cfg, 6)
    other.load_state_dict(model.state_dict())


def test_old_checkpoints_with_the_duplicated_rpn_head_still_load():
    model = build_detector(_compose(), 6)
    state = model.state_dict()
    state.pop("criterion._extra_state")
    state.update({"rpn._proposals." + k[len("rpn."):]: v for k, v in state.items() if k.startswith("rpn.head.")})
    build_detector(_compose(), 6).load_state_dict(state)  # strict: the pre-hook drops the copy


def test_experiment_group_without_plus_and_table_presets_on_atss():
    cfg = _compose(["experiment=table_s4"])
    assert cfg.detector.name == "atss" and "table_s4" in cfg.tags
    assert _compose(["experiment=table_s4", "detector=faster_rcnn"]).detector.name == "faster_rcnn"
    assert _compose(["experiment=table_s8"]).detector.name == "faster_rcnn"
