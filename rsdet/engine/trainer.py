"""The training engine: one function, ``train(cfg, record)``, from a composed config to a run record.

Loop: SGD with warm-up and step decay, optional gradient clipping, AMP on CUDA (fp16 with a
GradScaler, or bf16), data-parallel over several processes (``dist``; docs/distributed.md), a rich progress bar,
``history.jsonl`` rows every ``logger.log_every`` iterations (loss terms, lr, seconds/iteration,
pos:neg instance and task ratios per stage — supplementary Table S7), checkpoints every
``schedule.checkpoint_every`` iterations, then evaluation (COCO/LVIS AP and oLRP) into
``metrics.json``. A NaN/inf loss stops the run naming the iteration and the loss term, keeping the
last good checkpoint; Ctrl-C saves a checkpoint and marks the run interrupted.

Resuming is exact: the checkpoint holds the data loader's position (``rsdet.engine.loader``), the
RNG states and the partial sums of the next history row, so a resumed run computes the same
iterations, history rows and final metrics as the run left alone (docs/resume.md).

The training step never waits for the GPU: loss sums stay on the device and are read back only when
a history row is written (every ``logger.log_every`` iterations), which is also when a NaN/inf loss
is noticed on CUDA (on the CPU reading a value costs nothing, so it is checked every iteration).
"""

from __future__ import annotations

import logging
import signal
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rsdet.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from rsdet.engine.inference import check_iou_types, evaluate_model, pick_device
from rsdet.engine.loader import TrainLoader
from rsdet.engine.loggers import NullLogger, build_logger
from rsdet.engine.schedule import build_optimizer, make_plan, set_lr
from rsdet.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class Stopped(KeyboardInterrupt):
    """Training stopped at an iteration boundary on a signal; the checkpoint is written.

    ``requeue`` is the handler a job scheduler (submitit) had installed for that signal, if any:
    calling it with ``(signum, None)`` requeues the job (on rank 0; other ranks return)."""

    def __init__(self, signum: int, requeue=None):
        super().__init__(f"signal {signum}")
        self.signum = signum
        self.requeue = requeue


class _StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM (a scheduler's preemption, `kill`) stop training at the next
    iteration boundary, where the checkpoint is exact; a second signal stops at once.

    An interrupt in the middle of an iteration would leave the model half-way through it (batch-norm
    statistics already updated by the forward pass, parameters part-way through the optimiser
    step), which no checkpoint can describe.

    SIGUSR2 is what submitit (``hydra/launcher=slurm|local``) sends before a job's time limit or on
    preemption: the run stops the same way, and ``Stopped.requeue`` then hands the signal to
    submitit's own handler, which requeues the job; the requeued job resumes from the checkpoint.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGUSR2,) if hasattr(signal, "SIGUSR2") else ())
    #: agreement order between ranks (the largest code wins): a requeue request beats a plain stop
    _CODES = {signal.SIGINT: 1, signal.SIGTERM: 2, **({signal.SIGUSR2: 3} if hasattr(signal, "SIGUSR2") else {})}

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"signal {signum} (second)")
        self.received = signum
        log.warning("signal %d: stopping after this iteration with a checkpoint (send it again to stop now)", signum)

    def code(self) -> int:
        return self._CODES.get(self.received, 2) if self.received is not None else 0

    def check(self, code: int | None = None) -> None:
        """Raise ``Stopped`` if a signal came (``code``: the code the ranks agreed on)."""
        code = self.code() if code is None else code
        if code:
            signum = next(s for s, c in self._CODES.items() if c == code)
            previous = self._previous.get(signum)
            raise Stopped(signum, previous if callable(previous) and signum == getattr(signal, "SIGUSR2", None)
                          else None)

    def __enter__(self) -> _StopSignals:
        try:
            for sig in self._SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


