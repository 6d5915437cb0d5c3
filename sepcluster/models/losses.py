"""Training losses.

- ``mse`` (default, as Open-Unmix) and ``l1``: on magnitude spectrograms
  ``(batch, channels, bins, frames)``, mean over all elements.
- ``si_sdr``: time-domain loss, the negative scale-invariant SDR of waveforms
  ``(batch, channels, samples)``, averaged over the batch.

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
    """Negative mean SI-SDR (dB) of waveforms ``(batch, channels, samples)`` -> scalar loss."""
    return -si_sdr(estimate, reference).mean()


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
}
_ALIASES = {"sisdr": "si_sdr", "si-sdr": "si_sdr", "neg_si_sdr": "si_sdr", "mae": "l1", "l2": "mse"}


def get_loss(name: str = "mse") -> Loss:
    """The loss called ``name``: ``mse`` (default), ``l1`` or ``si_sdr`` (time domain)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in LOSSES:
        raise ConfigError("loss", f"unknown loss '{name}' (choose from {', '.join(LOSSES)})")
    return LOSSES[key]
