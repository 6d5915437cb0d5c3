"""The per-worker training function: Ray Train's ``train_func``, read as the recipe.

:func:`train_func` runs on every worker of a ``TorchTrainer`` (Ray Train's per-worker
pattern): context (rank, world size, device), data source, model, resume, input statistics,
DDP, then for each epoch: train, validate, reduce over the ranks, schedule (learning-rate
plateau, early stopping), checkpoint and report. The small functions below are its steps;
the step functions themselves are plain torch (:mod:`sepcluster.train.epoch`), everything that
talks to ``torch.distributed`` or ``ray.train`` is in :mod:`sepcluster.train.distributed`,
the checkpoint format in :mod:`sepcluster.train.checkpoint`, and rank 0 logs to MLflow through
:class:`sepcluster.tracking.RunLogger`.

Shapes: waveform batches ``(batch, channels, samples)``; spectrograms
``(batch, channels, bins, frames)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from .. import tracking
from . import distributed
from .checkpoint import TrainState, check_compatible, checkpoint_problem, is_done
from .config import TrainConfig
from .distributed import WorkerContext
from .epoch import (EarlyStopping, Precision, cpu_state, finish_statistics, input_stat, input_statistics,
                    make_model, make_optimizer, make_precision, model_hparams, train_epoch, validate)

if TYPE_CHECKING:
    from .data import DataSpec

log = logging.getLogger(__name__)


@dataclass
class WorkerJob:
    """What one Ray Train run trains: the runner's ``train_loop_config``, typed.

    ``config``, ``spec`` (the data), ``target`` (the target; for a multi-source model the name of
    the group of its ``sources``), ``sources`` (a multi-source model's outputs, in order; None for
    one model per target), ``segment`` (seconds of a training excerpt: a multi-source model's
    training length, also its validation chunk), ``sample_rate``, ``nb_channels``,
    ``architecture`` / ``signal`` (what a checkpoint must match), ``mlflow_run_id`` (the
    target's child run) and ``tracking_uri`` (rank 0 logs there), ``run_uri`` (the Ray run
    folder: its newest complete checkpoint is resumed when newer than Ray's own).
    """

    config: TrainConfig
    spec: "DataSpec"
    target: str
    sample_rate: int
    nb_channels: int
    architecture: dict
    signal: dict
    mlflow_run_id: Optional[str] = None
    tracking_uri: Optional[str] = None
    run_uri: Optional[str] = None
    sources: Optional[list] = None
    segment: Optional[float] = None

    def to_loop_config(self) -> dict:
        """The plain dict Ray Train hands to every worker."""
        return {"config": self.config.to_dict(), "spec": self.spec.to_dict(), "target": self.target,
                "sample_rate": self.sample_rate, "nb_channels": self.nb_channels, "architecture": self.architecture,
                "signal": self.signal, "mlflow_run_id": self.mlflow_run_id, "tracking_uri": self.tracking_uri,
                "run_uri": self.run_uri, "sources": self.sources, "segment": self.segment}

    @classmethod
    def from_loop_config(cls, loop_config: dict) -> "WorkerJob":
        from .data import DataSpec

        return cls(config=TrainConfig.from_dict(loop_config["config"]), spec=DataSpec(**loop_config["spec"]),
                   target=loop_config["target"], sample_rate=int(loop_config["sample_rate"]),
                   nb_channels=int(loop_config["nb_channels"]), architecture=loop_config["architecture"],
                   signal=loop_config["signal"], mlflow_run_id=loop_config.get("mlflow_run_id"),
                   tracking_uri=loop_config.get("tracking_uri"), run_uri=loop_config.get("run_uri"),
                   sources=loop_config.get("sources"), segment=loop_config.get("segment"))

    @property
    def outputs(self) -> list:
        """What the model estimates: the sources of a multi-source model, else ``[target]``."""
        return list(self.sources) if self.sources else [self.target]

    @property
    def chunk(self) -> Optional[int]:
        """Samples per validation chunk of a multi-source model (its training length); None otherwise."""
        return int(round(self.segment * self.sample_rate)) if self.sources and self.segment else None

    def recorded(self) -> dict:
        """The :class:`TrainState` fields that describe this run (written into every checkpoint)."""
        return {"target": self.target, "model_name": self.config.model,
                "model_kwargs": self.config.model_kwargs(self.nb_channels, self.sample_rate, self.sources, self.segment),
                "architecture": self.architecture, "signal": self.signal, "config": self.config.to_dict(),
                "data": self.spec.describe()}


def train_func(loop_config: dict) -> dict:
    """Ray Train per-worker entry point: train one target's model (or a multi-source model of all its
    sources; see the module docstring).

    ``loop_config``: :meth:`WorkerJob.to_loop_config`. Returns a summary (target, epoch,
    finished, stop_reason, resumed, start_epoch, last losses).
    """
    from ..models.losses import get_loss
    from ..models.stft import ISTFT, STFT
    from .ema import make_ema
    from .sources import open_source

    quiet_worker_logs()
    job = WorkerJob.from_loop_config(loop_config)
    config, ctx = job.config, distributed.worker_context()
    shard = distributed.dataset_shard("train") if job.spec.kind == "parquet" else None
    source = open_source(job.spec, config, None if job.sources else job.target, ctx.rank, ctx.world_size,
                         job.sample_rate, job.nb_channels, shard=shard, outputs=job.sources)
    stft, istft = STFT(config.n_fft, config.n_hop).to(ctx.device), ISTFT(config.n_fft, config.n_hop).to(ctx.device)
    logger = tracking.RunLogger(job.mlflow_run_id if ctx.rank == 0 else None, job.tracking_uri)

    torch.manual_seed(config.seed)
    model = make_model(config, job.nb_channels, job.sample_rate, job.sources, job.segment)
    state = resume_state(job.run_uri, ctx.rank)
    if state is not None:
        check_compatible(state.meta(), job.architecture, job.signal, job.target, "checkpoint")
        model.load_state_dict(state.model_state)
        if is_done(state.meta(), config.epochs):
            return {"target": job.target, "epoch": state.epoch, "finished": True, "resumed": True}
    else:
        set_input_statistics(model, source, stft, ctx, config.stats_batches)
    model.to(ctx.device)
    ddp_model = distributed.prepare_model(model)
    optimizer, scheduler = make_optimizer(model, config)
    precision = make_precision(config, ctx.device)
    ema = make_ema(model, config.ema_decay, state.ema_state if state is not None else None)
    resumed = state is not None
    state = restore(state, job, model, optimizer, scheduler, precision)
    run = _Run(job, ctx, source, model, ddp_model, optimizer, scheduler, precision, ema, stft, istft,
               get_loss(config.loss), logger, EarlyStopping(config.patience, state.best_loss, state.bad_epochs))
    start_epoch = start_attempt(state, ctx, precision, source, logger)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for epoch in range(start_epoch, config.epochs + 1):
        run.epoch(state, epoch, stamp)
        if state.finished:
            break
    return summary(state, resumed, start_epoch)


@dataclass
class _Run:
    """The parts of one worker's training that every epoch uses (built by :func:`train_func`)."""

    job: WorkerJob
    ctx: WorkerContext
    source: Any
    model: nn.Module
    ddp_model: nn.Module
    optimizer: Any
    scheduler: Any
    precision: Precision
    ema: Any
    stft: Any
    istft: Any
    loss: Any
    logger: tracking.RunLogger
    stopper: EarlyStopping

    def epoch(self, state: TrainState, epoch: int, stamp: str) -> None:
        """Train, validate (the EMA's weights when on), schedule, checkpoint and report ``epoch``."""
        from .diagnostics import diagnostics_due, log_diagnostics
        from .ema import averaged

        job, ctx, config = self.job, self.ctx, self.job.config
        torch.manual_seed(config.seed * 7919 + epoch * 131 + ctx.rank)
        # Ranks start the epoch together: otherwise the first all-reduce of the epoch makes the
        # others wait for rank 0's checkpoint and MLflow writes, counted as their training time.
        distributed.barrier()
        started = time.perf_counter()
        tr = train_epoch(self.ddp_model, self.source.epoch_batches(epoch), self.stft, self.istft, self.loss,
                         self.optimizer, ctx.device, self.precision, config.clip_grad_norm, ema=self.ema)
        train_seconds = time.perf_counter() - started
        with averaged(self.model, self.ema) as model:
            va = validate(model, self.source.valid_items(), self.stft, self.istft, self.loss, ctx.device, job.chunk)
            totals = EpochTotals.reduce(tr, va, train_seconds, ctx.device, len(job.sources or []))
            self.scheduler.step(totals.valid_loss)
            if self.stopper.step(totals.valid_loss):
                state.best_model_state, state.best_epoch = cpu_state(model), epoch
            extra = totals.extra_metrics(job.sources)
            metrics = end_epoch(state, epoch, totals, self.stopper, self.optimizer.param_groups[0]["lr"],
                                time.perf_counter() - started, config, extra=extra if job.sources else None)
            if ctx.rank == 0 and diagnostics_due(config, epoch, state.finished):
                items = self.source.valid_items()
                log_diagnostics(self.logger, model, items[0] if items else None, job.outputs, epoch, config,
                                job.sample_rate, self.stft, self.istft, job.chunk)
        checkpoint = (snapshot(state, self.model, self.optimizer, self.scheduler, self.precision, self.ema)
                      if ctx.rank == 0 else None)
        report_epoch(state, metrics, checkpoint, self.logger, stamp, extra=extra)


