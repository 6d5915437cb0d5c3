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
  ``(batch, channels, samples) -> (batch, sources, channels, samples)``: ``htdemucs`` (the
  ``demucs`` 4.1.0 class), ``bs_roformer`` and ``mel_roformer`` (the Music-Source-Separation-Training
  classes of :mod:`sepcluster.models.roformer_nets`, through :mod:`sepcluster.models.multisource`).
  The constructor arguments that follow from the training run (the sources, the channel count,
  the sample rate, the training segment) are ``derived``: a function named by ``signal`` computes
  them, and a training config may not set them.

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
_DERIVED_TARGETS = ("accompaniment", "linear_mixture")  # sums of stems (sepcluster.datasets.DERIVED_TARGETS)


@dataclass(frozen=True)
class ModelFamily:
    """One model family: ``name``, constructor ``path`` (``"module:Class"``), what it estimates.

    ``multi_source``: False = one magnitude mask estimator per target, True = one waveform
    model for all sources (see the module docstring for the shapes). ``estimates``: the same
    in words. ``options``: the options a training config may set (name -> training default),
    each a keyword argument of the constructor. ``check``: range checks of a complete options
    mapping, raising ``ConfigError(option, problem)``. Multi-source families also name
    ``signal`` (``"module:function"``: ``(sources, nb_channels, sample_rate, segment) -> the
    derived constructor arguments``), ``derived`` (those arguments' names, refused as options),
    ``loss`` (the training loss of ``loss: auto``) and ``export`` (the checkpoint format the
    trained model is written in: ``bundle``, ``demucs`` (``.th``) or ``msst`` (``.ckpt`` + YAML)).
    """

    name: str
    path: str
    multi_source: bool
    estimates: str
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Optional[Callable[[Mapping[str, Any]], None]] = None
    signal: Optional[str] = None
    derived: tuple = ()
    loss: str = "mse"
    export: str = "bundle"

    def load(self) -> type:
        """The constructor (imported on first use); TypeError when an option is not one of its parameters."""
        return _load_class(self.path, tuple(self.options))

    def cannot_estimate(self, target: str) -> Optional[str]:
        """Why this family cannot be trained to output ``target`` (None when it can)."""
        if target == "mixture":
            return "the mixture is the model's input, not one of its outputs"
        if self.multi_source and target in _DERIVED_TARGETS:
            return (f"model '{self.name}' outputs stems that add up to the mixture; '{target}' is a sum of stems: "
                    f"train its stems and add their estimates")
        return None

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
        derived = [k for k in options if k in self.derived]
        if derived:
            raise ConfigError(derived[0], f"is set by the training run for model '{self.name}' (from the targets, "
                                          f"the data's channels and sample rate, seq_dur), not by the config")
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
    cls = _import(path)
    params = _parameters(cls)
    missing = [o for o in options if o not in params]
    if missing:
        raise TypeError(f"model family {path}: option '{missing[0]}' is not a parameter of {cls.__name__}.__init__")
    return cls


