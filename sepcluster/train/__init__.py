"""The ``train`` job: separators with Ray Train DDP, checkpoints, resume and MLflow.

* :func:`train` (runner): one TorchTrainer per target (umx, unet; run concurrently, see
  :mod:`~sepcluster.train.fanout`) or one for a multi-source model of all targets (htdemucs,
  bs_roformer, mel_roformer); resumable, logged; writes a bundle or the model's own file
  (:mod:`~sepcluster.train.publish`), also an MLflow pyfunc model.
* :class:`TrainConfig` / :func:`load_train_config` (config): the flat, checked YAML config.
* :mod:`~sepcluster.train.data`: the three data sources (Parquet, on-the-fly, stem library);
  :mod:`~sepcluster.train.sources` on the workers, :mod:`~sepcluster.train.augment` (stem augmentation).
* :mod:`~sepcluster.train.loop`: the per-worker ``train_func`` (Ray Train), read as the recipe.
* :mod:`~sepcluster.train.epoch`: the plain steps (one epoch, validation, statistics, early
  stopping), usable without Ray; :mod:`~sepcluster.train.multisource` (validation of a
  multi-source model), :mod:`~sepcluster.train.ema` (EMA of the weights),
  :mod:`~sepcluster.train.diagnostics` (spectrogram PNG and FLAC excerpts).
* :mod:`~sepcluster.train.distributed`: rank/world/device, collectives, Ray Train's session.
* :mod:`~sepcluster.train.checkpoint`: :class:`TrainState`, the checkpoint files (``state.pt``,
  ``meta.json``).
* :func:`evaluate_heldout` (quality): SI-SDR improvement of a separator on held-out songs.

Imports are lazy so ``import sepcluster.train`` stays light (no torch or ray).
"""

from __future__ import annotations

from .config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config", "train", "TrainResult", "TargetResult", "TrainState", "evaluate_heldout"]


def __getattr__(name: str):
    if name in ("train", "TrainResult", "TargetResult"):
        from . import runner

        return getattr(runner, name)
    if name == "TrainState":
        from .checkpoint import TrainState

        return TrainState
    if name == "evaluate_heldout":
        from .quality import evaluate_heldout

        return evaluate_heldout
    raise AttributeError(f"module 'sepcluster.train' has no attribute {name!r}")