# ----------------------------------------------------------------------------- the recipe's steps

def quiet_worker_logs() -> None:
    """Worker logging: INFO from sepcluster, WARNING from the rest, errors only from sox.

    Ray Train configures the worker's root logger at INFO, where its per-rank "Reporting
    training result" lines (the whole metrics dict, every epoch, every rank) come from a logger
    with no level of its own; raising the root logger to WARNING (plain :mod:`logging`, no
    Ray API) leaves rank 0's one line per epoch.
    """
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("sepcluster").setLevel(logging.INFO)
    logging.getLogger("sox").setLevel(logging.ERROR)


def resume_state(run_uri: Optional[str], rank: int) -> Optional[TrainState]:
    """The state to resume from, or None for a fresh start.

    Ray's restored checkpoint (after a worker-group restart, or Ray's latest of a rerun), unless it
    is damaged (checked against its ``meta.json``; skipped with a warning), or the newest complete
    checkpoint in ``run_uri`` when that is newer: after a driver interrupt Ray's snapshot may lag
    behind (or be missing), so rank 0 looks and tells the others.
    """
    state = None
    with distributed.restored_checkpoint() as folder:
        problem = checkpoint_problem(folder) if folder is not None else ""
        if folder is not None and not problem:
            state = TrainState.read(folder)
        elif problem and rank == 0:  # damaged: the run folder's newest complete checkpoint is used
            log.warning("skipping the checkpoint Ray restored: %s; resuming from the newest complete one", problem)
    newest = TrainState.newest(run_uri) if rank == 0 and run_uri else None
    newest = distributed.gather(newest)[0]
    if newest is not None and (state is None or state.epoch < int(newest["meta"]["epoch"])):
        state = TrainState.read(newest["uri"])
    return state


