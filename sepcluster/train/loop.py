"""The per-worker training function and the plain training/validation steps it is built from.

The step and epoch logic (:func:`train_epoch`, :func:`validate`, :func:`input_statistics`,
:class:`EarlyStopping`, checkpoint (de)serialisation) are plain functions on a model, a
batch iterator and an optimizer: they run the same in a test, a notebook or a Ray worker.
:func:`train_func` is the thin Ray Train glue around them: rank/world size, DDP through
``ray.train.torch.prepare_model``, all-reduce of the metrics, a checkpoint every epoch via
``ray.train.report`` and resuming from ``ray.train.get_checkpoint()``.

Shapes: waveform batches ``(batch, channels, samples)``; spectrograms
``(batch, channels, bins, frames)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_META = "meta.json"
CHECKPOINT_FORMAT = "sepcluster-train-checkpoint/1"


# ----------------------------------------------------------------------------- building blocks

def make_model(config: TrainConfig, nb_channels: int, sample_rate: float) -> nn.Module:
    """The mask estimator named by ``config.model`` (magnitudes ``(b, c, bins, frames)`` in and out)."""
    from ..models import build_model

    return build_model(config.model, **config.model_kwargs(nb_channels, sample_rate))


def model_hparams(model: nn.Module) -> dict:
    return dict(model.hparams()) if hasattr(model, "hparams") else {}


@dataclass
class Precision:
    """Mixed precision settings: autocast dtype (None = fp32) and an optional grad scaler."""

    dtype: Optional[torch.dtype]
    scaler: Optional[Any]
    device_type: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def make_precision(config: TrainConfig, device: torch.device) -> Precision:
    """AMP on CUDA only: ``auto`` = bf16 where supported, else fp16 with a GradScaler."""
    if device.type != "cuda" or config.precision == "fp32":
        return Precision(None, None, device.type)
    choice = config.precision
    if choice == "auto":
        choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if choice == "bf16":
        return Precision(torch.bfloat16, None, "cuda")
    return Precision(torch.float16, torch.amp.GradScaler("cuda"), "cuda")


def _estimate(model: nn.Module, mix_wave: Tensor, stft, istft, need_wave: bool):
    """Run the model: returns (estimated magnitude, mixture spec, estimated waveform or None)."""
    spec = stft(mix_wave)
    mag = spec.abs()
    est_mag = model(mag).float()
    est_wave = None
    if need_wave:
        phase = spec / mag.clamp_min(1e-8)
        est_wave = istft(est_mag * phase, length=mix_wave.shape[-1])
    return est_mag, spec, est_wave


def loss_value(loss, model: nn.Module, mix: Tensor, tgt: Tensor, stft, istft) -> Tensor:
    """The training loss of one batch (magnitude losses on STFT magnitudes, si_sdr on waveforms)."""
    time_domain = loss.domain == "time"
    est_mag, _, est_wave = _estimate(model, mix, stft, istft, need_wave=time_domain)
    if time_domain:
        return loss(est_wave, tgt)
    return loss(est_mag, stft(tgt).abs())


def train_epoch(model: nn.Module, batches: Iterable, stft, istft, loss, optimizer, device: torch.device,
                precision: Optional[Precision] = None, clip_grad_norm: Optional[float] = None) -> dict:
    """One pass over ``batches`` of ``(mixture, target)`` waveforms ``(batch, channels, samples)``.

    Returns ``{"loss_sum", "batches", "samples", "seconds"}`` (sums over this process).
    """
    precision = precision or Precision(None, None, device.type)
    model.train()
    loss_sum, nb, samples = 0.0, 0, 0
    started = time.perf_counter()
    for mix, tgt in batches:
        mix = mix.to(device, non_blocking=True)
        tgt = tgt.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            value = loss_value(loss, model, mix, tgt, stft, istft)
        if precision.scaler is not None:
            precision.scaler.scale(value).backward()
            if clip_grad_norm:
                precision.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            value.backward()
            if clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
        loss_sum += float(value.detach())
        nb += 1
        samples += int(mix.shape[0])
    return {"loss_sum": loss_sum, "batches": nb, "samples": samples, "seconds": time.perf_counter() - started}


@torch.no_grad()
def validate(model: nn.Module, items: Iterable, stft, istft, loss, device: torch.device) -> dict:
    """Loss and SI-SDR on full validation items ``(1, channels, samples)`` (mixture, target).

    The estimate's waveform uses the mixture phase. Returns sums over the items:
    ``{"loss_sum", "items", "sisdr_sum", "mix_sisdr_sum"}`` (the mixture-as-estimate baseline).
    """
    from ..models import si_sdr

    model.eval()
    out = {"loss_sum": 0.0, "items": 0, "sisdr_sum": 0.0, "mix_sisdr_sum": 0.0}
    for mix, tgt in items:
        mix = mix.to(device)
        tgt = tgt.to(device)
        est_mag, spec, est_wave = _estimate(model, mix, stft, istft, need_wave=True)
        if loss.domain == "time":
            value = loss(est_wave, tgt)
        else:
            value = loss(est_mag, stft(tgt).abs())
        out["loss_sum"] += float(value)
        out["items"] += 1
        out["sisdr_sum"] += float(si_sdr(est_wave, tgt).mean())
        out["mix_sisdr_sum"] += float(si_sdr(mix, tgt).mean())
    return out


@torch.no_grad()
def input_statistics(batches: Iterable, stft, device: torch.device) -> dict:
    """Per-bin sums of the (channel-averaged) mixture magnitude over every frame of ``batches``.

    ``batches``: mixture waveforms ``(batch, channels, samples)``. Returns
    ``{"sum": (bins,), "sumsq": (bins,), "count": frames}`` (float64, to all-reduce).
    """
    total = sq = None
    count = 0
    for mix in batches:
        mag = stft(mix.to(device)).abs().mean(dim=1)  # (batch, bins, frames)
        frames = mag.permute(0, 2, 1).reshape(-1, mag.shape[1]).double()
        s, q = frames.sum(0), (frames ** 2).sum(0)
        total = s if total is None else total + s
        sq = q if sq is None else sq + q
        count += frames.shape[0]
    return {"sum": total, "sumsq": sq, "count": count}


def finish_statistics(stats: dict) -> tuple[Tensor, Tensor]:
    """Mean and scale (std, floored at 1e-4 of its max, as Open-Unmix) from :func:`input_statistics`."""
    count = max(float(stats["count"]), 1.0)
    mean = stats["sum"] / count
    var = (stats["sumsq"] / count - mean ** 2).clamp_min(0.0)
    std = var.sqrt()
    std = torch.maximum(std, 1e-4 * std.max().clamp_min(1e-12))
    return mean.float().cpu(), std.float().cpu()


class EarlyStopping:
    """Stop when the validation loss has not improved for ``patience`` epochs (lower is better)."""

    def __init__(self, patience: int, best: float = math.inf, bad_epochs: int = 0):
        self.patience = int(patience)
        self.best = float(best)
        self.bad_epochs = int(bad_epochs)

    def step(self, value: float) -> bool:
        """Record ``value``; True when it is a new best."""
        if value < self.best:
            self.best = float(value)
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def make_optimizer(model: nn.Module, config: TrainConfig):
    """Adam and ReduceLROnPlateau (Open-Unmix: cooldown 10) from the config."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.lr_decay_gamma,
                                                           patience=config.lr_decay_patience, cooldown=10)
    return optimizer, scheduler