class _FiniteWatch:
    """Notices a NaN/inf loss term without reading it back every iteration: the first iteration at
    which each term became non-finite, and its value, are kept on the device; ``error()`` reads them
    (one synchronisation) and returns the message, or None while every term stayed finite."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.first: torch.Tensor | None = None
        self.value: torch.Tensor | None = None
        self._pending: str | None = None

    def observe(self, terms: dict[str, torch.Tensor], iteration: int) -> None:
        names = tuple(terms)
        if names != self.names:
            self._pending = self._pending or self.error()  # the set of terms changed (rare): settle the old one
            self.names, self.first, self.value = names, None, None
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        bad = ~torch.isfinite(values)
        if self.first is None:
            self.first = torch.full(values.shape, -1, dtype=torch.int64, device=values.device)
            self.value = torch.zeros_like(values)
        new = bad & (self.first < 0)
        self.first = torch.where(new, torch.full_like(self.first, iteration), self.first)
        self.value = torch.where(new, values, self.value)

    def error(self, ckpt_dir: Path | None = None) -> str | None:
        if self._pending or self.first is None:
            return self._pending
        first, value = self.first.tolist(), self.value.tolist()
        bad = [(it, name, v) for it, name, v in zip(first, self.names, value) if it >= 0]
        if not bad:
            return None
        it, name, v = min(bad)
        return (f"loss term '{name}' became {v} at iteration {it}. The last good checkpoint is kept in {ckpt_dir}. "
                "Try a lower learning rate (schedule.lr=...), gradient clipping (schedule.grad_clip=10) or check "
                "the annotations for degenerate boxes.")


class _LogState:
    """What the next history row needs: per-key sums and the iteration count since the last row, the
    running count of batches without R-CNN positives, and the clocks (sec_per_iter, train_seconds).
    Checkpointed, so a resumed run writes the rows the uninterrupted run would have written.

    The sums of loss terms are float64 tensors on the training device (no read-back per iteration);
    ``sync`` reads them back and, in a data-parallel run, averages them over the ranks (counts of
    positives and negatives are then per global batch, ``batches_without_positives`` counts the
    per-rank batches). ``row`` and ``state_dict`` expect a ``sync`` just before."""

    _SUMMED = ("/num_pos", "/num_neg")  # per-rank means of these become global-batch totals in a row

    def __init__(self) -> None:
        self.sums: dict[str, Any] = defaultdict(float)
        self.count = 0
        self.zero_pos = 0
        self.world_size = 1
        self._window_before = 0.0  # seconds of the current row's window spent before this process
        self._train_before = 0.0  # training seconds spent before this process
        self.restart_clock()

    def restart_clock(self) -> None:
        now = time.perf_counter()
        self._window_start = now - self._window_before
        self._train_start = now - self._train_before

    def train_seconds(self) -> float:
        return time.perf_counter() - self._train_start

    def add(self, key: str, value) -> None:
        """Add a device tensor (kept on the device, in float64) or a Python number."""
        if torch.is_tensor(value):
            value = value.detach().to(torch.float64)
        self.sums[key] = self.sums[key] + value

    def sync(self, dist=None) -> None:
        """Read the sums back (one synchronisation) and, with several ranks, average them over the ranks."""
        tensors = [k for k, v in self.sums.items() if torch.is_tensor(v)]
        read = dict(zip(tensors, torch.stack([self.sums[k].reshape(()) for k in tensors]).tolist())) if tensors else {}
        host = {k: read[k] if k in read else float(v) for k, v in self.sums.items()}
        if dist is not None and dist.enabled:
            gathered = dist.all_gather_object((host, self.zero_pos))
            keys = sorted(set().union(*(h for h, _ in gathered)))
            host = {k: sum(h.get(k, 0.0) for h, _ in gathered) / dist.world_size for k in keys}
            total_zero = sum(z for _, z in gathered)
            self.zero_pos = total_zero if dist.is_main else 0  # rank 0 carries the run's count from here
            self.world_size = dist.world_size
        self.sums.clear()
        self.sums.update(host)

    def row(self, iteration: int, epoch: int, lr: float, zero_pos: int | None = None) -> dict:
        if zero_pos is not None:
            self.zero_pos = zero_pos
        now = time.perf_counter()
        n, w = max(self.count, 1), self.world_size
        row = {"iteration": iteration, "epoch": epoch, "lr": lr,
               "sec_per_iter": (now - self._window_start) / n,
               **{k: (v * w if w > 1 and k.endswith(self._SUMMED) else v) / n for k, v in self.sums.items()},
               "batches_without_positives": self.zero_pos}
        self.sums.clear()
        self.count = 0
        self._window_start = now
        return row

    def state_dict(self, zero_pos: int | None = None) -> dict:
        if zero_pos is not None:
            self.zero_pos = zero_pos
        now = time.perf_counter()
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "count": self.count,
                "batches_without_positives": self.zero_pos,
                "window_seconds": now - self._window_start, "train_seconds": now - self._train_start}

    def load_state_dict(self, state: dict | None, keep_count: bool = True) -> None:
        if not state:  # a checkpoint without logging state: the next row averages from here
            return
        self.sums.clear()
        self.sums.update(state["sums"])
        self.count = int(state["count"])
        self.zero_pos = int(state["batches_without_positives"]) if keep_count else 0
        self._window_before = float(state["window_seconds"])
        self._train_before = float(state["train_seconds"])
        self.restart_clock()


def resolve_amp(value: Any, device: torch.device) -> torch.dtype | None:
    """``amp``: auto (fp16 on CUDA, off on the CPU) | true/fp16 | bf16 | false → the autocast dtype or None."""
    text = str(value).lower()
    if text in ("false", "none", "off", "0"):
        return None
    if text not in ("auto", "true", "fp16", "float16", "1", "bf16", "bfloat16"):
        raise ConfigError(f"amp={value!r} is not one of auto, true, fp16, bf16, false")
    if device.type != "cuda":
        if text not in ("auto",):
            log.warning("amp=%s is for CUDA; training on %s in float32", value, device)
        return None
    if text in ("bf16", "bfloat16"):
        if not torch.cuda.is_bf16_supported():
            raise ConfigError(f"amp=bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use amp=fp16")
        return torch.bfloat16
    return torch.float16


def _data_loader_options(cfg: Any, device: torch.device) -> dict:
    """``num_workers`` (``auto``: enough to keep a GPU fed, 0 on the CPU where workers would compete with
    the training process for the cores), ``pin_memory`` (auto: on CUDA) and ``prefetch_factor``."""
    workers = cfg.get("num_workers", 0)
    if workers in (None, "auto"):
        if device.type == "cuda":
            import os

            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            per_gpu = max(torch.cuda.device_count(), 1)
            workers = max(1, min(8, cores // per_gpu - 1))
        else:
            workers = 0
    pin = cfg.get("pin_memory", "auto")
    pin = device.type == "cuda" if pin in (None, "auto") else bool(pin)
    return {"num_workers": int(workers), "pin_memory": pin, "prefetch_factor": cfg.get("prefetch_factor")}


def _wrap_data_parallel(model: torch.nn.Module, cfg: Any, device: torch.device, dist) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (which stays the object that is checkpointed/evaluated)."""
    from torch.nn.parallel import DistributedDataParallel

    dcfg = cfg.get("distributed") or {}
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=bool(dcfg.get("find_unused_parameters", False)))


