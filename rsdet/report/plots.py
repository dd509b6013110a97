"""`rsdet report ... --plot`: the supplementary's findings as figures (PNG, matplotlib's Agg backend).

Each figure has a data function that reads the run records (tested on their own) and a drawing
function that only draws what the data function returned:

- :func:`delta_rs_curve` / Table S4: AP against δ_RS, the paper's values as markers.
- :func:`threshold_curves` / Tables S10-S11: AP and fps against the test score threshold, per loss.
- :func:`sampler_bars` / Table S8: AP per sampler setting (RPN | R-CNN), per loss.
- :func:`training_curves`: one run's loss terms, learning rate and pos:neg task ratio per stage
  (history.jsonl).

AP values are in percent (as the paper prints them). :func:`write_plots` draws every figure a table has
and returns the files with a caption each; :func:`figures_markdown` references them from Markdown.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from rsdet.records import RunRecord
from rsdet.report.paper_table import fill_table, table_name, used_runs

#: Table S8's rows per loss, as (RPN sampler, R-CNN sampler) labels
SAMPLER_SETTINGS = ("Random | Random", "None | Random", "None | None")
_LOSS_NAMES = {"Cross-entropy": "ce", "Focal Loss [9]": "focal", "RS Loss (Ours)": "rs",
               "Mask R-CNN": "ce", "RS-Mask R-CNN": "rs"}
_LOSS_LABELS = {"ce": "Cross-entropy", "focal": "Focal Loss", "rs": "RS Loss"}
_COLORS = {"ce": "tab:blue", "focal": "tab:green", "rs": "tab:red"}


@dataclass
class Figure:
    path: Path
    caption: str


def _pct(values: list[float], spread: str = "std") -> tuple[float | None, float | None]:
    """Mean and error-bar half-width (``std``: the standard deviation; ``ci``: the 95% CI half-width;
    None with fewer than two runs) of fractions, in percent."""
    if not values:
        return None, None
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    if spread == "ci":
        from rsdet.report.stats import ci95_halfwidth

        return mean, 100 * ci95_halfwidth(values)
    return mean, 100 * statistics.stdev(values)


#: Legend text of the error bars
SPREAD_LABEL = {"std": "mean ± std over seeds", "ci": "mean ± 95% CI over seeds"}


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ------------------------------------------------------------------------------------------ data
def delta_rs_curve(runs: list[RunRecord], filled=None, spread: str = "std") -> dict:
    """Table S4: ``{"delta": [...], "ap": [mean % or None], "std": [error bar], "n": [...], "paper": [...]}``;
    ``filled``: the table as :func:`fill_table` returns it (default: filled from ``runs``), ``spread``: the
    error bar (``std`` or the 95% ``ci``)."""
    spec, cells, _ = filled or fill_table(runs, "S4")
    out = {"delta": [], "ap": [], "std": [], "n": [], "paper": [], "spread": spread}
    for col, cell in zip(spec["cols"], cells[0]):
        mean, std = _pct(cell.values, spread)
        out["delta"].append(float(col["config"]["loss.delta"]))
        out["ap"].append(mean)
        out["std"].append(std)
        out["n"].append(len(cell.values))
        out["paper"].append(_num(cell.paper))
    return out


def threshold_curves(runs: list[RunRecord], filled=None) -> dict:
    """Table S11 per loss: ``{"ce": {"threshold": [...], "ap": [box AP %], "segm_ap": [mask AP %],
    "fps": [...], "paper_ap": [...], "paper_segm_ap": [...], "paper_fps": [...]}, "rs": {...}}``;
    a loss with no swept run is left out."""
    spec, cells, _ = filled or fill_table(runs, "S11")
    thresholds = [float(r["config"]["score_threshold"]) for r in spec["rows"]]
    out: dict = {}
    for j, col in enumerate(spec["cols"]):
        loss = _LOSS_NAMES[col["group"]]
        key = {"AP": "ap", "segm/AP": "segm_ap", "fps": "fps"}.get(col["metric"])
        if key is None:
            continue
        curve = out.setdefault(loss, {"threshold": thresholds, "ap": [], "segm_ap": [], "fps": [],
                                      "paper_ap": [], "paper_segm_ap": [], "paper_fps": []})
        for i in range(len(thresholds)):
            cell = cells[i][j]
            if key == "fps":
                value = statistics.fmean(cell.values) if cell.values else None
            else:
                value = _pct(cell.values)[0]
            curve[key].append(value)
            curve["paper_" + key].append(_num(cell.paper))
    return {loss: c for loss, c in out.items() if any(v is not None for v in c["ap"] + c["segm_ap"] + c["fps"])}


def sampler_bars(runs: list[RunRecord], filled=None, spread: str = "std") -> dict:
    """Table S8 per loss: ``{"rs": {"setting": [...3], "ap": [...], "std": [error bar], "paper": [...]}, ...}``;
    a loss with no run is left out (``filled``, ``spread``: as :func:`delta_rs_curve`)."""
    spec, cells, _ = filled or fill_table(runs, "S8")
    ap_col = next(j for j, c in enumerate(spec["cols"]) if c["metric"] == "AP")
    out: dict = {}
    for row, row_cells in zip(spec["rows"], cells):
        loss = _LOSS_NAMES[row["cells"][0]]
        setting = " | ".join(row["cells"][1:])
        bars = out.setdefault(loss, {"setting": list(SAMPLER_SETTINGS), "ap": [None] * 3, "std": [None] * 3,
                                     "paper": [None] * 3, "spread": spread})
        k = SAMPLER_SETTINGS.index(setting)
        bars["ap"][k], bars["std"][k] = _pct(row_cells[ap_col].values, spread)
        bars["paper"][k] = _num(row_cells[ap_col].paper)
    return {loss: b for loss, b in out.items() if any(v is not None for v in b["ap"])}


def _spread_label(data: dict) -> str:
    return SPREAD_LABEL.get(data.get("spread", "std"), SPREAD_LABEL["std"])


_TERM = re.compile(r"^loss/(?!total$)")
_TASK = re.compile(r"^ratio/(?P<stage>[^/]+)/task_neg_per_pos$")


def training_curves(run: RunRecord) -> dict:
    """``{"iteration": [...], "loss": {term: [...]}, "lr": [...], "task_ratio": {stage: [...]}}`` from
    history.jsonl; a value a row lacks (older records have no ratios) is None."""
    rows = [r for r in run.read_history() if _num(r.get("iteration")) is not None]
    terms: list[str] = []
    stages: list[str] = []
    for r in rows:
        terms += [k for k in r if _TERM.match(k) and k not in terms]
        stages += [m["stage"] for k in r if (m := _TASK.match(k)) and m["stage"] not in stages]

    def column(key: str) -> list:
        return [_num(r.get(key)) for r in rows]

    return {"iteration": [r["iteration"] for r in rows],
            "loss": {t[len("loss/"):]: column(t) for t in terms},
            "lr": column("lr"),
            "task_ratio": {s: column(f"ratio/{s}/task_neg_per_pos") for s in stages}}


# ------------------------------------------------------------------------------------------ drawing
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Render ``fig`` as PNG and write it to ``path`` by replacing the file (a symlink planted there is
    replaced, not written through; rsdet.records.atomic_write_bytes)."""
    import io

    from rsdet.records import atomic_write_bytes

    path = Path(path)
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=110, format="png")
    finally:
        _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue(), durable=False)
    return path


