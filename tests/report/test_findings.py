"""paper-mini's findings on constructed cells: each rule states the paper's claim and decides from paired
differences with their 95% CI (holds / does not hold / inconclusive / not tested)."""

import pytest

from rsdet.report import findings as F
from rsdet.report.mini_cells import Binding, MiniCell
from rsdet.report.stats import FAILS, HOLDS, INCONCLUSIVE, NOT_TESTED


def cells(values: dict) -> dict:
    """{(table, row, col): {seed: value}} -> the filled cells findings read."""
    return {k: MiniCell(Binding(*k, metric="AP"), None, dict(v)) for k, v in values.items()}


def one(table_id: str, values: dict) -> F.Finding:
    spec = next(s for s in F.SPECS if s.id == table_id)
    return F.evaluate(spec, cells(values))


def s8(loss, samplers, aps):
    return {("S8", f"{loss} | {samplers}", "AP"): dict(enumerate(aps))}


def test_every_claim_is_quoted_and_sourced_and_no_unstated_rule_is_left():
    assert {s.table for s in F.SPECS} == {"S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S11"}  # S10: none
    for s in F.SPECS:
        assert s.quote and s.source and s.rule and s.id.startswith(s.table + ".")
    assert len({s.id for s in F.SPECS}) == len(F.SPECS)
    # the paper claims δ_loc *can contribute* (S3) and that the overhead is the algorithm's (S9): no rule
    # asks for a small δ_loc spread or for RS iterations to cost more than the standard loss's
    s3 = [s for s in F.SPECS if s.table == "S3"]
    assert len(s3) == 1 and "greater" in [c.claim for c in s3[0].compare(F.Cells(cells({})))]
    assert "per-positive" in next(s for s in F.SPECS if s.table == "S9").claim
    assert set(F.CPU_CAVEATS) == {"S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11"}


def test_s8_ce_drops_rs_robust():
    good = {**s8("Cross-entropy", "Random | Random", [30, 33, 31]), **s8("Cross-entropy", "None | Random", [27, 29, 28]),
            **s8("Cross-entropy", "None | None", [25, 27, 26]),
            **s8("RS Loss (Ours)", "Random | Random", [46, 48, 47]), **s8("RS Loss (Ours)", "None | Random", [47, 48, 48]),
            **s8("RS Loss (Ours)", "None | None", [49, 50, 50])}
    ce = one("S8.2", good)
    assert ce.verdict == HOLDS and len(ce.comparisons) == 2
    assert "CE None | None − CE Random | Random: -5.3 AP [" in ce.evidence() and "n=3 (holds)" in ce.evidence()
    assert one("S8.1", good).verdict == HOLDS
    rises = {**good, **s8("Cross-entropy", "None | None", [33, 36, 34])}
    assert one("S8.2", rises).verdict == FAILS
    noisy = {**good, **s8("Cross-entropy", "None | None", [20, 36, 31])}
    assert one("S8.2", noisy).verdict in (INCONCLUSIVE, FAILS)
    drops = {**good, **s8("RS Loss (Ours)", "None | None", [40, 41, 41])}
    assert one("S8.1", drops).verdict == FAILS           # more than 1 AP worse, CI and all
    partial = one("S8.3", good)
    assert partial.verdict == NOT_TESTED and "not run:" in partial.evidence()


