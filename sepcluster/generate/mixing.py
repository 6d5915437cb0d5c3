"""Mixture ``i`` is a pure function of ``(recipe, seed)``: the seed tutorial's "Option 2".

For seed ``s`` (mixture ``i`` of a dataset uses ``s = base_seed + i`` and nothing else):

1. ``np.random.RandomState(s).rand() > 1 - coherent_probability`` picks coherent mixing;
2. a ``Scaper(duration, fg_path, bg_path, random_state=s)`` with ``sr``, ``ref_db``,
   ``n_channels`` from the recipe gets one event per label, exactly as the tutorial's
   ``incoherent()`` / ``coherent()`` add them:

   * incoherent: the event template with ``label = ('const', label)`` for every label;
   * coherent: the template (first label) is added and instantiated once, to pick a song, a
     source time, a pitch shift and a time stretch; the spec is reset and every label gets the
     template with those values pinned (``const``) and the same song file in its own label
     folder (the label directory component of the path is swapped, nothing else);

3. ``generate(fix_clipping=..., quick_pitch_time=...)`` renders in memory (no files).

The audio therefore equals the tutorial's code for the same seed, bit for bit, and re-rendering
the stored JAMS with ``scaper.generate_from_jams`` gives it again. Nothing here depends on the
process, the actor, the shard or a retry.

Arrays are ``(samples, channels)``: ``float32`` by default (the dataset's sample format).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..compat import scaper
from ..datasets.library import StemLibrary
from ..datasets.mixtures import EVENT_PARAMS
from .recipe import Recipe
from .source_cache import SourceCache, library_cache

@dataclass
class MixResult:
    """One rendered mixture.

    mixture: ``(samples, channels)``; stems: ``{label: (samples, channels)}`` (they sum to the
    mixture up to float rounding); jams: Scaper's JAMS annotation as a JSON string; events:
    ``{label: {source_file ("label/song.wav"), source_time, event_time, event_duration, snr,
    pitch_shift, time_stretch}}`` as sampled (pitch_shift/time_stretch None when disabled).
    """

    seed: int
    coherent: bool
    mixture: np.ndarray
    stems: dict[str, np.ndarray]
    jams: str
    events: dict[str, dict] = field(default_factory=dict)
    sample_rate: int = 44100


def is_coherent(seed: int, coherent_probability: float) -> bool:
    """The tutorial's coin flip: ``RandomState(seed).rand() > 1 - coherent_probability``."""
    return bool(np.random.RandomState(seed).rand() > 1 - coherent_probability)


def swap_label_folder(source_file: str, label: str) -> str:
    """``.../foreground/<old label>/<song>.wav`` -> ``.../foreground/<label>/<song>.wav``.

    Only the label directory component changes (a song named like a label stays intact).
    """
    head, name = os.path.split(source_file)
    return os.path.join(os.path.dirname(head), label, name)


def _new_scaper(recipe: Recipe, library: StemLibrary, seed: int):
    sc = scaper.Scaper(duration=recipe.duration, fg_path=library.fg_path, bg_path=library.bg_path,
                       random_state=seed)
    sc.sr = recipe.sample_rate
    sc.ref_db = recipe.ref_db
    sc.n_channels = recipe.channels
    return sc


def _add_incoherent(sc, recipe: Recipe) -> None:
    for label in recipe.labels:
        sc.add_event(**recipe.event.scaper_parameters(label))


def _add_coherent(sc, recipe: Recipe) -> None:
    first = recipe.labels[0]
    params = recipe.event.scaper_parameters(first)
    sc.add_event(**params)
    event = sc._instantiate_event(sc.fg_spec[0])
    sc.reset_fg_event_spec()
    params["source_time"] = ("const", event.source_time)
    # pitch shift / time stretch stay None when the recipe disables them
    params["pitch_shift"] = None if event.pitch_shift is None else ("const", event.pitch_shift)
    params["time_stretch"] = None if event.time_stretch is None else ("const", event.time_stretch)
    for label in recipe.labels:
        params["label"] = ("const", label)
        params["source_file"] = ("const", swap_label_folder(event.source_file, label))
        sc.add_event(**params)


def _relative_source(path: str) -> str:
    head, name = os.path.split(path)
    return f"{os.path.basename(head)}/{name}"