def _points(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_delta_rs(data: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    have = [(d, a, s or 0.0) for d, a, s in zip(data["delta"], data["ap"], data["std"]) if a is not None]
    xs, ys, errs = ([t[i] for t in have] for i in range(3))
    if xs:
        ax.errorbar(xs, ys, yerr=errs, marker="o", color=_COLORS["rs"], capsize=3, label=f"ours ({_spread_label(data)})")
    px, py = _points(data["delta"], data["paper"])
    ax.plot(px, py, linestyle="--", marker="s", color="gray", label="paper (COCO, Table S4)")
    ax.set_xlabel("δ_RS (smoothing of the step function)")
    ax.set_ylabel("AP (%)")
    ax.set_title("AP vs δ_RS (RS-ATSS)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_thresholds(data: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, (ax_ap, ax_fps) = plt.subplots(1, 2, figsize=(10, 3.8))
    for loss, c in data.items():
        color, label = _COLORS.get(loss, None), _LOSS_LABELS.get(loss, loss)
        xs, ys = _points(c["threshold"], c["ap"])
        if xs:
            ax_ap.plot(xs, ys, marker="o", color=color, label=f"{label}: ours (box AP)")
        xs, ys = _points(c["threshold"], c["segm_ap"])
        if xs:
            ax_ap.plot(xs, ys, marker="^", color=color, linestyle=":", label=f"{label}: ours (mask AP)")
        px, py = _points(c["threshold"], c["paper_ap"])
        ax_ap.plot(px, py, marker="s", linestyle="--", color=color, alpha=0.45, label=f"{label}: paper (LVIS box AP)")
        xs, ys = _points(c["threshold"], c["fps"])
        if xs:
            ax_fps.plot(xs, ys, marker="o", color=color, label=f"{label}: ours")
    for ax in (ax_ap, ax_fps):
        ax.set_xscale("log")
        ax.set_xlabel("test score threshold (log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax_ap.set_ylabel("AP (%)")
    ax_ap.set_title("AP vs score threshold")
    ax_fps.set_ylabel("inference speed (images/s)")
    ax_fps.set_title("fps vs score threshold (this machine)")
    return _save(fig, path)


def plot_samplers(data: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    losses = list(data)
    width = 0.8 / max(len(losses), 1)
    for k, loss in enumerate(losses):
        b = data[loss]
        xs = [i + (k - (len(losses) - 1) / 2) * width for i in range(len(SAMPLER_SETTINGS))]
        have = [i for i, v in enumerate(b["ap"]) if v is not None]  # a setting without runs gets no bar
        ax.bar([xs[i] for i in have], [b["ap"][i] for i in have], width,
               yerr=[b["std"][i] or 0 for i in have], capsize=3 if any(b["std"][i] for i in have) else 0,
               color=_COLORS.get(loss), alpha=0.85,
               label=f"{_LOSS_LABELS.get(loss, loss)}: ours" + (f" ({_spread_label(b)})" if k == 0 else ""))
        px = [x for x, p in zip(xs, b["paper"]) if p is not None]
        ax.scatter(px, [p for p in b["paper"] if p is not None], marker="D", color="black", zorder=3, s=18,
                   label="paper (COCO, Table S8)" if k == 0 else None)
    ax.set_xticks(range(len(SAMPLER_SETTINGS)), [f"RPN {s.split(' | ')[0]}\nR-CNN {s.split(' | ')[1]}"
                                                 for s in SAMPLER_SETTINGS])
    ax.set_xlabel("sampler (RPN, R-CNN)")
    ax.set_ylabel("AP (%)")
    ax.set_title("AP vs samplers per loss (Faster R-CNN)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_training(data: dict, path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, (ax_loss, ax_lr, ax_ratio) = plt.subplots(1, 3, figsize=(12, 3.4))
    it = data["iteration"]
    for term, ys in data["loss"].items():
        xs, vs = _points(it, ys)
        if xs:
            ax_loss.plot(xs, vs, label=term, linewidth=1)
    xs, vs = _points(it, data["lr"])
    ax_lr.plot(xs, vs, color="black", linewidth=1)
    for stage, ys in data["task_ratio"].items():
        xs, vs = _points(it, ys)
        if xs:
            ax_ratio.plot(xs, vs, label=stage, linewidth=1)
    ax_loss.set_ylabel("loss (per term)")
    ax_lr.set_ylabel("learning rate")
    ax_ratio.set_ylabel("negatives per positive (task)")
    if any(v for ys in data["task_ratio"].values() for v in ys if v):
        ax_ratio.set_yscale("log")
    else:
        ax_ratio.text(0.5, 0.5, "no pos:neg ratios in history.jsonl", ha="center", transform=ax_ratio.transAxes)
    for ax in (ax_loss, ax_lr, ax_ratio):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if data["loss"]:
        ax_loss.legend(fontsize=6)
    if data["task_ratio"]:
        ax_ratio.legend(fontsize=7, title="stage", title_fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------ files
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def write_plots(runs: list[RunRecord], table: str | None, out_dir: Path, stem: str = "",
                curves: bool = True, filled=None, spread: str = "std") -> list[Figure]:
    """Draw the figures for ``table`` (S4, S8, S10/S11; others have only training curves) and, with
    ``curves``, one training-curve figure per run behind the table (every run without a table).
    ``filled``: the table already filled (as :func:`fill_table` returns it; paper-mini passes its own
    cells), ``spread``: the error bars (``std`` or the 95% ``ci``)."""
    out_dir = Path(out_dir)
    prefix = f"{stem}_" if stem else ""
    figs: list[Figure] = []
    name = table_name(table) if table else None
    if name == "S4":
        data = delta_rs_curve(runs, filled, spread)
        if any(v is not None for v in data["ap"]):
            figs.append(Figure(plot_delta_rs(data, out_dir / f"{prefix}delta_rs.png"),
                               "AP vs δ_RS (Table S4); gray squares: the paper's COCO values"))
    if name == "S8":
        data = sampler_bars(runs, filled, spread)
        if data:
            figs.append(Figure(plot_samplers(data, out_dir / f"{prefix}samplers.png"),
                               "AP vs samplers per loss (Table S8); black diamonds: the paper's COCO values"))
    if name in ("S10", "S11"):
        data = threshold_curves(runs, filled if name == "S11" else None)
        if data:
            figs.append(Figure(plot_thresholds(data, out_dir / f"{prefix}thresholds.png"),
                               "AP and fps vs test score threshold per loss (Tables S10/S11); dashed: the paper's "
                               "LVIS box AP"))
    if curves:
        if name:
            _, cells, _ = filled or fill_table(runs, name)
            chosen = used_runs(cells)
        else:
            chosen = [r for r in runs if r.history_path.is_file()]
        for run in chosen:
            data = training_curves(run)
            if not data["iteration"]:
                continue
            label = getattr(run, "label", run.dir.name)
            figs.append(Figure(plot_training(data, out_dir / "curves" / f"{prefix}{_slug(label)}.png", label),
                               f"training curves of {label}"))
    return figs


def figures_markdown(figs: list[Figure], relative_to: Path) -> str:
    """Markdown image links (paths relative to the folder of the Markdown file)."""
    lines = []
    for fig in figs:
        try:
            rel = Path(fig.path).resolve().relative_to(Path(relative_to).resolve())
        except ValueError:
            rel = Path(fig.path)
        lines.append(f"![{fig.caption}]({rel.as_posix()})\n\n*{fig.caption}*\n")
    return "\n".join(lines)


def is_png(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


__all__ = ["Figure", "delta_rs_curve", "threshold_curves", "sampler_bars", "training_curves", "write_plots",
           "figures_markdown", "plot_delta_rs", "plot_thresholds", "plot_samplers", "plot_training"]
