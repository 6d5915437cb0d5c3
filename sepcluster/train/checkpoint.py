"""Training checkpoints: what one epoch leaves behind, as a :class:`TrainState`, and its two files.

A checkpoint is a folder (local or ``s3://``; Ray Train names them
``checkpoint_epoch<NNNNN>_<stamp>`` inside the run folder) holding:

* ``state.pt``: ``torch.save`` of a dict with the :class:`TrainState` fields as keys (format
  ``sepcluster-train-checkpoint/1``): the model, best model, optimizer, scheduler and scaler
  states, the early-stopping counters, the input statistics, the per-epoch history, the
  attempts (one per start of the worker group), the config and the data description;
  With an EMA of the weights (``ema_decay``), ``state.pt`` also holds ``ema_state`` (the
  average and its step count), after the keys of format 1, which stay as they were;
* ``meta.json``: the small fields (:data:`META_KEYS`) plus ``state_bytes`` and
  ``state_sha256`` of ``state.pt``, so a reader can tell a complete checkpoint from a copy
  cut off by a kill or damaged later (:func:`verified_checkpoint_meta`; :meth:`TrainState.newest`
  skips such a checkpoint with a warning naming it and the problem, and takes the one before).

Plain functions on files: no Ray, usable in a notebook on a downloaded run folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .. import storage
from ..errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_META = "meta.json"
CHECKPOINT_FORMAT = "sepcluster-train-checkpoint/1"
# the fields of meta.json besides the size and digest of state.pt, in their order there
META_KEYS = ("format", "target", "epoch", "finished", "stop_reason", "best_loss", "best_epoch", "model_name",
             "hparams", "architecture", "signal", "attempts")
_FOLDER = re.compile(r"^checkpoint_epoch(\d+)_")


@dataclass
class TrainState:
    """Everything a training run needs to continue after ``epoch`` (the fields of ``state.pt``).

    ``epoch``: epochs done (0 before the first). ``finished`` / ``stop_reason``: why training
    stopped (``"early stopping: ..."``, ``"reached epochs=N"``), None while running.
    ``model_name``, ``hparams`` (the model's constructor arguments), ``model_kwargs``
    (:meth:`TrainConfig.model_kwargs`), ``architecture``, ``signal`` (sample rate, channels):
    what a resumed run must match. ``model_state`` / ``best_model_state``: CPU state dicts of
    the last and the best (lowest validation loss, at ``best_epoch``) weights. ``best_loss``,
    ``bad_epochs``: early stopping. ``optimizer``, ``scheduler``, ``scaler``: their state
    dicts (scaler None without fp16). ``input_mean`` / ``input_scale``: the dataset mean and
    scale ``(max_bin,)`` the model normalises with (None for models without them).
    ``history``: one metrics dict per epoch. ``attempts``: one dict per start of the workers
    (``ended``: ``[epoch, unix time]`` of each epoch it finished). ``config``:
    :meth:`TrainConfig.to_dict`. ``data``: :meth:`DataSpec.describe`. ``ema_state``:
    :meth:`sepcluster.train.ema.EMA.state_dict` (None without an EMA; then not written).
    """

    target: str
    format: str = CHECKPOINT_FORMAT
    epoch: int = 0
    finished: bool = False
    stop_reason: Optional[str] = None
    model_name: Optional[str] = None
    hparams: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)
    architecture: dict = field(default_factory=dict)
    signal: dict = field(default_factory=dict)
    model_state: Optional[dict] = None
    best_model_state: Optional[dict] = None
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    optimizer: Optional[dict] = None
    scheduler: Optional[dict] = None
    scaler: Optional[dict] = None
    input_mean: Any = None
    input_scale: Any = None
    history: list = field(default_factory=list)
    attempts: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    ema_state: Optional[dict] = None

    # ------------------------------------------------------------------ dict form (state.pt)
    def to_dict(self) -> dict:
        """The dict saved as ``state.pt`` (keys in the order of format 1, then ``ema_state`` when there
        is one; values not copied)."""
        out = {name: getattr(self, name) for name in _STATE_KEYS}
        if self.ema_state is not None:
            out["ema_state"] = self.ema_state
        return out

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> "TrainState":
        """A TrainState from a ``state.pt`` dict (``history``, ``attempts``, ``scaler``, ``ema_state`` may be absent)."""
        known = {k: state[k] for k in (*_STATE_KEYS, "ema_state") if k in state}
        return cls(**known)

    def meta(self) -> dict:
        """The ``meta.json`` fields (without the size and digest of ``state.pt``), plus ``metrics``: the
        last epoch's figures (train/valid loss, SI-SDR, ...), which the driver's progress bar reads."""
        meta = {k: getattr(self, k) for k in META_KEYS}
        meta["metrics"] = dict(self.history[-1]) if self.history else {}
        return meta

    # ------------------------------------------------------------------ files
    def write(self, folder: str) -> None:
        """Write ``state.pt`` (torch) and ``meta.json`` into the local ``folder``."""
        import torch

        buf = io.BytesIO()
        torch.save(self.to_dict(), buf)
        data = buf.getvalue()
        with open(os.path.join(folder, CHECKPOINT_FILE), "wb") as f:
            f.write(data)
        meta = self.meta()
        meta["state_bytes"] = len(data)
        meta["state_sha256"] = hashlib.sha256(data).hexdigest()
        with open(os.path.join(folder, CHECKPOINT_META), "w") as f:
            json.dump(meta, f, indent=2, default=str)

    @classmethod
    def read(cls, uri: str) -> "TrainState":
        """The state saved by :meth:`write` in the checkpoint folder ``uri`` (local or ``s3://``)."""
        import torch

        data = storage.read_bytes(storage.join(uri, CHECKPOINT_FILE))
        return cls.from_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=False))

    @staticmethod
    def newest(run_uri: str) -> Optional[dict]:
        """The newest complete ``checkpoint_epoch*`` folder of a Ray run folder: ``{"uri", "meta"}`` or None.

        Candidates are tried newest epoch first; one counts when :func:`verified_checkpoint_meta`
        accepts it (a copy cut off by a kill, or damaged, is skipped with a warning naming it).
        """
        if not storage.isdir(run_uri):
            return None
        found = []
        for folder in storage.list_dirs(run_uri):
            m = _FOLDER.match(storage.basename(folder))
            if m:
                found.append((int(m.group(1)), folder))
        for _epoch, folder in sorted(found, reverse=True):
            meta = verified_checkpoint_meta(folder)
            if meta is not None:
                return {"uri": folder, "meta": meta}
            log.warning("skipping checkpoint %s: %s; resuming from an earlier one", storage.redact(folder),
                        checkpoint_problem(folder))
        return None


