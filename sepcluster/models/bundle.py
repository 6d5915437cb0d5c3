"""Separator bundles: a folder with one weights file per target plus ``bundle.json``.

Layout (local path, ``file://`` or ``s3://``)::

    <bundle>/vocals.pth      state dict of the vocals model (torch.save)
    <bundle>/drums.pth       ...
    <bundle>/bundle.json     BundleMeta: sample rate, STFT, architecture, targets, provenance

``bundle.json`` is written last, so a bundle whose json is present is complete; it records
each weights file's SHA-256, checked on load.

A folder of official Open-Unmix files (``vocals.pth`` or torch-hub style
``vocals-<hash>.pth`` state dicts, optionally with ``separator.json`` and ``<target>.json``)
loads too: the architecture (channels, hidden size, layers, bins, max_bin) is read from the
state dict's shapes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from sepcluster import storage
from sepcluster.errors import ConfigError, DataError, StorageError

from .openunmix_files import official_file, official_files, official_meta, read_json, strip_legacy_umx_keys
from .registry import build_model, model_names

BUNDLE_JSON = "bundle.json"
BUNDLE_FORMAT = "sepcluster-bundle/1"
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class BundleMeta:
    """What a separator bundle holds besides the weights (``bundle.json``).

    ``model_kwargs`` are the :func:`sepcluster.models.build_model` arguments of every target
    (``target_kwargs[target]`` overrides them for a target whose architecture differs).
    ``max_bin``, ``hidden_size``, ``nb_layers`` and ``nb_channels`` repeat the architecture for
    readers; ``save_bundle`` fills them from the models. ``weights`` maps target ->
    ``{"file": name, "sha256": hex}`` (filled by ``save_bundle``).
    """

    model: str = "umx"
    targets: list = field(default_factory=list)
    sample_rate: float = 44100.0
    n_fft: int = 4096
    n_hop: int = 1024
    nb_channels: Optional[int] = None
    max_bin: Optional[int] = None
    bandwidth: Optional[float] = None
    hidden_size: Optional[int] = None
    nb_layers: Optional[int] = None
    model_kwargs: dict = field(default_factory=dict)
    target_kwargs: dict = field(default_factory=dict)
    training_data: Optional[str] = None
    recipe_hash: Optional[str] = None
    extra: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    source: str = "sepcluster"
    format: str = BUNDLE_FORMAT

    @property
    def nb_bins(self) -> int:
        """Spectrogram bins, ``n_fft // 2 + 1``."""
        return int(self.n_fft) // 2 + 1

    def kwargs_for(self, target: str) -> dict:
        """``build_model`` keyword arguments for ``target``."""
        return {**self.model_kwargs, **self.target_kwargs.get(target, {})}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "bundle.json") -> "BundleMeta":
        """Parse ``bundle.json`` content; unknown keys go to ``extra``; ``where`` names the source."""
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        unknown = {k: v for k, v in data.items() if k not in names}
        meta = cls(**known)
        if unknown:
            meta.extra = {**meta.extra, **unknown}
        meta.validate(where)
        return meta

    def validate(self, where: str = "bundle meta") -> None:
        """Raise ConfigError (field named ``<where>.<field>``) for values out of range."""
        def bad(name: str, problem: str) -> ConfigError:
            return ConfigError(f"{where}.{name}", problem)

        if not isinstance(self.model, str) or not self.model:
            raise bad("model", f"must be a model name, got {self.model!r}")
        if isinstance(self.targets, str) or not isinstance(self.targets, (list, tuple)):
            raise bad("targets", f"must be a list of target names, got {self.targets!r}")
        for t in self.targets:
            if not isinstance(t, str) or not _TARGET_NAME.match(t):
                raise bad("targets", f"invalid target name {t!r} (letters, digits, _ . + -)")
        if len(set(self.targets)) != len(self.targets):
            raise bad("targets", f"duplicate target names in {self.targets}")
        try:
            ok = float(self.sample_rate) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise bad("sample_rate", f"must be > 0, got {self.sample_rate!r}")
        if not isinstance(self.n_fft, int) or self.n_fft < 2:
            raise bad("n_fft", f"must be an integer >= 2, got {self.n_fft!r}")
        if not isinstance(self.n_hop, int) or not 0 < self.n_hop <= self.n_fft:
            raise bad("n_hop", f"must be an integer in 1..n_fft ({self.n_fft}), got {self.n_hop!r}")
        if self.max_bin is not None and not (isinstance(self.max_bin, int) and 0 < self.max_bin <= self.nb_bins):
            raise bad("max_bin", f"must be in 1..{self.nb_bins} (n_fft // 2 + 1), got {self.max_bin!r}")
        for name in ("model_kwargs", "target_kwargs", "extra", "weights"):
            if not isinstance(getattr(self, name), dict):
                raise bad(name, f"must be a JSON object, got {getattr(self, name)!r}")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default) + "\n"

    def bundle_id(self) -> str:
        """Short (16 hex) SHA-256 of the canonical JSON, which includes each weights file's
        name and SHA-256: equal ids mean the same architecture, metadata and weights."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=_json_default)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@dataclass
class SeparatorBundle:
    """Loaded per-target models (eval mode) and their :class:`BundleMeta`."""

    uri: str
    meta: BundleMeta
    models: dict

    @property
    def targets(self) -> list:
        return list(self.models)

    @property
    def bundle_id(self) -> str:
        """Short hash of ``bundle.json`` (architecture, metadata, weights names and digests)."""
        return self.meta.bundle_id()

    @property
    def device(self) -> torch.device:
        for m in self.models.values():
            for p in m.parameters():
                return p.device
        return torch.device("cpu")

    def to(self, device: Union[str, torch.device]) -> "SeparatorBundle":
        for m in self.models.values():
            m.to(device)
        return self

    def stft(self):
        """The bundle's :class:`~sepcluster.models.stft.STFT` (Hann, ``center=True``)."""
        from .stft import STFT

        return STFT(self.meta.n_fft, self.meta.n_hop, center=True)

    def istft(self):
        """The bundle's :class:`~sepcluster.models.stft.ISTFT`."""
        from .stft import ISTFT

        return ISTFT(self.meta.n_fft, self.meta.n_hop, center=True)

    @torch.no_grad()
    def estimate_magnitudes(self, mag: Tensor, targets: Optional[Iterable[str]] = None) -> dict:
        """Run each target model on a mixture magnitude.

        ``mag``: ``(batch, channels, bins, frames)`` with ``bins = n_fft // 2 + 1``; moved to
        the models' device. Returns ``{target: (batch, channels, bins, frames)}`` in target
        order.
        """
        names = list(self.models) if targets is None else list(targets)
        for t in names:
            if t not in self.models:
                raise ConfigError("targets", f"'{t}' is not loaded from bundle {storage.redact(self.uri)} "
                                             f"(loaded: {', '.join(self.models)})")
        mag = mag.to(self.device)
        return {t: self.models[t](mag) for t in names}


