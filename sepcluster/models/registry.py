"""The model families: the one place that names them, says what they estimate and which options they take.

A :class:`ModelFamily` is a name, a constructor (``path`` = ``"module:Class"``, imported on
first use, so a family whose code needs an optional package costs nothing until it is
built), what the model estimates, and the options a training config may set for it
(``options``: name -> the training default). Every option is a keyword argument of the
constructor: :meth:`ModelFamily.load` checks that against the signature when the class is
first imported, and :func:`build_model` refuses any argument the constructor does not take.

What a family estimates (``multi_source``):

* ``False``: one model per target, a magnitude mask estimator:
  ``(batch, channels, bins, frames) -> (batch, channels, bins, frames)`` (the mask times the
  mixture magnitude). ``umx`` (Open-Unmix) and ``unet``.
* ``True``: one model for all sources, waveforms in and out:
  ``(batch, channels, samples) -> (batch, sources, channels, samples)`` (the families of the
  next issues: htdemucs, bs_roformer, mel_roformer).

This module imports neither torch nor the model code; :func:`model_names` is the list every
other module (training config, CLI, bundles) checks model names against.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from sepcluster.errors import ConfigError

DEFAULT_BANDWIDTH = 16000.0
_UNSET = object()


@dataclass(frozen=True)
class ModelFamily:
    """One model family: ``name``, constructor ``path`` (``"module:Class"``), what it estimates.

    ``multi_source``: False = one magnitude mask estimator per target, True = one waveform
    model for all sources (see the module docstring for the shapes). ``estimates``: the same
    in words. ``options``: the options a training config may set (name -> training default),
    each a keyword argument of the constructor. ``check``: range checks of a complete options
    mapping, raising ``ConfigError(option, problem)``.
    """

    name: str
    path: str
    multi_source: bool
    estimates: str
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Optional[Callable[[Mapping[str, Any]], None]] = None

    def load(self) -> type:
        """The constructor (imported on first use); TypeError when an option is not one of its parameters."""
        return _load_class(self.path, tuple(self.options))

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The constructor's keyword parameters (``self`` left out)."""
        return _parameters(self.load())

    def option_kind(self, name: str) -> str:
        """The constructor's annotation of option ``name`` as text (``"int"``, ``"Optional[int]"``)."""
        annotation = self.parameters()[name].annotation
        if annotation is inspect.Parameter.empty:
            return type(self.options[name]).__name__
        return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))

    def complete_options(self, options: Mapping[str, Any]) -> dict:
        """``options`` with this family's defaults filled in, in the family's option order; checked.

        ConfigError names the first key that is not an option of this family, or the first
        value out of range.
        """
        unknown = [k for k in options if k not in self.options]
        if unknown:
            raise ConfigError(unknown[0], f"not an option of model '{self.name}' (its options: "
                                          f"{', '.join(self.options) or 'none'})")
        out = {k: options.get(k, default) for k, default in self.options.items()}
        if self.check is not None:
            self.check(out)
        return out


@functools.lru_cache(maxsize=None)
def _load_class(path: str, options: tuple) -> type:
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    params = _parameters(cls)
    missing = [o for o in options if o not in params]
    if missing:
        raise TypeError(f"model family {path}: option '{missing[0]}' is not a parameter of {cls.__name__}.__init__")
    return cls


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    return {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}


_FAMILIES: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    """Add a family (ValueError if the name is taken); returns it."""
    if family.name in _FAMILIES:
        raise ValueError(f"model family '{family.name}' is already registered")
    _FAMILIES[family.name] = family
    return family


def families() -> tuple[ModelFamily, ...]:
    """Every registered family, in registration order."""
    return tuple(_FAMILIES.values())


def model_names() -> tuple[str, ...]:
    """The names of the registered families (``("umx", "unet")`` today), in registration order."""
    return tuple(_FAMILIES)


