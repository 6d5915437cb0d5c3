"""The Open-Unmix (UMX) spectrogram mask estimator.

Written for sepcluster; its parameter names and shapes are those of
``openunmix.model.OpenUnmix`` (1.3.0) so official ``<target>.pth`` state dicts load with
``strict=True`` and give the same output.

Input and output: magnitude spectrograms ``(batch, channels, bins, frames)``.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sepcluster.errors import AudioError, ConfigError

ArrayLike = Union[np.ndarray, Tensor, list, tuple]


def bandwidth_to_max_bin(rate: float, n_fft: int, bandwidth: Optional[float]) -> int:
    """Number of STFT bins (from bin 0) whose centre frequency is <= ``bandwidth`` Hz.

    ``rate`` is the sample rate, ``n_fft`` the FFT size. ``bandwidth=None`` (or >= Nyquist)
    gives all ``n_fft // 2 + 1`` bins. 44.1 kHz, 4096, 16 kHz -> 1487 (as Open-Unmix).
    """
    nb_bins = int(n_fft) // 2 + 1
    if bandwidth is None:
        return nb_bins
    if float(bandwidth) <= 0:
        raise ConfigError("bandwidth", f"must be > 0 Hz, got {bandwidth}")
    if float(rate) <= 0:
        raise ConfigError("sample_rate", f"must be > 0, got {rate}")
    bin_width = float(rate) / int(n_fft)
    # bins k with k * bin_width <= bandwidth (small tolerance against float error)
    count = int(np.floor(float(bandwidth) / bin_width + 1e-9)) + 1
    return max(1, min(nb_bins, count))


def _as_vector(value: ArrayLike, name: str, min_len: int) -> Tensor:
    vec = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value,
                                     dtype=np.float32)).flatten()
    if vec.numel() < min_len:
        raise ConfigError(name, f"needs at least {min_len} values (one per input bin), got {vec.numel()}")
    return vec[:min_len].clone()


class OpenUnmix(nn.Module):
    """Open-Unmix mask estimator for one target.

    Args:
        nb_bins: bins of the input/output spectrogram (``n_fft // 2 + 1``).
        nb_channels: audio channels (1 or 2).
        hidden_size: width of the bottleneck (the LSTM has ``hidden_size // 2`` units per
            direction when bidirectional).
        nb_layers: LSTM layers.
        unidirectional: causal (one-direction) LSTM with ``hidden_size`` units.
        input_mean, input_scale: per-bin dataset mean and standard deviation of the mixture
            magnitude, length >= ``max_bin`` (None: 0 and 1). Stored as ``-mean`` and
            ``1 / scale`` learnable parameters, as Open-Unmix does.
        max_bin: only the first ``max_bin`` bins feed the network (bandwidth crop; None: all).

    ``forward(mag (batch, channels, nb_bins, frames)) -> (batch, channels, nb_bins, frames)``:
    a non-negative mask (ReLU) times the mixture magnitude.
    """

    name = "umx"

    def __init__(self, nb_bins: int = 2049, nb_channels: int = 2, hidden_size: int = 512,
                 nb_layers: int = 3, unidirectional: bool = False,
                 input_mean: Optional[ArrayLike] = None, input_scale: Optional[ArrayLike] = None,
                 max_bin: Optional[int] = None):
        super().__init__()
        if int(nb_bins) < 1:
            raise ConfigError("nb_bins", f"must be >= 1, got {nb_bins}")
        if int(nb_channels) < 1:
            raise ConfigError("nb_channels", f"must be >= 1, got {nb_channels}")
        if int(hidden_size) < 2 or (not unidirectional and int(hidden_size) % 2):
            raise ConfigError("hidden_size", f"must be an even number >= 2, got {hidden_size}")
        if int(nb_layers) < 1:
            raise ConfigError("nb_layers", f"must be >= 1, got {nb_layers}")
        if max_bin is not None and not 0 < int(max_bin) <= int(nb_bins):
            raise ConfigError("max_bin", f"must be in 1..nb_bins ({nb_bins}), got {max_bin}")

        self.nb_output_bins = int(nb_bins)
        self.nb_bins = int(max_bin) if max_bin else self.nb_output_bins  # bins fed to the network
        self.nb_channels = int(nb_channels)
        self.hidden_size = int(hidden_size)
        self.nb_layers = int(nb_layers)
        self.unidirectional = bool(unidirectional)

        in_features = self.nb_bins * self.nb_channels
        out_features = self.nb_output_bins * self.nb_channels
        lstm_units = self.hidden_size if self.unidirectional else self.hidden_size // 2

        # encoder: all channels' cropped bins of one frame -> hidden_size
        self.fc1 = nn.Linear(in_features, self.hidden_size, bias=False)
        self.bn1 = nn.BatchNorm1d(self.hidden_size)
        # sequence model over frames (time-major)
        self.lstm = nn.LSTM(input_size=self.hidden_size, hidden_size=lstm_units,
                            num_layers=self.nb_layers, bidirectional=not self.unidirectional,
                            batch_first=False, dropout=0.4 if self.nb_layers > 1 else 0.0)
        # decoder: [encoder output, lstm output] -> hidden -> all channels' full bins
        self.fc2 = nn.Linear(2 * self.hidden_size, self.hidden_size, bias=False)
        self.bn2 = nn.BatchNorm1d(self.hidden_size)
        self.fc3 = nn.Linear(self.hidden_size, out_features, bias=False)
        self.bn3 = nn.BatchNorm1d(out_features)

        self.input_mean = nn.Parameter(torch.zeros(self.nb_bins))
        self.input_scale = nn.Parameter(torch.ones(self.nb_bins))
        self.output_scale = nn.Parameter(torch.ones(self.nb_output_bins))
        self.output_mean = nn.Parameter(torch.ones(self.nb_output_bins))
        if input_mean is not None or input_scale is not None:
            self.set_input_stats(input_mean, input_scale)

    def hparams(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture."""
        return {"nb_bins": self.nb_output_bins, "nb_channels": self.nb_channels,
                "hidden_size": self.hidden_size, "nb_layers": self.nb_layers,
                "unidirectional": self.unidirectional, "max_bin": self.nb_bins}

    @torch.no_grad()
    def set_input_stats(self, mean: Optional[ArrayLike] = None, scale: Optional[ArrayLike] = None) -> None:
        """Initialise input normalisation from dataset statistics of the mixture magnitude.

        ``mean`` and ``scale`` (std) are per-bin vectors of length >= ``max_bin`` (extra bins are
        cropped). Zero/negative scale entries are clamped to a small positive value.
        """
        if mean is not None:
            self.input_mean.copy_(-_as_vector(mean, "input_mean", self.nb_bins))
        if scale is not None:
            s = _as_vector(scale, "input_scale", self.nb_bins).clamp_min(1e-8)
            self.input_scale.copy_(1.0 / s)

    def freeze(self) -> "OpenUnmix":
        """Eval mode, no gradients (inference)."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def forward(self, mag: Tensor) -> Tensor:
        """``(batch, channels, nb_bins, frames)`` mixture magnitude -> target magnitude, same shape."""
        if mag.dim() != 4 or mag.shape[1] != self.nb_channels or mag.shape[2] != self.nb_output_bins:
            raise AudioError(f"OpenUnmix input: expected (batch, {self.nb_channels}, {self.nb_output_bins}, "
                             f"frames), got {tuple(mag.shape)}")
        batch, channels, _, frames = mag.shape
        mixture = mag.detach()

        # time-major: (frames, batch, channels, bins)
        x = mag.permute(3, 0, 1, 2)[..., : self.nb_bins]
        x = (x + self.input_mean) * self.input_scale

        x = self.fc1(x.reshape(frames * batch, channels * self.nb_bins))
        x = torch.tanh(self.bn1(x)).reshape(frames, batch, self.hidden_size)

        recurrent, _ = self.lstm(x)
        x = torch.cat((x, recurrent), dim=-1).reshape(frames * batch, 2 * self.hidden_size)

        x = F.relu(self.bn2(self.fc2(x)))
        x = self.bn3(self.fc3(x)).reshape(frames, batch, channels, self.nb_output_bins)

        mask = F.relu(x * self.output_scale + self.output_mean)
        return mask.permute(1, 2, 3, 0) * mixture
