"""Which settings distinguish a set of runs — the axes of a results table.

Every run is described by its Hydra group choices (``loss=rs``, ``sampler=none``; named by the group) and
by its resolved config flattened to dotted keys (``loss.delta``, ``sampler.rpn``). Most keys that differ
between runs are consequences of a few choices — switching ``loss=rs`` to ``loss=ce`` changes a dozen
``loss.*`` values and the learning rate — so a varying key only becomes an axis of its own when the
runs' choices and command-line overrides do not already determine it. Paths, output folders, logger
ids, timestamps and ``hydra.*`` never count; seeds are *replicates*, averaged inside a table cell.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rsdet.errors import ConfigError
from rsdet.records import RunRecord

#: placeholder for a key a run does not have (e.g. ``loss.gamma`` of a non-focal run)
MISSING = "—"

#: pseudo-axes available on every run
PSEUDO_AXES = ("run", "status")

_NOISE = [re.compile(p) for p in (
    r"^hydra([./]|$)",
    r"^logger([./]|$)",  # W&B/none: where the curves went, not what was trained
    r"^wandb([./]|$)",
    r"(^|[._])(dir|dirs|path|paths|root|file|files|filename|cache)$",
    r"(^|\.)(output|out|work|log|save|run|checkpoint|ckpt)_?dir",
    r"(^|[._])(id|uuid|run_id|run_name|job_id|job_name|pid|host|hostname)$",
    r"(^|[._])(time|date|timestamp|started|finished|created|now)$",
    r"(^|\.)(resume|print_freq|log_every|log_interval|num_workers|workers|verbose|progress)$",
    r"(^|\.)(pin_memory|prefetch_factor|timeout_s|backend)$",  # how fast, not what was trained
)]
_REPLICATE = re.compile(r"(^|\.)seed$")


def is_noise_key(key: str) -> bool:
    """Keys that differ between runs without being an experimental setting."""
    return any(p.search(key) for p in _NOISE)


def is_replicate_key(key: str) -> bool:
    """Seeds: runs that differ only here are repetitions of one setting."""
    return bool(_REPLICATE.search(key))


def flatten(tree: Mapping, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists are kept as (hashable) leaf values."""
    out: dict = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def hashable(value):
    """Make config values usable as dict keys (lists/dicts → JSON text)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def override_key(override: str) -> str:
    """``"+sampler.rpn=none"`` → ``"sampler.rpn"``; ``"~foo"`` → ``"foo"``."""
    key = override.split("=", 1)[0].strip()
    return key.lstrip("+~").split("@", 1)[0]


@dataclass
class RunAxes:
    """A run's axis values: group choices, flat config keys and pseudo-axes."""

    run: RunRecord
    choices: dict
    flat: dict
    overrides: list[str]
    config: dict | None

    @classmethod
    def of(cls, run: RunRecord) -> "RunAxes":
        info = run.info
        choices = {str(k): (v if v is not None else "null")
                   for k, v in (info.get("choices") or {}).items() if not str(k).startswith("hydra/")}
        config = run.config
        flat = flatten(config) if config else {}
        return cls(run, choices, flat, [str(o) for o in info.get("overrides") or []], config)

    def get(self, axis: str):
        """Value of ``axis`` for this run (``MISSING`` when absent). Accepts ``a/b`` and ``a.b`` spellings."""
        if axis == "run":
            return self.run.label
        if axis == "status":
            return self.run.status
        for name in (axis, axis.replace(".", "/"), axis.replace("/", ".")):
            if name in self.choices:
                return self.choices[name]
            if name in self.flat:
                return hashable(self.flat[name])
        node = _subtree(self.config, axis.replace("/", "."))
        if node is not None:  # a whole sub-config, e.g. sampler.rpn = {type: random, num: 256}
            return ",".join(f"{k}={hashable(v)}" for k, v in flatten(node).items())
        return MISSING

    def knows(self, axis: str) -> bool:
        return axis in PSEUDO_AXES or self.get(axis) != MISSING


def _subtree(config: Mapping | None, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, Mapping) else None


@dataclass
class AxisInfo:
    """One key that differs between runs, and what ``detect_axes`` decided about it."""

    name: str
    values: list            # distinct values in display order
    kind: str               # "axis" | "replicate" | "explained" | "noise"
    note: str = ""          # e.g. "determined by loss"


@dataclass
class Axes:
    """Result of :func:`detect_axes`: ``axes`` are the table axes in default order."""

    axes: list[str] = field(default_factory=list)
    replicates: list[str] = field(default_factory=list)
    details: list[AxisInfo] = field(default_factory=list)

    def info(self, name: str) -> AxisInfo | None:
        return next((d for d in self.details if d.name == name), None)


def ordered_values(values: Iterable) -> list:
    """Distinct values: numbers ascending (δ 0.25 < 0.5), otherwise in order of first appearance
    (the order of the sweep command, e.g. ``loss=rs,ce``)."""
    distinct: list = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    present = [v for v in distinct if v != MISSING]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        present.sort()
    return present + ([MISSING] if MISSING in distinct else [])