def test_s1_weightings_similar_averaged_over_the_balancing_columns():
    cols = ("Constant weighting / 1", "Constant weighting / 2", "Constant weighting / 3", "Self-balance (SB) / value",
            "Self-balance (SB) / magnitude")
    rows = ("No prioritization", "Centerness-based [18]", "Score-based [7]", "IoU-based [6]", "Ranking-based [13]")
    base = {0: 30.0, 1: 31.0, 2: 29.5}
    vals = {}
    for r, row in enumerate(rows):
        for c, col in enumerate(cols):  # within ±0.3 AP of score-based in every column, every seed
            vals[("S1", row, col)] = {k: v + 0.1 * ((r + c + k) % 3 - 1) for k, v in base.items()}
    f = one("S1.1", vals)
    assert f.verdict == HOLDS and len(f.comparisons) == 4 and "all five balancing columns" in f.evidence()
    worse = dict(vals)
    for col in cols:
        worse[("S1", "Ranking-based [13]", col)] = {k: v - 4.0 for k, v in base.items()}
    f = one("S1.1", worse)
    assert f.verdict == FAILS and "Ranking-based − score-based" in f.evidence()
    # the quick plan's two cells: only ranking vs score in the value column is tested
    quick = {k: v for k, v in vals.items() if k[2] == "Self-balance (SB) / value" and k[1] in (rows[2], rows[4])}
    f = one("S1.1", quick)
    assert f.verdict == HOLDS and "1 balancing column: value" in f.evidence() and "not run: " in f.evidence()
    # S1.2: value SB against the constant λ with the best mean, per weighting
    tuned = dict(vals)
    for row in rows:
        tuned[("S1", row, "Constant weighting / 3")] = {k: v + 3.0 for k, v in base.items()}
    f = one("S1.2", tuned)
    assert f.verdict == FAILS and "λ3" in f.evidence()
    assert one("S1.2", vals).verdict == HOLDS


def test_s7_ratios_are_paired_factors():
    vals = {("S7", "COCO | Random | Random", "actual pos:neg task ratio / RPN"): {0: 60.0, 1: 66.0, 2: 70.0},
            ("S7", "COCO | None | None", "actual pos:neg task ratio / RPN"): {0: 2300.0, 1: 2400.0, 2: 2500.0}}
    f = one("S7.1", vals)
    assert f.verdict == HOLDS and "×3" in f.evidence()
    assert one("S7.2", vals).verdict == NOT_TESTED


def test_s11_flat_rs_falling_ce_and_rare_classes():
    rs, ce = "RS-Mask R-CNN / AP_mask", "Mask R-CNN / AP_mask"
    vals = {("S11", "10^-4", rs): {0: 30.0, 1: 31.0, 2: 30.5}, ("S11", "0.60", rs): {0: 30.1, 1: 30.8, 2: 30.6},
            ("S11", "10^-3", ce): {0: 25.0, 1: 26.0, 2: 24.0}, ("S11", "0.60", ce): {0: 12.0, 1: 13.0, 2: 11.0},
            ("S11", "10^-3", "Mask R-CNN / AP_r"): {0: 10.0, 1: 12.0, 2: 11.0},
            ("S11", "0.60", "Mask R-CNN / AP_r"): {0: 1.0, 1: 1.5, 2: 1.0},
            ("S11", "10^-3", "Mask R-CNN / AP_f"): {0: 30.0, 1: 31.0, 2: 29.0},
            ("S11", "0.60", "Mask R-CNN / AP_f"): {0: 15.0, 1: 16.0, 2: 14.0}}
    assert [one(i, vals).verdict for i in ("S11.1", "S11.2", "S11.3", "S11.4")] == [HOLDS] * 4
    sloped = {**vals, ("S11", "0.60", rs): {0: 25.0, 1: 26.0, 2: 25.5}}
    assert one("S11.1", sloped).verdict == FAILS
    assert "[" in one("S11.3", vals).evidence()
    assert F.s11_rs_pick(F.Cells(cells(vals))) == "0.60"
    assert "post hoc" not in one("S11.1", vals).evidence()  # the paper's own pick: nothing to add


