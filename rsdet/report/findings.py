"""Whether a supplementary table's qualitative finding holds on our runs, decided by explicit rules.

Each rule reads the filled table (:func:`rsdet.report.paper_table.fill_table`; AP in percent) and
returns a :class:`Finding`: the paper's claim, ``holds`` (True, False, or None when the runs needed are
missing) and a sentence with the numbers that decided it. The thresholds are stated in the sentences
and in docs/paper-mini.md's header; they allow for the noise of a few-minute CPU training.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from rsdet.records import RunRecord
from rsdet.report.paper_table import fill_table

#: AP points two means may differ by and still count as "the same" (CPU runs, 1-2 seeds)
SAME_AP = 1.0
#: AP points a loss must lose to count as "degrades" / "falls"
DROP_AP = 2.0


@dataclass
class Finding:
    table: str
    claim: str
    holds: bool | None
    detail: str

    def verdict(self) -> str:
        return {True: "holds", False: "does not hold", None: "not tested (runs missing)"}[self.holds]

    def sentence(self) -> str:
        return f"**Finding ({self.verdict()}):** {self.claim} — {self.detail}"


def _mean_pct(cell) -> float | None:
    return 100 * statistics.fmean(cell.values) if cell.values else None


def _grid(runs: list[RunRecord], table: str, metric: str = "AP") -> tuple[dict, dict]:
    """{(row label, column key): mean %} for the columns reporting ``metric``, and the spec."""
    from rsdet.report.paper import column_key

    spec, cells, _ = fill_table(runs, table)
    out = {}
    for row, row_cells in zip(spec["rows"], cells):
        for col, cell in zip(spec["cols"], row_cells):
            if col["metric"] == metric:
                out[(row["label"], column_key(col))] = _mean_pct(cell) if metric != "fps" else (
                    statistics.fmean(cell.values) if cell.values else None)
    return out, spec


def _judged(table: str, claim: str, detail: str, *checks: tuple[bool, str]) -> Finding:
    """The finding holds when every check holds; each failed check's note is appended to the detail."""
    for ok, note in checks:
        if not ok:
            detail += f"; {note}"
    return Finding(table, claim, all(ok for ok, _ in checks), detail)


def _f(x: float) -> str:
    return f"{x:.1f}"


def s8_samplers(runs: list[RunRecord]) -> Finding:
    claim = "RS Loss is robust to removing the samplers while cross-entropy degrades (Table S8)"
    grid, _ = _grid(runs, "S8")
    rs_r, rs_n = grid[("RS Loss (Ours) | Random | Random", "AP")], grid[("RS Loss (Ours) | None | None", "AP")]
    ce_r, ce_n = grid[("Cross-entropy | Random | Random", "AP")], grid[("Cross-entropy | None | None", "AP")]
    if None in (rs_r, rs_n, ce_r, ce_n):
        return Finding("S8", claim, None, "needs RS and CE runs with random and with no samplers")
    rs_ok = rs_n >= rs_r - SAME_AP
    ce_ok = ce_n <= ce_r - DROP_AP
    detail = (f"removing both samplers changes RS by {rs_n - rs_r:+.1f} AP ({_f(rs_r)} → {_f(rs_n)}; robust means "
              f"a loss of at most {SAME_AP} AP) and CE by {ce_n - ce_r:+.1f} AP ({_f(ce_r)} → {_f(ce_n)}; degrades "
              f"means a loss of at least {DROP_AP} AP)")
    return _judged("S8", claim, detail, (rs_ok, "RS is not robust here"), (ce_ok, "CE does not degrade here"))


def s11_thresholds(runs: list[RunRecord], flat_up_to: float = 0.6) -> Finding:
    claim = (f"RS keeps its AP at test score thresholds up to ~{flat_up_to} while cross-entropy's AP falls "
             "(Table S11)")
    spec, cells, _ = fill_table(runs, "S11")
    thresholds = [float(r["config"]["score_threshold"]) for r in spec["rows"]]
    curves = {}
    for j, col in enumerate(spec["cols"]):
        if col["metric"] == "AP":
            loss = "rs" if col["group"].startswith("RS") else "ce"
            curves[loss] = [(t, _mean_pct(cells[i][j])) for i, t in enumerate(thresholds)]
    pts = {loss: [(t, a) for t, a in c if a is not None and t <= flat_up_to + 1e-9] for loss, c in curves.items()}
    if any(len(p) < 2 for p in pts.values()) or len(pts) < 2:
        return Finding("S11", claim, None, "needs `rsdet evaluate --score-thresholds` sweeps of an RS and a CE run")
    (rs_t0, rs_a0), (ce_t0, ce_a0) = pts["rs"][0], pts["ce"][0]
    rs_tol = max(SAME_AP, 0.05 * rs_a0)
    rs_worst = min(pts["rs"], key=lambda p: p[1])
    ce_last_t, ce_last = pts["ce"][-1]
    ce_need = max(DROP_AP, 0.10 * ce_a0)
    rs_ok = rs_a0 - rs_worst[1] <= rs_tol
    ce_ok = ce_a0 - ce_last >= ce_need
    detail = (f"RS: {_f(rs_a0)} AP at {rs_t0:g}, lowest {_f(rs_worst[1])} at {rs_worst[0]:g} (flat means within "
              f"{rs_tol:.1f} AP); CE: {_f(ce_a0)} AP at {ce_t0:g}, {_f(ce_last)} at {ce_last_t:g} (falls means "
              f"at least {ce_need:.1f} AP lower)")
    return _judged("S11", claim, detail, (rs_ok, "RS is not flat here"), (ce_ok, "CE does not fall here"))


