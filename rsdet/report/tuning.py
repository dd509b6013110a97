"""Fair baselines: the same learning-rate grid and budget for every loss on the Faster R-CNN CPU preset,
the best AP per loss, and a generated block in docs/baselines.md (scripts/tune_baselines.py).

Every grid point is one `rsdet train loss=<loss> schedule.lr=<lr> seed=<seed>` at the CPU preset (the
recipe's own samplers and box loss); nothing else changes, so each loss gets the same number of
trainings and iterations.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from pathlib import Path

from rsdet.errors import RsdetError
from rsdet.records import RunRecord
from rsdet.report.mini import Item

#: Losses that train on Faster R-CNN (conf/loss); RS can be added to compare it on the same grid
BASELINES = ("ce", "focal", "ap", "alrp")
#: Around the CPU preset's schedule.lr 0.001 (AdamW): half, same, double
LR_GRID = (0.0005, 0.001, 0.002)
BEGIN = "<!-- tune-baselines:begin (written by scripts/tune_baselines.py; do not edit by hand) -->"
END = "<!-- tune-baselines:end -->"


def grid_items(losses=BASELINES, lrs=LR_GRID, seeds: int = 1) -> list[Item]:
    return [Item("tune", f"{loss}_lr{lr:g}_seed{seed}", [f"loss={loss}", f"schedule.lr={lr:g}", f"seed={seed}"])
            for loss in losses for lr in lrs for seed in range(seeds)]


def results(items: list[Item], root: Path) -> dict[str, dict[float, list[float]]]:
    """{loss: {lr: [AP %, one per seed]}} of the completed grid points ([] where a point has no AP)."""
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
    return out


def best(grid: dict[float, list[float]]) -> tuple[float, float] | None:
    """(lr, mean AP) of the best grid point; a tie goes to the lower lr. None if nothing finished."""
    means = [(lr, statistics.fmean(aps)) for lr, aps in sorted(grid.items()) if aps]
    return max(means, key=lambda p: (p[1], -p[0])) if means else None


def block(res: dict[str, dict[float, list[float]]], lrs, command: str, setting: str = "900 iterations") -> str:
    lines = [BEGIN, "", f"Generated {_dt.date.today().isoformat()} by `{command}`: Faster R-CNN CPU preset "
             f"({setting}), box AP (%) on the validation split, mean over seeds; only "
             "`schedule.lr` changes, every loss gets the same grid.", "",
             "| loss | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen lr | AP |",
             "|---|" + "---|" * (len(lrs) + 2)]
    for loss, grid in res.items():
        cells = []
        for lr in lrs:
            aps = grid.get(float(lr), [])
            cells.append("—" if not aps else f"{statistics.fmean(aps):.1f}" +
                         (f" ± {statistics.stdev(aps):.1f}" if len(aps) > 1 else ""))
        choice = best(grid)
        lines.append(f"| {loss} | " + " | ".join(cells) + " | "
                     + ("—" if choice is None else f"{choice[0]:g} | {choice[1]:.1f}") + " |")
    lines += ["", "To use a choice: `rsdet train loss=<loss> schedule.lr=<chosen lr>`.", "", END]
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
    doc.write_text(content, encoding="utf-8")
