"""Training losses and the validation figures (SI-SDR, global SDR) as small torch functions.

- ``mse`` (default, as Open-Unmix) and ``l1``: on magnitude spectrograms
  ``(batch, channels, bins, frames)``, mean over all elements.
- ``si_sdr``: time-domain loss, the negative scale-invariant SDR of waveforms
  ``(batch, channels, samples)``, averaged over the batch (and the sources of
  ``(batch, sources, channels, samples)``).
- ``wave_l1`` / ``wave_l2``: mean absolute / squared error of waveforms (demucs trains with L1).
- ``mrstft``: L1 of the waveforms plus the multi-resolution STFT loss of Music-Source-Separation-
  Training's RoFormers (:func:`multi_resolution_stft`).

The time-domain losses take any leading dimensions: ``(batch, channels, samples)`` or
``(batch, sources, channels, samples)``. :func:`si_sdr` and :func:`global_sdr` (the "uSDR" of
the SDX challenge, as :func:`sepcluster.evaluate.metrics.global_sdr` computes it) give one value
per item for the validation curves.

:func:`get_loss` returns a :class:`Loss` whose ``domain`` ("magnitude" or "time") tells the
trainer what to feed it; all losses are called as ``loss(estimate, reference) -> scalar``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from sepcluster.errors import AudioError, ConfigError


def _same_shape(estimate: Tensor, reference: Tensor, what: str) -> None:
    if estimate.shape != reference.shape:
        raise AudioError(f"{what}: estimate shape {tuple(estimate.shape)} differs from reference shape "
                         f"{tuple(reference.shape)}")


def mse(estimate: Tensor, reference: Tensor) -> Tensor:
    """Mean squared error of magnitudes ``(batch, channels, bins, frames)`` -> scalar."""
    _same_shape(estimate, reference, "mse loss")
    return torch.mean((estimate - reference) ** 2)


def l1(estimate: Tensor, reference: Tensor) -> Tensor:
    """Mean absolute error of magnitudes ``(batch, channels, bins, frames)`` -> scalar."""
    _same_shape(estimate, reference, "l1 loss")
    return torch.mean(torch.abs(estimate - reference))


def si_sdr(estimate: Tensor, reference: Tensor, zero_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SDR in dB, one value per item.

    ``estimate``, ``reference``: waveforms ``(batch, channels, samples)`` (a 2-D
    ``(batch, samples)`` input is taken as mono). The channels of an item are treated as one
    signal: each channel is made zero-mean (``zero_mean``), then with
    ``alpha = <s_hat, s> / ||s||^2`` over all channels and samples,
    ``SI-SDR = 10 log10(||alpha s||^2 / ||alpha s - s_hat||^2)``. Returns ``(batch,)``.
    ``eps`` keeps silent references/estimates finite.
    """
    _same_shape(estimate, reference, "si_sdr")
    if estimate.dim() == 2:
        estimate, reference = estimate[:, None], reference[:, None]
    if estimate.dim() != 3:
        raise AudioError(f"si_sdr: expected (batch, channels, samples), got {tuple(estimate.shape)}")
    if zero_mean:
        estimate = estimate - estimate.mean(dim=-1, keepdim=True)
        reference = reference - reference.mean(dim=-1, keepdim=True)
    est = estimate.flatten(1)
    ref = reference.flatten(1)
    alpha = (est * ref).sum(dim=1, keepdim=True) / (ref.pow(2).sum(dim=1, keepdim=True) + eps)
    target = alpha * ref
    noise = target - est
    return 10.0 * torch.log10((target.pow(2).sum(dim=1) + eps) / (noise.pow(2).sum(dim=1) + eps))


def neg_si_sdr(estimate: Tensor, reference: Tensor) -> Tensor:
    """Negative mean SI-SDR (dB) of waveforms ``(batch, channels, samples)`` (or
    ``(batch, sources, channels, samples)``: every source an item) -> scalar loss."""
    if estimate.dim() > 3:
        _same_shape(estimate, reference, "si_sdr")
        estimate, reference = estimate.flatten(0, -3), reference.flatten(0, -3)
    return -si_sdr(estimate, reference).mean()