def _unpack(seed: int, coherent: bool, recipe: Recipe, mixture, jam, stem_list, dtype) -> MixResult:
    ann = jam.annotations.search(namespace="scaper")[0]
    stems: dict[str, np.ndarray] = {}
    events: dict[str, dict] = {}
    for obs, audio in zip(ann.data, stem_list):
        value = obs.value
        if value["role"] != "foreground":
            continue
        label = value["label"]
        stems[label] = np.ascontiguousarray(np.asarray(audio).reshape(-1, recipe.channels), dtype=dtype)
        ev = {k: value[k] for k in EVENT_PARAMS}
        ev["source_file"] = _relative_source(value["source_file"])
        for k in ("source_time", "event_time", "event_duration", "snr"):
            ev[k] = float(ev[k])
        for k in ("pitch_shift", "time_stretch"):
            ev[k] = None if ev[k] is None else float(ev[k])
        events[label] = ev
    mix = np.ascontiguousarray(np.asarray(mixture).reshape(-1, recipe.channels), dtype=dtype)
    ordered = {label: stems[label] for label in recipe.labels}
    return MixResult(seed=int(seed), coherent=bool(coherent), mixture=mix, stems=ordered, jams=jam.dumps(),
                     events={label: events[label] for label in recipe.labels}, sample_rate=recipe.sample_rate)


def make_mixture(recipe: Recipe, library: StemLibrary, seed: int, dtype=np.float32) -> MixResult:
    """Render mixture ``seed``: a pure function of ``(recipe, library content, seed)``.

    Returns :class:`MixResult` with ``mixture`` ``(samples, channels)`` and ``stems``
    ``{label: (samples, channels)}`` in ``dtype`` (float64 = Scaper's own output, unrounded).
    """
    seed = int(seed)
    coherent = is_coherent(seed, recipe.coherent_probability)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc = _new_scaper(recipe, library, seed)
        if coherent:
            _add_coherent(sc, recipe)
        else:
            _add_incoherent(sc, recipe)
        mixture, jam, _ann_list, stem_list = sc.generate(fix_clipping=recipe.fix_clipping,
                                                         quick_pitch_time=recipe.quick_pitch_time)
    return _unpack(seed, coherent, recipe, mixture, jam, stem_list, dtype)


def render_jams(jams_text: str, library: StemLibrary, recipe: Recipe, seed: int = -1, coherent: bool = False,
                dtype=np.float32) -> MixResult:
    """Re-render a stored JAMS string with ``scaper.generate_from_jams`` from ``library``.

    The stored source paths are redirected to ``library.fg_path`` (same label/song layout), so
    a dataset made on another machine re-renders here. Arrays as in :func:`make_mixture`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mixture, jam, _ann_list, stem_list = scaper.generate_from_jams(
            io.StringIO(jams_text), fg_path=library.fg_path, bg_path=library.bg_path)
    return _unpack(seed, coherent, recipe, mixture, jam, stem_list, dtype)


class MixtureRenderer:
    """Renders the mixtures of one recipe from one library: ``render(seed) -> MixResult``.

    ``cache_bytes > 0``: holds its own :class:`~sepcluster.generate.source_cache.SourceCache`
    (sized by :func:`~sepcluster.generate.source_cache.library_cache`), installed only while it
    renders; 0: plain Scaper. The output equals :func:`make_mixture` bit for bit either way.
    """

    def __init__(self, recipe: Recipe, library: StemLibrary, cache_bytes: int = 0):
        self.recipe = recipe
        self.library = library
        self.cache: SourceCache | None = library_cache(recipe, library, int(cache_bytes)) if cache_bytes > 0 else None

    def render(self, seed: int, dtype=np.float32) -> MixResult:
        """Mixture ``seed`` (see :func:`make_mixture`)."""
        if self.cache is None:
            return make_mixture(self.recipe, self.library, seed, dtype=dtype)
        with self.cache.installed():
            return make_mixture(self.recipe, self.library, seed, dtype=dtype)

    def preload(self) -> None:
        """Decode the whole library (and run the chains seen so far) now, ahead of the work."""
        if self.cache is not None and self.cache.max_bytes > 0:
            self.cache.preload(self.library.source_paths())
