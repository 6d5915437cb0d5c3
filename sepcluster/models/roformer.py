"""BS-RoFormer and Mel-Band RoFormer checkpoints in the Music-Source-Separation-Training layout.

Files (local path, ``file://`` or ``s3://``):

- the checkpoint (``.ckpt``, ``.pth``, ``.pt`` or ``.safetensors``): a state dict, as MSST's
  ``torch.save(model.state_dict(), path)`` writes it, or a dict holding one under ``state_dict``,
  ``model_state_dict``, ``model`` or ``state``; a ``module.`` (DataParallel) or ``model.``
  (Lightning) prefix shared by every key is removed. Read with ``torch.load(weights_only=True)`` and
  no extra globals: a file that needs anything but tensors, containers and primitives is refused.
- the YAML config (MSST's): ``model:`` (the constructor options, see
  :mod:`sepcluster.models.roformer_nets`; ``!!python/tuple`` is accepted), ``audio:``
  (``sample_rate`` default 44100, ``num_channels``, ``chunk_size``), ``inference:`` (``chunk_size``
  overrides ``audio.chunk_size``, ``num_overlap``, ``batch_size``, ``normalize``), ``training:``
  (``instruments``; ``target_instrument``: when set the model outputs only that one; ``use_amp``).
  The model type is the ``model_type`` argument, else a top-level ``model_type``, else
  ``training.model_type``, else read from the options (``freqs_per_bands`` -> ``bs_roformer``,
  ``num_bands`` -> ``mel_band_roformer``).

Where the YAML is found when not given (:func:`find_config`): ``<checkpoint stem>.yaml`` / ``.yml``
beside the checkpoint, then ``<checkpoint name>.yaml``, then the only YAML in the checkpoint's folder
that has a ``model:`` mapping; several candidates is an error asking for the config explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from sepcluster import storage
from sepcluster.errors import ConfigError, DataError

from .safeload import load_yaml_tuples, state_mismatch, torch_load

MODEL_TYPES = ("bs_roformer", "mel_band_roformer")
CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt", ".safetensors")
CKPT_EXPECTED = "a RoFormer checkpoint (a state dict of tensors, as Music-Source-Separation-Training saves it)"
_WRAPPERS = ("state_dict", "model_state_dict", "model", "state")


@dataclass
class RoformerModel:
    """A loaded RoFormer and what MSST's chunked inference reads from its config.

    ``model`` maps ``(batch, channels, samples)`` to ``(batch, len(instruments), channels, samples)``.
    ``instruments`` are the outputs in order: ``[target_instrument]`` when the config sets one,
    else ``training.instruments``. ``chunk_size`` is in samples; MSST steps by
    ``chunk_size // num_overlap`` and cross-fades over ``chunk_size // 10`` samples.
    """

    model: nn.Module
    model_type: str
    instruments: list
    training_instruments: list
    target_instrument: Optional[str]
    sample_rate: int
    channels: int
    chunk_size: int
    num_overlap: int
    batch_size: int
    normalize: bool
    use_amp: bool
    checkpoint: str
    config_path: str
    config: dict = field(repr=False, default_factory=dict)

    @property
    def step(self) -> int:
        return self.chunk_size // self.num_overlap

    @property
    def fade_size(self) -> int:
        return self.chunk_size // 10


def _is_msst_config(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("model"), dict)


def find_config(checkpoint: str) -> str:
    """The YAML config of ``checkpoint`` (see the module docstring); ConfigError naming it when none."""
    checkpoint = str(checkpoint)
    folder, name = storage.parent(checkpoint), storage.basename(checkpoint)
    stem = name.rsplit(".", 1)[0]
    for candidate in (f"{stem}.yaml", f"{stem}.yml", f"{name}.yaml", f"{name}.yml"):
        uri = storage.join(folder, candidate)
        if storage.exists(uri):
            return uri
    found = []
    for uri in storage.list_files(folder, suffixes=(".yaml", ".yml"), recursive=False):
        try:
            if _is_msst_config(load_yaml_tuples(uri)):
                found.append(uri)
        except ConfigError:
            continue
    if len(found) == 1:
        return found[0]
    if found:
        raise ConfigError(checkpoint, f"several MSST configs beside it ({', '.join(map(storage.basename, found))}): "
                                      "give the config explicitly")
    raise ConfigError(checkpoint, f"no YAML config found (looked for {stem}.yaml, {stem}.yml and an MSST config "
                                  "in its folder): give the config explicitly")


def model_type_of(config: dict, uri: str, model_type: Optional[str] = None) -> str:
    """The RoFormer type of an MSST config (argument, ``model_type``, ``training.model_type``, options)."""
    training = config.get("training") if isinstance(config.get("training"), dict) else {}
    given = model_type or config.get("model_type") or training.get("model_type")
    if given is None:
        options = config.get("model") if isinstance(config.get("model"), dict) else {}
        if "num_bands" in options and "freqs_per_bands" not in options:
            return "mel_band_roformer"
        if "freqs_per_bands" in options and "num_bands" not in options:
            return "bs_roformer"
        raise ConfigError(f"{uri}: model_type", f"not given and not readable from model: (expected "
                                                f"freqs_per_bands or num_bands); one of {', '.join(MODEL_TYPES)}")
    if given not in MODEL_TYPES:
        raise ConfigError(f"{uri}: model_type", f"'{given}' is not supported (supported: {', '.join(MODEL_TYPES)})")
    return given


def _int(section: dict, key: str, uri: str, prefix: str, default: Any = ...) -> int:
    value = section.get(key, default)
    if value is ...:
        raise ConfigError(f"{uri}: {prefix}{key}", "is required")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{uri}: {prefix}{key}", f"must be a positive integer, got {value!r}")
    return value


def _section(config: dict, name: str, uri: str) -> dict:
    value = config.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{uri}: {name}", "must be a mapping")
    return value


def build_roformer(model_type: str, options: dict, uri: str) -> nn.Module:
    """The RoFormer of ``model_type`` built from a config's ``model:`` options (random weights, eval mode)."""
    from .roformer_nets import ARCHITECTURES

    cls, accepted = ARCHITECTURES[model_type]
    for key in options:
        if key not in accepted:
            raise ConfigError(f"{uri}: model.{key}", f"unknown option of {model_type} "
                                                     f"(accepted: {', '.join(sorted(accepted))})")
    if "dim" not in options or "depth" not in options:
        raise ConfigError(f"{uri}: model", f"{model_type} needs dim and depth")
    options = dict(options)
    try:
        return cls(options.pop("dim"), **options).eval()
    except ConfigError as exc:
        raise ConfigError(f"{uri}: {exc.field}", exc.problem) from None
    except Exception as exc:  # noqa: BLE001 - the package rejects the options (beartype, asserts)
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ConfigError(f"{uri}: model", f"cannot build {model_type}: {text}") from None


