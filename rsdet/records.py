"""The run record: one self-contained directory per training run (conventions in docs/records.md).

`rsdet report` reads nothing else, so everything a results table needs lives here, in plain files that
survive without W&B, without torch and without the code that wrote them:

    run_dir/
      config.yaml          resolved config (OmegaConf YAML)
      run.json             status, error + traceback, Hydra choices/overrides, multirun job, iteration, host
      metrics.json         final evaluation {"bbox": {"AP": .., "oLRP": ..}, "segm": {..}, "train_seconds": ..}
      history.jsonl        one JSON object per logging step (loss terms, lr, sec/iter, pos:neg ratios)
      history.dropped.jsonl  rows a resume took out of history.jsonl (logged after the checkpoint it resumed)
      predictions_bbox.json
      checkpoints/last.pt

Writers are crash-safe: JSON files are replaced atomically (write a temporary file, then ``os.replace``)
and history lines are appended and flushed one at a time, so an interrupt loses at most the line being
written; one process writes a run (``rsdet.engine.locks``). Readers are forgiving: a malformed file
produces one warning that names it, and the run is still listed (status ``"unreadable"``) instead of
breaking the whole report. Readers trust nothing: config.yaml is read with a YAML safe loader and its
``${...}`` interpolations are never resolved (``load_config_yaml``, ``load_run_config``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import socket
import tempfile
import traceback as _tb
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from rsdet.errors import DataError

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
EVAL_HISTORY_FILE = "metrics_history.jsonl"  # evaluations during training (eval.every_epochs)
HISTORY_FILE = "history.jsonl"
DROPPED_HISTORY_FILE = "history.dropped.jsonl"
CHECKPOINT_DIR = "checkpoints"

#: Statuses a writer may set; ``"unreadable"`` is only ever reported by readers.
STATUSES = ("running", "completed", "failed", "interrupted")
UNREADABLE = "unreadable"

#: Directory names ``find_runs`` never descends into (Hydra's copy of the config, W&B's files, weights).
SKIP_DIRS = frozenset({".hydra", "wandb", CHECKPOINT_DIR, "__pycache__"})


# --------------------------------------------------------------------------------------------- JSON helpers
def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` into plain JSON types.

    Handles numpy/torch scalars and arrays (anything with ``tolist``), OmegaConf containers, paths,
    datetimes, dataclasses and exceptions. Non-finite floats become ``None`` because JSON has no NaN,
    and a NaN loss written as ``NaN`` would make the whole file unreadable for strict parsers.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    container = _omegaconf_container(obj)
    if container is not None:
        return to_jsonable(container)
    # numpy arrays/scalars and torch tensors all expose tolist(); no import of either is needed.
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return to_jsonable(tolist())
    item = getattr(obj, "item", None)
    if callable(item):
        return to_jsonable(item())
    return str(obj)


def _omegaconf_container(obj: Any) -> Any:
    try:
        from omegaconf import Container, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a hard dependency
        return None
    if not isinstance(obj, Container):
        return None
    try:
        return OmegaConf.to_container(obj, resolve=True)
    except Exception:  # unresolvable interpolation (e.g. ${hydra:...} outside a Hydra app)
        return OmegaConf.to_container(obj, resolve=False)


def dumps(obj: Any, indent: int | None = 2) -> str:
    """``json.dumps`` that never writes NaN/Infinity and accepts numpy/torch values."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)