def _input_stat(model: nn.Module, which: str) -> Optional[Tensor]:
    """The dataset mean / scale the model normalises its input with (None for other models)."""
    if which == "mean" and hasattr(model, "input_mean"):
        return -model.input_mean.detach().cpu().clone()
    if which == "scale" and hasattr(model, "input_scale"):
        return 1.0 / model.input_scale.detach().cpu().clone()
    return None


def cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- checkpoints

def write_checkpoint(folder: str, state: dict) -> None:
    """Write ``state.pt`` (torch) and ``meta.json`` into ``folder``.

    ``meta.json`` (epoch, target, architecture, finished, attempts) also records the size and
    SHA-256 of ``state.pt``, so a reader can tell a complete checkpoint from a cut-off copy.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    with open(os.path.join(folder, CHECKPOINT_FILE), "wb") as f:
        f.write(data)
    meta = {k: state.get(k) for k in ("format", "target", "epoch", "finished", "stop_reason", "best_loss",
                                      "best_epoch", "model_name", "hparams", "architecture", "signal",
                                      "attempts")}
    meta["state_bytes"] = len(data)
    meta["state_sha256"] = hashlib.sha256(data).hexdigest()
    with open(os.path.join(folder, CHECKPOINT_META), "w") as f:
        json.dump(meta, f, indent=2, default=str)


def verified_checkpoint_meta(uri: str) -> Optional[dict]:
    """``meta.json`` of the checkpoint folder ``uri`` (local or ``s3://``) when it is complete, else None."""
    from .. import storage

    try:
        meta = json.loads(storage.read_text(storage.join(uri, CHECKPOINT_META)))
        data = storage.read_bytes(storage.join(uri, CHECKPOINT_FILE))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("state_bytes") != len(data):
        return None
    if meta.get("state_sha256") != hashlib.sha256(data).hexdigest():
        return None
    return meta


def newest_checkpoint(run_uri: str) -> Optional[dict]:
    """The newest complete ``checkpoint_epoch*`` folder of a Ray run folder: ``{"uri", "meta"}`` or None.

    Candidates are tried newest epoch first; one counts when :func:`verified_checkpoint_meta`
    accepts it (a copy cut off by a kill is skipped).
    """
    import re

    from .. import storage

    if not storage.isdir(run_uri):
        return None
    found = []
    for folder in storage.list_dirs(run_uri):
        m = re.match(r"^checkpoint_epoch(\d+)_", storage.basename(folder))
        if m:
            found.append((int(m.group(1)), folder))
    for _epoch, folder in sorted(found, reverse=True):
        meta = verified_checkpoint_meta(folder)
        if meta is not None:
            return {"uri": folder, "meta": meta}
    return None


def read_checkpoint_state(uri: str) -> dict:
    """The dict saved by :func:`write_checkpoint` from a checkpoint folder (local or ``s3://``)."""
    from .. import storage

    data = storage.read_bytes(storage.join(uri, CHECKPOINT_FILE))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def is_done(meta: dict, config: TrainConfig) -> bool:
    """Whether a checkpoint needs no more training under ``config``: it stopped early, or it
    reached ``config.epochs`` (a finished run can be extended by raising ``epochs``)."""
    if int(meta.get("epoch") or 0) >= config.epochs:
        return True
    return bool(meta.get("finished")) and str(meta.get("stop_reason") or "").startswith("early stopping")


def check_compatible(meta: dict, architecture: dict, signal: dict, target: str, where: str) -> None:
    """ConfigError unless a checkpoint's architecture, signal settings and target match the run's."""
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError("run_name", f"{where}: not a sepcluster training checkpoint "
                                      f"(format {meta.get('format')!r}); use another --run-name")
    if meta.get("target") != target:
        raise ConfigError("run_name", f"{where}: this checkpoint trains target '{meta.get('target')}', not "
                                      f"'{target}'; use another --run-name")
    theirs = meta.get("architecture") or {}
    for key, value in architecture.items():
        if theirs.get(key) != value:
            raise ConfigError(key, f"{where}: the checkpoint to resume is a different architecture "
                                   f"({key}={theirs.get(key)!r}, this config has {value!r}); use another "
                                   f"--run-name or the checkpoint's settings")
    sig = meta.get("signal") or {}
    for key, value in signal.items():
        if sig.get(key) != value:
            raise ConfigError(key, f"{where}: the checkpoint to resume was trained with {key}={sig.get(key)!r}, "
                                   f"this run has {value!r}; use another --run-name")


# ----------------------------------------------------------------------------- MLflow from rank 0

class RunLogger:
    """Logs metrics/dicts into one MLflow run by id (rank 0 of the workers; no active run needed).

    The tracking URI is the driver's (:func:`sepcluster.tracking.tracking_uri`), passed in the
    loop config. Non-finite values are skipped; failures to log never stop training.
    """

    def __init__(self, run_id: Optional[str], tracking_uri: Optional[str]):
        self.run_id = run_id
        self.client = None
        if run_id and tracking_uri:
            try:
                from mlflow.tracking import MlflowClient

                logging.getLogger("mlflow").setLevel(logging.WARNING)
                logging.getLogger("alembic").setLevel(logging.WARNING)
                self.client = MlflowClient(tracking_uri=tracking_uri)
            except Exception as exc:  # noqa: BLE001 - logging is best effort on workers
                log.warning("MLflow logging disabled on the worker: %s", exc)

    def metrics(self, values: dict, step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        clean = []
        for k, v in values.items():
            try:
                f = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(f):
                clean.append(Metric(k, f, now, int(step)))
        try:
            self.client.log_batch(self.run_id, metrics=clean)
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow: could not log metrics: %s", exc)

    def dict(self, obj: Any, name: str) -> None:
        if self.client is None:
            return
        try:
            self.client.log_dict(self.run_id, obj, name)
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow: could not log %s: %s", name, exc)


# ----------------------------------------------------------------------------- Ray Train glue

def _several_ranks() -> bool:
    """Whether this process is one of several in an initialised process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if _several_ranks():
        dist.all_reduce(t)
    return [float(x) for x in t.cpu()]


def _all_reduce_stats(stats: dict, device: torch.device, nb_bins: int) -> dict:
    import torch.distributed as dist

    zeros = torch.zeros(nb_bins, dtype=torch.float64, device=device)
    s = stats["sum"] if stats["sum"] is not None else zeros
    q = stats["sumsq"] if stats["sumsq"] is not None else zeros.clone()
    packed = torch.cat([s.to(device), q.to(device), torch.tensor([float(stats["count"])], dtype=torch.float64,
                                                                 device=device)])
    if _several_ranks():
        dist.all_reduce(packed)
    return {"sum": packed[:nb_bins], "sumsq": packed[nb_bins:2 * nb_bins], "count": float(packed[-1])}


def _barrier() -> None:
    """Wait for every rank (no-op on one worker)."""
    import torch.distributed as dist

    if _several_ranks():
        dist.barrier()


def _gather(obj: Any) -> list:
    import torch.distributed as dist

    if _several_ranks():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def train_func(loop_config: dict) -> dict:
    """Ray Train per-worker entry point: train one target's model (see the module docstring).

    ``loop_config``: ``config`` (TrainConfig dict), ``spec`` (DataSpec dict), ``target``,
    ``sample_rate``, ``nb_channels``, ``architecture``, ``signal``, ``mlflow_run_id``,
    ``tracking_uri``, ``run_uri`` (the Ray run folder: its newest complete checkpoint is
    resumed when newer than Ray's own). Returns a summary from rank 0.
    """
    import ray.train
    import ray.train.torch

    from ..models import ISTFT, STFT, get_loss
    from .data import DataSpec, open_source

    logging.getLogger("sox").setLevel(logging.ERROR)
    # Ray Train prints every report (with the metrics dict) from every rank; rank 0 logs one line.
    try:
        from ray.train.v2._internal.execution import context as _train_context

        logging.getLogger(_train_context.__file__).setLevel(logging.WARNING)  # that module's logger name
    except ImportError:  # pragma: no cover - another Ray layout
        pass
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    config = TrainConfig.from_dict(loop_config["config"])
    spec = DataSpec(**loop_config["spec"])
    target = loop_config["target"]
    sample_rate = int(loop_config["sample_rate"])
    nb_channels = int(loop_config["nb_channels"])
    device = ray.train.torch.get_device()
    if isinstance(device, list):
        device = device[0]
    if device.type == "cpu" and os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, int(float(os.environ["OMP_NUM_THREADS"]))))

    shard = ray.train.get_dataset_shard("train") if spec.kind == "parquet" else None
    source = open_source(spec, config, target, rank, world, sample_rate, nb_channels, shard=shard)
    stft = STFT(config.n_fft, config.n_hop).to(device)
    istft = ISTFT(config.n_fft, config.n_hop).to(device)
    loss = get_loss(config.loss)
    logger = RunLogger(loop_config.get("mlflow_run_id") if rank == 0 else None, loop_config.get("tracking_uri"))

    torch.manual_seed(config.seed)
    model = make_model(config, nb_channels, sample_rate)
    state = None
    checkpoint = ray.train.get_checkpoint()  # set when Ray restarts the worker group after a failure
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = read_checkpoint_state(folder)
    # The newest complete checkpoint in storage: after a driver interrupt Ray's snapshot may lag
    # behind (or be missing), so rank 0 looks and tells the others.
    newest = newest_checkpoint(loop_config["run_uri"]) if rank == 0 and loop_config.get("run_uri") else None
    newest = _gather(newest)[0]
    if newest is not None and (state is None or int(state["epoch"]) < int(newest["meta"]["epoch"])):
        state = read_checkpoint_state(newest["uri"])
    if state is not None:
        check_compatible(state, loop_config["architecture"], loop_config["signal"], target, "checkpoint")
        model.load_state_dict(state["model_state"])
        if is_done(state, config):
            return {"target": target, "epoch": state["epoch"], "finished": True, "resumed": True}
    else:
        started = time.perf_counter()
        if config.stats_batches > 0 and hasattr(model, "set_input_stats"):
            stats = input_statistics(source.stats_batches(config.stats_batches), stft, device)
            stats = _all_reduce_stats(stats, device, stft.nb_bins)
            mean, scale = finish_statistics(stats)
            model.set_input_stats(mean, scale)
        log.info("rank %d: input statistics in %.1f s", rank, time.perf_counter() - started)

    model.to(device)
    ddp_model = ray.train.torch.prepare_model(model)
    optimizer, scheduler = make_optimizer(model, config)
    precision = make_precision(config, device)
    stopper = EarlyStopping(config.patience)
    best_state = cpu_state(model)
    best_epoch = 0
    history: list = []
    attempts: list = []
    start_epoch = 1
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if precision.scaler is not None and state.get("scaler"):
            precision.scaler.load_state_dict(state["scaler"])
        stopper = EarlyStopping(config.patience, state["best_loss"], state["bad_epochs"])
        best_state = state["best_model_state"]
        best_epoch = int(state["best_epoch"])
        history = list(state.get("history", []))
        attempts = list(state.get("attempts", []))
        start_epoch = int(state["epoch"]) + 1
    pids = _gather(os.getpid())
    attempts.append({"start_epoch": start_epoch, "world_size": world, "time": time.time(),
                     "device": str(device), "precision": precision.name, "pids": pids,
                     "torch_threads": torch.get_num_threads()})

    seed_info = _gather(source.seed_info(start_epoch))
    if rank == 0:
        logger.dict({"ranks": seed_info, "attempt": len(attempts)}, f"seed_stream/attempt{len(attempts)}.json")
        log.info("training %s from epoch %d on %d worker(s) (%s, %s), %d batches/epoch", target, start_epoch,
                 world, device, precision.name, source.steps_per_epoch)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    summary: dict = {"target": target, "epoch": start_epoch - 1, "finished": False,
                     "resumed": state is not None, "start_epoch": start_epoch}
    for epoch in range(start_epoch, config.epochs + 1):
        torch.manual_seed(config.seed * 7919 + epoch * 131 + rank)
        # Ranks start the epoch together: otherwise the first all-reduce of the epoch makes the
        # others wait for rank 0's checkpoint and MLflow writes, counted as their training time.
        _barrier()
        epoch_started = time.perf_counter()
        tr = train_epoch(ddp_model, source.epoch_batches(epoch), stft, istft, loss, optimizer, device,
                         precision, config.clip_grad_norm)
        train_seconds = time.perf_counter() - epoch_started
        va = validate(model, source.valid_items(), stft, istft, loss, device)
        (loss_sum, batches, samples, v_loss_sum, v_items, v_sisdr, v_mix) = _all_reduce(
            [tr["loss_sum"], tr["batches"], tr["samples"], va["loss_sum"], va["items"], va["sisdr_sum"],
             va["mix_sisdr_sum"]], device)
        slowest = max(_gather(train_seconds))
        train_loss = loss_sum / max(batches, 1)
        valid_loss = v_loss_sum / v_items if v_items else train_loss
        scheduler.step(valid_loss)
        if stopper.step(valid_loss):
            best_state = cpu_state(model)
            best_epoch = epoch
        stop_reason = None
        if stopper.should_stop:
            stop_reason = f"early stopping: no better validation loss for {config.patience} epochs"
        elif epoch >= config.epochs:
            stop_reason = f"reached epochs={config.epochs}"
        epoch_seconds = time.perf_counter() - epoch_started
        metrics = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                   "lr": optimizer.param_groups[0]["lr"], "epoch_time": epoch_seconds,
                   "train_time": slowest, "samples_per_s": samples / max(slowest, 1e-9),
                   "samples": samples, "best_valid_loss": stopper.best, "best_epoch": best_epoch,
                   "bad_epochs": stopper.bad_epochs}
        if v_items:
            metrics.update(valid_sisdr=v_sisdr / v_items, valid_mix_sisdr=v_mix / v_items,
                           valid_sisdr_improvement=(v_sisdr - v_mix) / v_items)
        history.append(metrics)
        ckpt_state = None
        if rank == 0:
            logger.metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
            log.info("%s epoch %d: train loss %.4g, valid loss %.4g%s, lr %.2g, %.1f samples/s, %.1f s", target,
                     epoch, train_loss, valid_loss,
                     f", valid SI-SDR {metrics['valid_sisdr']:.2f} dB ({metrics['valid_sisdr_improvement']:+.2f})"
                     if v_items else "", metrics["lr"], metrics["samples_per_s"], epoch_seconds)
            ckpt_state = {
                "format": CHECKPOINT_FORMAT, "target": target, "epoch": epoch, "finished": stop_reason is not None,
                "stop_reason": stop_reason, "model_name": config.model, "hparams": model_hparams(model),
                "model_kwargs": config.model_kwargs(nb_channels, sample_rate),
                "architecture": loop_config["architecture"], "signal": loop_config["signal"],
                "model_state": cpu_state(model), "best_model_state": best_state,
                "best_loss": stopper.best, "best_epoch": best_epoch, "bad_epochs": stopper.bad_epochs,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
                "input_mean": _input_stat(model, "mean"), "input_scale": _input_stat(model, "scale"),
                "history": history, "attempts": attempts, "config": config.to_dict(), "data": spec.describe(),
            }
        report_metrics = dict(metrics, finished=stop_reason is not None)
        with tempfile.TemporaryDirectory(prefix="sepcluster-ckpt-") as folder:
            ckpt = None
            if ckpt_state is not None:
                write_checkpoint(folder, ckpt_state)
                ckpt = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(report_metrics, checkpoint=ckpt,
                             checkpoint_dir_name=f"checkpoint_epoch{epoch:05d}_{stamp}")
        summary.update(epoch=epoch, finished=stop_reason is not None, stop_reason=stop_reason, **{
            k: metrics[k] for k in ("train_loss", "valid_loss", "best_valid_loss", "best_epoch")})
        if stop_reason is not None:
            break
    return summary


__all__ = [
    "make_model", "Precision", "make_precision", "loss_value", "train_epoch", "validate", "input_statistics",
    "finish_statistics", "EarlyStopping", "make_optimizer", "write_checkpoint", "read_checkpoint_state",
    "verified_checkpoint_meta", "newest_checkpoint", "is_done",
    "check_compatible", "RunLogger", "train_func", "CHECKPOINT_FILE", "CHECKPOINT_META", "CHECKPOINT_FORMAT",
]
