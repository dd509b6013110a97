"""Which settings vary across runs, and which of them become table axes."""

import pytest
from report_fakes import make_run, make_sweep

from rsdet.errors import ConfigError
from rsdet.records import RunRecord, find_runs
from rsdet.report.axes import MISSING, RunAxes, detect_axes, flatten, ordered_values, resolve_axis


def test_sweep_axes_replicates_explained_and_noise(tmp_path):
    axes = detect_axes(find_runs(make_sweep(tmp_path)))
    assert axes.axes == ["loss", "sampler"]
    assert axes.replicates == ["seed"]
    kinds = {d.name: d.kind for d in axes.details}
    # consequences of the loss/sampler choice are explained, not axes of their own
    assert kinds["loss.name"] == kinds["optimizer.lr"] == kinds["sampler.rpn"] == "explained"
    assert axes.info("loss.delta").note == "determined by loss"
    # per-job paths and logger ids are noise; hydra/* and logger choices never show up
    assert kinds["output_dir"] == kinds["logger.id"] == "noise"
    assert "hydra/launcher" not in kinds and "logger" not in kinds
    # constant settings are not listed at all
    assert "detector" not in kinds and "dataset.root" not in kinds
    assert axes.info("loss").values == ["rs", "ce"]  # order of the sweep command


def test_axis_order_follows_the_command_line(tmp_path):
    for i, (loss, sampler) in enumerate([("rs", "none"), ("rs", "random"), ("ce", "none"), ("ce", "random")]):
        make_run(tmp_path / str(i), loss=loss, sampler=sampler, overrides=[f"sampler={sampler}", f"loss={loss}"])
    assert detect_axes(find_runs(tmp_path)).axes == ["sampler", "loss"]


def test_overridden_dotted_keys_are_axes(tmp_path):
    # Table S8 as a sweep over per-stage samplers: the group choice stays "none" throughout
    combos = [("random", "random"), ("none", "random"), ("none", "none")]
    for i, (rpn, rcnn) in enumerate(combos):
        make_run(tmp_path / str(i), overrides=[f"sampler.rpn={rpn}", f"sampler.rcnn={rcnn}"],
                 extra={"sampler": {"rpn": rpn, "rcnn": rcnn}})
    axes = detect_axes(find_runs(tmp_path))
    assert axes.axes == ["sampler.rpn", "sampler.rcnn"]
    assert axes.info("sampler.rpn").note == "overridden"


def test_keys_without_choices_or_overrides(tmp_path):
    # hand-made/legacy runs: config.yaml + metrics.json only; lr follows delta, so only delta is an axis
    for i, delta in enumerate([1.0, 0.25, 0.5]):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "config.yaml").write_text(f"loss:\n  delta: {delta}\n  lr: {delta * 2}\nseed: 0\n")
        (d / "metrics.json").write_text('{"bbox": {"AP": 0.3}}')
    axes = detect_axes(find_runs(tmp_path))
    assert axes.axes == ["loss.delta"]
    assert axes.info("loss.delta").values == [0.25, 0.5, 1.0]  # numbers ascend
    assert axes.info("loss.lr").kind == "explained"


def test_single_run_has_no_axes(tmp_path):
    make_run(tmp_path / "a")
    assert detect_axes(find_runs(tmp_path)).axes == []


def test_run_axes_lookup(tmp_path):
    rec = make_run(tmp_path / "a", extra={"model": {"rpn": {"nms": 0.7, "pre": [1, 2]}}})
    ra = RunAxes.of(RunRecord(rec.dir, create=False))
    assert ra.get("loss") == "rs" and ra.get("loss.delta") == 0.5
    assert ra.get("model.rpn.pre") == "[1, 2]"
    assert ra.get("model.rpn") == "nms=0.7,pre=[1, 2]"   # a whole sub-config
    assert ra.get("status") == "completed" and ra.get("run") == "a"
    assert ra.get("nope") == MISSING


def test_resolve_axis_suggests(tmp_path):
    ra = [RunAxes.of(r) for r in find_runs(make_sweep(tmp_path))]
    assert resolve_axis("sampler.rpn", ra) == "sampler.rpn"
    with pytest.raises(ConfigError, match="Did you mean.*sampler"):
        resolve_axis("samplr", ra)


def test_helpers():
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}
    assert ordered_values(["ce", "rs", "ce", MISSING]) == ["ce", "rs", MISSING]
    assert ordered_values([2, 1.5, 10]) == [1.5, 2, 10]


def test_unreadable_config_does_not_invent_axes(tmp_path):
    make_sweep(tmp_path)
    (tmp_path / "2" / "config.yaml").write_text("loss: [rs\n")   # job 2 = rs/random/seed 0
    runs = find_runs(tmp_path)
    axes = detect_axes(runs)
    assert axes.axes == ["loss", "sampler"] and axes.info("seed").values == [0, 1]
    from rsdet.report.table import build_table

    t = build_table(runs)
    assert [s for s, _ in t.cell(("rs",), 1).pending] == ["unreadable"]  # placed by its Hydra choices
    assert "config.yaml" in t.footnotes[t.cell(("rs",), 1).pending[0][1] - 1]