def set_input_statistics(model: nn.Module, source, stft, ctx: WorkerContext, batches: int) -> None:
    """Give ``model`` the dataset mean/scale of the mixture magnitude from ``batches`` batches of
    every rank (summed over the ranks); nothing for ``batches`` 0 or a model without input statistics."""
    started = time.perf_counter()
    if batches > 0 and hasattr(model, "set_input_stats"):
        stats = input_statistics(source.stats_batches(batches), stft, ctx.device)
        stats = distributed.all_reduce_stats(stats, ctx.device, stft.nb_bins)
        model.set_input_stats(*finish_statistics(stats))
    log.info("rank %d: input statistics in %.1f s", ctx.rank, time.perf_counter() - started)


def restore(state: Optional[TrainState], job: WorkerJob, model: nn.Module, optimizer, scheduler,
            precision: Precision) -> TrainState:
    """The state to train on from: a fresh one (best weights = the model's now), or ``state`` with the
    optimizer, scheduler and grad scaler loaded from it; either way described by this run (``job``)."""
    if state is None:
        return TrainState(**job.recorded(), best_model_state=cpu_state(model))
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    if precision.scaler is not None and state.scaler:
        precision.scaler.load_state_dict(state.scaler)
    return dataclasses.replace(state, **job.recorded(), history=list(state.history), attempts=list(state.attempts))