def test_s11_threshold_picked_the_papers_way_is_described_not_judged():
    rs, ce = "RS-Mask R-CNN / AP_mask", "Mask R-CNN / AP_mask"
    flat = {0: 48.0, 1: 50.0, 2: 47.0}
    vals = {("S11", t, rs): flat for t in ("10^-4", "10^-3", "10^-2", "0.10")}
    vals |= {("S11", "0.40", rs): {0: 47.5, 1: 49.6, 2: 46.8}, ("S11", "0.60", rs): {0: 23.0, 1: 24.0, 2: 22.0},
             ("S11", "0.80", rs): {0: 47.9, 1: 50.0, 2: 47.0},  # past the first drop: not picked
             ("S11", "10^-3", ce): {0: 42.0, 1: 43.0, 2: 41.5}}
    assert F.s11_rs_pick(F.Cells(cells(vals))) == "0.40"
    flat_f, beats = one("S11.1", vals), one("S11.4", vals)
    assert flat_f.verdict == FAILS and beats.verdict == FAILS  # the verdicts stay those of the paper's 0.60
    assert "post hoc" in flat_f.evidence() and "(0.40): RS mask AP, 0.40 − 10^-4" in flat_f.evidence()
    assert "RS mask AP at 0.40 − CE mask AP at 10^-3: +5.8" in beats.evidence()
    lost = {**vals, ("S11", "10^-3", rs): {0: 40.0, 1: 50.0, 2: 47.0}}  # seed 0 drops at once
    assert F.s11_rs_pick(F.Cells(cells(lost))) == "10^-4"
    assert "post hoc" not in one("S11.1", lost).evidence()


def test_s9_loop_factor_decides_and_iteration_ratios_are_only_shown():
    vals = {("S9", "N=4e4, P=150", "per-positive loop (ms)"): {0: 300.0, 1: 320.0, 2: 310.0},
            ("S9", "N=4e4, P=150", "rsdet (ms)"): {0: 3.0, 1: 3.3, 2: 3.1},
            ("S9", "ATSS", "Standard Loss (sec)"): {0: 0.10, 1: 0.11, 2: 0.10},
            ("S9", "ATSS", "RS Loss (sec)"): {0: 0.30, 1: 0.31, 2: 0.30}}
    f = one("S9.1", vals)
    assert f.verdict == HOLDS and [c.claim for c in f.comparisons] == ["greater", "describe"]
    assert "ATSS iteration, RS / standard: ×2.94" in f.evidence()   # shown, not judged: RS may cost more
    slow = {**vals, ("S9", "N=4e4, P=150", "rsdet (ms)"): {0: 600.0, 1: 640.0, 2: 620.0}}
    assert one("S9.1", slow).verdict == FAILS


@pytest.mark.parametrize("fid, a, b, verdict", [
    ("S2.1", [20, 22, 21], [12, 14, 13], HOLDS), ("S5.1", [60, 61, 62], [60, 61, 62], INCONCLUSIVE),
    ("S3.1", [30, 31, 32], [28, 29, 30], HOLDS), ("S6.2", [25.0, 25.2, 25.1], [25.1, 25.3, 25.0], HOLDS),
])
def test_two_arm_findings(fid, a, b, verdict):
    epoch1 = "Standard Training / Epoch 1"
    keys = {"S2.1": (("S2", "RS Loss", epoch1), ("S2", "aLRP Loss [13]", epoch1)),
            "S5.1": (("S5", "RS Cascade R-CNN", "AP ↑"), ("S5", "Cascade R-CNN", "AP ↑")),
            "S3.1": (("S3", "AP", "1.50"), ("S3", "AP", "Default")),
            "S6.2": (("S6", "Dice", "Segmentation / AP"), ("S6", "IoU", "Segmentation / AP"))}[fid]
    f = one(fid, {keys[0]: dict(enumerate(a)), keys[1]: dict(enumerate(b))})
    assert f.verdict == verdict


def test_mismatched_seeds_are_not_paired():
    f = one("S5.1", {("S5", "RS Cascade R-CNN", "AP ↑"): {0: 60.0, 1: 61.0},
                     ("S5", "Cascade R-CNN", "AP ↑"): {2: 50.0}})
    assert f.verdict == NOT_TESTED