def global_sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-7) -> Tensor:
    """Global SDR (uSDR) in dB, one value per item: ``10 log10((||s||^2 + eps) / (||s - s_hat||^2 + eps))``
    over all channels and samples of an item (demucs' convention, eps 1e-7).

    ``estimate``, ``reference``: ``(batch, channels, samples)`` -> ``(batch,)``, or
    ``(batch, sources, channels, samples)`` -> ``(batch, sources)``.
    """
    _same_shape(estimate, reference, "global_sdr")
    if estimate.dim() < 2:
        raise AudioError(f"global_sdr: expected (batch, [sources,] channels, samples), got {tuple(estimate.shape)}")
    est, ref = estimate.double(), reference.double()
    num = ref.pow(2).flatten(-2).sum(-1)
    den = (ref - est).pow(2).flatten(-2).sum(-1)
    return (10.0 * torch.log10((num + eps) / (den + eps))).to(estimate.dtype)


def wave_l1(estimate: Tensor, reference: Tensor) -> Tensor:
    """Mean absolute error of waveforms (any shape, e.g. ``(batch, sources, channels, samples)``) -> scalar."""
    _same_shape(estimate, reference, "wave_l1 loss")
    return torch.mean(torch.abs(estimate - reference))


def wave_l2(estimate: Tensor, reference: Tensor) -> Tensor:
    """Mean squared error of waveforms (any shape) -> scalar."""
    _same_shape(estimate, reference, "wave_l2 loss")
    return torch.mean((estimate - reference) ** 2)


MRSTFT_WINDOWS = (4096, 2048, 1024, 512, 256)  # MSST's multi_stft_resolutions_window_sizes
MRSTFT_HOP = 147  # MSST's multi_stft_hop_size


def multi_resolution_stft(estimate: Tensor, reference: Tensor, windows=MRSTFT_WINDOWS, hop: int = MRSTFT_HOP,
                          n_fft: int = 2048) -> Tensor:
    """MSST's multi-resolution STFT loss (its RoFormers' ``multi_stft_resolution_loss``): the sum over
    window sizes of the mean modulus of the complex STFTs' difference (Hann window of that size, FFT
    size ``max(window, n_fft)`` with ``n_fft`` the model's ``stft_n_fft``, hop 147, not normalised).

    Waveforms of any leading shape ``(..., samples)``; a window whose FFT's reflect padding does not
    fit the signal (``fft // 2 >= samples``) is left out. Returns a scalar.
    """
    _same_shape(estimate, reference, "multi-resolution STFT loss")
    samples = estimate.shape[-1]
    est, ref = estimate.reshape(-1, samples), reference.reshape(-1, samples)
    total = estimate.new_zeros(())
    for window in windows:
        fft = max(int(window), int(n_fft))
        if fft // 2 >= samples:
            continue
        kwargs = dict(n_fft=fft, hop_length=int(hop), win_length=int(window), normalized=False,
                      window=torch.hann_window(int(window), device=estimate.device, dtype=est.dtype), return_complex=True)
        total = total + (torch.stft(est, **kwargs) - torch.stft(ref, **kwargs)).abs().mean()
    return total


def mrstft(estimate: Tensor, reference: Tensor) -> Tensor:
    """``wave_l1`` plus :func:`multi_resolution_stft` (MSST's RoFormer training loss, weight 1)."""
    return wave_l1(estimate, reference) + multi_resolution_stft(estimate, reference)


@dataclass(frozen=True)
class Loss:
    """A named loss: ``domain`` is ``"magnitude"`` (spectrograms) or ``"time"`` (waveforms)."""

    name: str
    domain: str
    fn: Callable[[Tensor, Tensor], Tensor]

    def __call__(self, estimate: Tensor, reference: Tensor) -> Tensor:
        return self.fn(estimate, reference)


LOSSES = {
    "mse": Loss("mse", "magnitude", mse),
    "l1": Loss("l1", "magnitude", l1),
    "si_sdr": Loss("si_sdr", "time", neg_si_sdr),
    "wave_l1": Loss("wave_l1", "time", wave_l1),
    "wave_l2": Loss("wave_l2", "time", wave_l2),
    "mrstft": Loss("mrstft", "time", mrstft),
}
_ALIASES = {"sisdr": "si_sdr", "si-sdr": "si_sdr", "neg_si_sdr": "si_sdr", "mae": "l1", "l2": "mse",
            "wave_mse": "wave_l2", "wave_mae": "wave_l1"}


def get_loss(name: str = "mse") -> Loss:
    """The loss called ``name``: ``mse`` (default), ``l1`` (magnitudes), or a time-domain loss
    (``si_sdr``, ``wave_l1``, ``wave_l2``, ``mrstft``)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in LOSSES:
        raise ConfigError("loss", f"unknown loss '{name}' (choose from {', '.join(LOSSES)})")
    return LOSSES[key]