def start_attempt(state: TrainState, ctx: WorkerContext, precision: Precision, source, logger) -> int:
    """Record this start of the workers in ``state.attempts`` and log the ranks' seed streams; returns
    the first epoch to train."""
    start_epoch = state.epoch + 1
    pids = distributed.gather(os.getpid())
    state.attempts.append({"start_epoch": start_epoch, "world_size": ctx.world_size, "time": time.time(),
                           "device": str(ctx.device), "precision": precision.name, "pids": pids,
                           "torch_threads": torch.get_num_threads(), "backend": distributed.backend()})
    seed_info = distributed.gather(source.seed_info(start_epoch))
    if ctx.rank == 0:
        attempt = len(state.attempts)
        logger.dict({"ranks": seed_info, "attempt": attempt}, f"seed_stream/attempt{attempt}.json")
        log.info("training %s from epoch %d on %d worker(s) (%s, %s), %d batches/epoch", state.target, start_epoch,
                 ctx.world_size, ctx.device, precision.name, source.steps_per_epoch)
    return start_epoch


@dataclass
class EpochTotals:
    """One epoch's figures over all ranks: mean losses, samples, the slowest rank's training seconds,
    and the validation items with their SI-SDR and global SDR sums (estimate and mixture-as-estimate);
    ``source_sums``: a multi-source model's per-source ``[sisdr, sdr, mix_sisdr, mix_sdr]`` sums."""

    train_loss: float
    valid_loss: float
    samples: float
    train_seconds: float
    valid_items: float
    valid_sisdr_sum: float
    valid_mix_sisdr_sum: float
    valid_sdr_sum: float = 0.0
    valid_mix_sdr_sum: float = 0.0
    source_sums: Optional[list] = None

    @classmethod
    def reduce(cls, tr: dict, va: dict, train_seconds: float, device: torch.device,
               sources: int = 0) -> "EpochTotals":
        """Sum this rank's :func:`train_epoch` and :func:`validate` results with the others'
        (``sources``: the number of a multi-source model's outputs, whose figures are summed too)."""
        per_source = va.get("sources") or [[0.0] * 4 for _ in range(sources)]
        flat = [x for row in per_source[:sources] for x in row]
        reduced = distributed.all_reduce(
            [tr["loss_sum"], tr["batches"], tr["samples"], va["loss_sum"], va["items"], va["sisdr_sum"],
             va["mix_sisdr_sum"], va.get("sdr_sum", 0.0), va.get("mix_sdr_sum", 0.0), *flat], device)
        (loss_sum, batches, samples, v_loss_sum, v_items, v_sisdr, v_mix, v_sdr, v_mix_sdr) = reduced[:9]
        slowest = max(distributed.gather(train_seconds))
        train_loss = loss_sum / max(batches, 1)
        valid_loss = v_loss_sum / v_items if v_items else train_loss
        sums = [reduced[9 + 4 * k: 13 + 4 * k] for k in range(sources)] if sources else None
        return cls(train_loss, valid_loss, samples, slowest, v_items, v_sisdr, v_mix, v_sdr, v_mix_sdr, sums)

    def extra_metrics(self, sources: Optional[list] = None) -> dict:
        """The validation figures beyond the recorded history's: global SDR (``valid_sdr``, its
        improvement over the mixture) and, per source of a multi-source model, ``valid_sisdr.<source>``
        and ``valid_sdr.<source>`` (dB, means over the items)."""
        if not self.valid_items:
            return {}
        n = self.valid_items
        out = {"valid_sdr": self.valid_sdr_sum / n,
               "valid_sdr_improvement": (self.valid_sdr_sum - self.valid_mix_sdr_sum) / n}
        for name, row in zip(sources or [], self.source_sums or []):
            out[f"valid_sisdr.{name}"] = row[0] / n
            out[f"valid_sdr.{name}"] = row[1] / n
        return out


