"""The verdict rules of paper-mini on fabricated records: a finding that holds, one that does not, and
missing runs."""

from rsdet.report.findings import (s4_delta, s6_labels, s7_imbalance, s8_samplers, s9_time, s11_thresholds,
                                   similar_weighting)
from paper_fakes import box, fab_run, history, sweep

NONE = {"rpn": "none", "rcnn": "none"}
RANDOM = {"rpn": "random", "rcnn": "random"}


def _s8(root, rs_random, rs_none, ce_random, ce_none):
    return [fab_run(root / "a", loss="rs", sampler=RANDOM, metrics=box(rs_random)),
            fab_run(root / "b", loss="rs", sampler=NONE, metrics=box(rs_none)),
            fab_run(root / "c", loss="ce", sampler=RANDOM, metrics=box(ce_random)),
            fab_run(root / "d", loss="ce", sampler=NONE, metrics=box(ce_none))]


def test_s8_holds_when_rs_keeps_its_ap_and_ce_loses_at_least_two_points(tmp_path):
    f = s8_samplers(_s8(tmp_path / "yes", 0.470, 0.481, 0.278, 0.240))  # the measured numbers
    assert f.holds is True and "+1.1 AP" in f.detail and "-3.8 AP" in f.detail
    f = s8_samplers(_s8(tmp_path / "no", 0.470, 0.440, 0.278, 0.270))
    assert f.holds is False and "RS is not robust here" in f.detail and "CE does not degrade here" in f.detail
    f = s8_samplers(_s8(tmp_path / "part", 0.470, 0.481, 0.278, 0.240)[:2])
    assert f.holds is None and "does not hold" not in f.sentence()


def test_s11_flat_rs_and_falling_ce(tmp_path):
    ts = (1e-4, 0.1, 0.4, 0.6, 0.8)
    rs = fab_run(tmp_path / "rs", loss="rs", metrics=box(0.4), sweep=sweep([0.45, 0.45, 0.445, 0.44, 0.30], thresholds=ts))
    ce = fab_run(tmp_path / "ce", loss="ce", metrics=box(0.3), sweep=sweep([0.28, 0.26, 0.16, 0.10, 0.05], thresholds=ts))
    f = s11_thresholds([rs, ce])
    assert f.holds is True and "RS: 45.0 AP at 0.0001, lowest 44.0 at 0.6" in f.detail  # 0.8 is past ~0.6
    flat_ce = fab_run(tmp_path / "ce2", loss="ce", metrics=box(0.3), sweep=sweep([0.28] * 5, thresholds=ts))
    f = s11_thresholds([rs, flat_ce])
    assert f.holds is False and "CE does not fall here" in f.detail
    assert s11_thresholds([rs]).holds is None


def test_s4_mild_optimum_at_half(tmp_path):
    def runs(aps, sub):
        return [fab_run(tmp_path / sub / str(d), detector="atss", loss_cfg={"delta": d}, metrics=box(a))
                for d, a in zip((0.25, 0.5, 1.0), aps)]

    assert s4_delta(runs((0.39, 0.40, 0.385), "mild")).holds is True
    f = s4_delta(runs((0.30, 0.40, 0.45), "off"))
    assert f.holds is False and "the optimum is not at 0.5 here" in f.detail and "not mild" in f.detail
    assert s4_delta(runs((0.39, 0.40, 0.385), "few")[:2]).holds is None


def test_similar_weighting_rule_on_s1_and_s3(tmp_path):
    s1 = [fab_run(tmp_path / "n", detector="atss", loss_cfg={"weighting": "none"}, metrics=box(0.390)),
          fab_run(tmp_path / "r", detector="atss", loss_cfg={"weighting": "rank"}, metrics=box(0.398)),
          fab_run(tmp_path / "s", detector="atss", loss_cfg={"weighting": "score"}, metrics=box(0.401))]
    f = similar_weighting(s1, "S1")
    assert f.holds is True and "span 1.1 AP" in f.detail
    s3 = [fab_run(tmp_path / "a", detector="atss", loss_cfg={"weighting": "rank", "delta_loc": None}, metrics=box(0.35)),
          fab_run(tmp_path / "b", detector="atss", loss_cfg={"weighting": "rank", "delta_loc": 1.0}, metrics=box(0.40))]
    assert similar_weighting(s3, "S3").holds is False


def test_s7_s6_and_s9_rules(tmp_path):
    runs = [fab_run(tmp_path / "r", loss="rs", sampler=RANDOM, metrics=box(0.4), history=history(rpn_task=1.0)),
            fab_run(tmp_path / "n", loss="rs", sampler=NONE, metrics=box(0.4), history=history(rpn_task=500.0))]
    f = s7_imbalance(runs)
    assert f.holds is True and "1:2 with random samplers, 1:1000 without" in f.detail
    yolact = [fab_run(tmp_path / "b", detector="yolact", loss_cfg={"label": "binary"},
                      metrics={**box(0.3), "segm": {"AP": 0.25}}),
              fab_run(tmp_path / "i", detector="yolact", loss_cfg={"label": "iou"},
                      metrics={**box(0.3), "segm": {"AP": 0.27}})]
    f = s6_labels(yolact)
    assert f.holds is True and "mask AP" in f.detail
    assert s6_labels(runs).holds is None
    timed = [fab_run(tmp_path / "ce", loss="ce", metrics=box(0.3), history=history()),
             fab_run(tmp_path / "rs", loss="rs", metrics=box(0.4), history=history())]
    assert s9_time(timed).holds is True  # equal times count as "not cheaper"
