"""Fair baselines: the same learning-rate grid and budget for every loss on the Faster R-CNN CPU preset,
the best AP per loss, and a generated block in docs/baselines.md (scripts/tune_baselines.py).

Every grid point is one `rsdet train loss=<loss> schedule.lr=<lr> seed=<seed> eval.every_epochs=1` at the
CPU preset (the recipe's own samplers and box loss); nothing else changes, so each loss gets the same
number of trainings and iterations. The evaluation after every epoch (metrics_history.jsonl) shows the
iteration at which a loss's AP stops rising, i.e. whether the preset's 900 iterations are enough for it.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from pathlib import Path

from rsdet.errors import RsdetError
from rsdet.records import RunRecord, atomic_write_text
from rsdet.report.mini import Item

#: Losses that train on Faster R-CNN (conf/loss); RS can be added to compare it on the same grid
BASELINES = ("ce", "focal", "ap", "alrp")
#: Around the Faster R-CNN CPU preset's schedule.lr 0.0005 (AdamW): half, same, double, quadruple
#: (docs/baselines.md: the first grid, 0.0005-0.002, had its best point at its lower edge)
LR_GRID = (0.00025, 0.0005, 0.001, 0.002)
#: AP stops rising where it comes within this many AP points of the best it reaches
RISING_AP = 1.0
#: Four evaluations during a 4.5-epoch CPU training (200 validation images, ~5 s each)
EPOCH_EVAL_MINUTES = 0.35
BEGIN = "<!-- tune-baselines:begin (written by scripts/tune_baselines.py; do not edit by hand) -->"
END = "<!-- tune-baselines:end -->"


def grid_items(losses=BASELINES, lrs=LR_GRID, seeds: int = 1) -> list[Item]:
    return [Item("tune", f"{loss}_lr{lr:g}_seed{seed}",
                 [f"loss={loss}", f"schedule.lr={lr:g}", f"seed={seed}", "eval.every_epochs=1"],
                 extra_minutes=EPOCH_EVAL_MINUTES)
            for loss in losses for lr in lrs for seed in range(seeds)]


def ap_curve(run: RunRecord) -> list[tuple[int, float]]:
    """(iteration, AP %) after every epoch (metrics_history.jsonl) and at the end (metrics.json)."""
    points = []
    for row in run.read_eval_history():
        ap, it = (row.get("bbox") or {}).get("AP"), row.get("iteration")
        if isinstance(ap, (int, float)) and isinstance(it, int):
            points.append((it, 100 * ap))
    final = ((run.metrics or {}).get("bbox") or {}).get("AP")
    if isinstance(final, (int, float)):
        it = run.info.get("iteration")
        points.append((int(it) if isinstance(it, int) else (points[-1][0] + 1 if points else 0), 100 * final))
    return points


def stops_rising(curve: list[tuple[int, float]], within: float | None = None) -> int | None:
    """The first iteration from which AP stays within ``within`` AP (default :data:`RISING_AP`) of the
    best it reaches: where training stops paying. None for a curve of fewer than two points."""
    within = RISING_AP if within is None else within
    if len(curve) < 2:
        return None
    top = max(ap for _, ap in curve)
    for k, (it, ap) in enumerate(curve):
        if all(later >= top - within for _, later in curve[k:]):
            return it
    return curve[-1][0]


def results(items: list[Item], root: Path, curves: dict | None = None) -> dict[str, dict[float, list[float]]]:
    """{loss: {lr: [AP %, one per seed]}} of the completed grid points ([] where a point has no AP);
    ``curves``, when given, receives {(loss, lr): [AP curve of each seed]} (:func:`ap_curve`)."""
    out: dict[str, dict[float, list[float]]] = {}
    for it in items:
        loss = it.overrides[0].split("=", 1)[1]
        lr = float(it.overrides[1].split("=", 1)[1])
        cell = out.setdefault(loss, {}).setdefault(lr, [])
        d = it.run_dir(root)
        if (d / "run.json").is_file():
            rec = RunRecord(d, create=False)
            ap = ((rec.metrics or {}).get("bbox") or {}).get("AP") if rec.status == "completed" else None
            if isinstance(ap, (int, float)) and ap >= 0:
                cell.append(100 * ap)
                if curves is not None:
                    curves.setdefault((loss, lr), []).append(ap_curve(rec))
    return out


def best(grid: dict[float, list[float]]) -> tuple[float, float] | None:
    """(lr, mean AP) of the best grid point; a tie goes to the lower lr. None if nothing finished."""
    means = [(lr, statistics.fmean(aps)) for lr, aps in sorted(grid.items()) if aps]
    return max(means, key=lambda p: (p[1], -p[0])) if means else None


def block(res: dict[str, dict[float, list[float]]], lrs, command: str, setting: str = "900 iterations",
          curves: dict | None = None) -> str:
    lines = [BEGIN, "", f"Generated {_dt.date.today().isoformat()} by `{command}`: Faster R-CNN CPU preset "
             f"({setting}), box AP (%) on the validation split, mean over seeds; only "
             "`schedule.lr` changes, every loss gets the same grid.", "",
             "| loss | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen lr | AP | AP after each epoch and at the end "
             f"(chosen lr, seed 0) | within {RISING_AP:g} AP of its best from |",
             "|---|" + "---|" * (len(lrs) + 4)]
    for loss, grid in res.items():
        cells = []
        for lr in lrs:
            aps = grid.get(float(lr), [])
            cells.append("—" if not aps else f"{statistics.fmean(aps):.1f}" +
                         (f" ± {statistics.stdev(aps):.1f}" if len(aps) > 1 else ""))
        choice = best(grid)
        curve = ((curves or {}).get((loss, choice[0])) or [[]])[0] if choice else []
        stop = stops_rising(curve)
        lines.append(f"| {loss} | " + " | ".join(cells) + " | "
                     + ("— | —" if choice is None else f"{choice[0]:g} | {choice[1]:.1f}") + " | "
                     + (" → ".join(f"{ap:.1f}" for _, ap in curve) or "—") + " | "
                     + ("—" if stop is None else f"iteration {stop}") + " |")
    lines += ["", "To use a choice: `rsdet train loss=<loss> schedule.lr=<chosen lr>`. A loss whose AP still rises "
              "at the last evaluation is under-trained at this budget.", "", END]
    return "\n".join(lines)


def write_block(doc: Path, text: str) -> None:
    """Replace the generated block of ``doc`` (appended at the end the first time)."""
    content = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    if BEGIN in content and END in content:
        head, rest = content.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        content = head + text + tail
    elif BEGIN in content or END in content:
        raise RsdetError(f"{doc}: only one of the tune-baselines markers is present; restore both or remove both")
    else:
        content = content.rstrip("\n") + "\n\n## Learning-rate grid per loss (generated)\n\n" + text + "\n"
    atomic_write_text(doc, content)  # replaces the file: a planted symlink is not followed
