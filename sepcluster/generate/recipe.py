"""Mixing recipes: a YAML file of Scaper parameters as a typed, validated dataclass.

A recipe names Scaper's parameters; distributions are Scaper's tuples written as YAML lists::

    duration: 5.0                   # seconds of each mixture (> 0)
    sample_rate: 44100              # Hz
    channels: 1                     # 1 or 2
    ref_db: -20                     # Scaper's reference loudness (LUFS)
    labels: [vocals, drums, bass, other]   # one event per label, first label drives coherent mixing
    coherent_probability: 0.5       # P(coherent mixture), in [0, 1]
    fix_clipping: true
    quick_pitch_time: false
    event:
      source_time: [uniform, 0, 7]
      event_time: [const, 0]
      event_duration: [const, 5.0]
      snr: [uniform, -5, 5]
      pitch_shift: [uniform, -2, 2]     # or null for none
      time_stretch: [uniform, 0.8, 1.2] # or null for none

Distributions: ``[const, v]``, ``[choose, [v, ...]]``, ``[choose_weighted, [v, ...], [p, ...]]``,
``[uniform, min, max]``, ``[normal, mean, std]``, ``[truncnorm, mean, std, min, max]``.
:func:`validate_recipe` checks the whole recipe against a stem library before any work starts;
every problem raises :class:`~sepcluster.errors.ConfigError` naming the field (``event.snr``,
``labels``, ...) and the problem. The recipe hash is the sha256 of its canonical JSON
(:meth:`Recipe.to_json`: sorted keys, no spaces, defaults filled in). Numbers are kept as
written (``[const, 0]`` stays an integer): Scaper copies them into every JAMS, so two recipes
with one hash give byte-identical datasets, and the tutorial's template gives the tutorial's
JAMS text.

The stem library is Scaper's layout (:mod:`sepcluster.datasets.library`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .. import storage
from ..config import check, load_yaml, number, reject_unknown
from ..datasets.library import StemLibrary
from ..errors import ConfigError

DEFAULT_LABELS = ("vocals", "drums", "bass", "other")
EVENT_FIELDS = ("source_time", "event_time", "event_duration", "snr", "pitch_shift", "time_stretch")
TOP_FIELDS = ("duration", "sample_rate", "channels", "ref_db", "labels", "coherent_probability",
              "fix_clipping", "quick_pitch_time", "event")
# distribution name -> number of arguments after the name
DISTRIBUTIONS = {"const": 1, "choose": 1, "choose_weighted": 2, "uniform": 2, "normal": 2, "truncnorm": 4}
# Audio files Scaper can read (it opens sources with soundfile).
# Field bounds: (lowest allowed value, highest allowed value, lower bound exclusive?)
_BOUNDS = {
    "source_time": (0.0, math.inf, False),
    "event_time": (0.0, math.inf, False),
    "event_duration": (0.0, math.inf, True),
    "snr": (-60.0, 60.0, False),
    "pitch_shift": (-12.0, 12.0, False),   # semitones; sox warns of poor quality beyond an octave
    "time_stretch": (0.5, 2.0, False),     # sox tempo factors outside [0.5, 2] are "extreme"
}
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RESERVED_LABELS = {"mixture", "seed", "coherent", "jams"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class EventTemplate:
    """Scaper distribution tuples for every event (one event per label)."""

    source_time: tuple
    event_time: tuple
    event_duration: tuple
    snr: tuple
    pitch_shift: tuple | None
    time_stretch: tuple | None

    def scaper_parameters(self, label: str) -> dict:
        """Keyword arguments for ``Scaper.add_event`` (the tutorial's event template) for ``label``."""
        return {
            "label": ("const", label),
            "source_file": ("choose", []),
            "source_time": self.source_time,
            "event_time": self.event_time,
            "event_duration": self.event_duration,
            "snr": self.snr,
            "pitch_shift": self.pitch_shift,
            "time_stretch": self.time_stretch,
        }


@dataclass(frozen=True)
class Recipe:
    """A validated mixing recipe (see the module docstring for the YAML form)."""

    duration: float
    event: EventTemplate
    sample_rate: int = 44100
    channels: int = 1
    ref_db: float = -20
    labels: tuple[str, ...] = DEFAULT_LABELS
    coherent_probability: float = 0.5
    fix_clipping: bool = True
    quick_pitch_time: bool = False
    source_yaml: str | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """Plain JSON-able dict with every field (distributions as lists, numbers as written)."""
        def dist(t):
            return None if t is None else [t[0], *[list(a) if isinstance(a, (list, tuple)) else a for a in t[1:]]]

        return {
            "duration": self.duration,
            "sample_rate": int(self.sample_rate),
            "channels": int(self.channels),
            "ref_db": self.ref_db,
            "labels": list(self.labels),
            "coherent_probability": self.coherent_probability,
            "fix_clipping": bool(self.fix_clipping),
            "quick_pitch_time": bool(self.quick_pitch_time),
            "event": {name: dist(getattr(self.event, name)) for name in EVENT_FIELDS},
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the input of :attr:`hash`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_yaml(self) -> str:
        """The recipe as YAML (the original text when it was loaded from YAML)."""
        if self.source_yaml:
            return self.source_yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @property
    def hash(self) -> str:
        """sha256 hex digest of :meth:`to_json`."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def samples(self) -> int:
        """Samples per mixture, as Scaper computes them: ``int(duration * sample_rate)``."""
        return int(self.duration * self.sample_rate)

    def mlflow_params(self) -> dict:
        """Flat parameters for MLflow (``recipe.event.snr`` = ``uniform,-5.0,5.0``)."""
        d = self.to_dict()
        out = {f"recipe.{k}": v for k, v in d.items() if k not in ("event", "labels")}
        out["recipe.labels"] = ",".join(self.labels)
        for k, v in d["event"].items():
            out[f"recipe.event.{k}"] = "none" if v is None else json.dumps(v, separators=(",", ":"))
        return out

    @classmethod
    def from_dict(cls, data: dict, source_yaml: str | None = None) -> "Recipe":
        """Parse and check a recipe mapping (no stem library needed); ConfigError names the field."""
        return parse_recipe(data, source_yaml=source_yaml)


# ---------------------------------------------------------------------- parsing

def _dist(value: Any, name: str, nullable: bool) -> tuple | None:
    """Parse one distribution list into a Scaper tuple, checking name, arity and bounds."""
    fld = f"event.{name}"
    if value is None:
        if nullable:
            return None
        raise ConfigError(fld, "is required (a distribution such as [const, 0])")
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(fld, f"must be a distribution list such as [uniform, -5, 5], got {value!r}")
    kind = value[0]
    if kind not in DISTRIBUTIONS:
        raise ConfigError(fld, f"unknown distribution {kind!r} (use one of: {', '.join(DISTRIBUTIONS)})")
    args = list(value[1:])
    if len(args) != DISTRIBUTIONS[kind]:
        raise ConfigError(fld, f"distribution {kind!r} takes {DISTRIBUTIONS[kind]} argument(s), got {len(args)}: "
                               f"{list(value)!r}")
    lo, hi, lo_exclusive = _BOUNDS[name]

    def in_range(v: float) -> bool:
        return (v > lo if lo_exclusive else v >= lo) and v <= hi

    rng_text = f"{'(' if lo_exclusive else '['}{lo:g}, {hi:g}]"

    def num(v: Any, what: str) -> float:
        if not _is_number(v):
            raise ConfigError(fld, f"{what} must be a finite number, got {v!r}")
        return v  # kept as written (int or float): Scaper copies it into the JAMS

    if kind == "const":
        v = num(args[0], "the constant")
        if not in_range(v):
            raise ConfigError(fld, f"value {v:g} is outside the allowed range {rng_text}")
        return ("const", v)
    if kind in ("choose", "choose_weighted"):
        values = args[0]
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(fld, f"{kind} needs a non-empty list of values, got {values!r}")
        vals = [num(v, "every choice") for v in values]
        bad = [v for v in vals if not in_range(v)]
        if bad:
            raise ConfigError(fld, f"choice {bad[0]:g} is outside the allowed range {rng_text}")
        if kind == "choose":
            return ("choose", vals)
        probs = args[1]
        if not isinstance(probs, (list, tuple)) or len(probs) != len(vals):
            raise ConfigError(fld, f"choose_weighted needs as many probabilities as values ({len(vals)}), "
                                   f"got {probs!r}")
        ps = [num(p, "every probability") for p in probs]
        if any(p < 0 or p > 1 for p in ps):
            raise ConfigError(fld, f"probabilities must lie in [0, 1], got {ps}")
        if abs(sum(ps) - 1.0) > 1e-6:
            raise ConfigError(fld, f"probabilities must sum to 1, they sum to {sum(ps):g}")
        return ("choose_weighted", vals, ps)
    if kind == "uniform":
        a, b = num(args[0], "min"), num(args[1], "max")
        if a > b:
            raise ConfigError(fld, f"uniform min {a:g} > max {b:g}")
        if not (in_range(a) and in_range(b)):
            raise ConfigError(fld, f"uniform range [{a:g}, {b:g}] is outside the allowed range {rng_text}")
        return ("uniform", a, b)
    if kind == "normal":
        mean, std = num(args[0], "mean"), num(args[1], "std")
        if std < 0:
            raise ConfigError(fld, f"normal std must be >= 0, got {std:g}")
        if math.isfinite(lo) or math.isfinite(hi):
            raise ConfigError(fld, f"normal is unbounded and this field must stay in {rng_text} (Scaper would "
                                   f"resample, possibly forever): use [truncnorm, mean, std, min, max]")
        return ("normal", mean, std)
    # truncnorm
    mean, std, a, b = (num(args[0], "mean"), num(args[1], "std"), num(args[2], "min"), num(args[3], "max"))
    if std < 0:
        raise ConfigError(fld, f"truncnorm std must be >= 0, got {std:g}")
    if a > b:
        raise ConfigError(fld, f"truncnorm min {a:g} > max {b:g}")
    if not (in_range(a) and in_range(b)):
        raise ConfigError(fld, f"truncnorm range [{a:g}, {b:g}] is outside the allowed range {rng_text}")
    return ("truncnorm", mean, std, a, b)


def parse_recipe(data: dict, source_yaml: str | None = None) -> Recipe:
    """Build a :class:`Recipe` from a mapping, checking every field (no stem library needed)."""
    if not isinstance(data, dict):
        raise ConfigError("recipe", f"must be a mapping, got {type(data).__name__}")
    reject_unknown(data, set(TOP_FIELDS))
    duration = number(data, "duration", minimum=0.0, exclusive_min=True)
    check(duration <= 3600, "duration", f"must be <= 3600 seconds, got {duration!r}")
    sample_rate = number(data, "sample_rate", default=44100, minimum=8000, maximum=192000, integer=True)
    channels = number(data, "channels", default=1, minimum=1, maximum=2, integer=True)
    ref_db = number(data, "ref_db", default=-20, minimum=-100.0, maximum=0.0)
    coherent_probability = number(data, "coherent_probability", default=0.5, minimum=0.0, maximum=1.0)
    flags = {}
    for key, default in (("fix_clipping", True), ("quick_pitch_time", False)):
        value = data.get(key, default)
        if value is None:
            value = default
        check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        flags[key] = value
    labels = data.get("labels", list(DEFAULT_LABELS))
    check(isinstance(labels, (list, tuple)) and labels, "labels", f"must be a non-empty list of names, got {labels!r}")
    for lab in labels:
        check(isinstance(lab, str) and _LABEL_RE.match(lab), "labels",
              f"label {lab!r} must be a folder name of letters, digits, '_', '-' or '.'")
        check(lab not in _RESERVED_LABELS, "labels", f"label {lab!r} is reserved (a dataset column)")
    check(len(set(labels)) == len(labels), "labels", f"labels must be unique, got {list(labels)!r}")
    event = data.get("event")
    check(isinstance(event, dict), "event", f"is required: a mapping of {', '.join(EVENT_FIELDS)}")
    reject_unknown(event, set(EVENT_FIELDS), prefix="event.")
    for name in ("source_time", "event_time", "event_duration", "snr"):
        check(name in event, f"event.{name}", "is required (a distribution such as [const, 0])")
    dists = {name: _dist(event.get(name), name, nullable=name in ("pitch_shift", "time_stretch"))
             for name in EVENT_FIELDS}
    return Recipe(duration=duration, event=EventTemplate(**dists), sample_rate=int(sample_rate),
                  channels=int(channels), ref_db=ref_db, labels=tuple(labels),
                  coherent_probability=coherent_probability, fix_clipping=flags["fix_clipping"],
                  quick_pitch_time=flags["quick_pitch_time"], source_yaml=source_yaml)


def load_recipe(source: "Recipe | dict | str") -> Recipe:
    """A :class:`Recipe` from a Recipe, a mapping, a YAML/JSON file path or URI, or YAML text."""
    if isinstance(source, Recipe):
        return source
    if isinstance(source, dict):
        return parse_recipe(source)
    if not isinstance(source, str):
        raise ConfigError("recipe", f"must be a file, a mapping or a Recipe, got {type(source).__name__}")
    if "\n" in source or source.lstrip().startswith("{"):
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise ConfigError("recipe", f"not valid YAML: {exc}") from exc
        return parse_recipe(data, source_yaml=source)
    data = load_yaml(source)
    text = storage.read_text(source)
    try:
        return parse_recipe(data, source_yaml=text)
    except ConfigError as exc:
        raise exc.in_file(storage.redact(source)) from None


def validate_recipe(recipe: Recipe, library: StemLibrary) -> list[str]:
    """Check ``recipe`` against an indexed library; returns warnings, raises ConfigError on errors."""
    warnings = []
    for label in recipe.labels:
        if label not in library.files:
            raise ConfigError("labels", f"label '{label}' is not in the stem library {library.fg_path}")
    if recipe.coherent_probability > 0 and len(recipe.labels) > 1:
        first = recipe.labels[0]
        for name in library.files[first]:
            for label in recipe.labels[1:]:
                if name not in library.files[label]:
                    raise ConfigError(
                        "coherent_probability",
                        f"coherent mixing needs every song of '{first}' in every label, but "
                        f"{os.path.join(library.fg_path, label, name)} is missing (add it, remove the song, or set "
                        f"coherent_probability: 0)")
    shortest = min(library.durations[f"{lab}/{n}"] for lab in recipe.labels for n in library.files[lab])
    ev = recipe.event
    if ev.event_duration[0] == "const" and ev.event_duration[1] > shortest:
        warnings.append(f"event.event_duration {ev.event_duration[1]:g} s is longer than the shortest source "
                        f"({shortest:.2f} s): Scaper shortens such events")
    return warnings