def s4_delta(runs: list[RunRecord], mild_spread: float = 3.0) -> Finding:
    claim = "δ_RS has a mild optimum around 0.5 (Table S4)"
    grid, _ = _grid(runs, "S4")
    pts = sorted((float(col), ap) for (_, col), ap in grid.items() if ap is not None)
    if len(pts) < 3 or not any(abs(d - 0.5) < 1e-9 for d, _ in pts):
        return Finding("S4", claim, None, "needs δ_RS = 0.5 and at least two other values")
    best = max(pts, key=lambda p: p[1])
    at_half = next(a for d, a in pts if abs(d - 0.5) < 1e-9)
    spread = best[1] - min(a for _, a in pts)
    near = 0.4 - 1e-9 <= best[0] <= 0.6 + 1e-9 or at_half >= best[1] - SAME_AP / 2
    mild = spread <= mild_spread
    detail = (", ".join(f"δ {d:g}: {_f(a)}" for d, a in pts) + f" AP; best δ {best[0]:g}, δ 0.5 is "
              f"{best[1] - at_half:.1f} AP below it (around 0.5 means the best δ in [0.4, 0.6] or δ 0.5 within "
              f"{SAME_AP / 2} AP of it); spread {spread:.1f} AP (mild means at most {mild_spread} AP)")
    return _judged("S4", claim, detail, (near, "the optimum is not at 0.5 here"), (mild, "the effect is not mild here"))


def similar_weighting(runs: list[RunRecord], table: str, spread_max: float = 1.5) -> Finding:
    claim = {"S1": "instance-level weightings and task-level balancing give similar results (Table S1)",
             "S3": "the smoothing δ_loc of ranking-based weights changes little (Table S3)"}[table]
    grid, _ = _grid(runs, table)
    filled = {k: v for k, v in grid.items() if v is not None}
    if len(filled) < 2:
        return Finding(table, claim, None, "needs at least two filled cells")
    lo, hi = min(filled.items(), key=lambda kv: kv[1]), max(filled.items(), key=lambda kv: kv[1])
    spread = hi[1] - lo[1]
    name = (lambda k: " / ".join(x for x in k if x != "AP"))
    detail = (f"{len(filled)} settings span {spread:.1f} AP ({name(lo[0])}: {_f(lo[1])} … {name(hi[0])}: "
              f"{_f(hi[1])}; similar means at most {spread_max} AP)")
    return Finding(table, claim, spread <= spread_max, detail)


def s7_imbalance(runs: list[RunRecord], factor: float = 10.0) -> Finding:
    claim = "removing the samplers makes the RPN's pos:neg task ratio orders of magnitude more imbalanced (Table S7)"
    spec, cells, _ = fill_table(runs, "S7")
    j = next(j for j, c in enumerate(spec["cols"]) if c["metric"].endswith("rpn/task_neg_per_pos"))
    labels = [r["label"] for r in spec["rows"]]
    rr, nn = cells[labels.index("COCO | Random | Random")][j], cells[labels.index("COCO | None | None")][j]
    if not rr.values or not nn.values:
        return Finding("S7", claim, None, "needs RS runs with random and with no samplers (history.jsonl ratios)")
    a, b = statistics.fmean(rr.values), statistics.fmean(nn.values)
    ok = b >= factor * a
    return Finding("S7", claim, ok, f"RPN negatives per positive over the first epoch: 1:{a:.0f} with random "
                                    f"samplers, 1:{b:.0f} without (×{b / a:.0f}; orders of magnitude means ≥ ×{factor:g})")


def s6_labels(runs: list[RunRecord]) -> Finding:
    claim = "continuous (IoU) labels beat binary labels (Table S6)"
    grid, _ = _grid(runs, "S6", "segm/AP")
    iou, binary = grid.get(("IoU", "Segmentation / AP")), grid.get(("Binary", "Segmentation / AP"))
    what = "mask AP"
    if iou is None or binary is None:
        grid, _ = _grid(runs, "S6", "AP")
        iou, binary = grid.get(("IoU", "Detection / AP")), grid.get(("Binary", "Detection / AP"))
        what = "box AP"
    if iou is None or binary is None:
        return Finding("S6", claim, None, "needs YOLACT runs with loss.label=binary and iou")
    return Finding("S6", claim, iou > binary, f"{what}: IoU labels {_f(iou)}, binary {_f(binary)} ({iou - binary:+.1f})")


def s9_time(runs: list[RunRecord]) -> Finding:
    claim = "an RS iteration costs more than a standard-loss iteration of the same detector (Table S9)"
    spec, cells, _ = fill_table(runs, "S9")
    pairs = [(row["label"], statistics.fmean(c[0].values), statistics.fmean(c[1].values))
             for row, c in zip(spec["rows"], cells) if c[0].values and c[1].values]
    if not pairs:
        return Finding("S9", claim, None, "needs RS and standard-loss runs of one detector")
    ok = all(rs >= std for _, std, rs in pairs)
    return Finding("S9", claim, ok, "; ".join(f"{d}: standard {s:.3f} s, RS {r:.3f} s per iteration"
                                              for d, s, r in pairs) + " (shared CPU: timings are noisy)")


RULES = {"S1": lambda runs: similar_weighting(runs, "S1"), "S3": lambda runs: similar_weighting(runs, "S3"),
         "S4": s4_delta, "S6": s6_labels, "S7": s7_imbalance, "S8": s8_samplers, "S9": s9_time, "S11": s11_thresholds}


def finding(runs: list[RunRecord], table: str) -> Finding | None:
    """The finding of ``table`` (None for tables without a qualitative claim we check, e.g. S10)."""
    rule = RULES.get(table.upper())
    return rule(runs) if rule else None
