"""Which kind of model a ``--model`` path holds, read from its files.

Kinds (:data:`KINDS`) and how each is recognised, in this order:

- ``bundle``: a folder with ``bundle.json`` (a sepcluster bundle), or a folder of official Open-Unmix
  ``<target>.pth`` files (both load with :func:`sepcluster.models.bundle.load_bundle`);
- ``demucs``: a ``.th`` file; a ``.safetensors`` file whose metadata names a demucs ``klass``; a
  ``.yaml`` / ``.yml`` with a ``models:`` list of signatures (a bag of models, ``bag=True``);
- ``bs_roformer`` / ``mel_band_roformer``: a ``.ckpt``, ``.pt``, other ``.safetensors``, or a ``.pth``
  that is not Open-Unmix, with its MSST YAML config: the ``config`` argument, else found beside the
  checkpoint by :func:`sepcluster.models.roformer.find_config` (``<stem>.yaml``/``.yml``, then the
  only YAML with a ``model:`` mapping in the folder); the type comes from the config;
- ``umx``: a single ``.pth`` Open-Unmix state dict (keys ``fc1.weight``, ``lstm.weight_ih_l0``,
  ``input_mean``, ...).

``model_type`` (the CLI's ``--model-type``) skips the guessing: one of :data:`KINDS`, or
``roformer`` (an MSST checkpoint whose type the config gives); the files must still be of that kind.
Anything else is a :class:`ConfigError` naming the path and listing what was expected. Nothing here
builds a model: detection reads directory listings, YAML, safetensors headers, and for a ``.pth`` its
keys (with ``weights_only=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sepcluster import storage
from sepcluster.errors import ConfigError

from .roformer import MODEL_TYPES, find_config, model_type_of
from .safeload import load_yaml_tuples, torch_load

KINDS = ("bundle", "umx", "demucs") + MODEL_TYPES
MODEL_TYPE_CHOICES = KINDS + ("roformer",)
EXPECTED = ("expected a sepcluster bundle folder (bundle.json) or a folder of Open-Unmix .pth files, an Open-Unmix "
            ".pth, a demucs .th/.safetensors model or bag-of-models .yaml, or a BS-/Mel-Band RoFormer checkpoint "
            "(.ckpt/.pth/.pt/.safetensors) with its Music-Source-Separation-Training YAML config")
_UMX_KEYS = ("fc1.weight", "input_mean", "output_scale", "lstm.weight_ih_l0")
_CHECKPOINTS = (".ckpt", ".pt", ".pth", ".safetensors")


@dataclass(frozen=True)
class ModelSource:
    """A model path and its kind: ``kind`` in :data:`KINDS`; ``config`` the MSST YAML of a RoFormer;
    ``bag`` True for a demucs bag-of-models YAML."""

    kind: str
    path: str
    config: Optional[str] = None
    bag: bool = False


def detect_model(path: str, model_type: Optional[str] = None, config: Optional[str] = None) -> ModelSource:
    """Detect the kind of the model at ``path`` (see the module docstring); ConfigError naming it otherwise."""
    path = str(path)
    if model_type is not None and model_type not in MODEL_TYPE_CHOICES:
        raise ConfigError("model_type", f"'{model_type}' is not one of {', '.join(MODEL_TYPE_CHOICES)}")
    if not storage.exists(path):
        raise ConfigError(path, "no such file or folder")
    found = _guess(path, model_type, config)
    if found is None:
        raise ConfigError(path, f"not a model sepcluster can load: {EXPECTED}")
    wanted = {"roformer": MODEL_TYPES}.get(model_type, (model_type,))
    if model_type is not None and found.kind not in wanted:
        raise ConfigError(path, f"--model-type is {model_type}, but the files are a {found.kind} model")
    return found


def _guess(path: str, model_type: Optional[str], config: Optional[str]) -> Optional[ModelSource]:
    low = path.lower().rstrip("/")
    if storage.isdir(path):
        if storage.exists(storage.join(path, "bundle.json")) or storage.list_files(path, (".pth",), recursive=False):
            return ModelSource("bundle", path)
        return None
    if low.endswith(".th"):
        return ModelSource("demucs", path)
    if low.endswith((".yaml", ".yml")):
        return _yaml_kind(path)
    if low.endswith(".safetensors") and _demucs_safetensors(path):
        return ModelSource("demucs", path)
    if not low.endswith(_CHECKPOINTS):
        return None
    if low.endswith(".pth") and config is None and model_type not in MODEL_TYPES + ("roformer",):
        missing = _umx_missing(path)
        if not missing:
            return ModelSource("umx", path)
        if model_type == "umx":
            raise ConfigError(path, f"not an Open-Unmix state dict (no key '{missing}')")
    elif model_type == "umx":
        return None
    config = str(config) if config is not None else find_config(path)
    kind = model_type_of(load_yaml_tuples(config), config, model_type if model_type in MODEL_TYPES else None)
    return ModelSource(kind, path, config=config)


def _yaml_kind(path: str) -> Optional[ModelSource]:
    data = load_yaml_tuples(path)
    if isinstance(data.get("models"), list):
        return ModelSource("demucs", path, bag=True)
    if isinstance(data.get("model"), dict):
        raise ConfigError(path, "an MSST model config: give the checkpoint as the model (its config is found "
                                "beside it, or given as the model config)")
    return None


def _demucs_safetensors(path: str) -> bool:
    from safetensors import SafetensorError, safe_open

    with storage.local_copy(path) as local:
        try:
            with safe_open(local, framework="pt") as f:
                return "klass" in (f.metadata() or {})
        except (SafetensorError, OSError, ValueError):
            return False


def _umx_missing(path: str) -> Optional[str]:
    """The first Open-Unmix key the ``.pth`` lacks (None: it is one); a broken file raises DataError."""
    state = torch_load(path, expected="an Open-Unmix state dict or a RoFormer checkpoint (.pth)")
    if not isinstance(state, dict):
        return _UMX_KEYS[0]
    return next((k for k in _UMX_KEYS if k not in state), None)