def end_epoch(state: TrainState, epoch: int, totals: EpochTotals, stopper: EarlyStopping, lr: float,
              epoch_seconds: float, config: TrainConfig, extra: Optional[dict] = None) -> dict:
    """Record ``epoch`` in ``state`` (epoch, stop reason, early-stopping counters, history, when the
    current attempt finished it); returns its metrics (with ``extra`` after the standard ones)."""
    stop_reason = None
    if stopper.should_stop:
        stop_reason = f"early stopping: no better validation loss for {config.patience} epochs"
    elif epoch >= config.epochs:
        stop_reason = f"reached epochs={config.epochs}"
    metrics: dict[str, Any] = {
        "epoch": epoch, "train_loss": totals.train_loss, "valid_loss": totals.valid_loss, "lr": lr,
        "epoch_time": epoch_seconds, "train_time": totals.train_seconds,
        "samples_per_s": totals.samples / max(totals.train_seconds, 1e-9), "samples": totals.samples,
        "best_valid_loss": stopper.best, "best_epoch": state.best_epoch, "bad_epochs": stopper.bad_epochs}
    if totals.valid_items:
        n = totals.valid_items
        metrics.update(valid_sisdr=totals.valid_sisdr_sum / n, valid_mix_sisdr=totals.valid_mix_sisdr_sum / n,
                       valid_sisdr_improvement=(totals.valid_sisdr_sum - totals.valid_mix_sisdr_sum) / n)
    metrics.update(extra or {})
    state.epoch, state.finished, state.stop_reason = epoch, stop_reason is not None, stop_reason
    state.best_loss, state.bad_epochs = stopper.best, stopper.bad_epochs
    state.history.append(metrics)
    if state.attempts:
        state.attempts[-1].setdefault("ended", []).append([epoch, time.time()])
    return metrics


def snapshot(state: TrainState, model: nn.Module, optimizer, scheduler, precision: Precision, ema=None) -> TrainState:
    """``state`` with the live model, optimizer, scheduler, scaler (and EMA) states: the epoch's checkpoint."""
    scaler = precision.scaler.state_dict() if precision.scaler is not None else None
    return dataclasses.replace(state, hparams=model_hparams(model), model_state=cpu_state(model),
                               optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler,
                               input_mean=input_stat(model, "mean"), input_scale=input_stat(model, "scale"),
                               ema_state=ema.state_dict() if ema is not None else None)


def report_epoch(state: TrainState, metrics: dict, checkpoint: Optional[TrainState], logger: tracking.RunLogger,
                 stamp: str, extra: Optional[dict] = None) -> None:
    """Report the epoch to Ray Train from every rank; rank 0 (the one with a ``checkpoint``) also logs
    the metrics (and ``extra``) to MLflow and one line, and hands the checkpoint to Ray
    (``checkpoint_epoch<N>_<stamp>``)."""
    epoch = state.epoch
    if checkpoint is not None:
        logger.metrics({k: v for k, v in {**metrics, **(extra or {})}.items() if k != "epoch"}, step=epoch)
        sisdr = (f", valid SI-SDR {metrics['valid_sisdr']:.2f} dB ({metrics['valid_sisdr_improvement']:+.2f})"
                 if "valid_sisdr" in metrics else "")
        log.info("%s epoch %d: train loss %.4g, valid loss %.4g%s, lr %.2g, %.1f samples/s, %.1f s", state.target,
                 epoch, metrics["train_loss"], metrics["valid_loss"], sisdr, metrics["lr"], metrics["samples_per_s"],
                 metrics["epoch_time"])
    with tempfile.TemporaryDirectory(prefix="sepcluster-ckpt-") as folder:
        if checkpoint is not None:
            checkpoint.write(folder)
        distributed.report(dict(metrics, finished=state.finished), folder if checkpoint is not None else None,
                           f"checkpoint_epoch{epoch:05d}_{stamp}")


def summary(state: TrainState, resumed: bool, start_epoch: int) -> dict:
    """What :func:`train_func` returns: where training stopped and the last epoch's losses."""
    out = {"target": state.target, "epoch": state.epoch, "finished": state.finished, "resumed": resumed,
           "start_epoch": start_epoch, "stop_reason": state.stop_reason}
    if state.history:
        last = state.history[-1]
        out.update({k: last[k] for k in ("train_loss", "valid_loss", "best_valid_loss", "best_epoch")})
    return out


__all__ = ["train_func", "WorkerJob", "quiet_worker_logs", "resume_state", "set_input_statistics", "restore",
           "start_attempt", "EpochTotals", "end_epoch", "snapshot", "report_epoch", "summary"]