# ---------------------------------------------------------------------------------------
# state dict helpers


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel / DataParallel / torch.compile wrapper."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _state_to_bytes(model: nn.Module) -> bytes:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _load_state(data: bytes, where: str) -> dict:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        from .safeload import load_error_text

        raise DataError(f"{where}: cannot read a torch state dict: {load_error_text(exc)}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # a training checkpoint
    if not isinstance(obj, Mapping) or not obj:
        raise DataError(f"{where}: expected a non-empty state dict (name -> tensor), got {type(obj).__name__}")
    for prefix in ("module.", "_orig_mod."):  # saved from a DDP / torch.compile wrapper
        if all(isinstance(k, str) and k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise DataError(f"{where}: expected a state dict of tensors, but '{bad[0]}' is "
                        f"{type(obj[bad[0]]).__name__}")
    return dict(obj)


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], where: str) -> None:
    """Raise DataError naming ``where`` and the first mismatching key/shape when ``state``
    does not fit ``model`` exactly (missing keys, extra keys, other shapes)."""
    expected = model.state_dict()
    arch = getattr(model, "name", type(model).__name__)
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing key '{missing[0]}'" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        if extra:
            parts.append(f"unexpected key '{extra[0]}'" + (f" (+{len(extra) - 1} more)" if len(extra) > 1 else ""))
        raise DataError(f"{where}: not a state dict of this bundle's '{arch}' architecture: {'; '.join(parts)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise DataError(f"{where}: not a state dict of this bundle's '{arch}' architecture: key '{k}' has "
                            f"shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")


# ---------------------------------------------------------------------------------------
# save


