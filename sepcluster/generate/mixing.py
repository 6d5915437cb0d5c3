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
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..compat import scaper
from .recipe import Recipe, StemLibrary

EVENT_PARAMS = ("source_file", "source_time", "event_time", "event_duration", "snr", "pitch_shift", "time_stretch")


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


# --------------------------------------------------------------------------- source cache

class SourceCache:
    """A per-process cache of decoded source files that keeps Scaper's output identical.

    Scaper opens every source twice per event (``soundfile.info``) and decodes the event's
    segment (``soundfile.read(path, always_2d=True, start=, stop=)``). With the cache
    installed, ``scaper.core.soundfile`` is a proxy that serves ``info`` from memory and
    ``read`` from the whole decoded file kept in memory: PCM 16/24-bit and float sources are
    stored as float32 (exact for those formats) and returned as float64 slices, which equal
    what libsndfile returns for the same frames. Any other call goes to soundfile. Files are
    decoded whole only while the cache stays under ``max_bytes`` (least recently used files
    are dropped); a library larger than the budget still gets cached ``info``.
    """

    EXACT_F32 = ("PCM_16", "PCM_24", "PCM_S8", "PCM_U8", "FLOAT")

    def __init__(self, max_bytes: int = 1 << 30):
        import soundfile

        self._sf = soundfile
        self.max_bytes = int(max_bytes)
        self._info: dict[str, object] = {}
        self._data: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # soundfile API used by scaper.core ----------------------------------------------
    def info(self, file, *args, **kwargs):
        if args or kwargs or not isinstance(file, str):
            return self._sf.info(file, *args, **kwargs)
        found = self._info.get(file)
        if found is None:
            found = self._sf.info(file)
            self._info[file] = found
        return found

    def read(self, file, frames=-1, start=0, stop=None, dtype="float64", always_2d=False, **kwargs):
        if (kwargs or not isinstance(file, str) or dtype != "float64" or frames != -1
                or self.max_bytes <= 0):
            return self._sf.read(file, frames=frames, start=start, stop=stop, dtype=dtype,
                                 always_2d=always_2d, **kwargs)
        entry = self._load(file)
        if entry is None:
            return self._sf.read(file, start=start, stop=stop, always_2d=always_2d)
        data, rate = entry
        out = np.array(data[slice(start, stop)], dtype=np.float64)
        if not always_2d and out.shape[1] == 1:
            out = out[:, 0]
        return out, rate

    def __getattr__(self, name):  # write, SoundFile, ... go to soundfile itself
        return getattr(self._sf, name)

    # --------------------------------------------------------------------------------
    def _load(self, file: str):
        with self._lock:
            entry = self._data.get(file)
            if entry is not None:
                self._data.move_to_end(file)
                self.hits += 1
                return entry
        info = self.info(file)
        exact = info.subtype in self.EXACT_F32
        nbytes = int(info.frames) * int(info.channels) * (4 if exact else 8)
        if nbytes > self.max_bytes // 4:
            return None  # too large to be worth holding; read the segment directly
        data, rate = self._sf.read(file, dtype="float32" if exact else "float64", always_2d=True)
        data.setflags(write=False)
        with self._lock:
            self.misses += 1
            self._data[file] = (data, rate)
            self._bytes += data.nbytes
            while self._bytes > self.max_bytes and len(self._data) > 1:
                _, (old, _) = self._data.popitem(last=False)
                self._bytes -= old.nbytes
        return data, rate

    @property
    def nbytes(self) -> int:
        return self._bytes


_installed: SourceCache | None = None


def install_source_cache(max_bytes: int = 1 << 30) -> SourceCache:
    """Route scaper's soundfile calls in this process through a :class:`SourceCache` (idempotent)."""
    global _installed
    import scaper.core as core

    if _installed is None:
        _installed = SourceCache(max_bytes)
        core.soundfile = _installed
    return _installed


def uninstall_source_cache() -> None:
    """Give scaper its soundfile module back."""
    global _installed
    import scaper.core as core

    if _installed is not None:
        core.soundfile = _installed._sf
        _installed = None