def runs_knowing(run_axes: list[RunAxes], key: str) -> list[RunAxes]:
    """The runs whose value of ``key`` is meaningful: choices come from run.json, other keys from
    config.yaml, so a run with an unreadable config.yaml does not make every config key "vary"."""
    if key in PSEUDO_AXES:
        return run_axes
    names = {key, key.replace(".", "/"), key.replace("/", ".")}
    if any(names & ra.choices.keys() for ra in run_axes):
        return [ra for ra in run_axes if ra.choices]
    return [ra for ra in run_axes if ra.config is not None]


def _determined(run_axes: list[RunAxes], by: list[str], key: str) -> bool:
    """True when runs that agree on every axis in ``by`` also agree on ``key`` (a functional dependency)."""
    seen: dict = {}
    for ra in run_axes:
        group = tuple(ra.get(a) for a in by)
        value = ra.get(key)
        if seen.setdefault(group, value) != value:
            return False
    return True


def _looks_like_path(values: list) -> bool:
    strings = [v for v in values if v != MISSING]
    return bool(strings) and all(isinstance(v, str) and ("/" in v or "\\" in v) and " " not in v
                                 and not v.startswith("${") for v in strings)


def detect_axes(runs: list[RunRecord]) -> Axes:
    """Find the keys that vary across ``runs`` and decide which of them are table axes.

    Order of the result: overrides in command-line order (``-m loss=rs,ce sampler=none,random`` gives
    ``loss`` then ``sampler``), then other varying group choices, then other config keys. A varying key
    that is not a choice and not overridden is dropped as *explained* when the kept axes determine it.
    """
    run_axes = [RunAxes.of(r) for r in runs]
    run_axes = [ra for ra in run_axes if ra.choices or ra.flat]  # runs with no readable config: no say
    result = Axes()
    if len(run_axes) < 2:
        return result

    choice_keys: list[str] = []
    flat_keys: list[str] = []
    for ra in run_axes:
        choice_keys += [k for k in ra.choices if k not in choice_keys]
        flat_keys += [k for k in ra.flat if k not in flat_keys]
    override_pos: dict[str, int] = {}
    for ra in run_axes:
        for i, o in enumerate(ra.overrides):
            k = override_key(o)
            override_pos[k] = min(i, override_pos.get(k, i))

    def canonical(key: str) -> str:  # an override names a group "a/b" or a key "a.b"
        for name in (key, key.replace(".", "/")):
            if name in choice_keys:
                return name
        return key.replace("/", ".")

    overridden = {canonical(k): pos for k, pos in override_pos.items()}
    candidates = choice_keys + [k for k in flat_keys if k not in choice_keys]
    pools = {k: runs_knowing(run_axes, k) for k in candidates}
    values = {k: [ra.get(k) for ra in pools[k]] for k in candidates}
    varying = [k for k in candidates if len(set(values[k])) > 1]

    kept: list[str] = []
    details: dict[str, AxisInfo] = {}
    for k in varying:
        vals = ordered_values(values[k])
        if is_noise_key(k) or (k not in choice_keys and k not in overridden and _looks_like_path(vals)):
            details[k] = AxisInfo(k, vals, "noise", "path, id, time or logging setting")
        elif is_replicate_key(k):
            details[k] = AxisInfo(k, vals, "replicate", "averaged within a cell")
            result.replicates.append(k)
        elif k in choice_keys or k in overridden:
            details[k] = AxisInfo(k, vals, "axis", "overridden" if k in overridden else "group choice")
            kept.append(k)
    # explicit axes in command-line order, then group choices, then config order
    kept.sort(key=lambda k: (overridden.get(k, 10**6), candidates.index(k)))
    for k in varying:
        if k in details:
            continue
        vals = ordered_values(values[k])
        if kept and _determined(pools[k], kept, k):
            single = [a for a in kept if _determined(pools[k], [a], k)]
            details[k] = AxisInfo(k, vals, "explained",
                                  f"determined by {single[0]}" if single else "determined by " + " × ".join(kept))
        else:
            details[k] = AxisInfo(k, vals, "axis", "differs between runs")
            kept.append(k)
    result.axes = kept
    rank = {"axis": 0, "replicate": 1, "explained": 2, "noise": 3}
    result.details = sorted((details[k] for k in varying),
                            key=lambda d: (rank[d.kind], kept.index(d.name) if d.kind == "axis" else 0))
    return result


def resolve_axis(name: str, run_axes: list[RunAxes], known: Iterable[str] = ()) -> str:
    """Validate a user-given axis name; raise ConfigError with close matches when no run has it."""
    name = name.strip()
    if name in PSEUDO_AXES or any(ra.knows(name) for ra in run_axes):
        return name
    options = sorted(set(known) | set(PSEUDO_AXES) | {k for ra in run_axes for k in ra.choices}
                     | {k for ra in run_axes for k in ra.flat})
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"no run has a setting called {name!r}.{hint} "
                      f"See the candidates with `rsdet report DIR --list-axes`.")
