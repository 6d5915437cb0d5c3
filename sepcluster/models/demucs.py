"""Demucs v4 model files and bags of models, loaded without unpickling the user's file wholesale.

Formats (local path, ``file://`` or ``s3://``):

- ``<name>.th``: what ``demucs.states.serialize_model`` + ``torch.save`` write: a pickled dict
  ``{klass, args, kwargs, state[, training_args]}``, ``klass`` one of ``demucs.htdemucs.HTDemucs``,
  ``demucs.hdemucs.HDemucs`` (``demucs.wdemucs.WDemucs`` is its old alias), ``demucs.demucs.Demucs``;
  ``kwargs`` may hold a ``fractions.Fraction`` (HTDemucs' ``segment``); ``state`` is the state dict
  (float16 when saved with ``half=True``, demucs' default). Loaded with ``torch.load(weights_only=True)``
  and exactly those classes and ``Fraction`` allowlisted: any other global is refused and nothing runs.
  diffq-quantized states (``mdx_q``, ``mdx_extra_q``) are refused.
- ``<sig>.safetensors``: the layout demucs 4.1.0 downloads from the HuggingFace hub (tensors, with
  ``klass``/``args``/``kwargs`` as JSON in the metadata, fractions as ``{"_type": "fraction", ...}``).
- a bag of models: a YAML ``models: [sig, ...]`` with optional ``weights`` (one list per model, one
  weight per source) and ``segment`` (seconds), the models beside it as demucs' local repo names them:
  ``<sig>.th``, ``<sig>-<sha256 prefix>.th`` (the prefix is checked, as demucs does) or
  ``<sig>.safetensors``. This is the shape of demucs' ``htdemucs_ft.yaml`` / ``htdemucs_6s.yaml``.

:func:`load_demucs` returns a :class:`DemucsModel`: the ``nn.Module`` s in eval mode on the CPU and
what chunked inference needs. Models map ``(batch, audio_channels, samples)`` to
``(batch, len(sources), audio_channels, samples)``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import posixpath
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from torch import nn

from sepcluster import storage
from sepcluster.errors import ConfigError, DataError

from .safeload import load_yaml_tuples, state_mismatch, torch_load

TH_EXPECTED = "a demucs model package (.th: a dict klass/args/kwargs/state saved by demucs)"
BAG_KEYS = ("models", "weights", "segment")


def _classes() -> dict[str, type]:
    """Pickled name -> class of every demucs model class a file may name."""
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs

    return {"demucs.htdemucs.HTDemucs": HTDemucs, "demucs.hdemucs.HDemucs": HDemucs,
            "demucs.wdemucs.WDemucs": HDemucs, "demucs.demucs.Demucs": Demucs}


def _allowed_globals() -> list:
    classes = _classes()
    return [Fraction] + [(cls, name) if name != f"{cls.__module__}.{cls.__qualname__}" else cls
                         for name, cls in classes.items()]


@dataclass
class DemucsModel:
    """A demucs model or bag of models, on the CPU, in eval mode.

    ``models[i]`` maps ``(batch, audio_channels, samples)`` to
    ``(batch, len(sources), audio_channels, samples)``. ``weights[i][k]`` is model ``i``'s weight
    for source ``k`` (all ones for a single model); a bag's estimate of source ``k`` is
    ``sum_i weights[i][k] * estimate_i[k] / sum_i weights[i][k]`` (demucs' ``apply_model``).
    ``segments[i]`` is model ``i``'s segment in seconds after the bag's ``segment`` override
    (``Fraction`` for HTDemucs); :meth:`segment_length` gives it in samples as demucs computes it.
    """

    models: list
    weights: list
    sources: list
    samplerate: int
    audio_channels: int
    files: list

    @property
    def is_bag(self) -> bool:
        return len(self.models) > 1

    @property
    def segments(self) -> list:
        return [m.segment for m in self.models]

    @property
    def segment(self) -> float:
        """The shortest segment of the models, in seconds (the only one for a single model)."""
        return float(min(self.segments))

    def segment_length(self, index: int = 0) -> int:
        """Samples per chunk for model ``index``: ``int(samplerate * segment)`` as ``apply_model`` does."""
        model = self.models[index]
        return int(model.samplerate * model.segment)

    @property
    def kinds(self) -> list:
        """Class name of each model: ``HTDemucs``, ``HDemucs`` or ``Demucs``."""
        return [type(m).__name__ for m in self.models]

    def chunk_input_length(self, index: int, length: int) -> int:
        """The input length ``apply_model`` gives model ``index`` for a chunk of ``length`` samples."""
        return chunk_input_length(self.models[index], length)


def chunk_input_length(model: nn.Module, length: int) -> int:
    """The input length demucs' ``apply_model(split=False)`` feeds ``model`` for ``length`` samples.

    HTDemucs: its training length ``int(segment * samplerate)`` (``valid_length``; a longer chunk is
    an error); Demucs: the next length its strided convolutions accept (``valid_length``); HDemucs
    (no ``valid_length``): ``length``. The chunk is then padded with the track's own samples around
    it (zeros beyond the track) and the output centre-trimmed back to ``length``.
    """
    valid = getattr(model, "valid_length", None)
    return int(valid(int(length))) if valid is not None else int(length)


def load_demucs(uri: str) -> DemucsModel:
    """Load a demucs ``.th`` / ``.safetensors`` model file or a bag-of-models ``.yaml``.

    Errors (one line, naming the file): :class:`DataError` for a refused, truncated or mismatching
    file, :class:`ConfigError` for a bad bag YAML or a missing signature.
    """
    uri = str(uri)
    low = uri.lower()
    if low.endswith((".yaml", ".yml")):
        return load_bag(uri)
    if not low.endswith((".th", ".safetensors")):
        raise ConfigError(uri, "not a demucs file (expected a .th or .safetensors model, or a bag .yaml)")
    model = load_demucs_model(uri)
    return DemucsModel(models=[model], weights=[[1.0] * len(model.sources)], sources=list(model.sources),
                       samplerate=int(model.samplerate), audio_channels=int(model.audio_channels), files=[uri])


def load_demucs_model(uri: str) -> nn.Module:
    """One demucs model (``.th`` or ``.safetensors``) as an ``nn.Module`` in eval mode on the CPU."""
    uri = str(uri)
    if uri.lower().endswith(".safetensors"):
        klass, args, kwargs, state = _read_safetensors(uri)
    else:
        klass, args, kwargs, state = _read_package(uri)
    model = _build(uri, klass, args, kwargs)
    problem = None if isinstance(state, dict) else "the state is not a mapping of names to tensors"
    if problem is None:
        try:  # the class's own load_state_dict (Demucs renames keys of older files first)
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            problem = state_mismatch(model, state) or str(exc).strip().splitlines()[0][:200]
    if problem:
        raise DataError(f"{uri}: the weights do not match the {klass.__name__} its arguments build: {problem}")
    return model.eval()


def _read_package(uri: str):
    package = torch_load(uri, expected=TH_EXPECTED, allowed=_allowed_globals())
    if not isinstance(package, dict) or not {"klass", "args", "kwargs", "state"} <= set(package):
        keys = ", ".join(sorted(map(str, package))[:8]) if isinstance(package, dict) else type(package).__name__
        raise DataError(f"{uri}: not {TH_EXPECTED}; found {keys}")
    klass = package["klass"]
    if klass not in _classes().values():
        raise DataError(f"{uri}: klass is {klass!r}, not one of {', '.join(_classes())}")
    state = package["state"]
    if isinstance(state, dict) and state.get("__quantized"):
        raise DataError(f"{uri}: a diffq-quantized demucs model; not supported (use the unquantized model)")
    return klass, package["args"], package["kwargs"], state


def _decode_json(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(value["numerator"], value["denominator"])
        return {k: _decode_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_json(v) for v in value]
    return value


def _read_safetensors(uri: str):
    from safetensors import SafetensorError, safe_open

    with storage.local_copy(uri) as path:
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                state = {key: f.get_tensor(key) for key in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"{uri}: truncated or corrupt safetensors file ({exc})") from None
    if "structure" in meta:
        raise DataError(f"{uri}: a diffq-quantized demucs model; not supported (use the unquantized model)")
    name = meta.get("klass")
    if name not in _classes():
        raise DataError(f"{uri}: metadata klass is {name!r}, not one of {', '.join(_classes())}")
    try:
        args, kwargs = _decode_json(json.loads(meta["args"])), _decode_json(json.loads(meta["kwargs"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{uri}: metadata args/kwargs missing or not JSON ({exc})") from None
    return _classes()[name], args, kwargs, state


def _plain(value: Any) -> bool:
    """True for data made of str/int/float/bool/None/Fraction in lists, tuples and str-keyed dicts."""
    if value is None or isinstance(value, (str, int, float, bool, Fraction)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _build(uri: str, klass: type, args: Any, kwargs: Any) -> nn.Module:
    """``klass(*args, **kwargs)`` as ``demucs.states.load_model`` does (unknown kwargs dropped)."""
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict) or not _plain([args, kwargs]):
        raise DataError(f"{uri}: args/kwargs are not plain data (lists, dicts, numbers, strings)")
    params = inspect.signature(klass).parameters
    dropped = [k for k in kwargs if k not in params]
    if dropped:
        warnings.warn(f"{uri}: dropping arguments {klass.__name__} does not take: {', '.join(dropped)}")
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    try:
        return klass(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure here is the file's arguments
        raise DataError(f"{uri}: cannot build {klass.__name__} from its arguments: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def read_bag(uri: str) -> tuple[list, list | None, float | None]:
    """``(signatures, weights or None, segment or None)`` of a bag YAML, checked for shape."""
    data = load_yaml_tuples(uri)
    unknown = [k for k in data if k not in BAG_KEYS]
    if unknown:
        raise ConfigError(f"{uri}: {unknown[0]}", f"unknown field of a demucs bag (allowed: {', '.join(BAG_KEYS)})")
    sigs = data.get("models")
    if not isinstance(sigs, (list, tuple)) or not sigs or not all(isinstance(s, str) and s for s in sigs):
        raise ConfigError(f"{uri}: models", "must be a non-empty list of model signatures (strings)")
    weights = data.get("weights")
    if weights is not None:
        if (not isinstance(weights, (list, tuple)) or len(weights) != len(sigs)
                or not all(isinstance(w, (list, tuple)) and all(_number(x) for x in w) for w in weights)):
            raise ConfigError(f"{uri}: weights", f"must be {len(sigs)} lists of numbers (one per model)")
        weights = [[float(x) for x in w] for w in weights]
    segment = data.get("segment")
    if segment is not None and not (_number(segment) and segment > 0):
        raise ConfigError(f"{uri}: segment", f"must be a positive number of seconds, got {segment!r}")
    return list(sigs), weights, segment


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _signature_files(folder: str) -> dict[str, list[tuple[str, str | None]]]:
    """signature -> [(uri, checksum prefix or None)] for the model files in ``folder``."""
    out: dict[str, list] = {}
    for uri in storage.list_files(folder, suffixes=(".th", ".safetensors"), recursive=False):
        name = posixpath.basename(uri.replace("\\", "/"))
        stem, ext = name.rsplit(".", 1)
        sig, checksum = stem, None
        if ext == "th" and "-" in stem:
            sig, checksum = stem.rsplit("-", 1)
        out.setdefault(sig, []).append((uri, checksum))
    return out


def _check_checksum(uri: str, checksum: str) -> None:
    digest = hashlib.sha256()
    with storage.local_copy(uri) as path, open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()[:len(checksum)]
    if actual != checksum:
        raise DataError(f"{uri}: checksum mismatch (the name says {checksum}, the content hashes to {actual}): "
                        "the file is truncated or corrupt")


def load_bag(uri: str) -> DemucsModel:
    """Load a bag-of-models YAML and the model files beside it (see the module docstring)."""
    uri = str(uri)
    sigs, weights, segment = read_bag(uri)
    files = _signature_files(storage.parent(uri))
    models, paths = [], []
    for sig in sigs:
        found = files.get(sig, [])
        if not found:
            raise ConfigError(f"{uri}: models", f"no model file for signature '{sig}' beside it (looked for "
                                                f"{sig}.th, {sig}-<checksum>.th, {sig}.safetensors)")
        if len(found) > 1:
            raise ConfigError(f"{uri}: models", f"several files for signature '{sig}': "
                                                f"{', '.join(storage.basename(u) for u, _ in found)}")
        path, checksum = found[0]
        if checksum:
            _check_checksum(path, checksum)
        models.append(load_demucs_model(path))
        paths.append(path)
    first = models[0]
    for model, path in zip(models, paths):
        for attr in ("sources", "samplerate", "audio_channels"):
            if getattr(model, attr) != getattr(first, attr):
                raise DataError(f"{uri}: {storage.basename(path)} has {attr} {getattr(model, attr)!r}, "
                                f"the first model {getattr(first, attr)!r}")
    if weights is None:
        weights = [[1.0] * len(first.sources) for _ in models]
    for w in weights:
        if len(w) != len(first.sources):
            raise ConfigError(f"{uri}: weights", f"each list needs {len(first.sources)} weights "
                                                 f"(sources {', '.join(first.sources)}), got {len(w)}")
    if any(sum(w[k] for w in weights) == 0 for k in range(len(first.sources))):
        raise ConfigError(f"{uri}: weights", "every source needs a non-zero total weight")
    if segment is not None:  # demucs' BagOfModels: HTDemucs keeps a segment shorter than the bag's
        from demucs.htdemucs import HTDemucs

        for model in models:
            if not isinstance(model, HTDemucs) or segment <= model.segment:
                model.segment = segment
    return DemucsModel(models=models, weights=weights, sources=list(first.sources),
                       samplerate=int(first.samplerate), audio_channels=int(first.audio_channels), files=paths)