def _evaluate_epoch(cfg, model, val_ds, device, record, logger, iteration: int, epoch: int, console, dist) -> None:
    """Evaluation during training (``eval.every_epochs``): one row of metrics_history.jsonl and W&B
    ``eval/*`` values at this iteration; the model goes back to training mode afterwards. In a
    data-parallel run every rank evaluates its share and rank 0 writes."""
    dist.broadcast_buffers(model)
    with _progress(console) as progress:
        result = evaluate_model(cfg, model, val_ds, device, record.dir / f"predictions_bbox_epoch{epoch}.json",
                                cfg.eval.get("max_images"), progress=progress, dist=dist)
    model.train()
    if not dist.is_main:
        return
    row = {"epoch": epoch, "iteration": iteration, "bbox": result["bbox"]}
    if "segm" in result:
        row["segm"] = result["segm"]
    record.append_eval(row)
    scalars = {f"eval/{k}": v for k, v in result["bbox"].items() if isinstance(v, (int, float))}
    scalars.update({f"eval/segm/{k}": v for k, v in result.get("segm", {}).items() if isinstance(v, (int, float))})
    logger.log(scalars, step=iteration)
    logger.log_evaluation(cfg, result, model=model, dataset=val_ds, device=device,  # W&B media (issue 20)
                          predictions=record.dir / f"predictions_bbox_epoch{epoch}.json", step=iteration)
    log.info("epoch %d (iteration %d): AP %.1f%s", epoch, iteration, 100 * result["bbox"].get("AP", float("nan")),
             f", mask AP {100 * result['segm'].get('AP', float('nan')):.1f}" if "segm" in result else "")


