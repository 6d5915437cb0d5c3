"""Separation models: the registry of model families, STFT front end, Open-Unmix and U-Net, losses, bundles.

Shapes (Open-Unmix 1.3.0 convention): waveforms ``(batch, channels, samples)``, complex STFT
and magnitude spectrograms ``(batch, channels, bins, frames)``. A mask estimator maps a
mixture magnitude to a target magnitude of the same shape.

* :mod:`~sepcluster.models.registry`: :class:`ModelFamily`, :func:`build_model`,
  :func:`model_names`, :func:`get_family` (the one list of model families).
* :mod:`~sepcluster.models.stft`, :mod:`~sepcluster.models.umx`, :mod:`~sepcluster.models.unet`,
  :mod:`~sepcluster.models.losses` (:data:`LOSSES`, the one list of loss names),
  :mod:`~sepcluster.models.bundle` (separator bundles), :mod:`~sepcluster.models.openunmix_files`
  (official Open-Unmix weights).

Names are imported on first use, so ``import sepcluster.models.registry`` (the training
config, the CLI) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "registry": ("ModelFamily", "register", "families", "model_names", "get_family", "build_model",
                 "DEFAULT_BANDWIDTH"),
    "stft": ("STFT", "ISTFT", "magnitude", "nb_frames"),
    "umx": ("OpenUnmix", "bandwidth_to_max_bin"),
    "unet": ("UNet",),
    "losses": ("Loss", "LOSSES", "get_loss", "mse", "l1", "si_sdr", "neg_si_sdr"),
    "bundle": ("BundleMeta", "SeparatorBundle", "save_bundle", "load_bundle", "check_state_dict", "unwrap_model"),
    "openunmix_files": ("infer_umx_hparams", "strip_legacy_umx_keys"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    if name in _EXPORTS:  # a submodule not imported yet
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_EXPORTS))
