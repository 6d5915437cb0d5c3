"""The plain steps of training one model: build, precision, one epoch, validation, statistics, early stopping.

Functions on a model, a batch iterator and an optimizer, with no Ray and no process group:
they run the same in a test, a notebook or a Ray Train worker
(:func:`sepcluster.train.loop.train_func` puts them together). Sums are returned per process;
the caller all-reduces them.

Shapes: waveform batches ``(batch, channels, samples)``; spectrograms
``(batch, channels, bins, frames)``. A multi-source model's targets are
``(batch, sources, channels, samples)``: a 4-D target tells the steps to run the model on the
waveform and compare waveforms (:mod:`sepcluster.train.multisource`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
from torch import Tensor, nn

from .config import TrainConfig


def make_model(config: TrainConfig, nb_channels: int, sample_rate: float, sources: Optional[list] = None,
               segment: Optional[float] = None) -> nn.Module:
    """The model named by ``config.model``: a mask estimator (magnitudes ``(b, c, bins, frames)`` in and
    out), or for a multi-source family one model of ``sources`` trained on ``segment`` seconds
    (``(b, c, samples) -> (b, sources, c, samples)``)."""
    from ..models.registry import build_model

    return build_model(config.model, **config.model_kwargs(nb_channels, sample_rate, sources, segment))


def model_hparams(model: nn.Module) -> dict:
    """The model's constructor arguments (``hparams()``; {} for a model without)."""
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
    """The training loss of one batch (magnitude losses on STFT magnitudes, time-domain losses on
    waveforms; a multi-source target ``(batch, sources, channels, samples)``: on the model's waveforms)."""
    if tgt.dim() == 4:
        return loss(model(mix).float(), tgt)
    time_domain = loss.domain == "time"
    est_mag, _, est_wave = _estimate(model, mix, stft, istft, need_wave=time_domain)
    if time_domain:
        return loss(est_wave, tgt)
    return loss(est_mag, stft(tgt).abs())


def train_epoch(model: nn.Module, batches: Iterable, stft, istft, loss, optimizer, device: torch.device,
                precision: Optional[Precision] = None, clip_grad_norm: Optional[float] = None, ema=None) -> dict:
    """One pass over ``batches`` of ``(mixture, target)`` waveforms ``(batch, channels, samples)``
    (targets ``(batch, sources, channels, samples)`` for a multi-source model). ``ema``: an
    :class:`~sepcluster.train.ema.EMA` updated after every optimizer step.

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
        if ema is not None:
            ema.update()
        loss_sum += float(value.detach())
        nb += 1
        samples += int(mix.shape[0])
    return {"loss_sum": loss_sum, "batches": nb, "samples": samples, "seconds": time.perf_counter() - started}


@torch.no_grad()
def validate(model: nn.Module, items: Iterable, stft, istft, loss, device: torch.device,
             chunk: Optional[int] = None) -> dict:
    """Loss, SI-SDR and global SDR on full validation items ``(1, channels, samples)`` (mixture, target).

    The estimate's waveform uses the mixture phase. Returns sums over the items:
    ``{"loss_sum", "items", "sisdr_sum", "mix_sisdr_sum", "sdr_sum", "mix_sdr_sum"}`` (``mix_``: the
    mixture-as-estimate baseline). Multi-source items (targets ``(1, sources, channels, samples)``)
    are validated by :func:`sepcluster.train.multisource.validate_sources` in ``chunk``-sample chunks.
    """
    from ..models.losses import global_sdr, si_sdr

    items = list(items)
    if items and items[0][1].dim() == 4:
        from .multisource import validate_sources

        return validate_sources(model, items, loss, device, chunk)
    model.eval()
    out = {"loss_sum": 0.0, "items": 0, "sisdr_sum": 0.0, "mix_sisdr_sum": 0.0, "sdr_sum": 0.0, "mix_sdr_sum": 0.0}
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
        out["sdr_sum"] += float(global_sdr(est_wave, tgt).mean())
        out["mix_sdr_sum"] += float(global_sdr(mix, tgt).mean())
    return out


@torch.no_grad()
def estimate_waveforms(model: nn.Module, mix: Tensor, stft, istft, chunk: Optional[int] = None) -> Tensor:
    """The model's waveform estimate of ``mix (1, channels, samples)``: ``(1, channels, samples)`` for a
    mask estimator (mixture phase), ``(1, sources, channels, samples)`` for a multi-source model
    (run in ``chunk``-sample chunks)."""
    model.eval()
    if getattr(model, "sources", None):  # multi-source families name their outputs
        from ..models.multisource import chunked_forward

        return chunked_forward(model, mix, chunk or mix.shape[-1]).float()
    return _estimate(model, mix, stft, istft, need_wave=True)[2]


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


def input_stat(model: nn.Module, which: str) -> Optional[Tensor]:
    """The dataset mean / scale the model normalises its input with (None for other models)."""
    if which == "mean" and hasattr(model, "input_mean"):
        return -model.input_mean.detach().cpu().clone()
    if which == "scale" and hasattr(model, "input_scale"):
        return 1.0 / model.input_scale.detach().cpu().clone()
    return None


def cpu_state(model: nn.Module) -> dict:
    """A copy of the model's state dict on the CPU (name -> tensor)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


__all__ = ["make_model", "model_hparams", "Precision", "make_precision", "loss_value", "train_epoch", "validate",
           "estimate_waveforms",
           "input_statistics", "finish_statistics", "EarlyStopping", "make_optimizer", "input_stat", "cpu_state"]
