"""Separation models: STFT front end, Open-Unmix and U-Net mask estimators, losses, bundles.

Shapes (Open-Unmix 1.3.0 convention): waveforms ``(batch, channels, samples)``, complex STFT
and magnitude spectrograms ``(batch, channels, bins, frames)``. A model maps a mixture
magnitude to a target magnitude of the same shape.
"""

from __future__ import annotations

import inspect
from typing import Optional

from torch import nn

from sepcluster.errors import ConfigError

from .losses import LOSSES, Loss, get_loss, l1, mse, neg_si_sdr, si_sdr
from .stft import ISTFT, STFT, magnitude, nb_frames
from .umx import OpenUnmix, bandwidth_to_max_bin
from .unet import UNet

MODELS: dict[str, type[nn.Module]] = {"umx": OpenUnmix, "unet": UNet}
DEFAULT_BANDWIDTH = 16000.0
_UNSET = object()


def build_model(name: str = "umx", *, n_fft: Optional[int] = None, sample_rate: float = 44100.0,
                bandwidth=_UNSET, **kwargs) -> nn.Module:
    """Build a mask estimator by name (``"umx"`` or ``"unet"``).

    ``kwargs`` are the model's constructor arguments (see :class:`OpenUnmix`, :class:`UNet`).
    Conveniences: ``n_fft`` sets ``nb_bins = n_fft // 2 + 1`` when ``nb_bins`` is not given;
    when ``max_bin`` is not given it is derived from ``bandwidth`` Hz (default 16 kHz, as
    Open-Unmix; ``None`` = all bins) at ``sample_rate`` with
    :func:`bandwidth_to_max_bin`. The model maps magnitudes
    ``(batch, channels, bins, frames) -> (batch, channels, bins, frames)``.
    """
    key = str(name).strip().lower()
    if key not in MODELS:
        raise ConfigError("model", f"unknown model '{name}' (choose from {', '.join(MODELS)})")
    cls = MODELS[key]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"model.{unknown[0]}", f"not an option of model '{key}' "
                                                 f"(accepted: {', '.join(accepted)}, n_fft, sample_rate, bandwidth)")
    if n_fft is not None:
        nb_bins_from_fft = int(n_fft) // 2 + 1
        if kwargs.get("nb_bins") not in (None, nb_bins_from_fft):
            raise ConfigError("model.nb_bins", f"{kwargs['nb_bins']} does not match n_fft={n_fft} "
                                               f"({nb_bins_from_fft} bins)")
        kwargs["nb_bins"] = nb_bins_from_fft
    if kwargs.get("max_bin") is None:
        bw = DEFAULT_BANDWIDTH if bandwidth is _UNSET else bandwidth
        nb_bins = int(kwargs.get("nb_bins", inspect.signature(cls.__init__).parameters["nb_bins"].default))
        kwargs["max_bin"] = bandwidth_to_max_bin(sample_rate, (nb_bins - 1) * 2, bw)
    return cls(**kwargs)


from .bundle import (  # noqa: E402  (bundle uses build_model)
    BundleMeta,
    SeparatorBundle,
    check_state_dict,
    infer_umx_hparams,
    load_bundle,
    save_bundle,
    strip_legacy_umx_keys,
    unwrap_model,
)

__all__ = [
    "STFT", "ISTFT", "magnitude", "nb_frames",
    "OpenUnmix", "UNet", "bandwidth_to_max_bin", "build_model", "MODELS",
    "Loss", "LOSSES", "get_loss", "mse", "l1", "si_sdr", "neg_si_sdr",
    "BundleMeta", "SeparatorBundle", "save_bundle", "load_bundle", "infer_umx_hparams",
    "check_state_dict", "strip_legacy_umx_keys", "unwrap_model",
]
