"""A small convolutional U-Net mask estimator on magnitude spectrograms (fast on CPU).

Input and output: magnitude spectrograms ``(batch, channels, bins, frames)``, like
:class:`sepcluster.models.umx.OpenUnmix`. The network sees the first ``max_bin`` bins
(bandwidth crop) of the normalised, log-compressed magnitude as a 2-D image with the audio
channels as image channels (a strided stem folds ``freq_stride`` neighbouring bins into
feature maps, a transposed-convolution head unfolds them), predicts a sigmoid mask for those
bins, and uses a learned per-bin constant mask above ``max_bin``. The output is the mask times the mixture magnitude.

Any frame count works: the image is zero-padded (bins up to a multiple of
``freq_stride * 2 ** depth``, frames up to a multiple of ``2 ** depth``) and the mask is
cropped back.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sepcluster.errors import AudioError, ConfigError

ArrayLike = Union[np.ndarray, Tensor, list, tuple]


def _conv_block(c_in: int, c_out: int, convs: int = 1) -> nn.Sequential:
    layers: list = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, kernel_size=3, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class _Down(nn.Module):
    def __init__(self, c_in: int, c_out: int, convs: int):
        super().__init__()
        self.pool = nn.Conv2d(c_in, c_in, kernel_size=2, stride=2)
        self.block = _conv_block(c_in, c_out, convs)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.pool(x))


class _Up(nn.Module):
    def __init__(self, c_in: int, c_skip: int, c_out: int, convs: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_skip, kernel_size=2, stride=2)
        self.block = _conv_block(2 * c_skip, c_out, convs)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.block(torch.cat((self.up(x), skip), dim=1))


class UNet(nn.Module):
    """U-Net mask estimator for one target.

    Args:
        nb_bins: bins of the input/output spectrogram (``n_fft // 2 + 1``).
        nb_channels: audio channels (1 or 2).
        base_channels: feature maps of the first level (doubled at each level down).
        depth: number of down/up-sampling levels (each halves bins and frames).
        freq_stride: the stem folds this many neighbouring bins into feature maps (a strided
            convolution) and the head unfolds them (a transposed convolution), so the U-Net
            runs on ``max_bin / freq_stride`` bins.
        max_bin: only the first ``max_bin`` bins are processed (None: all).
        input_mean, input_scale: per-bin dataset mean/std of the mixture magnitude (optional).

    The defaults (8 base channels, 4 levels, stride 8: about 0.5 M parameters) take about 0.4x
    the CPU time of a default ``umx`` per training step (measured on one core, 2 x 256 frames,
    4096-point FFT, 16 kHz bandwidth crop).

    ``forward(mag (batch, channels, nb_bins, frames)) -> (batch, channels, nb_bins, frames)``.
    """

    name = "unet"

    def __init__(self, nb_bins: int = 2049, nb_channels: int = 2, base_channels: int = 8,
                 depth: int = 4, freq_stride: int = 8, max_bin: Optional[int] = None,
                 input_mean: Optional[ArrayLike] = None, input_scale: Optional[ArrayLike] = None):
        super().__init__()
        if int(nb_bins) < 1:
            raise ConfigError("nb_bins", f"must be >= 1, got {nb_bins}")
        if int(nb_channels) < 1:
            raise ConfigError("nb_channels", f"must be >= 1, got {nb_channels}")
        if int(base_channels) < 1:
            raise ConfigError("base_channels", f"must be >= 1, got {base_channels}")
        if not 1 <= int(depth) <= 8:
            raise ConfigError("depth", f"must be in 1..8, got {depth}")
        if not 1 <= int(freq_stride) <= 64:
            raise ConfigError("freq_stride", f"must be in 1..64, got {freq_stride}")
        if max_bin is not None and not 0 < int(max_bin) <= int(nb_bins):
            raise ConfigError("max_bin", f"must be in 1..nb_bins ({nb_bins}), got {max_bin}")
        self.nb_output_bins = int(nb_bins)
        self.nb_bins = int(max_bin) if max_bin else self.nb_output_bins
        self.nb_channels = int(nb_channels)
        self.base_channels = int(base_channels)
        self.depth = int(depth)
        self.freq_stride = int(freq_stride)

        widths = [self.base_channels * 2 ** i for i in range(self.depth + 1)]
        fs = self.freq_stride
        self.stem = nn.Sequential(
            nn.Conv2d(self.nb_channels, widths[0], kernel_size=(fs, 1), stride=(fs, 1), bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.inc = _conv_block(widths[0], widths[0], 1)
        self.downs = nn.ModuleList(_Down(widths[i], widths[i + 1], 2) for i in range(self.depth))
        self.ups = nn.ModuleList(_Up(widths[i + 1], widths[i], widths[i], 1 if i == 0 else 2)
                                 for i in reversed(range(self.depth)))
        self.head = nn.ConvTranspose2d(widths[0], self.nb_channels, kernel_size=(fs, 1), stride=(fs, 1))

        self.input_mean = nn.Parameter(torch.zeros(self.nb_bins))
        self.input_scale = nn.Parameter(torch.ones(self.nb_bins))
        # mask logits for the bins above max_bin (constant over time); absent when max_bin
        # covers all bins, so that every parameter takes part in forward (DDP requires it)
        if self.nb_output_bins > self.nb_bins:
            self.high_logits = nn.Parameter(torch.zeros(self.nb_channels, self.nb_output_bins - self.nb_bins))
        else:
            self.register_parameter("high_logits", None)
        if input_mean is not None or input_scale is not None:
            self.set_input_stats(input_mean, input_scale)

    def hparams(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture."""
        return {"nb_bins": self.nb_output_bins, "nb_channels": self.nb_channels,
                "base_channels": self.base_channels, "depth": self.depth,
                "freq_stride": self.freq_stride, "max_bin": self.nb_bins}

    @torch.no_grad()
    def set_input_stats(self, mean: Optional[ArrayLike] = None, scale: Optional[ArrayLike] = None) -> None:
        """Per-bin dataset mean/std of the mixture magnitude (length >= ``max_bin``)."""
        from .umx import _as_vector

        if mean is not None:
            self.input_mean.copy_(-_as_vector(mean, "input_mean", self.nb_bins))
        if scale is not None:
            self.input_scale.copy_(1.0 / _as_vector(scale, "input_scale", self.nb_bins).clamp_min(1e-8))

    def freeze(self) -> "UNet":
        """Eval mode, no gradients (inference)."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def forward(self, mag: Tensor) -> Tensor:
        """``(batch, channels, nb_bins, frames)`` mixture magnitude -> target magnitude, same shape."""
        if mag.dim() != 4 or mag.shape[1] != self.nb_channels or mag.shape[2] != self.nb_output_bins:
            raise AudioError(f"UNet input: expected (batch, {self.nb_channels}, {self.nb_output_bins}, "
                             f"frames), got {tuple(mag.shape)}")
        batch, channels, _, frames = mag.shape
        mixture = mag.detach()

        # normalise per bin (bins on the last axis to broadcast), then compress
        x = mag[:, :, : self.nb_bins, :].transpose(2, 3)
        x = (x + self.input_mean) * self.input_scale
        x = torch.sign(x) * torch.log1p(x.abs())
        x = x.transpose(2, 3)  # (batch, channels, bins, frames)

        mult = 2 ** self.depth
        pad_f = (-self.nb_bins) % (mult * self.freq_stride)
        pad_t = (-frames) % mult
        x = F.pad(x, (0, pad_t, 0, pad_f))

        skips = [self.inc(self.stem(x))]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        low = torch.sigmoid(self.head(y))[:, :, : self.nb_bins, :frames]

        if self.high_logits is not None:
            high = torch.sigmoid(self.high_logits)[None, :, :, None].expand(batch, -1, -1, frames)
            mask = torch.cat((low, high), dim=2)
        else:
            mask = low
        return mask * mixture