def share_like_open(fd: int) -> None:
    """Give a ``mkstemp`` file (created 0600) the mode ``open()`` would have given it (0666 less the
    umask), so that records in a shared folder stay readable by whoever could read them before."""
    if not hasattr(os, "fchmod"):  # pragma: no cover - Windows
        return
    mask = os.umask(0o022)
    os.umask(mask)
    try:
        os.fchmod(fd, 0o666 & ~mask)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the new file, never half of one."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``: readers see the
    old or the new file, never half of one, and a symlink planted at ``path`` is replaced, not written
    through. ``durable``: fsync the file before the rename (records; pictures skip it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        share_like_open(fd)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


_CONFIG_LOADER = None


def load_config_yaml(text: str) -> Any:
    """Parse a config.yaml the way OmegaConf does (``1e-3`` is a float, dates stay strings), ~50× faster.

    ``OmegaConf.load`` builds a full DictConfig node tree, which dominates ``rsdet report`` on a sweep
    of hundreds of runs; the report only needs plain values. A YAML safe loader: no tags that build
    objects, and ``${...}`` interpolations stay the text they are, never resolved — a record read
    from someone else's folder must not make the reader look up its environment variables or files
    (``${oc.env:...}``).
    """
    global _CONFIG_LOADER
    import yaml

    if _CONFIG_LOADER is None:
        import re

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        loader = type("_ConfigLoader", (base,), {})
        # YAML 1.1 wants a dot in floats; OmegaConf (and people) write 1e-3
        loader.add_implicit_resolver(
            "tag:yaml.org,2002:float",
            re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"), list("-+0123456789."))
        loader.yaml_implicit_resolvers = {
            ch: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:timestamp"]
            for ch, rs in loader.yaml_implicit_resolvers.items()}
        _CONFIG_LOADER = loader
    return yaml.load(text, Loader=_CONFIG_LOADER)  # noqa: S506 - a SafeLoader subclass


def _interpolations(obj: Any, prefix: str = "") -> list[str]:
    """Keys of ``obj`` (plain nested values) whose string values hold a ``${...}`` interpolation."""
    if isinstance(obj, Mapping):
        return [k for key, v in obj.items() for k in _interpolations(v, f"{prefix}{key}.")]
    if isinstance(obj, list):
        return [k for i, v in enumerate(obj) for k in _interpolations(v, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if isinstance(obj, str) and "${" in obj else []


def load_run_config(run_dir: str | os.PathLike) -> Any:
    """A run's config.yaml as a DictConfig for resuming or evaluating it, read with the safe loader.

    rsdet writes configs resolved, so an interpolation (``${oc.env:...}``, ``${...}``) in one means the
    file came from elsewhere; it is refused rather than resolved. Raises ``DataError`` naming the file."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"{Path(run_dir)} has no {CONFIG_FILE}; is it an rsdet run directory?")
    try:
        data = load_config_yaml(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping at the top level, found {type(data).__name__}")
    except Exception as exc:  # yaml errors, ValueError, OSError, UnicodeDecodeError
        raise DataError(f"{path}: cannot read {CONFIG_FILE} ({_one_line(exc)}); fix or restore the file") from exc
    found = _interpolations(data)
    if found:
        raise DataError(f"{path} holds interpolations (${{...}}) at {', '.join(found[:5])}; rsdet writes configs "
                        "with every value resolved, so this file was edited or written elsewhere, and resolving it "
                        "could read environment variables or files. Replace them with plain values")
    return OmegaConf.create(data)


def _append_jsonl(path: Path, row: Mapping) -> None:
    """Append one JSON line and flush, so a kill loses at most this line."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(dumps(row, indent=None) + "\n")
        fh.flush()


def _read_jsonl(path: Path, what: str) -> list[dict]:
    """The JSON-object lines of ``path`` ([] when absent); malformed lines (e.g. a line cut by a kill)
    are skipped with a warning naming the file and line."""
    rows: list[dict] = []
    if not path.is_file():
        return rows
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                log.warning("%s:%d: skipping malformed %s line (%s)", path, lineno, what, exc)
                continue
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------- RunRecord
class RunRecord:
    """One run directory: written by the training engine, read by ``rsdet report``.

    Writer side (engine)::

        rec = RunRecord(hydra_output_dir)
        rec.write_config(cfg)
        rec.start(choices=HydraConfig.get().runtime.choices, overrides=[...], device="cpu")
        rec.append_history({"iteration": 20, "lr": 0.01, "loss/rcnn_rank": 0.7})
        rec.update(iteration=20)
        rec.write_metrics({"bbox": {"AP": 0.31}, "train_seconds": 290.0})
        rec.finish()                      # or rec.finish("failed", error=exc)

    Reader side: ``rec.status``, ``rec.reason``, ``rec.info``, ``rec.config``, ``rec.metrics``,
    ``rec.read_history()``. Reads are cached; call :meth:`reload` to see files changed by another process.
    """

    def __init__(self, run_dir: str | os.PathLike, create: bool = True):
        self.dir = Path(run_dir)
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)
        elif not self.dir.is_dir():
            raise DataError(f"run directory {self.dir} does not exist; pass a folder written by `rsdet train`")
        #: display name; ``find_runs`` sets it to the path relative to the searched root
        self.label = self.dir.name or str(self.dir)
        self._cache: dict[str, Any] = {}
        self._problems: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RunRecord({str(self.dir)!r}, status={self.status!r})"

    # ---- paths
    @property
    def checkpoint_dir(self) -> Path:
        """``run_dir/checkpoints`` (not created here; the engine creates it when it saves)."""
        return self.dir / CHECKPOINT_DIR

    def predictions_path(self, iou_type: str = "bbox") -> Path:
        """COCO-results file for ``iou_type`` ("bbox" or "segm")."""
        return self.dir / f"predictions_{iou_type}.json"

    @property
    def history_path(self) -> Path:
        return self.dir / HISTORY_FILE

    # ---- reading
    def reload(self) -> None:
        """Forget cached file contents (and the problems found in them)."""
        self._cache.clear()
        self._problems.clear()

    def _problem(self, name: str, message: str) -> None:
        if self._problems.get(name) != message:
            log.warning("%s", message)
        self._problems[name] = message

    def _read_cached(self, name: str, parse, expected: str) -> Any:
        """Parse ``name`` once; a malformed file is reported (once) and read as None."""
        if name in self._cache:
            return self._cache[name]
        path = self.dir / name
        value = None
        if path.is_file():
            try:
                # an invalid byte garbles one character (as in history.jsonl), not the whole record
                value = parse(path.read_text(encoding="utf-8", errors="replace"))
                if not isinstance(value, dict):
                    raise ValueError(f"expected {expected}, found {type(value).__name__}")
            except Exception as exc:  # json/yaml errors, ValueError, OSError, UnicodeDecodeError, ...
                value = None
                self._problem(name, f"{path}: cannot read {name} ({_one_line(exc)}); the run is listed as "
                                    f"unreadable — fix or delete the file")
        self._cache[name] = value
        return value

    def _read_json(self, name: str) -> Any:
        return self._read_cached(name, _parse_run_json if name == RUN_FILE else json.loads, "a JSON object")

    @property
    def info(self) -> dict:
        """Contents of run.json ({} when missing or malformed)."""
        return dict(self._read_json(RUN_FILE) or {})

    @property
    def metrics(self) -> dict | None:
        """Contents of metrics.json, or None when missing or malformed."""
        return self._read_json(METRICS_FILE)

    @property
    def config(self) -> dict | None:
        """config.yaml as a plain nested dict, or None when missing or malformed."""
        return self._read_cached(CONFIG_FILE, load_config_yaml, "a mapping at the top level")

    @property
    def problems(self) -> list[str]:
        """Messages about malformed files found so far (reads run.json, config.yaml and metrics.json)."""
        self.info, self.config, self.metrics  # noqa: B018 - reading populates the problems
        return list(self._problems.values())

    @property
    def status(self) -> str:
        """running | completed | failed | interrupted, or "unreadable" when a record file is malformed."""
        info = self._read_json(RUN_FILE)
        metrics = self.metrics
        self.config  # noqa: B018
        if RUN_FILE in self._problems or CONFIG_FILE in self._problems:
            return UNREADABLE
        if info is None:  # legacy/hand-made directory: config.yaml + metrics.json only
            return UNREADABLE if METRICS_FILE in self._problems else ("completed" if metrics else UNREADABLE)
        status = info.get("status")
        if status not in STATUSES:
            self._problem("status", f"{self.dir / RUN_FILE}: unknown status {status!r} "
                                    f"(expected one of {', '.join(STATUSES)})")
            return UNREADABLE
        if status == "completed" and METRICS_FILE in self._problems:
            return UNREADABLE
        return status

    @property
    def reason(self) -> str | None:
        """One line saying why the run has no final metrics (None for a healthy completed run)."""
        status = self.status
        info = self.info
        if status == UNREADABLE:
            return "; ".join(self.problems) or f"{self.dir}: neither {RUN_FILE} nor {METRICS_FILE} is readable"
        if status == "completed":
            return None if self.metrics else f"completed but {METRICS_FILE} is missing"
        it = info.get("iteration")
        at = f" at iteration {it}" if it else ""  # iteration 0: it never started training
        if status in ("failed", "interrupted"):
            error = (info.get("error") or "").strip()
            return f"{status}{at}: {error}" if error else f"{status}{at} (no error message recorded)"
        # running: say when it last wrote, and whether its process is visibly gone
        text = f"running{at}, last update {info.get('updated') or info.get('started') or '?'}"
        if _process_gone(info):
            text += f" — process {info.get('pid')} on this host no longer exists; resume it with resume=true"
        return text

    def read_history(self) -> list[dict]:
        """All rows of history.jsonl; malformed lines (e.g. a line cut by a kill) are skipped with a warning."""
        return _read_jsonl(self.history_path, "history")

    # ---- writing
    def write_config(self, cfg: Any) -> Path:
        """Write the resolved config (a DictConfig or a plain dict) to config.yaml."""
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            try:
                text = OmegaConf.to_yaml(cfg, resolve=True)
            except Exception as exc:  # keep the run going; an unresolved key is still informative
                log.warning("config has unresolvable values (%s); writing it unresolved", exc)
                text = OmegaConf.to_yaml(cfg, resolve=False)
        else:
            text = OmegaConf.to_yaml(OmegaConf.create(to_jsonable(cfg)))
        path = self.dir / CONFIG_FILE
        atomic_write_text(path, text)
        self._cache.pop(CONFIG_FILE, None)
        self._problems.pop(CONFIG_FILE, None)
        return path

    def _write_info(self, info: dict) -> None:
        info["updated"] = _now()
        atomic_write_text(self.dir / RUN_FILE, dumps(info) + "\n")
        self._cache[RUN_FILE] = to_jsonable(info)
        self._problems.pop(RUN_FILE, None)
        self._problems.pop("status", None)

    def start(self, choices: Mapping | None = None, overrides: list | None = None,
              multirun: Mapping | None = None, **info: Any) -> dict:
        """Mark the run as running and record how it was composed.

        ``choices`` is Hydra's ``runtime.choices`` ({group: option}), ``overrides`` the job's command-line
        overrides, ``multirun`` {"sweep_dir", "job_num"} for ``-m`` jobs; extra keywords (device, host,
        ...) are stored as given. Calling it again on a resumed run keeps ``started`` and appends the
        time to ``resumed``.
        """
        previous = self._read_json(RUN_FILE) or {}
        record = dict(previous)
        now = _now()
        if previous.get("started"):
            record["resumed"] = list(previous.get("resumed") or []) + [now]
        else:
            record["started"] = now
        record.update(
            status="running", error=None, traceback=None, finished=None,
            choices=dict(choices or {}), overrides=[str(o) for o in (overrides or [])],
            multirun=dict(multirun) if multirun else None,
        )
        record.setdefault("iteration", 0)
        record.setdefault("host", socket.gethostname())
        record["pid"] = os.getpid()
        if "rsdet_version" not in info:
            from rsdet import __version__

            record["rsdet_version"] = __version__
        record.update(info)
        self._write_info(record)
        return record

    def update(self, **fields: Any) -> dict:
        """Merge ``fields`` into run.json (e.g. ``iteration=120``) and rewrite it atomically."""
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {fields['status']!r}")
        record = self.info
        record.update(fields)
        self._write_info(record)
        return record

    def finish(self, status: str = "completed", error: Any = None, traceback: str | None = None) -> dict:
        """Close the record. ``error`` may be an exception: its message and traceback are both kept."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if isinstance(error, BaseException):
            if traceback is None and error.__traceback__ is not None:
                traceback = "".join(_tb.format_exception(type(error), error, error.__traceback__))
            error = f"{type(error).__name__}: {error}"
        return self.update(status=status, error=error, traceback=traceback, finished=_now())

    def append_history(self, row: Mapping) -> None:
        """Append one logging step to history.jsonl and flush, so a kill loses at most this line."""
        _append_jsonl(self.history_path, row)

    def drop_history_after(self, iteration: int) -> int:
        """Move the history rows logged after ``iteration`` (and lines a kill cut short) from
        history.jsonl to the end of history.dropped.jsonl; return how many lines moved.

        A run resumed from the checkpoint of ``iteration`` logs those iterations again, so keeping
        the old rows would list them twice."""
        path = self.history_path
        if not path.is_file():
            return 0
        keep: list[str] = []
        drop: list[str] = []
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    logged = int(row["iteration"]) if isinstance(row, dict) else None
                except (ValueError, KeyError, TypeError):
                    logged = None
                if logged is not None and logged <= iteration and line.endswith("\n"):
                    keep.append(line)
                else:
                    drop.append(line if line.endswith("\n") else line + "\n")
        if drop:
            with (self.dir / DROPPED_HISTORY_FILE).open("a", encoding="utf-8") as fh:
                fh.write("".join(drop))
                fh.flush()
            atomic_write_text(path, "".join(keep))
        return len(drop)

    @property
    def eval_history_path(self) -> Path:
        return self.dir / EVAL_HISTORY_FILE

    def append_eval(self, row: Mapping) -> None:
        """Append one evaluation during training (``eval.every_epochs``) to metrics_history.jsonl."""
        _append_jsonl(self.eval_history_path, row)

    def read_eval_history(self) -> list[dict]:
        """Evaluations during training, one per epoch (the last one written wins, e.g. after a resume
        that re-ran an epoch's evaluation); malformed lines are skipped with a warning."""
        by_epoch: dict = {}
        for row in _read_jsonl(self.eval_history_path, "evaluation history"):
            if isinstance(row.get("epoch"), int) and isinstance(row.get("bbox"), dict):
                by_epoch[row["epoch"]] = row
        return [by_epoch[e] for e in sorted(by_epoch)]

    def write_metrics(self, metrics: Mapping) -> Path:
        """Write the final evaluation (fractions, not percentages) to metrics.json."""
        path = self.dir / METRICS_FILE
        atomic_write_text(path, dumps(metrics) + "\n")
        self._cache[METRICS_FILE] = to_jsonable(metrics)
        self._problems.pop(METRICS_FILE, None)
        return path


_SCALAR = (str, int, float, bool, type(None))
_TEXT_FIELDS = ("error", "traceback", "started", "updated", "finished", "host")


def _run_json_problem(info: dict) -> str | None:
    """What makes a parsed run.json unusable (a field of the wrong type), or None."""
    choices = info.get("choices")
    if choices is not None and not (isinstance(choices, dict)
                                    and all(isinstance(v, _SCALAR) for v in choices.values())):
        return "'choices' must be an object mapping config groups to option names"
    overrides = info.get("overrides")
    if overrides is not None and not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
        return "'overrides' must be a list of strings"
    if info.get("multirun") is not None and not isinstance(info["multirun"], dict):
        return "'multirun' must be an object or null"
    for key in ("iteration", "pid"):
        value = info.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            return f"'{key}' must be a non-negative integer, got {value!r}"
    for key in _TEXT_FIELDS:
        if info.get(key) is not None and not isinstance(info[key], str):
            return f"'{key}' must be a string or null, got {type(info[key]).__name__}"
    if info.get("resumed") is not None and not isinstance(info["resumed"], list):
        return "'resumed' must be a list of times"
    return None


def _parse_run_json(text: str) -> Any:
    """``json.loads`` of run.json, refusing fields of the wrong type (the readers rely on them)."""
    info = json.loads(text)
    problem = _run_json_problem(info) if isinstance(info, dict) else None
    if problem:
        raise ValueError(problem)
    return info


def _process_gone(info: Mapping) -> bool:
    """True when run.json names a pid on this host that no longer exists (a killed, never-closed run)."""
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


# --------------------------------------------------------------------------------------------- discovery
def is_run_dir(path: str | os.PathLike) -> bool:
    """A directory is a run if it has run.json, or config.yaml together with metrics.json."""
    p = Path(path)
    return (p / RUN_FILE).is_file() or ((p / CONFIG_FILE).is_file() and (p / METRICS_FILE).is_file())


def _natural_key(text: str) -> list:
    # multirun job folders 0..N sort numerically ("2" before "10")
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def find_runs(root: str | os.PathLike) -> list[RunRecord]:
    """All run directories under ``root`` (``root`` itself included), in natural path order.

    Skips hidden directories (``.hydra``, ``.git``), ``wandb`` and ``checkpoints``, and does not look
    inside a run directory for further runs.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; pass the folder that holds your runs "
                        f"(e.g. outputs/ or outputs/multirun/<date>/<time>)")
    found: list[RunRecord] = []
    for dirpath, dirnames, _files in os.walk(root):
        if is_run_dir(dirpath):
            rec = RunRecord(dirpath, create=False)
            rel = Path(dirpath).relative_to(root).as_posix()
            rec.label = rel if rel != "." else (root.resolve().name or str(root))
            found.append(rec)
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
    found.sort(key=lambda r: _natural_key(r.label))
    return found