def get_family(name: str) -> ModelFamily:
    """The family called ``name`` (case and spaces ignored); ConfigError on ``model`` otherwise."""
    key = str(name).strip().lower()
    if key not in _FAMILIES:
        raise ConfigError("model", f"unknown model '{name}' (choose from {', '.join(_FAMILIES)})")
    return _FAMILIES[key]


def build_model(name: str = "umx", *, n_fft: Optional[int] = None, sample_rate: float = 44100.0,
                bandwidth=_UNSET, **kwargs):
    """Build a model of the family ``name`` (``"umx"``, ``"unet"``) with constructor arguments ``kwargs``.

    Every argument is checked against the constructor's signature (ConfigError
    ``model.<argument>`` for one it does not take). Conveniences for spectrogram models (a
    constructor with ``nb_bins`` / ``max_bin``): ``n_fft`` sets ``nb_bins = n_fft // 2 + 1``
    when ``nb_bins`` is not given; when ``max_bin`` is not given it is derived from
    ``bandwidth`` Hz (default 16 kHz, as Open-Unmix; ``None`` = all bins) at ``sample_rate``
    with :func:`sepcluster.models.umx.bandwidth_to_max_bin`. The mask estimators map magnitudes
    ``(batch, channels, bins, frames) -> (batch, channels, bins, frames)``.
    """
    family = get_family(name)
    cls = family.load()
    params = _parameters(cls)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"model.{unknown[0]}", f"not an option of model '{family.name}' "
                                                 f"(accepted: {', '.join(params)}, n_fft, sample_rate, bandwidth)")
    if n_fft is not None and "nb_bins" in params:
        nb_bins_from_fft = int(n_fft) // 2 + 1
        if kwargs.get("nb_bins") not in (None, nb_bins_from_fft):
            raise ConfigError("model.nb_bins", f"{kwargs['nb_bins']} does not match n_fft={n_fft} "
                                               f"({nb_bins_from_fft} bins)")
        kwargs["nb_bins"] = nb_bins_from_fft
    if "max_bin" in params and "nb_bins" in params and kwargs.get("max_bin") is None:
        from .umx import bandwidth_to_max_bin

        bw = DEFAULT_BANDWIDTH if bandwidth is _UNSET else bandwidth
        nb_bins = int(kwargs.get("nb_bins", params["nb_bins"].default))
        kwargs["max_bin"] = bandwidth_to_max_bin(sample_rate, (nb_bins - 1) * 2, bw)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- the families


def _need(options: Mapping[str, Any], name: str, ok: bool, problem: str) -> None:
    if not ok:
        raise ConfigError(name, f"{problem}, got {options[name]!r}")


def _check_umx(o: Mapping[str, Any]) -> None:
    _need(o, "hidden_size", o["hidden_size"] >= 2 and (o["unidirectional"] or o["hidden_size"] % 2 == 0),
          "must be an even integer >= 2")
    _need(o, "nb_layers", 1 <= o["nb_layers"] <= 16, "must be in 1..16")


def _check_unet(o: Mapping[str, Any]) -> None:
    _need(o, "base_channels", 1 <= o["base_channels"] <= 1024, "must be in 1..1024")
    _need(o, "depth", 1 <= o["depth"] <= 8, "must be in 1..8")


_MASK = "one target's magnitude, (batch, channels, bins, frames): a mask times the mixture magnitude"

register(ModelFamily("umx", "sepcluster.models.umx:OpenUnmix", multi_source=False, estimates=_MASK,
                     options={"hidden_size": 512, "nb_layers": 3, "unidirectional": False}, check=_check_umx))
register(ModelFamily("unet", "sepcluster.models.unet:UNet", multi_source=False, estimates=_MASK,
                     options={"base_channels": 16, "depth": 4}, check=_check_unet))


__all__ = ["ModelFamily", "register", "families", "model_names", "get_family", "build_model", "DEFAULT_BANDWIDTH"]
