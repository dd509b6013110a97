"""A trained detector for ``rsdet predict``: the run's config and checkpoint, read without trusting them.

Nothing read here can execute code (docs/visualisation.md, "What predict trusts"): the config is
parsed by a YAML safe loader and a config holding ``${...}`` interpolations is refused, never resolved,
so an edited config.yaml cannot read environment variables or call resolvers (as
``rsdet.records.load_run_config``); the weights come through
:func:`rsdet.engine.checkpoint.load_checkpoint`. A checkpoint that does not fit the detector
the config builds (another detector, another number of classes) is an error listing what differs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rsdet.errors import ConfigError, DataError, RsdetError

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"


def read_run_config(path: Path) -> DictConfig:
    """A run's ``config.yaml`` (or the file ``--config`` names) as a DictConfig, read as
    ``rsdet.records.load_run_config`` reads records: a YAML safe loader, and a file holding ``${...}``
    interpolations is refused rather than resolved (rsdet writes configs resolved)."""
    from rsdet.records import _interpolations, load_config_yaml

    try:
        data = load_config_yaml(path.read_text(encoding="utf-8"))
    except Exception as exc:  # yaml errors, OSError, UnicodeDecodeError
        raise ConfigError(f"{path} cannot be read as YAML ({' '.join(str(exc).split())}); is it the "
                          "config.yaml of an rsdet run?") from exc
    if not isinstance(data, dict) or not isinstance(data.get("detector"), dict) or "name" not in data["detector"]:
        raise ConfigError(f"{path} is not an rsdet run config (no detector.name); point predict at a run "
                          "directory written by `rsdet train` or pass --config RUN/config.yaml")
    found = _interpolations(data)
    if found:
        raise ConfigError(f"{path} holds interpolations (${{...}}) at {', '.join(found[:5])}; rsdet writes configs "
                          "with every value resolved, so this file was edited or written elsewhere, and resolving "
                          "it could read environment variables or files. Replace them with plain values")
    return OmegaConf.create(data)


def resolve_source(source: Path, config: Path | None = None) -> tuple[Path, Path]:
    """(config.yaml, checkpoint) of ``source``: a run directory, or a ``.pt`` file inside one
    (``RUN/checkpoints/x.pt`` or ``RUN/x.pt``); ``config`` names the config of a checkpoint kept
    elsewhere."""
    source = Path(source).expanduser()
    if not source.exists():
        raise RsdetError(f"{source} does not exist; give a run directory (outputs/runs/<date>/<run>) or its "
                         "checkpoint (.pt)")
    if source.is_dir():
        run_dir, ckpt = source, source / CHECKPOINT
        if not ckpt.is_file():
            raise RsdetError(f"{run_dir} has no checkpoint ({CHECKPOINT}){_run_state(run_dir)}; predict needs "
                             "the weights of a trained run: train it (rsdet train ...) or continue it with "
                             f"rsdet train resume={run_dir}")
    else:
        ckpt = source
        run_dir = source.parent.parent if source.parent.name == "checkpoints" else source.parent
    cfg = Path(config).expanduser() if config else run_dir / "config.yaml"
    if not cfg.is_file():
        raise RsdetError(f"{cfg} does not exist; predict rebuilds the detector from the run's config.yaml: "
                         "give the run directory, or --config PATH/config.yaml for a checkpoint kept elsewhere")
    return cfg, ckpt


def _run_state(run_dir: Path) -> str:
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return ""
    status = info.get("status") if isinstance(info, dict) else None
    return f" (run.json: status {status}, iteration {info.get('iteration')})" if status else ""


@dataclass
class Predictor:
    """A detector ready for inference and what its detections mean: ``class_names[label]`` and
    ``category_ids[label]`` (the COCO category id of label index ``label``)."""

    cfg: DictConfig
    model: torch.nn.Module
    class_names: list[str]
    category_ids: list[int]
    score_thresh: float
    checkpoint: Path
    device: torch.device
    predicts_masks: bool = False
    notes: list[str] = field(default_factory=list)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> dict:
        """Detections of one (3, H, W) float image in [0, 1], on the CPU: boxes (x1, y1, x2, y2) in its
        pixels, scores, labels in [0, C) and, for mask detectors, masks (n, 1, H, W) probabilities."""
        det = self.model([image.to(self.device)])[0]
        return {k: v.cpu() for k, v in det.items()}


def _categories_from_dataset(cfg: DictConfig) -> tuple[list[int], list[str]] | None:
    """(ids, names) of the run's evaluation split, the mapping its dataset used (ids sorted), if the
    annotation file can be found on this machine (the shapes datasets are regenerated if needed)."""
    from rsdet.data.build import dataset_paths

    try:
        _, ann = dataset_paths(cfg.dataset, str((cfg.get("eval") or {}).get("split") or "val"))
        data = json.loads(Path(ann).read_text())
        cats = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}
    except (RsdetError, OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("no category names from the run's dataset: %s", exc)
        return None
    ids = sorted(cats)
    return ids, [cats[i] for i in ids]


def load_weights(model: torch.nn.Module, state: dict, ckpt: Path, what: str) -> None:
    """Load the state dict ``state`` into ``model``, or raise a ``ConfigError`` listing the weights of
    another shape, the missing and the unexpected ones (after the model's own hooks, which upgrade
    checkpoints of earlier rsdet versions)."""
    own = model.state_dict()
    shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
              if k in own and torch.is_tensor(v) and torch.is_tensor(own[k]) and v.shape != own[k].shape]
    missing = unexpected = []
    if not shapes:
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
        unexpected = [k for k in result.unexpected_keys if not k.endswith("_extra_state")]
    if not (shapes or missing or unexpected):
        return
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} weights of another shape (e.g. " +
                     ", ".join(f"{k}: {a} in the checkpoint, {b} here" for k, a, b in shapes[:3]) + ")")
    if missing:
        parts.append(f"{len(missing)} weights missing from the checkpoint (e.g. {', '.join(missing[:4])})")
    if unexpected:
        parts.append(f"{len(unexpected)} weights the detector does not have (e.g. {', '.join(unexpected[:4])})")
    raise ConfigError(f"checkpoint {ckpt} does not fit {what}: " + "; ".join(parts) + ". It was written by another "
                      "detector or number of classes: give the run directory the checkpoint belongs to, or "
                      "--config with that run's config.yaml")


def load_predictor(source: Path, *, device: torch.device, config: Path | None = None,
                   score_thresh: float | None = None, allow_legacy: bool = False) -> Predictor:
    """The trained detector of a run directory or checkpoint, in eval mode on ``device``."""
    from rsdet.engine.checkpoint import load_checkpoint
    from rsdet.engine.inference import eval_score_thresh
    from rsdet.models import build_detector
    from rsdet.models.build import detector_predicts_masks

    cfg_path, ckpt = resolve_source(Path(source), config)
    cfg = read_run_config(cfg_path)
    payload = load_checkpoint(ckpt, allow_legacy=allow_legacy)
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise RsdetError(f"{ckpt} is not an rsdet checkpoint (no 'model' state dict)")
    extra = payload.get("extra") or {}
    name = str(cfg.detector.name)
    if extra.get("detector") and extra["detector"] != name:
        raise ConfigError(f"checkpoint {ckpt} holds a detector={extra['detector']} model but {cfg_path} configures "
                          f"detector={name}; give the checkpoint's own run directory or --config")
    notes = []
    found = _categories_from_dataset(cfg)
    num_classes = extra.get("num_classes")
    if extra.get("category_ids") and extra.get("class_names"):
        ids, names = [int(i) for i in extra["category_ids"]], [str(n) for n in extra["class_names"]]
    elif found is not None:
        ids, names = found
    else:
        if num_classes is None:
            raise DataError(f"neither {ckpt} nor the run's dataset (not found on this machine) says how many classes "
                            f"the detector has; make the run's dataset available or pass --gt ANNOTATIONS.json")
        ids, names = list(range(1, int(num_classes) + 1)), [f"class {i}" for i in range(int(num_classes))]
        notes.append("class names unknown (the run's dataset is not on this machine): labels are 'class <k>', "
                     "category ids k + 1; --gt ANNOTATIONS.json names them")
    num_classes = int(num_classes if num_classes is not None else len(ids))
    if len(ids) != num_classes:
        raise ConfigError(f"checkpoint {ckpt} has {num_classes} classes but the run's dataset names {len(ids)}; "
                          "the checkpoint belongs to another run (give its own run directory or --config)")
    try:
        model = build_detector(cfg, num_classes)
    except (KeyError, AttributeError, TypeError, ValueError) as exc:  # a config of another rsdet version
        raise ConfigError(f"{cfg_path} cannot build detector={name} with this rsdet ({type(exc).__name__}: {exc})") \
            from exc
    load_weights(model, dict(payload["model"]), ckpt,
                 f"detector={name} with {num_classes} classes built from {cfg_path}")
    model.to(device).eval()
    thr = eval_score_thresh(cfg) if score_thresh is None else float(score_thresh)
    model.score_thresh = thr
    return Predictor(cfg=cfg, model=model, class_names=names, category_ids=ids, score_thresh=thr, checkpoint=ckpt,
                     device=device, predicts_masks=detector_predicts_masks(name), notes=notes)
