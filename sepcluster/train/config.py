"""The training configuration: a flat, typed YAML mapping checked field by field.

Every key is also an option of ``sepcluster train`` (``lr`` <-> ``--lr``), so the same YAML
file works as ``sepcluster train --config C.yaml`` and as ``train(config="C.yaml")``. A value
out of range raises :class:`~sepcluster.errors.ConfigError` naming the field, before any
worker starts. Unknown keys are refused (typos would otherwise be silently ignored).

The YAML is flat: ``model: umx`` and the model's own options (``hidden_size: 32``) sit beside
the general fields. :class:`TrainConfig` keeps the model's options apart, in
``model_options``, checked against the family's entry in :mod:`sepcluster.models.registry`
(its options, their ranges, the constructor's parameters). A key that is neither a general
field nor an option of the chosen family is refused, with one exception kept for the
recorded configs: :meth:`TrainConfig.to_dict` (checkpoints, bundles, MLflow params, default run
names) has always carried the options of both ``umx`` and ``unet`` whatever the model, so
for those two models those keys are accepted at their defaults. A multi-source family's
arguments that the run sets (its sources, channels, rate: ``derived`` in the registry) are
refused with a message saying so. The fields added later (:data:`LATER_FIELDS`: augmentation,
EMA, diagnostics) are recorded only when they differ from their defaults, so the recorded form
of a run that does not use them is what it was.

Defaults follow Open-Unmix's training recipe (Adam 1e-3, weight decay 1e-5, plateau decay
0.3 after 80 epochs, early stopping after 140, 6 s excerpts, batches of 16, n_fft 4096, hop
1024, 16 kHz bandwidth).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .. import storage
from ..config import load_yaml
from ..errors import ConfigError

SOURCES = ("auto", "parquet", "onthefly", "stems")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# The families whose options every recorded config dict carries (see the module docstring).
RECORDED_FAMILIES = ("umx", "unet")
# Fields added after the recorded form was fixed: :meth:`TrainConfig.to_dict` records them only when
# they differ from their defaults, so the recorded configs (and the default run names hashed from them)
# of runs that do not use them stay as they were.
LATER_FIELDS = ("augment", "polarity_flip", "ema_decay", "diagnostics_every", "diagnostics_seconds")


@dataclass
class TrainConfig:
    """Hyper-parameters and data handling of one training run (one model per target).

    Model: ``model`` (a family of :mod:`sepcluster.models.registry`: umx | unet, one model per
    target; htdemucs | bs_roformer | mel_roformer, one model for all targets) and
    ``model_options``, that family's own options (umx: ``hidden_size``, ``nb_layers``,
    ``unidirectional``; unet: ``base_channels``, ``depth``; htdemucs: ``channels``, ``depth``,
    ``nfft``, ``t_layers``, ...; the RoFormers: ``dim``, ``depth``, ``heads``, ``stft_n_fft``, ...),
    every option present (defaults filled in from the registry). ``n_fft``, ``n_hop`` and
    ``bandwidth`` are the per-target families' STFT; the multi-source families have their own.
    Signal: ``sample_rate`` (None = the data's), ``nb_channels`` (None = the data's),
    ``n_fft``, ``n_hop``, ``bandwidth`` (Hz fed to the network; None = all bins).
    Data: ``source`` (auto | parquet | onthefly | stems), ``stems`` (stem library for an
    on-the-fly recipe file), ``seq_dur`` (seconds per training excerpt), ``batch_size``,
    ``samples_per_epoch`` (None: per source, see :mod:`sepcluster.train.data`),
    ``samples_per_track`` (stem library default: excerpts per training song and epoch),
    ``valid_fraction`` / ``valid_songs`` (held-out full tracks or mixtures), ``valid_size``
    (on-the-fly validation mixtures), ``excerpts_per_mixture`` (on-the-fly: random excerpts
    cut from each rendered mixture, to spread Scaper's cost), ``valid_seq_dur`` (crop validation items; None = full),
    ``gain_min``/``gain_max``/``channel_swap``/``random_track_mix``/``polarity_flip`` (stem
    augmentation: a random gain per stem, a channel swap, a polarity flip, each stem from another
    song), ``augment`` (apply it to a generated dataset or on-the-fly mixtures too, whose mixture is
    then the sum of the augmented stems; None = only for a stem library, as always),
    ``loader_workers`` (DataLoader processes per rank), ``cache_dataset``
    (Parquet: keep the training columns in Ray's object store across epochs; None = when
    they fit in a quarter of it), ``seed``,
    ``stats_batches`` (batches for the input mean/scale; 0 = none).
    Optimisation: ``epochs``, ``lr``, ``weight_decay``, ``lr_decay_patience``,
    ``lr_decay_gamma``, ``patience`` (early stopping, epochs without a better validation
    loss), ``clip_grad_norm`` (None = off), ``loss`` (a name of
    :data:`sepcluster.models.losses.LOSSES`: mse | l1 (magnitudes) | si_sdr | wave_l1 | wave_l2 |
    mrstft (waveforms); ``auto``: the family's, mse for umx/unet, wave_l1 for htdemucs, mrstft for
    the RoFormers), ``precision`` (auto = bf16 on CUDA if supported else fp16, fp32 on CPU),
    ``ema_decay`` (exponential moving average of the weights, updated every step; 0 = off; the
    averaged weights are validated, kept as the best and exported).
    Diagnostics: every ``diagnostics_every`` epochs (0 = never) and at the last, rank 0 logs a
    spectrogram PNG and FLAC excerpts (``diagnostics_seconds`` long) of a validation item.
    Fault tolerance: ``max_failures`` (worker-group restarts from the last checkpoint),
    ``num_to_keep`` (checkpoints kept), ``cpus_per_worker``.
    """

    # model
    model: str = "umx"
    model_options: dict = field(default_factory=dict)
    # signal
    sample_rate: Optional[int] = None
    nb_channels: Optional[int] = None
    n_fft: int = 4096
    n_hop: int = 1024
    bandwidth: Optional[float] = 16000.0
    # data
    source: str = "auto"
    stems: Optional[str] = None
    seq_dur: float = 6.0
    batch_size: int = 16
    samples_per_epoch: Optional[int] = None
    samples_per_track: int = 64
    valid_fraction: float = 0.1
    valid_songs: Optional[list] = None
    valid_size: int = 16
    excerpts_per_mixture: int = 1
    valid_seq_dur: Optional[float] = None
    gain_min: float = 0.25
    gain_max: float = 1.25
    channel_swap: bool = True
    random_track_mix: bool = True
    loader_workers: int = 0
    cache_dataset: Optional[bool] = None
    seed: int = 42
    stats_batches: int = 8
    # optimisation
    epochs: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-5
    lr_decay_patience: int = 80
    lr_decay_gamma: float = 0.3
    patience: int = 140
    clip_grad_norm: Optional[float] = 5.0
    loss: str = "auto"
    precision: str = "auto"
    # fault tolerance / resources
    max_failures: int = 2
    num_to_keep: int = 2
    cpus_per_worker: float = 1.0
    # later fields (LATER_FIELDS): augmentation of every source, EMA, diagnostics
    augment: Optional[bool] = None
    polarity_flip: bool = False
    ema_decay: float = 0.0
    diagnostics_every: int = 5
    diagnostics_seconds: float = 4.0

    def __post_init__(self) -> None:
        # every option of the family present, in its order (an unknown family is left to validate())
        family = _family(self.model)
        if family is not None:
            options = dict(self.model_options)
            self.model_options = {k: options.pop(k, default) for k, default in family.options.items()}
            self.model_options.update(options)  # not options of this family: validate() refuses them
            if self.loss == "auto":
                self.loss = family.loss

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict | None, where: str = "") -> "TrainConfig":
        """Build and check a config from a flat mapping; ``None`` values mean "the default".

        Keys are general fields or options of the chosen ``model`` (a ``model_options``
        mapping is accepted too). Strings are accepted for numbers and booleans
        (command-line values). Raises ConfigError naming the field (prefixed with ``where``,
        e.g. the YAML file).
        """
        prefix = f"{where}: " if where else ""
        data = {str(k).replace("-", "_"): v for k, v in (data or {}).items()}
        general = {f.name: f for f in config_fields()}
        model = _coerce(data["model"], str(general["model"].type), f"{prefix}model") \
            if data.get("model") is not None else cls.model
        family = _family(model)
        if family is None:
            raise ConfigError(f"{prefix}model", f"must be one of {', '.join(_model_names())}, got {model!r}")
        nested = data.pop("model_options", None) or {}
        if not isinstance(nested, dict):
            raise ConfigError(f"{prefix}model_options", f"must be a mapping, got {nested!r}")
        values: dict[str, Any] = {"model": family.name}
        options: dict[str, Any] = {}
        for key, value in [*data.items(), *((str(k).replace("-", "_"), v) for k, v in nested.items())]:
            if key == "model":
                continue
            if key in general:
                if value is not None:
                    values[key] = _coerce(value, str(general[key].type), f"{prefix}{key}")
            elif key in family.options:
                if value is not None:
                    options[key] = _coerce(value, family.option_kind(key), f"{prefix}{key}")
            elif key in family.derived:
                raise ConfigError(f"{prefix}{key}", f"is set by the training run for model '{family.name}' (from the "
                                                    f"targets, the data's channels and sample rate, seq_dur)")
            elif family.name not in RECORDED_FAMILIES or not _recorded_default(key, value):
                allowed = sorted([*general, *family.options])
                raise ConfigError(f"{prefix}{key}", f"unknown training option for model '{family.name}' "
                                                    f"(allowed: {', '.join(allowed)})")
        cfg = cls(model_options=options, **values)
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "") -> None:
        """Range-check every field and model option; ConfigError names the first bad one."""
        from ..models.losses import LOSSES

        p = f"{where}: " if where else ""

        def need(cond: bool, name: str, problem: str) -> None:
            if not cond:
                raise ConfigError(f"{p}{name}", f"{problem}, got {getattr(self, name)!r}")

        family = _family(self.model)
        need(family is not None, "model", f"must be one of {', '.join(_model_names())}")
        family.load()  # the options are parameters of the constructor (TypeError otherwise: a registry bug)
        try:
            family.complete_options(self.model_options)
        except ConfigError as exc:
            raise ConfigError(f"{p}{exc.field}", exc.problem) from None
        need(self.sample_rate is None or 4000 <= self.sample_rate <= 192000, "sample_rate",
             "must be in 4000..192000 Hz (or null for the data's rate)")
        need(self.nb_channels is None or self.nb_channels in (1, 2), "nb_channels", "must be 1 or 2 (or null)")
        need(16 <= self.n_fft <= 32768, "n_fft", "must be in 16..32768")
        need(1 <= self.n_hop <= self.n_fft, "n_hop", f"must be in 1..n_fft ({self.n_fft})")
        need(self.bandwidth is None or self.bandwidth > 0, "bandwidth", "must be > 0 Hz (or null for all bins)")
        need(self.source in SOURCES, "source", f"must be one of {', '.join(SOURCES)}")
        need(0 < self.seq_dur <= 600, "seq_dur", "must be in (0, 600] seconds")
        need(1 <= self.batch_size <= 4096, "batch_size", "must be in 1..4096")
        need(self.samples_per_epoch is None or self.samples_per_epoch >= 1, "samples_per_epoch", "must be >= 1")
        need(1 <= self.samples_per_track <= 100000, "samples_per_track", "must be in 1..100000")
        need(0 <= self.valid_fraction < 1, "valid_fraction", "must be in [0, 1)")
        if self.valid_songs is not None:
            need(isinstance(self.valid_songs, list) and all(isinstance(s, str) and s for s in self.valid_songs),
                 "valid_songs", "must be a list of song names")
        need(0 <= self.valid_size <= 100000, "valid_size", "must be in 0..100000")
        need(1 <= self.excerpts_per_mixture <= self.batch_size, "excerpts_per_mixture",
             f"must be in 1..batch_size ({self.batch_size})")
        need(self.valid_seq_dur is None or self.valid_seq_dur > 0, "valid_seq_dur", "must be > 0 (or null)")
        need(0 < self.gain_min <= 10, "gain_min", "must be in (0, 10]")
        need(self.gain_min <= self.gain_max <= 10, "gain_max", f"must be in [gain_min ({self.gain_min}), 10]")
        need(0 <= self.loader_workers <= 64, "loader_workers", "must be in 0..64")
        need(0 <= self.seed < 2 ** 31, "seed", "must be in 0..2**31-1")
        need(0 <= self.stats_batches <= 100000, "stats_batches", "must be in 0..100000")
        need(1 <= self.epochs <= 1000000, "epochs", "must be in 1..1000000")
        need(0 < self.lr <= 10, "lr", "must be in (0, 10]")
        need(0 <= self.weight_decay <= 1, "weight_decay", "must be in [0, 1]")
        need(1 <= self.lr_decay_patience <= 1000000, "lr_decay_patience", "must be >= 1")
        need(0 < self.lr_decay_gamma < 1, "lr_decay_gamma", "must be in (0, 1)")
        need(1 <= self.patience <= 1000000, "patience", "must be >= 1")
        need(self.clip_grad_norm is None or self.clip_grad_norm > 0, "clip_grad_norm", "must be > 0 (or null = off)")
        need(self.loss in LOSSES, "loss", f"must be one of auto, {', '.join(LOSSES)}")
        if family.multi_source:
            need(LOSSES[self.loss].domain == "time", "loss", f"must be a waveform loss for model '{self.model}', which "
                                                             f"estimates waveforms (si_sdr, wave_l1, wave_l2, mrstft)")
        need(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
        need(-1 <= self.max_failures <= 1000, "max_failures", "must be in -1..1000 (-1 = unlimited)")
        need(1 <= self.num_to_keep <= 1000, "num_to_keep", "must be in 1..1000")
        need(0 < self.cpus_per_worker <= 1024, "cpus_per_worker", "must be in (0, 1024]")
        need(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1) (0 = no EMA)")
        need(0 <= self.diagnostics_every <= 1000000, "diagnostics_every", "must be >= 0 (0 = never)")
        need(0 < self.diagnostics_seconds <= 600, "diagnostics_seconds", "must be in (0, 600]")
        if self.sample_rate is not None and self.bandwidth is not None and not family.multi_source:
            need(self.bandwidth <= self.sample_rate / 2, "bandwidth",
                 f"must be <= the Nyquist frequency ({self.sample_rate / 2:g} Hz)")

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict:
        """The flat config as checkpoints, bundles and MLflow record it (and as :meth:`from_dict` reads it).

        ``model``, the model options (for umx and unet: both families' options, the other
        family's at their defaults, as always recorded), then the general fields.
        """
        out: dict[str, Any] = {"model": self.model, **self._recorded_options()}
        for f in config_fields()[1:]:
            if f.name in LATER_FIELDS and getattr(self, f.name) == f.default:
                continue
            out[f.name] = copy.deepcopy(getattr(self, f.name))
        return out

    def _recorded_options(self) -> dict:
        if self.model not in RECORDED_FAMILIES:
            return dict(self.model_options)
        from ..models.registry import get_family

        out: dict[str, Any] = {}
        for name in RECORDED_FAMILIES:
            family = get_family(name)
            values = self.model_options if name == self.model else family.options
            out.update({k: values[k] for k in family.options})
        return out

    def model_kwargs(self, nb_channels: int, sample_rate: float, sources: Optional[list] = None,
                     segment: Optional[float] = None) -> dict:
        """Keyword arguments for :func:`sepcluster.models.registry.build_model` (besides the name).

        Multi-source families: ``sources`` (the targets, in order) and ``segment`` (seconds of a
        training excerpt) instead of the STFT settings.
        """
        if self.multi_source:
            return {"sources": list(sources or []), "nb_channels": int(nb_channels), "sample_rate": float(sample_rate),
                    "segment": segment, **self.model_options}
        return {"n_fft": self.n_fft, "sample_rate": float(sample_rate), "bandwidth": self.bandwidth,
                "nb_channels": int(nb_channels), **self.model_options}

    @property
    def multi_source(self) -> bool:
        """Whether the model estimates all targets at once (one model, waveforms in and out)."""
        family = _family(self.model)
        return bool(family is not None and family.multi_source)

    def architecture(self) -> dict:
        """The fields that fix the network's shape (a checkpoint must match them to resume)."""
        return {"model": self.model, "n_fft": self.n_fft, "n_hop": self.n_hop, "bandwidth": self.bandwidth,
                **self.model_options}


def _family(name: Any):
    """The registry's family called ``name``, or None."""
    from ..models.registry import get_family

    try:
        return get_family(name)
    except ConfigError:
        return None


def _model_names() -> tuple[str, ...]:
    from ..models.registry import model_names

    return model_names()


def _recorded_default(key: str, value: Any) -> bool:
    """Whether ``key: value`` is another recorded family's option at its default (as :meth:`TrainConfig.to_dict`
    writes it for a model of another family)."""
    from ..models.registry import get_family

    for name in RECORDED_FAMILIES:
        family = get_family(name)
        if key in family.options:
            if value is None:
                return True
            try:
                return _coerce(value, family.option_kind(key), key) == family.options[key]
            except ConfigError:
                return False
    return False


def _coerce(value: Any, kind: str, name: str) -> Any:
    """Turn a YAML or command-line value into the type ``kind`` (an annotation's text), or raise ConfigError."""
    if isinstance(value, str) and value.strip().lower() in ("none", "null", "~", "") and "Optional" in kind:
        return None
    if "list" in kind:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        raise ConfigError(name, f"must be a list (or a comma-separated string), got {value!r}")
    if "bool" in kind:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(name, f"must be true or false, got {value!r}")
    if "int" in kind or "float" in kind:
        integer = "int" in kind
        if isinstance(value, bool):
            raise ConfigError(name, f"must be a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(name, f"must be a number, got {value!r}") from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(name, f"must be a finite number, got {value!r}")
        if integer:
            if int(value) != value:
                raise ConfigError(name, f"must be an integer, got {value!r}")
            return int(value)
        return float(value)
    if "str" in kind:
        if not isinstance(value, str):
            raise ConfigError(name, f"must be a string, got {value!r}")
        return value.strip()
    return value


def load_train_config(config: "TrainConfig | dict | str | None" = None, **overrides: Any) -> TrainConfig:
    """A checked :class:`TrainConfig` from a config, a mapping or a YAML file/URI, with overrides.

    ``overrides`` whose value is None are ignored (so unset command-line flags keep the
    file's values). Raises ConfigError naming the file and field.
    """
    where = ""
    if config is None:
        data: dict = {}
    elif isinstance(config, TrainConfig):
        data = {"model": config.model, "model_options": dict(config.model_options),
                **{f.name: getattr(config, f.name) for f in config_fields()[1:]}}
        if overrides.get("model") not in (None, config.model):
            data.pop("model_options")  # another family: its own defaults
            if data["loss"] == _family(config.model).loss:
                data["loss"] = "auto"
    elif isinstance(config, dict):
        data = dict(config)
    elif isinstance(config, str):
        data = load_yaml(config)
        where = storage.redact(config)
    else:
        raise ConfigError("config", f"must be a YAML file, a mapping or a TrainConfig, got {type(config).__name__}")
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    return TrainConfig.from_dict(data, where=where)


def config_fields() -> list[dataclasses.Field]:
    """The general fields of :class:`TrainConfig` (``model`` first; ``model_options`` left out)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name != "model_options"]


_HELP = {
    "loss": "mse | l1 (magnitudes), si_sdr | wave_l1 | wave_l2 | mrstft (waveforms); default auto: the model's "
            "(mse for umx/unet, wave_l1 for htdemucs, mrstft for the RoFormers)",
    "augment": "augment the stems of a generated dataset / on-the-fly mixtures too (gain, channel swap, polarity, "
               "remix; the mixture is their sum); default: only a stem library's",
    "polarity_flip": "flip each stem's polarity with probability 1/2 (augmentation); default False",
    "ema_decay": "EMA of the weights, updated every step (e.g. 0.999); validated, kept and exported; 0 = off (default)",
    "diagnostics_every": "log a spectrogram PNG and FLAC excerpts of a validation item every N epochs and at the "
                         "last (0 = never); default 5",
}


def config_options() -> dict[str, str]:
    """Every key a training config may hold -> its help text: the general fields, then every
    registered family's options (the CLI adds one flag per key)."""
    from ..models.registry import families, model_names

    out = {}
    for f in config_fields():
        if f.name == "model":
            out["model"] = f"one of {', '.join(model_names())}; default {f.default!r}"
        elif f.name in _HELP:
            out[f.name] = _HELP[f.name]
        else:
            out[f.name] = f"default {f.default!r}" if f.default is not None else "default: from the data"
    per_option: dict[str, list[str]] = {}
    for family in families():
        for name, default in family.options.items():
            per_option.setdefault(name, []).append(f"{family.name}: default {default!r}")
    for name, texts in per_option.items():
        out.setdefault(name, "model option (" + "; ".join(texts) + ")")
    return out


__all__ = ["TrainConfig", "load_train_config", "config_fields", "config_options", "SOURCES", "PRECISIONS",
           "RECORDED_FAMILIES", "LATER_FIELDS"]
