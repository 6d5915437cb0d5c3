"""Multichannel STFT / ISTFT on batched waveforms (Open-Unmix's torch filterbank convention).

Shapes:
- waveform: ``(batch, channels, samples)`` real
- STFT: ``(batch, channels, bins, frames)`` complex, ``bins = n_fft // 2 + 1``
- magnitude: ``(batch, channels, bins, frames)`` real, non-negative

The window is a non-persistent buffer, so these modules add nothing to a state dict.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from sepcluster.errors import AudioError, ConfigError


def _check_fft(n_fft: int, n_hop: int) -> None:
    if int(n_fft) < 2:
        raise ConfigError("n_fft", f"must be >= 2, got {n_fft}")
    if not 0 < int(n_hop) <= int(n_fft):
        raise ConfigError("n_hop", f"must be in 1..n_fft ({n_fft}), got {n_hop}")


class STFT(nn.Module):
    """Short-time Fourier transform with a periodic Hann window.

    Args:
        n_fft: FFT (and window) length.
        n_hop: hop between frames.
        center: pad the signal by ``n_fft // 2`` on both sides (reflect) so frame ``t``
            is centred on sample ``t * n_hop``; required for perfect reconstruction.

    ``forward(waveform (batch, channels, samples)) -> complex (batch, channels, bins, frames)``.
    """

    def __init__(self, n_fft: int = 4096, n_hop: int = 1024, center: bool = True):
        super().__init__()
        _check_fft(n_fft, n_hop)
        self.n_fft = int(n_fft)
        self.n_hop = int(n_hop)
        self.center = bool(center)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    @property
    def nb_bins(self) -> int:
        return self.n_fft // 2 + 1

    def forward(self, waveform: Tensor) -> Tensor:
        """``(batch, channels, samples)`` real -> ``(batch, channels, bins, frames)`` complex."""
        if waveform.dim() != 3:
            raise AudioError(f"STFT input: expected a (batch, channels, samples) waveform, got shape "
                             f"{tuple(waveform.shape)}")
        batch, channels, samples = waveform.shape
        if self.center and samples <= self.n_fft // 2:
            raise AudioError(f"STFT input: {samples} samples is too short for n_fft={self.n_fft} with "
                             f"center=True (needs more than {self.n_fft // 2})")
        if not self.center and samples < self.n_fft:
            raise AudioError(f"STFT input: {samples} samples is shorter than n_fft={self.n_fft}")
        flat = waveform.reshape(batch * channels, samples)
        window = self.window.to(device=flat.device, dtype=flat.dtype)
        spec = torch.stft(flat, n_fft=self.n_fft, hop_length=self.n_hop, win_length=self.n_fft,
                          window=window, center=self.center, pad_mode="reflect", normalized=False,
                          onesided=True, return_complex=True)
        return spec.reshape(batch, channels, spec.shape[-2], spec.shape[-1])

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, n_hop={self.n_hop}, center={self.center}"


class ISTFT(nn.Module):
    """Inverse of :class:`STFT` (overlap-add with the same Hann window).

    ``forward(spec complex (batch, channels, bins, frames), length=None) -> (batch, channels, samples)``.
    Pass ``length`` (the original number of samples) to get exactly that many samples back.
    Any leading dimensions before ``(channels, bins, frames)`` are kept, e.g.
    ``(batch, targets, channels, bins, frames) -> (batch, targets, channels, samples)``.
    """

    def __init__(self, n_fft: int = 4096, n_hop: int = 1024, center: bool = True):
        super().__init__()
        _check_fft(n_fft, n_hop)
        self.n_fft = int(n_fft)
        self.n_hop = int(n_hop)
        self.center = bool(center)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def forward(self, spec: Tensor, length: Optional[int] = None) -> Tensor:
        """complex ``(..., channels, bins, frames)`` -> real ``(..., channels, samples)``."""
        if not torch.is_complex(spec):
            raise AudioError(f"ISTFT input: expected a complex tensor, got dtype {spec.dtype}")
        if spec.dim() < 3:
            raise AudioError(f"ISTFT input: expected (..., channels, bins, frames), got shape {tuple(spec.shape)}")
        if spec.shape[-2] != self.n_fft // 2 + 1:
            raise AudioError(f"ISTFT input: {spec.shape[-2]} bins does not match n_fft={self.n_fft} "
                             f"({self.n_fft // 2 + 1} bins)")
        lead = spec.shape[:-2]
        flat = spec.reshape(-1, spec.shape[-2], spec.shape[-1])
        real_dtype = flat.real.dtype
        window = self.window.to(device=flat.device, dtype=real_dtype)
        wave = torch.istft(flat, n_fft=self.n_fft, hop_length=self.n_hop, win_length=self.n_fft,
                           window=window, center=self.center, normalized=False, onesided=True,
                           length=length)
        return wave.reshape(*lead, wave.shape[-1])

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, n_hop={self.n_hop}, center={self.center}"


def magnitude(spec: Tensor, mono: bool = False) -> Tensor:
    """Magnitude of a complex STFT.

    ``(batch, channels, bins, frames)`` complex -> same shape real (``channels`` becomes 1 when
    ``mono``: the channel magnitudes are averaged, as Open-Unmix's mono down-mix does).
    """
    if not torch.is_complex(spec):
        raise AudioError(f"magnitude input: expected a complex STFT, got dtype {spec.dtype}")
    mag = spec.abs()
    if mono:
        mag = mag.mean(dim=1, keepdim=True)
    return mag


def nb_frames(samples: int, n_fft: int = 4096, n_hop: int = 1024, center: bool = True) -> int:
    """Number of STFT frames :class:`STFT` produces for ``samples`` samples."""
    if center:
        return samples // n_hop + 1
    return (samples - n_fft) // n_hop + 1