def train(cfg: Any, record, *, console: Console | None = None, resume_from: Path | None = None, dist=None) -> dict:
    """Train ``cfg`` into ``record`` (a RunRecord) and return the final metrics.

    ``dist``: this process' place in a data-parallel run (``rsdet.engine.distributed.DistContext``);
    every rank calls ``train``, rank 0 alone writes ``record`` and returns the metrics (others ``{}``)."""
    from rsdet.data.build import build_dataset
    from rsdet.data.coco_dataset import collate_fn
    from rsdet.data.sampling import build_train_sampler
    from rsdet.engine.distributed import SINGLE
    from rsdet.models import build_detector

    dist = dist or SINGLE
    main = dist.is_main
    console = console or Console(quiet=not main)
    seed_everything(int(cfg.seed) + dist.rank)  # rank 0 draws what a single-process run draws
    device = dist.device(cfg.device) if dist.enabled else pick_device(cfg.device)
    amp_dtype = resolve_amp(cfg.get("amp", "auto"), device)
    use_amp = amp_dtype is not None
    if cfg.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    global_batch = int(cfg.schedule.batch_size)
    if global_batch % dist.world_size:
        raise ConfigError(f"schedule.batch_size={global_batch} (the global batch) is not divisible by the "
                          f"{dist.world_size} processes; use a multiple of {dist.world_size} "
                          f"(e.g. schedule.batch_size={dist.world_size * max(1, round(global_batch / dist.world_size))})")

    train_ds = build_dataset(cfg.dataset, "train", train=True)
    val_ds = build_dataset(cfg.dataset, cfg.eval.split, train=False) if cfg.eval.enabled else None
    if val_ds is not None:
        check_iou_types(cfg)  # before training, not after it
    log.info("train: %s", train_ds.describe() if hasattr(train_ds, "describe") else len(train_ds))
    if dist.enabled and len(train_ds) < global_batch:
        raise ConfigError(f"the training split has {len(train_ds)} images, fewer than the global batch "
                          f"schedule.batch_size={global_batch}; lower it to at most {len(train_ds)}")
    model = build_detector(cfg, train_ds.num_classes)
    if resume_from is None and (cfg.get("detector") or {}).get("init"):  # issue 20: weights from torchvision
        from rsdet.models.torchvision_init import init_detector

        init_detector(model, cfg, train_ds.category_ids)
    model = model.to(device)
    if dist.enabled and (cfg.get("distributed") or {}).get("sync_bn"):
        if device.type != "cuda":
            raise ConfigError("distributed.sync_bn=true needs CUDA (torch's SyncBatchNorm has no CPU kernel); on "
                              "the CPU use detector.backbone.norm=frozen_bn or gn, whose statistics are per image")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    repeat = build_train_sampler(train_ds, cfg.dataset, seed=int(cfg.seed))  # LVIS repeat-factor sampling or None
    epoch_len = int(round(repeat.expected_length)) if repeat is not None else len(train_ds)
    plan = make_plan(cfg.schedule, cfg.loss, epoch_len)
    optimizer = build_optimizer(model, cfg.schedule, plan)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    start_iter = 0
    ckpt_dir = record.checkpoint_dir
    state: dict = {}
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        if state.get("criterion"):  # checkpoints of rsdet <= 0.1 kept the loss state beside the model
            state["model"].setdefault("criterion._extra_state", state["criterion"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_iter = int(state["iteration"])
        log.info("resumed from %s at iteration %d", resume_from, start_iter)
        before = int((state.get("data") or {}).get("world_size", (state.get("extra") or {}).get("world_size", 1)))
        if before != dist.world_size:
            log.warning("%s was written by %d process(es) with %g image(s) each; this run continues with %d "
                        "process(es) with %g each. The global batch (schedule.batch_size=%d), the learning rate and "
                        "the data order are unchanged, but each process now ranks %g images per list (the loss's "
                        "ranking list and batch statistics change), so the run is no longer the exact continuation "
                        "of the interrupted one", resume_from, before, global_batch / before, dist.world_size,
                        global_batch / dist.world_size, global_batch, global_batch / dist.world_size)

    net = _wrap_data_parallel(model, cfg, device, dist) if dist.enabled else model
    loader = TrainLoader(train_ds, batch_size=global_batch, seed=int(cfg.seed), collate_fn=collate_fn,
                         drop_last=epoch_len > global_batch, rank=dist.rank, world_size=dist.world_size,
                         epoch_len=epoch_len, epoch_order=repeat.indices if repeat is not None else None,
                         **_data_loader_options(cfg, device))
    logged = _LogState()
    if resume_from is not None:
        if state.get("data"):
            loader.load_state_dict(state["data"], source=str(resume_from))
        else:
            loader.seek_iteration(start_iter)
            log.warning("%s was written by an older rsdet without the data loader's position; continuing at "
                        "epoch %d, batch %d with a new order (not the exact batches of the interrupted run)",
                        resume_from, loader.epoch, loader.batch)
        logged.load_state_dict(state.get("log"), keep_count=main)
    if main:
        dropped = record.drop_history_after(start_iter)
        if dropped:
            log.info("moved %d history rows logged after iteration %d to %s", dropped, start_iter,
                     record.dir / "history.dropped.jsonl")
        logger = build_logger(cfg.logger, record.dir, OmegaConf.to_container(cfg, resolve=True),
                              group=(record.info.get("multirun") or {}).get("sweep_name"),
                              name=record.dir.name, tags=list(cfg.get("tags", [])),
                              run_id=record.info.get("wandb_id") if resume_from is not None else None)
        record.update(device=str(device), amp=use_amp, amp_dtype=str(amp_dtype).replace("torch.", "") if use_amp else None,
                      max_iters=plan.max_iters, base_lr=plan.base_lr, num_classes=train_ds.num_classes,
                      world_size=dist.world_size, per_rank_batch=global_batch // dist.world_size,
                      **({"wandb_id": logger.run_id} if logger.run_id else {}))
    else:
        logger = NullLogger()
    log_every = int(cfg.logger.get("log_every", 10))
    checkpoint_every = int(cfg.schedule.checkpoint_every)
    iteration = start_iter
    extra = {"num_classes": train_ds.num_classes, "world_size": dist.world_size, "detector": str(cfg.detector.name),
             "category_ids": list(train_ds.category_ids), "class_names": list(train_ds.category_names)}
    last_stage_pos = f"{model.stages[-1].name}/num_pos"  # "batches without positives" of the final stage
    finite = _FiniteWatch()
    check_every_iteration = device.type != "cuda"  # reading a CPU value back costs nothing

    every_epochs = int(cfg.eval.get("every_epochs") or 0) if val_ds is not None else 0
    position = loader.state_dict()  # the loader's position at the last iteration boundary
    mid_iteration = False  # the model has seen part of an iteration (forward pass started)
    saved_at = start_iter if resume_from is not None else None

    def check_finite() -> None:
        messages = dist.all_gather_object(finite.error(ckpt_dir)) if dist.enabled else [finite.error(ckpt_dir)]
        for rank, message in enumerate(messages):
            if message:
                raise TrainingError(message + (f" (rank {rank} of {dist.world_size})" if dist.enabled else ""))

    def checkpoint(it: int) -> None:
        nonlocal saved_at
        if saved_at == it:
            return  # this iteration's checkpoint is already written
        logged.sync(dist)
        rngs = dist.gather_object(rng_state()) if dist.enabled else None
        if main:
            save_checkpoint(ckpt_dir, model=model, optimizer=optimizer, iteration=it, scaler=scaler, extra=extra,
                            data=position, log=logged.state_dict(), rng_ranks=rngs)
            record.update(iteration=it)
        saved_at = it

    if resume_from is not None:  # last, so that nothing above (W&B, the loader) draws from the restored RNGs
        ranks = state.get("rng_ranks")
        if ranks and len(ranks) == dist.world_size:
            set_rng_state(ranks[dist.rank])
        elif main or not dist.enabled:
            set_rng_state(state["rng"])
    model.train()
    batches = iter(loader)
    logged.restart_clock()
    try:
        with _StopSignals() as stop, _progress(console) as progress:
            task = progress.add_task("training", total=plan.max_iters, completed=start_iter, info="")
            while iteration < plan.max_iters:
                stop.check(dist.max(stop.code()) if dist.enabled else None)
                epoch, (images, targets) = next(batches)
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                           for t in targets]
                lr = set_lr(optimizer, plan, iteration)
                mid_iteration = True
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    terms, stats = net(images, targets)
                finite.observe(terms, iteration + 1)
                log_now = (iteration + 1) % log_every == 0 or iteration + 1 == plan.max_iters
                if check_every_iteration or log_now or (iteration + 1) % checkpoint_every == 0:
                    check_finite()
                total = sum(terms.values())
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(total).backward()
                    scaler.unscale_(optimizer)
                else:
                    total.backward()
                if cfg.schedule.get("grad_clip"):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.schedule.grad_clip))
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                iteration += 1
                position = loader.state_dict()
                logged.zero_pos += int(stats.get(last_stage_pos, 1) == 0)
                for k, v in terms.items():
                    logged.add(f"loss/{k}", v)
                logged.add("loss/total", total)
                for k, v in stats.items():
                    logged.add(f"ratio/{k}", float(v))
                logged.count += 1
                progress.update(task, advance=1)
                if log_now:
                    logged.sync(dist)
                    row = logged.row(iteration, epoch, lr)
                    progress.update(task, info=f"loss {row['loss/total']:.3f} lr {lr:.4f}")
                    if main:
                        record.append_history(row)
                        logger.log(row, step=iteration)
                mid_iteration = False
                if every_epochs and iteration % plan.iters_per_epoch == 0 and iteration < plan.max_iters \
                        and (iteration // plan.iters_per_epoch) % every_epochs == 0:
                    _evaluate_epoch(cfg, model, val_ds, device, record, logger, iteration,
                                    iteration // plan.iters_per_epoch, console, dist)
                if iteration % checkpoint_every == 0:
                    checkpoint(iteration)
        checkpoint(iteration)
    except KeyboardInterrupt:
        if mid_iteration:
            log.warning("stopped in the middle of iteration %d; keeping the last checkpoint in %s", iteration + 1,
                        ckpt_dir)
        elif not (dist.max(int(finite.error() is not None)) if dist.enabled else finite.error() is not None):
            checkpoint(iteration)
        logger.finish("interrupted")
        raise
    except Exception:
        logger.finish("failed")
        raise
    metrics: dict[str, Any] = {"iterations": iteration, "train_seconds": logged.train_seconds()}
    if val_ds is not None:
        dist.broadcast_buffers(model)  # every rank evaluates the checkpointed (rank 0's) model
        with _progress(console) as progress:
            metrics.update(evaluate_model(cfg, model, val_ds, device, record.predictions_path("bbox"),
                                          cfg.eval.get("max_images"), progress=progress, dist=dist))
    if not main:
        return {}
    if every_epochs:  # Table S2: AP after epoch E beside the final AP (metric "epoch<E>/AP" in rsdet report)
        for row in record.read_eval_history():
            segm = {f"segm/{k}": v for k, v in (row.get("segm") or {}).items()}
            metrics[f"epoch{row['epoch']}"] = {**row["bbox"], **segm}
    record.write_metrics(metrics)
    from rsdet.engine.complexity import model_complexity  # issue 20: parameters and FLOPs per image in run.json

    record.update(complexity=model_complexity(model, cfg, device))
    if val_ds is not None:
        logger.log_evaluation(cfg, metrics, model=model, dataset=val_ds, device=device,
                              predictions=record.predictions_path("bbox"), step=iteration)
    logger.summary(metrics)
    logger.finish("completed")
    return metrics
