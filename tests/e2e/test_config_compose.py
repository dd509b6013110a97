"""Config composition: every group option composes, overrides land where the engine reads them."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rsdet.models.criterion import check_mask_labels
from rsdet.models.criterion import stage_loss_config as _stage_loss_config
from rsdet.models.samplers import resolve_stage_sampler
from rsdet.models.stage import StageSpec
from rsdet.train_cli import CONF_DIR


SPECS = {"rpn": StageSpec("rpn", 1, objectness=True), "rcnn": StageSpec("rcnn", 6), "head": StageSpec("head", 6, dense=True),
         "mask_head": StageSpec("head", 6, masks=True)}


def stage_loss_config(loss_cfg, stage):
    return _stage_loss_config(loss_cfg, SPECS[stage])


def resolve_sampler(sampler_cfg, loss_cfg, stages=("rpn", "rcnn")):
    return {s: resolve_stage_sampler(sampler_cfg, loss_cfg, s) for s in stages}


def _compose(overrides=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_default_is_the_rs_cpu_demo():
    cfg = _compose()
    assert cfg.loss.name == "rs" and cfg.dataset.name == "shapes" and cfg.schedule.name == "cpu_demo"
    assert cfg.detector.backbone.depth == 10 and cfg.logger.name == "wandb" and cfg.logger.mode == "offline"
    rpn, rcnn = stage_loss_config(cfg.loss, "rpn"), stage_loss_config(cfg.loss, "rcnn")
    assert (rpn.cls, rpn.delta, rpn.label, rpn.weighting, rpn.balance, rpn.stage_weight) == \
        ("rs", 0.5, "iou", "score", "value", 0.2)
    assert rcnn.stage_weight == 1.0
    assert {k: v["kind"] for k, v in resolve_sampler(cfg.sampler, cfg.loss).items()} == {"rpn": "none", "rcnn": "none"}
    assert cfg.loss.test_score_thresh == 0.40


@pytest.mark.parametrize("loss", ["rs", "ce", "focal", "ap", "alrp"])
@pytest.mark.parametrize("schedule", ["cpu_demo", "1x", "3x"])
def test_every_loss_and_schedule_composes(loss, schedule):
    cfg = _compose([f"loss={loss}", f"schedule={schedule}"])
    OmegaConf.resolve(cfg)
    assert cfg.loss.name == loss and cfg.schedule.name == schedule
    if schedule != "cpu_demo":  # the paper's R50-FPN comes back with the schedule alone
        assert cfg.detector.backbone.depth == 50 and cfg.detector.rpn.anchor_sizes[0] == 32


def test_ce_recipe_uses_random_samplers_unless_overridden():
    cfg = _compose(["loss=ce"])
    s = resolve_sampler(cfg.sampler, cfg.loss)
    assert (s["rpn"]["kind"], s["rpn"]["batch_per_image"], s["rpn"]["positive_fraction"]) == ("random", 256, 0.5)
    # the CPU preset's R-CNN samples 50 of its 100 proposals, the standard 512 of 1000 (docs/samplers.md)
    assert (s["rcnn"]["kind"], s["rcnn"]["batch_per_image"], s["rcnn"]["positive_fraction"]) == ("random", 50, 0.25)
    paper = resolve_sampler(_compose(["loss=ce", "schedule=1x"]).sampler, cfg.loss)
    assert (paper["rcnn"]["batch_per_image"], paper["rpn"]["batch_per_image"]) == (512, 256)
    assert stage_loss_config(cfg.loss, "rpn").cls == "bce" and stage_loss_config(cfg.loss, "rpn").box == "l1"
    cfg = _compose(["loss=ce", "sampler=none"])
    assert {v["kind"] for v in resolve_sampler(cfg.sampler, cfg.loss).values()} == {"none"}


def test_per_stage_sampler_override():
    cfg = _compose(["loss=rs", "sampler.rpn=none", "sampler.rcnn=random"])
    s = resolve_sampler(cfg.sampler, cfg.loss)
    assert s["rpn"]["kind"] == "none" and s["rcnn"]["kind"] == "random"


def test_ablation_axes_are_plain_overrides():
    cfg = _compose(["loss.delta=0.25", "loss.weighting=iou", "loss.balance=constant", "loss.box_weight=2",
                    "loss.rpn.weighting=none"])
    rpn, rcnn = stage_loss_config(cfg.loss, "rpn"), stage_loss_config(cfg.loss, "rcnn")
    assert rcnn.delta == 0.25 and rcnn.weighting == "iou" and rcnn.balance == "constant" and rcnn.box_weight == 2
    assert rpn.weighting == "none"


@pytest.mark.parametrize("dataset", ["shapes", "coco", "lvis", "coco_format"])
def test_dataset_group_options_compose(dataset):
    cfg = _compose([f"dataset={dataset}"])
    assert cfg.dataset.protocol in ("coco", "lvis")


@pytest.mark.parametrize("table, sweep", [
    ("table_s8", {"loss": "rs,ce,focal", "sampler.rpn": "random,none", "sampler.rcnn": "random,none"}),
    ("table_s4", {"loss.delta": "0.25,0.4,0.5,0.6,0.75,1.0"}),
    ("table_s1", {"loss.weighting": "none,centerness,score,iou,rank", "loss.balance": "value,magnitude"}),
    ("table_s3", {"loss.delta_loc": "0,0.5,1.0,1.5,2.0,null"}),
    ("table_s6", {"loss.label": "binary,iou,dice,iou_dice"}),
])
def test_paper_table_presets_define_their_sweeps(table, sweep):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={table}"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == sweep and table in cfg.tags
    # every swept value is a valid choice for the criterion
    for key, values in sweep.items():
        for value in values.split(","):
            value = None if value == "null" else value
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                one = compose("train", overrides=[f"experiment={table}", f"{key}={value if value is not None else 'null'}"])
            stage_loss_config(one.loss, "mask_head" if one.detector.get("masks") else "rcnn")


def test_table_s6_sweeps_the_labels_on_yolact():
    one = _compose(["experiment=table_s6", "loss.label=dice"])
    assert one.detector.name == "yolact" and one.dataset.with_masks and one.detector.backbone.depth == 10
    assert stage_loss_config(one.loss, "mask_head").label == "dice"
    assert list(one.eval.iou_types) == ["bbox", "segm"]  # a mask detector: mask AP by default
    assert stage_loss_config(one.loss, "rcnn").label == "iou"  # a mask detector's box-only stage keeps IoU
    with pytest.raises(Exception, match="predicts boxes only"):
        check_mask_labels(one.loss, [SPECS["rcnn"]], "faster_rcnn")  # Dice labels need a mask detector


def test_3x_is_the_1x_recipe_trained_three_times_longer():
    one, three = (OmegaConf.to_container(_compose([f"schedule={s}"]).schedule) for s in ("1x", "3x"))
    assert (one["epochs"], one["steps"], three["epochs"], three["steps"]) == (12, [8, 11], 36, [27, 33])
    differing = {k for k in one if one[k] != three[k]}
    assert differing == {"name", "epochs", "steps"}
    assert _compose(["schedule=3x", "schedule.warmup_iters=7"]).schedule.warmup_iters == 7


def test_every_top_level_key_is_read_somewhere():
    """No dead keys: each top-level key of train.yaml (groups aside) is read by the code."""
    import re
    from pathlib import Path

    source = "\n".join(p.read_text() for p in Path(CONF_DIR).parent.joinpath("rsdet").rglob("*.py")) \
        if Path(CONF_DIR).parent.joinpath("rsdet").is_dir() else ""
    if not source:
        pytest.skip("installed configs: no source tree to search")
    cfg = _compose()
    groups = {"detector", "loss", "sampler", "dataset", "schedule", "logger"}
    for key in set(cfg) - groups:
        assert re.search(rf"\b{key}\b", source), f"conf/train.yaml key {key!r} is read nowhere in rsdet/"
    for key in cfg.eval:
        assert re.search(rf"\b{key}\b", source) or key == "iou_types", f"eval.{key} is read nowhere"


@pytest.mark.parametrize("table, detector, losses", [("table_s5", "cascade_rcnn", "ce,rs"),
                                                     ("table_s2", "faster_rcnn", "alrp,rs")])
def test_loss_comparison_tables_sweep_the_loss_on_their_detector(table, detector, losses):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={table}"], return_hydra_config=True)
        per_loss = {loss: compose("train", overrides=[f"experiment={table}", f"loss={loss}"])
                    for loss in losses.split(",")}
    assert dict(cfg.hydra.sweeper.params) == {"loss": losses} and table in cfg.tags
    for loss, one in per_loss.items():
        # the detector's CPU preset and its <detector>_<loss> recipe follow the table's detector
        assert one.detector.name == detector and one.loss.name == loss and one.detector.backbone.depth == 10
    if table == "table_s5":
        set_weights = {k: v for k, v in per_loss["ce"].loss.stage_weights.items() if v is not None}
        assert set_weights == {"stage1": 1.0, "stage2": 0.5, "stage3": 0.25}
        assert per_loss["ce"].detector.cascade.box_stds[2][0] == 0.033
        assert per_loss["rs"].detector.cascade.box_stds[2][0] == 0.1


def test_any_stage_weight_can_be_set_from_the_command_line():
    # every recipe leaves unset stages null (= the detector's default weight), so a plain override works
    cfg = _compose(["loss=ce", "loss.stage_weights.rpn=0.5"])
    assert stage_loss_config(cfg.loss, "rpn").stage_weight == 0.5
    assert stage_loss_config(cfg.loss, "rcnn").stage_weight == 1.0
    assert stage_loss_config(_compose(["loss=rs"]).loss, "rpn").stage_weight == 0.2


def test_tuned_baseline_settings_apply_to_their_schedule_only():
    # conf/tuned/cpu_demo_faster_rcnn_ce.yaml: the CE baseline's CPU tuning (docs/baselines.md)
    assert _compose(["loss=ce"]).loss.rpn.box_weight == 5.0
    assert _compose(["loss=ce", "schedule=1x"]).loss.rpn.box_weight == 1.0
    assert _compose(["loss=ce", "loss.rpn.box_weight=2"]).loss.rpn.box_weight == 2
    assert _compose(["loss=rs"]).loss.rpn.box_weight is None