def save_bundle(uri: str, models: Mapping[str, nn.Module], meta: Optional[BundleMeta] = None) -> BundleMeta:
    """Write a separator bundle to the folder ``uri`` (local path, ``file://`` or ``s3://``).

    ``models``: target name -> model built by :func:`sepcluster.models.registry.build_model` (it must
    have ``hparams()``). ``meta`` gives the sample rate, STFT, provenance (training data URI,
    recipe hash, extra); its architecture fields, ``targets`` and ``weights`` are filled from
    the models. Each ``<target>.pth`` is written atomically with ``storage.write_bytes``, then
    ``bundle.json``. Returns the written meta (``meta.bundle_id()`` identifies the bundle).
    """
    if not models:
        raise ConfigError("models", f"no models to save into bundle {storage.redact(uri)}")
    meta = dataclasses.replace(meta) if meta is not None else BundleMeta()
    meta.model_kwargs = dict(meta.model_kwargs)
    meta.target_kwargs = {}
    meta.weights = {}
    meta.extra = dict(meta.extra)
    meta.targets = list(models)
    if meta.model not in model_names():
        raise ConfigError("meta.model", f"unknown model '{meta.model}' (choose from {', '.join(model_names())})")
    meta.validate("meta")

    models = {t: unwrap_model(m) for t, m in models.items()}
    first_kwargs: Optional[dict] = None
    for target, model in models.items():
        arch = getattr(model, "name", None)
        if arch != meta.model:
            raise ConfigError(f"models.{target}", f"is a '{arch or type(model).__name__}' model but meta.model is "
                                                  f"'{meta.model}'")
        if not hasattr(model, "hparams"):
            raise ConfigError(f"models.{target}", f"{type(model).__name__} has no hparams(); build models with "
                                                  f"sepcluster.models.build_model")
        hp = dict(model.hparams())
        if hp.get("nb_bins") != meta.nb_bins:
            raise ConfigError(f"models.{target}", f"has {hp.get('nb_bins')} bins but meta.n_fft={meta.n_fft} "
                                                  f"gives {meta.nb_bins}")
        if first_kwargs is None:
            first_kwargs = hp
        elif hp != first_kwargs:
            meta.target_kwargs[target] = {k: v for k, v in hp.items() if first_kwargs.get(k) != v}
    assert first_kwargs is not None
    meta.model_kwargs = first_kwargs
    for name in ("nb_channels", "max_bin", "hidden_size", "nb_layers"):
        value = first_kwargs.get(name)
        if value is None:
            continue
        current = getattr(meta, name)
        if current is not None and current != value:
            raise ConfigError(f"meta.{name}", f"is {current} but the models have {value}")
        setattr(meta, name, value)
    if meta.bandwidth is not None and meta.max_bin is not None:
        from .umx import bandwidth_to_max_bin

        expected_bin = bandwidth_to_max_bin(meta.sample_rate, meta.n_fft, meta.bandwidth)
        if expected_bin != meta.max_bin:
            raise ConfigError("meta.bandwidth", f"{meta.bandwidth} Hz at {meta.sample_rate} Hz / n_fft {meta.n_fft} "
                                                f"gives max_bin {expected_bin}, but the models use {meta.max_bin}")

    storage.makedirs(uri)
    for target, model in models.items():
        data = _state_to_bytes(model)
        name = f"{target}.pth"
        storage.write_bytes(storage.join(uri, name), data)
        meta.weights[target] = {"file": name, "sha256": hashlib.sha256(data).hexdigest()}
    storage.write_text(storage.join(uri, BUNDLE_JSON), meta.to_json())
    return meta


# ---------------------------------------------------------------------------------------
# load


def _parse_targets(targets: Union[None, str, Iterable[str]]) -> Optional[list]:
    if targets is None:
        return None
    out = [targets] if isinstance(targets, str) else list(targets)
    if not out:
        raise ConfigError("targets", "is empty")
    return out