_STATE_KEYS = ("format", "target", "epoch", "finished", "stop_reason", "model_name", "hparams", "model_kwargs",
               "architecture", "signal", "model_state", "best_model_state", "best_loss", "best_epoch", "bad_epochs",
               "optimizer", "scheduler", "scaler", "input_mean", "input_scale", "history", "attempts", "config",
               "data")  # the keys of state.pt, in their order there


def verified_checkpoint_meta(uri: str) -> Optional[dict]:
    """``meta.json`` of the checkpoint folder ``uri`` (local or ``s3://``) when it is complete, else None."""
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


def checkpoint_problem(uri: str) -> str:
    """Why the checkpoint folder ``uri`` is not complete, in words ("" when it is)."""
    try:
        meta = json.loads(storage.read_text(storage.join(uri, CHECKPOINT_META)))
    except (OSError, ValueError, UnicodeDecodeError):
        return f"{CHECKPOINT_META} is missing or unreadable"
    try:
        data = storage.read_bytes(storage.join(uri, CHECKPOINT_FILE))
    except OSError:
        return f"{CHECKPOINT_FILE} is missing or unreadable"
    if not isinstance(meta, dict) or meta.get("state_bytes") != len(data):
        size = meta.get("state_bytes") if isinstance(meta, dict) else None
        return f"{CHECKPOINT_FILE} is {len(data)} bytes, {CHECKPOINT_META} says {size} (cut off or corrupt)"
    if meta.get("state_sha256") != hashlib.sha256(data).hexdigest():
        return f"the SHA-256 of {CHECKPOINT_FILE} differs from {CHECKPOINT_META}'s (corrupt)"
    return ""


def is_done(meta: Mapping[str, Any], epochs: int) -> bool:
    """Whether a checkpoint (its meta) needs no more training for ``epochs`` in all: it stopped early,
    or it reached ``epochs`` (a finished run can be extended by raising ``epochs``)."""
    if int(meta.get("epoch") or 0) >= epochs:
        return True
    return bool(meta.get("finished")) and str(meta.get("stop_reason") or "").startswith("early stopping")


def check_compatible(meta: Mapping[str, Any], architecture: dict, signal: dict, target: str, where: str) -> None:
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


__all__ = ["TrainState", "verified_checkpoint_meta", "checkpoint_problem", "is_done", "check_compatible", "CHECKPOINT_FILE",
           "CHECKPOINT_META", "CHECKPOINT_FORMAT", "META_KEYS", "latest_epoch_meta"]


def latest_epoch_meta(run_uri: str) -> Optional[dict]:
    """The ``meta.json`` of the highest-epoch checkpoint folder of a run, unverified (for progress
    display while training runs: a copy still being written reads as None)."""
    import json

    from .. import storage

    try:
        folders = storage.list_dirs(run_uri) if storage.isdir(run_uri) else []
    except OSError:
        return None
    found = sorted(((int(m.group(1)), f) for f in folders if (m := _FOLDER.match(storage.basename(f)))), reverse=True)
    for _epoch, folder in found[:2]:
        try:
            return json.loads(storage.read_text(storage.join(folder, CHECKPOINT_META)))
        except (OSError, ValueError):
            continue
    return None