def _import(path: str) -> Any:
    """The object ``"module:name"`` names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


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
    if family.multi_source:
        return build_multi_source(family.name, sample_rate=sample_rate, **kwargs)
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


def build_multi_source(name: str, *, sources, nb_channels: int = 2, sample_rate: float = 44100.0,
                       segment: Optional[float] = None, **options):
    """Build a multi-source model of the family ``name`` for ``sources`` (a list of names).

    ``options``: the family's options (defaults filled in; an unknown or derived key is a
    ConfigError naming it). ``nb_channels``, ``sample_rate`` and ``segment`` (seconds of a
    training excerpt; None: the constructor's default) give the derived arguments. The model
    maps ``(batch, nb_channels, samples) -> (batch, len(sources), nb_channels, samples)``; its
    ``sources`` attribute lists the outputs in order.
    """
    family = get_family(name)
    if not family.multi_source:
        raise ConfigError("model", f"'{family.name}' is a per-target model, not a multi-source one")
    sources = [str(s) for s in sources]
    if not sources or len(set(sources)) != len(sources):
        raise ConfigError("targets", f"model '{family.name}' needs distinct source names, got {sources}")
    complete = family.complete_options(options)
    derived = _import(family.signal)(sources=sources, nb_channels=int(nb_channels), sample_rate=float(sample_rate),
                                     segment=segment)
    model = family.load()(**complete, **derived)
    if list(getattr(model, "sources", []) or []) != sources:
        model.sources = list(sources)
    return model


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


def _check_htdemucs(o: Mapping[str, Any]) -> None:
    _need(o, "channels", 1 <= o["channels"] <= 1024, "must be in 1..1024")
    _need(o, "depth", 1 <= o["depth"] <= 8, "must be in 1..8")
    _need(o, "nfft", o["nfft"] >= 16 and o["nfft"] & (o["nfft"] - 1) == 0, "must be a power of 2 >= 16")
    _need(o, "t_layers", 0 <= o["t_layers"] <= 64, "must be in 0..64")
    width = o["bottom_channels"] or o["channels"] * o["growth"] ** (o["depth"] - 1)
    _need(o, "t_heads", o["t_heads"] >= 1 and width % o["t_heads"] == 0,
          f"must divide the transformer width {width} (bottom_channels, else channels * growth ** (depth - 1))")
    _need(o, "t_dropout", 0 <= o["t_dropout"] < 1, "must be in [0, 1)")


def _check_roformer(o: Mapping[str, Any]) -> None:
    for name in ("dim", "depth", "dim_head", "heads", "time_transformer_depth", "freq_transformer_depth",
                 "mask_estimator_depth", "mlp_expansion_factor"):
        _need(o, name, isinstance(o[name], int) and o[name] >= 1, "must be an integer >= 1")
    _need(o, "linear_transformer_depth", o["linear_transformer_depth"] >= 0, "must be >= 0")
    for name in ("attn_dropout", "ff_dropout"):
        _need(o, name, 0 <= o[name] < 1, "must be in [0, 1)")
    _need(o, "stft_n_fft", o["stft_n_fft"] >= 16, "must be >= 16")
    _need(o, "stft_hop_length", 1 <= o["stft_hop_length"] <= o["stft_win_length"], "must be in 1..stft_win_length")
    _need(o, "stft_win_length", 1 <= o["stft_win_length"] <= o["stft_n_fft"], "must be in 1..stft_n_fft")
    bands = o.get("freqs_per_bands")
    if bands is not None:
        ok = isinstance(bands, (list, tuple)) and all(isinstance(b, int) and b >= 1 for b in bands)
        _need(o, "freqs_per_bands", ok, "must be a list of positive integers (or null: derived from stft_n_fft)")
        _need(o, "freqs_per_bands", sum(bands) == o["stft_n_fft"] // 2 + 1,
              f"must add up to the {o['stft_n_fft'] // 2 + 1} bins of stft_n_fft={o['stft_n_fft']} "
              f"(sum {sum(bands)}; null derives MSST's band layout)")
    if "num_bands" in o:
        _need(o, "num_bands", 1 <= o["num_bands"] <= o["stft_n_fft"] // 2 + 1, "must be in 1..stft_n_fft/2+1")


_WAVE = "every source's waveform, (batch, sources, channels, samples), from the mixture's"
# HTDemucs' own defaults (demucs 4.1.0, the published htdemucs size) for the options a config may set
HTDEMUCS_OPTIONS = {"channels": 48, "growth": 2, "depth": 4, "nfft": 4096, "stride": 4, "kernel_size": 8,
                    "time_stride": 2, "cac": True, "rewrite": True, "freq_emb": 0.2, "norm_starts": 4,
                    "dconv_depth": 2, "dconv_comp": 8, "bottom_channels": 0, "t_layers": 5, "t_heads": 8,
                    "t_hidden_scale": 4.0, "t_dropout": 0.0}
# MSST's configs for MUSDB18 (config_musdb18_bs_roformer.yaml / config_musdb18_mel_band_roformer.yaml)
_ROFORMER_COMMON = {"depth": 12, "time_transformer_depth": 1, "freq_transformer_depth": 1,
                    "linear_transformer_depth": 0, "dim_head": 64, "heads": 8, "attn_dropout": 0.1,
                    "ff_dropout": 0.1, "flash_attn": True, "stft_n_fft": 2048, "stft_hop_length": 441,
                    "stft_win_length": 2048, "stft_normalized": False, "zero_dc": True, "mask_estimator_depth": 2,
                    "mlp_expansion_factor": 4, "skip_connection": False}
BS_ROFORMER_OPTIONS = {"dim": 512, **_ROFORMER_COMMON, "freqs_per_bands": None}
MEL_ROFORMER_OPTIONS = {"dim": 384, **_ROFORMER_COMMON, "depth": 6, "attn_dropout": 0.0, "ff_dropout": 0.0,
                        "num_bands": 60}

register(ModelFamily("htdemucs", "demucs.htdemucs:HTDemucs", multi_source=True, estimates=_WAVE,
                     options=HTDEMUCS_OPTIONS, check=_check_htdemucs,
                     signal="sepcluster.models.multisource:htdemucs_signal",
                     derived=("sources", "audio_channels", "samplerate", "segment"), loss="wave_l1", export="demucs"))
register(ModelFamily("bs_roformer", "sepcluster.models.multisource:BSRoformerNet", multi_source=True, estimates=_WAVE,
                     options=BS_ROFORMER_OPTIONS, check=_check_roformer,
                     signal="sepcluster.models.multisource:roformer_signal", derived=("num_stems", "stereo"),
                     loss="mrstft", export="msst"))
register(ModelFamily("mel_roformer", "sepcluster.models.multisource:MelRoformerNet", multi_source=True,
                     estimates=_WAVE, options=MEL_ROFORMER_OPTIONS, check=_check_roformer,
                     signal="sepcluster.models.multisource:mel_roformer_signal",
                     derived=("num_stems", "stereo", "sample_rate"), loss="mrstft", export="msst"))


__all__ = ["ModelFamily", "register", "families", "model_names", "get_family", "build_model", "build_multi_source",
           "DEFAULT_BANDWIDTH"]