def _read_config(uri: str, model_type: Optional[str]) -> tuple[str, dict, dict]:
    config = load_yaml_tuples(uri)
    kind = model_type_of(config, uri, model_type)
    if not isinstance(config.get("model"), dict):
        raise ConfigError(f"{uri}: model", "is required (the model's constructor options)")
    return kind, config, config["model"]


def _instruments(training: dict, uri: str) -> tuple[list, Optional[str]]:
    instruments = training.get("instruments")
    if not isinstance(instruments, (list, tuple)) or not instruments \
            or not all(isinstance(i, str) for i in instruments):
        raise ConfigError(f"{uri}: training.instruments", "must be a non-empty list of names")
    target = training.get("target_instrument") or None
    if target is not None and not isinstance(target, str):
        raise ConfigError(f"{uri}: training.target_instrument", f"must be a name, got {target!r}")
    return list(instruments), target


def extract_state(obj: Any, uri: str) -> dict:
    """The state dict inside a loaded checkpoint (unwrapped, common prefix removed)."""
    def is_state(x: Any) -> bool:
        return isinstance(x, dict) and bool(x) and all(isinstance(v, torch.Tensor) for v in x.values())

    state = obj if is_state(obj) else None
    if state is None and isinstance(obj, dict):
        state = next((obj[k] for k in _WRAPPERS if is_state(obj.get(k))), None)
    if state is None:
        found = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"{uri}: no state dict of tensors in it (found {found}); expected {CKPT_EXPECTED}")
    for prefix in ("module.", "model."):
        if all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _read_checkpoint(uri: str) -> dict:
    if uri.lower().endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(storage.read_bytes(uri))
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"{uri}: truncated or corrupt safetensors file ({exc})") from None
    return torch_load(uri, expected=CKPT_EXPECTED)


def load_roformer(checkpoint: str, config: Optional[str] = None, model_type: Optional[str] = None) -> RoformerModel:
    """Load an MSST RoFormer checkpoint with its YAML config (found with :func:`find_config` if not given).

    Errors, one line naming the file: :class:`ConfigError` for the config (unknown ``model_type``,
    unknown ``model.<key>``, missing sections, ``num_stems`` not matching the instruments),
    :class:`DataError` for the checkpoint (refused, truncated, keys or shapes not matching the config).
    """
    checkpoint = str(checkpoint)
    config = str(config) if config is not None else find_config(checkpoint)
    kind, data, options = _read_config(config, model_type)
    training, audio, inference = (_section(data, s, config) for s in ("training", "audio", "inference"))
    instruments, target = _instruments(training, config)
    outputs = [target] if target else instruments
    stems = options.get("num_stems", 1)
    if stems != len(outputs):
        why = f"target_instrument is {target}" if target else f"{len(instruments)} instruments"
        raise ConfigError(f"{config}: model.num_stems", f"is {stems}, but {why} needs {len(outputs)} output(s)")
    chunk_size = _int(inference, "chunk_size", config, "inference.", None) if "chunk_size" in inference \
        else _int(audio, "chunk_size", config, "audio.")
    num_overlap = _int(inference, "num_overlap", config, "inference.")
    if chunk_size // num_overlap <= 0:
        raise ConfigError(f"{config}: inference.num_overlap", f"{num_overlap} is larger than chunk_size {chunk_size}")
    model = build_roformer(kind, options, config)
    channels = int(model.audio_channels)
    if "num_channels" in audio and audio["num_channels"] != channels:
        raise ConfigError(f"{config}: audio.num_channels", f"is {audio['num_channels']}, but model.stereo "
                                                           f"makes a {channels}-channel model")
    state = extract_state(_read_checkpoint(checkpoint), checkpoint)
    problem = state_mismatch(model, state)
    if problem:
        raise DataError(f"{checkpoint}: does not match the {kind} of {storage.basename(config)}: {problem}")
    model.load_state_dict(state)
    return RoformerModel(
        model=model.eval(), model_type=kind, instruments=outputs, training_instruments=instruments,
        target_instrument=target, sample_rate=_int(audio, "sample_rate", config, "audio.", 44100),
        channels=channels, chunk_size=chunk_size, num_overlap=num_overlap,
        batch_size=_int(inference, "batch_size", config, "inference.", 1),
        normalize=inference.get("normalize") is True, use_amp=bool(training.get("use_amp", True)),
        checkpoint=checkpoint, config_path=config, config=data)
