"""Trained multi-source models written in the formats the separate job (and their own projects) load.

* HTDemucs -> ``<name>.th``: the package ``demucs.states.serialize_model`` writes, a dict
  ``{klass, args, kwargs, state, training_args}`` saved with ``torch.save`` (``klass`` the class,
  ``args``/``kwargs`` its constructor's arguments as ``capture_init`` recorded them, ``state`` the
  state dict in float32, ``training_args`` a plain dict: here sepcluster's training config).
  ``demucs.states.load_model`` and :func:`sepcluster.models.demucs.load_demucs` read it.
* BS-/Mel-Band RoFormer -> ``<name>.ckpt`` (the state dict, as Music-Source-Separation-Training
  saves it) and ``<name>.yaml`` beside it (MSST's config: ``audio``, ``model`` (the constructor
  options, tuples as ``!!python/tuple``), ``training`` (``instruments``: the sources in order),
  ``inference``; plus ``model_type``). MSST's ``get_model_from_config`` + ``load_state_dict`` and
  :func:`sepcluster.models.roformer.load_roformer` read them.

Every file is written atomically (:func:`sepcluster.storage.write_bytes`); the YAML last, so a
``.ckpt`` with its YAML is complete. :func:`export_path` says where ``--out`` puts them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import torch
import yaml
from torch import nn

from sepcluster import storage
from sepcluster.errors import ConfigError

SUFFIXES = {"demucs": ".th", "msst": ".ckpt"}
MSST_TYPES = {"bs_roformer": "bs_roformer", "mel_roformer": "mel_band_roformer"}


@dataclass(frozen=True)
class Exported:
    """What :func:`export_model` wrote: ``path`` (what ``sepcluster separate --model`` takes) and the
    ``files`` (``path`` first, then e.g. the MSST YAML)."""

    path: str
    files: tuple
    kind: str


def export_path(out: str, family: str, export: str) -> tuple[str, Optional[str]]:
    """``(model file, YAML or None)`` for ``--out``: the file itself when ``out`` ends in the format's
    suffix (``.th``, ``.ckpt``), else ``out`` is a folder holding ``<family>.th`` /
    ``<family>.ckpt`` + ``<family>.yaml``. ConfigError names ``out`` for another model suffix."""
    suffix = SUFFIXES[export]
    low = str(out).lower().rstrip("/")
    if low.endswith(suffix):
        path = str(out).rstrip("/")
    elif low.endswith((".th", ".ckpt", ".pth", ".pt", ".safetensors", ".yaml", ".yml")):
        raise ConfigError("out", f"{storage.redact(str(out))}: a trained {family} is a {suffix} file "
                                 f"(or give a folder)")
    else:
        path = storage.join(out, f"{family}{suffix}")
    if export != "msst":
        return path, None
    return path, path[: -len(suffix)] + ".yaml"


def save_htdemucs(model: nn.Module, uri: str, training_args: Optional[dict] = None) -> str:
    """Write ``model`` (a ``demucs.htdemucs.HTDemucs``) as demucs' ``.th`` package at ``uri``."""
    args, kwargs = model._init_args_kwargs
    package = {"klass": type(model), "args": list(args), "kwargs": dict(kwargs),
               "state": {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
                         for k, v in model.state_dict().items()},
               "training_args": dict(training_args or {})}
    buf = io.BytesIO()
    torch.save(package, buf)
    storage.write_bytes(uri, buf.getvalue())
    return uri


def msst_config(model: nn.Module, family: str, sources: list, sample_rate: int, chunk_size: int,
                training: Optional[dict] = None, num_overlap: int = 4) -> dict:
    """MSST's YAML config of a :class:`~sepcluster.models.multisource.BSRoformerNet` /
    :class:`~sepcluster.models.multisource.MelRoformerNet` trained on ``sources``."""
    options = dict(model.msst_options)
    return {"model_type": MSST_TYPES[family],
            "audio": {"chunk_size": int(chunk_size), "num_channels": 2 if options["stereo"] else 1,
                      "sample_rate": int(sample_rate), "min_mean_abs": 0.0},
            "model": options,
            "training": {"instruments": list(sources), "target_instrument": None, "use_amp": True,
                         **{k: v for k, v in (training or {}).items() if k not in ("instruments", "target_instrument")}},
            "inference": {"batch_size": 1, "num_overlap": int(num_overlap), "normalize": False}}


def save_msst(model: nn.Module, ckpt: str, config_uri: str, config: dict) -> tuple[str, str]:
    """Write the state dict at ``ckpt`` and ``config`` (tuples as ``!!python/tuple``) at ``config_uri``."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    storage.write_bytes(ckpt, buf.getvalue())
    storage.write_text(config_uri, yaml.dump(config, sort_keys=False, default_flow_style=False))
    return ckpt, config_uri


def export_model(model: nn.Module, family: str, export: str, out: str, *, sources: list, sample_rate: int,
                 chunk_size: int, training: Optional[dict] = None) -> Exported:
    """Write a trained multi-source ``model`` of ``family`` (registry ``export``: ``demucs`` or ``msst``) to
    ``out`` (see :func:`export_path`). ``training``: plain values recorded with it (the training config)."""
    path, config_uri = export_path(out, family, export)
    if storage.parent(path) and not storage.is_remote(path):
        storage.makedirs(storage.parent(path))
    if export == "demucs":
        return Exported(save_htdemucs(model, path, training), (path,), "demucs")
    if export == "msst":
        config = msst_config(model, family, sources, sample_rate, chunk_size, _plain(training))
        save_msst(model, path, config_uri, config)
        return Exported(path, (path, config_uri), MSST_TYPES[family])
    raise ConfigError("model", f"'{family}' has no file export ({export})")


def _plain(values: Optional[dict]) -> dict:
    """``values`` with only YAML-safe scalars and lists of them (the training config, for MSST's YAML)."""
    out = {}
    for key, value in (values or {}).items():
        if value is None or isinstance(value, (str, int, float, bool)):
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
            out[key] = list(value)
    return out


__all__ = ["Exported", "export_path", "export_model", "save_htdemucs", "save_msst", "msst_config", "SUFFIXES"]
