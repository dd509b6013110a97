"""The training engine: ``train(cfg, record)``, from a composed config to a run record.

Loop: SGD with warm-up and step decay, optional gradient clipping, AMP on CUDA (fp16 with a
GradScaler, or bf16), data-parallel over several processes (``dist``; docs/distributed.md), a rich progress bar,
``history.jsonl`` rows every ``logger.log_every`` iterations (loss terms, lr, seconds/iteration,
pos:neg instance and task ratios per stage — supplementary Table S7), checkpoints every
``schedule.checkpoint_every`` iterations, then evaluation (COCO/LVIS AP and oLRP) into
``metrics.json``. A NaN/inf loss stops the run naming the iteration and the loss term, keeping the
last good checkpoint; Ctrl-C saves a checkpoint and marks the run interrupted.

``train`` runs the named steps of ``Trainer``: build (``rsdet.engine.build``), open the record,
restore a checkpoint (one function, one order), then per iteration the step and the after-step
(history row, epoch evaluation, checkpoint), and the final evaluation.

Resuming is exact: the checkpoint holds the data loader's position (``rsdet.engine.loader``), the
RNG states and the partial sums of the next history row, so a resumed run computes the same
iterations, history rows and final metrics as the run left alone (docs/resume.md).

The training step never waits for the GPU: loss sums stay on the device and are read back only when
a history row is written (every ``logger.log_every`` iterations), which is also when a NaN/inf loss
is noticed on CUDA (on the CPU reading a value costs nothing, so it is checked every iteration).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rsdet.engine.build import build_training, resolve_amp, seed_everything  # noqa: F401 - resolve_amp, seed_everything: public names
from rsdet.engine.checkpoint import (load_checkpoint, nonfinite_tensors, remove_stale_temporaries, rng_state,
                                     save_checkpoint, set_rng_state)
from rsdet.engine.history import FIX, FiniteWatch, LogState
from rsdet.engine.inference import evaluate_model
from rsdet.engine.loggers import NullLogger, build_logger
from rsdet.engine.schedule import set_lr
from rsdet.engine.signals import Stopped, StopSignals  # noqa: F401 - Stopped: raised through train()
from rsdet.errors import TrainingError

#: the names of these classes before they had modules of their own
_StopSignals, _LogState, _FiniteWatch = StopSignals, LogState, FiniteWatch

log = logging.getLogger(__name__)


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
        refresh_per_second=2,  # rich's default 10 Hz redraw thread costs ~4 % of a core (docs/performance.md)
    )


class Trainer:
    """One rank's training run, in named steps (``train`` calls them in this order):

    1. ``__init__``: the build step (``rsdet.engine.build.build_training``);
    2. ``open_record``: rank 0 moves aside the history rows after the checkpoint, starts the logger
       and notes the run's facts in run.json;
    3. ``restore``: a checkpoint's state into the parts, in the one order written down there;
    4. ``run``: the loop — ``_step`` (forward, backward, optimiser step) and ``_after_step``
       (history row, epoch evaluation, checkpoint) per iteration — then ``_final_evaluation``.
    """

    def __init__(self, cfg: Any, record, *, console: Console | None = None, dist=None):
        from rsdet.engine.distributed import SINGLE

        self.dist = dist or SINGLE
        self.main = self.dist.is_main
        self.console = console or Console(quiet=not self.main)
        self.cfg = cfg
        self.record = record
        self.parts = build_training(cfg, self.dist)
        p = self.parts
        self.logger = NullLogger()
        self.iteration = 0
        self.position = p.loader.state_dict()  # the loader's position at the last iteration boundary
        self.mid_iteration = False  # the model has seen part of an iteration (forward pass started)
        self.saved_at: int | None = None  # the iteration of the checkpoint on disk (written or resumed)
        self.finite = FiniteWatch()
        self.log_every = int(cfg.logger.get("log_every", 10))
        self.checkpoint_every = int(cfg.schedule.checkpoint_every)
        self.every_epochs = int(cfg.eval.get("every_epochs") or 0) if p.val_ds is not None else 0
        self.check_every_iteration = p.device.type != "cuda"  # reading a CPU value back costs nothing
        self.last_stage_pos = f"{p.model.stages[-1].name}/num_pos"  # "batches without positives" of the final stage
        self.extra = {"num_classes": p.train_ds.num_classes, "world_size": self.dist.world_size,
                      # issue 20: what rsdet predict needs to name the detections and check the detector
                      "detector": str(cfg.detector.name), "category_ids": list(p.train_ds.category_ids),
                      "class_names": list(p.train_ds.category_names)}
        self._progress = self._task = None

    # ------------------------------------------------------------------------------------ record
    def open_record(self, start_iter: int, resumed: bool) -> None:
        """Rank 0: history rows after ``start_iter`` move aside, the logger starts (continuing the run's
        W&B run when resumed), run.json notes device, AMP, schedule and processes."""
        if not self.main:
            return
        p, record = self.parts, self.record
        if remove_stale_temporaries(record.checkpoint_dir):  # a writer killed during a save (we hold the lock)
            log.info("removed a partly written checkpoint left in %s", record.checkpoint_dir)
        dropped = record.drop_history_after(start_iter)
        if dropped:
            log.info("moved %d history rows logged after iteration %d to %s", dropped, start_iter,
                     record.dir / "history.dropped.jsonl")
        self.logger = build_logger(self.cfg.logger, record.dir, OmegaConf.to_container(self.cfg, resolve=True),
                                   group=(record.info.get("multirun") or {}).get("sweep_name"),
                                   name=record.dir.name, tags=list(self.cfg.get("tags", [])),
                                   run_id=record.info.get("wandb_id") if resumed else None)
        record.update(device=str(p.device), amp=p.use_amp,
                      amp_dtype=str(p.amp_dtype).replace("torch.", "") if p.use_amp else None,
                      max_iters=p.plan.max_iters, base_lr=p.plan.base_lr, num_classes=p.train_ds.num_classes,
                      world_size=self.dist.world_size, per_rank_batch=p.global_batch // self.dist.world_size,
                      **({"wandb_id": self.logger.run_id} if self.logger.run_id else {}))

    # ----------------------------------------------------------------------------------- restore
    def restore(self, state: dict, source: Path | str) -> None:
        """Continue from checkpoint ``state`` (read from ``source``). The order:

        1. model (with the loss state), optimiser, AMP scaler, iteration;
        2. the loader's position (or, for a checkpoint without one, the iteration's epoch and batch);
        3. the partial sums of the next history row;
        4. last, every RNG state: nothing after this point draws before the first iteration, so the
           first resumed iteration draws what the uninterrupted run drew (W&B and the loader, started
           before, may draw from the global RNGs)."""
        p, dist = self.parts, self.dist
        if state.get("criterion"):  # checkpoints of rsdet <= 0.1 kept the loss state beside the model
            state["model"].setdefault("criterion._extra_state", state["criterion"])
        p.model.load_state_dict(state["model"])
        p.optimizer.load_state_dict(state["optimizer"])
        for group in p.optimizer.param_groups:  # a checkpoint's groups carry the foreach flag they were saved with
            group["foreach"] = True
        if p.scaler is not None and state.get("scaler"):
            p.scaler.load_state_dict(state["scaler"])
        self.iteration = self.saved_at = int(state["iteration"])
        log.info("resumed from %s at iteration %d", source, self.iteration)
        before = int((state.get("data") or {}).get("world_size", (state.get("extra") or {}).get("world_size", 1)))
        if before != dist.world_size:
            b = p.global_batch
            log.warning("%s was written by %d process(es) with %g image(s) each; this run continues with %d "
                        "process(es) with %g each. The global batch (schedule.batch_size=%d), the learning rate and "
                        "the data order are unchanged, but each process now ranks %g images per list (the loss's "
                        "ranking list and batch statistics change), so the run is no longer the exact continuation "
                        "of the interrupted one", source, before, b / before, dist.world_size,
                        b / dist.world_size, b, b / dist.world_size)
        if state.get("data"):
            p.loader.load_state_dict(state["data"], source=str(source))
        else:
            p.loader.seek_iteration(self.iteration)
            log.warning("%s was written by an older rsdet without the data loader's position; continuing at "
                        "epoch %d, batch %d with a new order (not the exact batches of the interrupted run)",
                        source, p.loader.epoch, p.loader.batch)
        self.position = p.loader.state_dict()
        p.logged.load_state_dict(state.get("log"), keep_count=self.main)
        ranks = state.get("rng_ranks")
        if ranks and len(ranks) == dist.world_size:
            set_rng_state(ranks[dist.rank])
        elif self.main or not dist.enabled:
            set_rng_state(state["rng"])

    # ------------------------------------------------------------------------------------- loop
    def run(self) -> dict:
        """Train to ``plan.max_iters`` with a checkpoint at the end, then evaluate; the final metrics
        (rank 0; ``{}`` elsewhere). A signal stops at the next iteration boundary with a checkpoint."""
        p, dist = self.parts, self.dist
        p.model.train()
        batches = iter(p.loader)
        p.logged.restart_clock()
        try:
            with StopSignals() as stop, _progress(self.console) as progress:
                self._progress = progress
                self._task = progress.add_task("training", total=p.plan.max_iters, completed=self.iteration, info="")
                while self.iteration < p.plan.max_iters:
                    stop.check(dist.max(stop.code()) if dist.enabled else None)
                    epoch, (images, targets) = next(batches)
                    self._after_step(epoch, *self._step(images, targets))
                self.checkpoint(self.iteration)
                stop.check(dist.max(stop.code()) if dist.enabled else None)  # a signal during the last iteration
            with StopSignals(immediate=True):  # evaluation has no state to save: a signal stops it at once
                return self._final_evaluation()
        except KeyboardInterrupt:
            try:
                if self.mid_iteration:
                    log.warning("stopped in the middle of iteration %d; keeping the last checkpoint in %s",
                                self.iteration + 1, self.record.checkpoint_dir)
                elif not (dist.max(int(self.finite.error() is not None)) if dist.enabled
                          else self.finite.error() is not None):
                    self.checkpoint(self.iteration)
            except Exception:  # the checkpoint on the way out failed (non-finite weights, a full disk)
                self.logger.finish("failed")
                raise
            self.logger.finish("interrupted")
            raise
        except Exception:
            self.logger.finish("failed")
            raise

    def _step(self, images, targets) -> tuple:
        """One iteration: forward, the loss check, backward, clipping, the optimiser step.
        Returns ``(lr, terms, total, stats, log_now)``."""
        p = self.parts
        device, plan, it = p.device, p.plan, self.iteration
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in targets]
        lr = set_lr(p.optimizer, plan, it)
        self.mid_iteration = True
        with torch.autocast(device.type, dtype=p.amp_dtype, enabled=p.use_amp):
            terms, stats = p.net(images, targets)
        self.finite.observe(terms, it + 1)
        log_now = (it + 1) % self.log_every == 0 or it + 1 == plan.max_iters
        check_now = self.check_every_iteration or log_now or (it + 1) % self.checkpoint_every == 0
        if check_now:
            self._check_finite()
        total = sum(terms.values())
        p.optimizer.zero_grad(set_to_none=True)
        if p.scaler is not None:
            p.scaler.scale(total).backward()
            p.scaler.unscale_(p.optimizer)
        else:
            total.backward()
        if self.cfg.schedule.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(p.model.parameters(), float(self.cfg.schedule.grad_clip))
        if p.scaler is None:  # with fp16 the GradScaler skips steps with inf gradients itself
            self.finite.observe_gradients(_gradients_finite(p.model), it + 1)
            if check_now:
                self._check_finite()  # before the step: the weights stay those of the last iteration
        if p.scaler is not None:
            p.scaler.step(p.optimizer)
            p.scaler.update()
        else:
            p.optimizer.step()
        self.iteration += 1
        self.position = p.loader.state_dict()
        return lr, terms, total, stats, log_now

    def _after_step(self, epoch: int, lr: float, terms: dict, total, stats: dict, log_now: bool) -> None:
        """After an iteration: its sums into the next history row (written when due), the evaluation
        after every ``eval.every_epochs`` epochs, the checkpoint every ``schedule.checkpoint_every``."""
        p, it = self.parts, self.iteration
        logged = p.logged
        logged.zero_pos += int(stats.get(self.last_stage_pos, 1) == 0)
        for k, v in terms.items():
            logged.add(f"loss/{k}", v)
        logged.add("loss/total", total)
        for k, v in stats.items():
            logged.add(f"ratio/{k}", float(v))
        logged.count += 1
        self._progress.update(self._task, advance=1)
        if log_now:
            self._history_row(epoch, lr)
        self.mid_iteration = False
        per_epoch = p.plan.iters_per_epoch
        if self.every_epochs and it % per_epoch == 0 and it < p.plan.max_iters \
                and (it // per_epoch) % self.every_epochs == 0:
            self._evaluate_epoch(it // per_epoch)
        if it % self.checkpoint_every == 0:
            self.checkpoint(it)

    def _history_row(self, epoch: int, lr: float) -> None:
        logged = self.parts.logged
        logged.sync(self.dist)
        row = logged.row(self.iteration, epoch, lr)
        self._progress.update(self._task, info=f"loss {row['loss/total']:.3f} lr {lr:.4f}")
        if self.main:
            self.record.append_history(row)
            self.logger.log(row, step=self.iteration)

    def _kept(self) -> str:
        """What a failing run leaves to resume from: the checkpoint on disk, if there is one."""
        if self.saved_at is None:
            return "No checkpoint had been written yet, so nothing is kept to resume from."
        return f"The last good checkpoint (iteration {self.saved_at}) is kept in {self.record.checkpoint_dir}."

    def _check_finite(self) -> None:
        dist = self.dist
        mine = self.finite.error(self._kept())
        messages = dist.all_gather_object(mine) if dist.enabled else [mine]
        for rank, message in enumerate(messages):
            if message:
                raise TrainingError(message + (f" (rank {rank} of {dist.world_size})" if dist.enabled else ""))

    def checkpoint(self, it: int) -> None:
        """Write the checkpoint of iteration ``it`` (rank 0; every rank takes part in gathering the RNG
        states), unless it is already on disk. Weights or optimiser values that are not finite stop
        the run instead: such a checkpoint is never written, the previous one stays."""
        if self.saved_at == it:
            return  # this iteration's checkpoint is already written
        p, dist = self.parts, self.dist
        bad, total = nonfinite_tensors(p.model.state_dict(), p.optimizer.state_dict()["state"])
        if dist.max(int(bool(bad))) if dist.enabled else bad:
            raise TrainingError(f"the weights became NaN/inf by iteration {it}"
                                + (f" ({len(bad)} of {total} tensors, first: {', '.join(bad[:3])})" if bad else
                                   " on another rank")
                                + f"; no checkpoint is written from them. {self._kept()} {FIX}")
        p.logged.sync(dist)
        rngs = dist.gather_object(rng_state()) if dist.enabled else None
        if self.main:
            save_checkpoint(self.record.checkpoint_dir, model=p.model, optimizer=p.optimizer, iteration=it,
                            scaler=p.scaler, extra=self.extra, data=self.position, log=p.logged.state_dict(),
                            rng_ranks=rngs)
            self.record.update(iteration=it)
        self.saved_at = it

    # ------------------------------------------------------------------------------- evaluation
    def _evaluate_epoch(self, epoch: int) -> None:
        """Evaluation during training (``eval.every_epochs``): one row of metrics_history.jsonl and W&B
        ``eval/*`` values at this iteration; the model goes back to training mode afterwards. In a
        data-parallel run every rank evaluates its share and rank 0 writes."""
        p, dist, record, iteration = self.parts, self.dist, self.record, self.iteration
        dist.broadcast_buffers(p.model)
        with _progress(self.console) as progress:
            result = evaluate_model(self.cfg, p.model, p.val_ds, p.device, record.dir / f"predictions_bbox_epoch{epoch}.json",
                                    self.cfg.eval.get("max_images"), progress=progress, dist=dist,
                                    per_class=self.logger.pr_curves)  # pr_curve for W&B; history rows keep the summary
        p.model.train()
        if not self.main:
            return
        row = {"epoch": epoch, "iteration": iteration, "bbox": _summary(result["bbox"])}
        if "segm" in result:
            row["segm"] = _summary(result["segm"])
        record.append_eval(row)
        scalars = {f"eval/{k}": v for k, v in result["bbox"].items() if isinstance(v, (int, float))}
        scalars.update({f"eval/segm/{k}": v for k, v in result.get("segm", {}).items() if isinstance(v, (int, float))})
        self.logger.log(scalars, step=iteration)
        self.logger.log_evaluation(self.cfg, result, model=p.model, dataset=p.val_ds, device=p.device,  # issue 20
                                   predictions=record.dir / f"predictions_bbox_epoch{epoch}.json", step=iteration)
        log.info("epoch %d (iteration %d): AP %.1f%s", epoch, iteration, 100 * result["bbox"].get("AP", float("nan")),
                 f", mask AP {100 * result['segm'].get('AP', float('nan')):.1f}" if "segm" in result else "")

    def _final_evaluation(self) -> dict:
        """The metrics of the trained model into metrics.json (with the ``epoch<E>`` blocks of the
        evaluations during training, Table S2); rank 0 returns them."""
        p, dist, record = self.parts, self.dist, self.record
        metrics: dict[str, Any] = {"iterations": self.iteration, "train_seconds": p.logged.train_seconds()}
        if p.val_ds is not None:
            dist.broadcast_buffers(p.model)  # every rank evaluates the checkpointed (rank 0's) model
            with _progress(self.console) as progress:
                metrics.update(evaluate_model(self.cfg, p.model, p.val_ds, p.device, record.predictions_path("bbox"),
                                              self.cfg.eval.get("max_images"), progress=progress, dist=dist,
                                              per_class=True))
        if not self.main:
            return {}
        if self.every_epochs:  # Table S2: AP after epoch E beside the final AP (metric "epoch<E>/AP" in rsdet report)
            for row in record.read_eval_history():
                segm = {f"segm/{k}": v for k, v in (row.get("segm") or {}).items()}
                metrics[f"epoch{row['epoch']}"] = {**row["bbox"], **segm}
        record.write_metrics(metrics)
        from rsdet.engine.complexity import model_complexity  # issue 20: parameters and FLOPs per image

        record.update(complexity=model_complexity(p.model, self.cfg, p.device))
        if p.val_ds is not None:  # issue 20: W&B media of the final evaluation
            self.logger.log_evaluation(self.cfg, metrics, model=p.model, dataset=p.val_ds, device=p.device,
                                       predictions=record.predictions_path("bbox"), step=self.iteration)
        self.logger.summary(metrics)
        self.logger.finish("completed")
        return metrics


def _summary(metrics: dict) -> dict:
    """An evaluation's metrics without the per-class block and PR curves (metrics_history.jsonl rows)."""
    return {k: v for k, v in metrics.items() if k not in ("per_class", "pr_curve")}


def _gradients_finite(model: torch.nn.Module) -> torch.Tensor | None:
    """Whether every gradient of ``model`` is finite, as a device bool (no read-back); None without gradients."""
    grads = [q.grad for q in model.parameters() if q.grad is not None and q.grad.numel()]  # inf norm needs an element
    if not grads:
        return None
    # The max-abs norm of each gradient is NaN or inf exactly when it holds a NaN or an inf, and a
    # reduction allocates no gradient-sized temporaries (isfinite(g) did: a fresh bool tensor per
    # parameter, ~6 MB per iteration on the CPU presets; docs/performance.md).
    return torch.isfinite(torch.stack([torch.linalg.vector_norm(g, math.inf) for g in grads])).all()


def train(cfg: Any, record, *, console: Console | None = None, resume_from: Path | None = None, dist=None,
          state: dict | None = None) -> dict:
    """Train ``cfg`` into ``record`` (a RunRecord) and return the final metrics.

    ``resume_from``: the checkpoint to continue (``state``: its contents, when the caller has read and
    checked it already). ``dist``: this process' place in a data-parallel run
    (``rsdet.engine.distributed.DistContext``); every rank calls ``train``, rank 0 alone writes
    ``record`` and returns the metrics (others ``{}``)."""
    trainer = Trainer(cfg, record, console=console, dist=dist)
    if resume_from is None and state is None and (cfg.get("detector") or {}).get("init"):  # issue 20
        from rsdet.models.torchvision_init import init_detector  # weights from torchvision, a fresh run only

        init_detector(trainer.parts.model, cfg, trainer.parts.train_ds.category_ids)
    if resume_from is not None and state is None:
        state = load_checkpoint(resume_from, allow_legacy=bool(cfg.get("legacy_checkpoint")))
    trainer.open_record(int(state["iteration"]) if state is not None else 0, resumed=state is not None)
    if state is not None:
        trainer.restore(state, resume_from)
    return trainer.run()