def load_bundle(uri: str, targets: Union[None, str, Iterable[str]] = None,
                device: Union[str, torch.device] = "cpu") -> SeparatorBundle:
    """Load a separator bundle folder, a folder of official Open-Unmix ``.pth`` files, or one such file.

    ``targets``: None (all) or a list of names. Models are built with
    :func:`sepcluster.models.registry.build_model`, loaded with ``strict=True``, moved to ``device``
    and put in eval mode. Errors: StorageError (folder missing), ConfigError (a requested
    target not in the bundle), DataError (no weights, corrupt file, digest mismatch, a state
    dict of another architecture: the message names the file and the key/shape).
    """
    where = storage.redact(uri)
    if not storage.exists(uri):
        raise StorageError(f"{where}: separator bundle folder not found")
    wanted = _parse_targets(targets)
    if not storage.isdir(uri):
        if str(uri).lower().endswith(".pth"):  # one official Open-Unmix weights file
            files = official_file(uri)
            return _load_official(storage.parent(uri), files, wanted, device, where)
        raise StorageError(f"{where}: not a folder (a separator bundle is a folder with <target>.pth files "
                           f"and bundle.json) nor an Open-Unmix .pth file")

    json_uri = storage.join(uri, BUNDLE_JSON)
    if storage.exists(json_uri):
        meta = BundleMeta.from_dict(read_json(json_uri), where=f"{where}/{BUNDLE_JSON}")
        if meta.model not in model_names():
            raise DataError(f"{where}/{BUNDLE_JSON}: unknown model '{meta.model}' "
                            f"(this sepcluster knows {', '.join(model_names())})")
        available = list(meta.targets)
        chosen = available if wanted is None else wanted
        _check_wanted(chosen, available, where)
        models = {}
        for t in chosen:
            entry = meta.weights.get(t, {})
            file_uri = storage.join(uri, entry.get("file", f"{t}.pth"))
            if not storage.exists(file_uri):
                raise DataError(f"{storage.redact(file_uri)}: weights of target '{t}' listed in {BUNDLE_JSON} "
                                f"are missing")
            data = storage.read_bytes(file_uri)
            digest = entry.get("sha256")
            if digest and hashlib.sha256(data).hexdigest() != digest:
                raise DataError(f"{storage.redact(file_uri)}: SHA-256 differs from {BUNDLE_JSON} "
                                f"(file changed or incomplete)")
            state = _load_state(data, storage.redact(file_uri))
            if meta.model == "umx":
                state, _ = strip_legacy_umx_keys(state)
            try:
                model = build_model(meta.model, **meta.kwargs_for(t))
            except ConfigError as exc:
                raise DataError(f"{where}/{BUNDLE_JSON}: cannot build '{meta.model}' for target '{t}': {exc}") from exc
            models[t] = _finish(model, state, storage.redact(file_uri), device)
        return SeparatorBundle(uri=uri, meta=meta, models=models)

    files = official_files(uri)
    if not files:
        raise DataError(f"{where}: no {BUNDLE_JSON} and no <target>.pth weights files: not a separator bundle")
    return _load_official(uri, files, wanted, device, where)


def _load_official(folder: str, files: dict, wanted, device, where: str) -> SeparatorBundle:
    """A bundle of official Open-Unmix weights ``files`` (``{target: URI}``) with the JSON files of ``folder``."""
    available = sorted(files)
    chosen = available if wanted is None else wanted
    _check_wanted(chosen, available, where)
    states, digests, legacy = {}, {}, {}
    for t in chosen:
        data = storage.read_bytes(files[t])
        digests[t] = hashlib.sha256(data).hexdigest()
        states[t], found = strip_legacy_umx_keys(_load_state(data, storage.redact(files[t])))
        legacy.update({k: v for k, v in found.items() if k not in legacy})
    meta = BundleMeta(**official_meta(folder, files, states, legacy))
    meta.validate(f"{where} (Open-Unmix weights)")
    for t in chosen:
        meta.weights[t] = {"file": storage.basename(files[t]), "sha256": digests[t]}
    models = {}
    for t in chosen:
        model = build_model("umx", **meta.kwargs_for(t))
        models[t] = _finish(model, states[t], storage.redact(files[t]), device)
    return SeparatorBundle(uri=folder if len(files) > 1 else next(iter(files.values())), meta=meta, models=models)


def _check_wanted(chosen: list, available: list, where: str) -> None:
    missing = [t for t in chosen if t not in available]
    if missing:
        raise ConfigError("targets", f"target '{missing[0]}' is not in bundle {where} "
                                     f"(available: {', '.join(available) or 'none'})")


def _finish(model: nn.Module, state: dict, where: str, device) -> nn.Module:
    check_state_dict(model, state, where)
    model.load_state_dict(state, strict=True)
    model.to(device)
    model.eval()
    return model
