"""A source cache for Scaper that keeps its output bit for bit: see :class:`SourceCache`.

The cache is an explicit object with a scope: ``with cache.installed(): ...`` routes
``scaper.core``'s soundfile and SoX calls through it for the body and gives Scaper its own
modules back on exit (nested scopes restore the enclosing one). Two caches with different
budgets are two objects; nothing is installed process-wide behind the caller's back.
:func:`library_cache` sizes a cache for one recipe and library.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Iterator

import numpy as np

from ..datasets.library import StemLibrary
from .recipe import Recipe


class SourceCache:
    """A per-process cache of decoded source files that keeps Scaper's output identical.

    Scaper opens every source twice per event (``soundfile.info``), decodes the event's segment
    (``soundfile.read(path, always_2d=True, start=, stop=)``) and runs it through a SoX chain
    (``Transformer.build_array``) that, without pitch shift or time stretch, only converts the
    channel count (``rate -h SR`` at the source's own rate is a no-op in SoX). Inside
    ``with cache.installed():`` (and only there):

    * ``scaper.core.soundfile`` is a proxy that serves ``info`` from memory and ``read`` from the
      whole decoded file kept in memory: PCM 16/24-bit and float sources are stored as float32
      (exact for those formats) and returned as float64 slices, which equal what libsndfile
      returns for the same frames. Any other call goes to soundfile.
    * ``scaper.core.sox.Transformer`` builds transformers whose ``build_array`` serves a
      segment that came from that ``read`` through a *per-sample* chain (no effect but a
      same-rate ``rate``, no dither, no output rate/bits/encoding change: every output frame
      depends on its input frame alone) as a slice of the whole file run through the same chain
      once. The first segment of each file and chain is also run the ordinary way and must
      equal the slice bit for bit, or that file and chain are never served from the cache.
      Chains with pitch shift or time stretch (stateful: a segment's output depends on where it
      starts) always run in SoX.

    Files are decoded whole only while the cache stays under ``max_bytes`` (least recently used
    entries are dropped); a library larger than the budget still gets cached ``info``.
    """

    EXACT_F32 = ("PCM_16", "PCM_24", "PCM_S8", "PCM_U8", "FLOAT")

    def __init__(self, max_bytes: int = 1 << 30):
        import soundfile

        self._sf = soundfile
        self.max_bytes = int(max_bytes)
        self._info: dict[str, object] = {}
        self._data: OrderedDict[object, tuple[np.ndarray, int]] = OrderedDict()  # file or chain key -> array
        self._bytes = 0
        self._lock = threading.Lock()
        self._segment = threading.local()  # the last segment ``read`` returned: (array, file, start, stop)
        self.refused: set = set()         # (file, chain) keys whose whole-file output did not match
        self._chains: dict = {}           # chain -> a callable that runs it the ordinary way (for preload)
        self.hits = 0
        self.misses = 0
        self.chain_hits = 0
        self._sox_proxy = None  # scaper.core.sox's stand-in, made on first install

    @contextlib.contextmanager
    def installed(self) -> Iterator["SourceCache"]:
        """Route ``scaper.core``'s soundfile and SoX calls through this cache for the body."""
        import scaper.core as core

        if self._sox_proxy is None:
            self._sox_proxy = _SoxModule(core.sox, _caching_transformer(core.sox.Transformer, self))
        saved = (core.soundfile, core.sox)
        core.soundfile, core.sox = self, self._sox_proxy
        try:
            yield self
        finally:
            core.soundfile, core.sox = saved

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
        self._segment.last = None
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
        self._segment.last = (out, file, start, stop)
        return out, rate

    def __getattr__(self, name):  # write, SoundFile, ... go to soundfile itself
        return getattr(self._sf, name)

    # SoX chains (through the Transformer proxy) ---------------------------------------
    def transform_segment(self, tfm, array, sample_rate_in, build):
        """``build(array)``'s result for a per-sample chain, from the cache; None: run SoX.

        tfm: the pysox Transformer; array: the segment Scaper passes (it must be the array
        :meth:`read` returned last); build: runs the chain on an array the ordinary way.
        """
        last = getattr(self._segment, "last", None)
        self._segment.last = None
        if last is None or last[0] is not array or not per_sample_chain(tfm, sample_rate_in):
            return None
        _, file, start, stop = last
        chain = (float(sample_rate_in), tuple(tfm.globals), tuple(tfm.effects),
                 tuple(sorted((k, repr(v)) for k, v in tfm.output_format.items())))
        key = ("sox", file) + chain
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                self._data.move_to_end(key)
                self.chain_hits += 1
        if entry is not None:
            whole, _ = entry
            return whole[slice(start, stop)] / _INT32_SCALE
        if key in self.refused:
            return None
        self._chains.setdefault(chain, build)
        expected = build(array)
        self._cache_chain(key, file, build, start, stop, expected)
        return expected

    def preload(self, files) -> None:
        """Decode ``files`` and run each chain seen so far over each whole file, ahead of the work.

        Every file's chain output is checked like a first segment is (a one-second segment run
        the ordinary way must equal the slice), so preloaded and lazily cached entries are alike.
        """
        for file in files:
            entry = self._load(file)
            if entry is None:
                continue
            data = entry[0]
            for chain, build in list(self._chains.items()):
                key = ("sox", file) + chain
                if key in self._data or key in self.refused:
                    continue
                start = data.shape[0] // 3
                stop = min(data.shape[0], start + int(chain[0]))
                expected = build(np.array(data[start:stop], dtype=np.float64))
                self._cache_chain(key, file, build, start, stop, expected)

    def _cache_chain(self, key, file: str, build, start: int, stop, expected: np.ndarray) -> None:
        """Run ``build`` over the whole ``file``; keep it if its slice equals ``expected``, else refuse ``key``."""
        source = self._load(file)
        whole = None
        if source is not None:
            out = build(np.array(source[0], dtype=np.float64))
            if out.shape[0] == source[0].shape[0] and np.array_equal(out[slice(start, stop)], expected):
                whole = _exact_int32(out)
        if whole is None:
            self.refused.add(key)
            return
        whole.setflags(write=False)
        self._store(key, whole)

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
        self._store(file, data, rate)
        return data, rate

    def _store(self, key, data: np.ndarray, rate: int = 0) -> None:
        with self._lock:
            self._data[key] = (data, rate)
            self._bytes += data.nbytes
            while self._bytes > self.max_bytes and len(self._data) > 1:
                _, (old, _) = self._data.popitem(last=False)
                self._bytes -= old.nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes


def source_cache_bytes(recipe: Recipe, library: StemLibrary) -> int:
    """Memory a :class:`SourceCache` needs to hold all of ``library`` for ``recipe``.

    The decoded sources (float32), plus, when the recipe has neither pitch shift nor time
    stretch, each file through Scaper's channel conversion (int32, ``recipe.channels`` per frame).
    """
    need = library.decoded_bytes
    if recipe.event.pitch_shift is None and recipe.event.time_stretch is None:
        need += library.total_frames * recipe.channels * 4
    return need


_INT32_SCALE = 1 << 31  # soxbindings returns SoX's int32 samples divided by 2**31


def _exact_int32(audio: np.ndarray) -> np.ndarray | None:
    """``audio`` (SoX output: int32 / 2**31, float64) as the int32 it came from; None if not exact."""
    scaled = audio * _INT32_SCALE
    if scaled.size and (scaled.min() < -_INT32_SCALE or scaled.max() > _INT32_SCALE - 1):
        return None
    ints = scaled.astype(np.int32)
    return ints if np.array_equal(ints / _INT32_SCALE, audio) else None


def per_sample_chain(tfm, sample_rate_in) -> bool:
    """True when the pysox transformer's chain maps every frame on its own (no state, no dither).

    Allowed: no effect, or ``rate [flags] R`` with R the input rate (SoX drops it), channel
    conversion by the output format, and no change of output rate, bit depth or encoding.
    """
    if "-D" not in tfm.globals or any(v is not None for v in (tfm.input_format or {}).values()):
        return False
    out = tfm.output_format or {}
    if any(out.get(k) is not None for k in ("file_type", "bits", "encoding")):
        return False
    if out.get("rate") is not None and float(out["rate"]) != float(sample_rate_in):
        return False
    effects = list(tfm.effects)
    if not effects:
        return True
    if effects[0] != "rate" or not all(a.startswith("-") for a in effects[1:-1]) or len(effects) < 2:
        return False
    try:
        return float(effects[-1]) == float(sample_rate_in)
    except ValueError:
        return False


class _SoxModule:
    """Stands in for ``scaper.core.sox``: ``Transformer`` is the caching subclass, the rest is SoX."""

    def __init__(self, sox_module, transformer):
        self._sox = sox_module
        self.Transformer = transformer

    def __getattr__(self, name):
        return getattr(self._sox, name)


def _caching_transformer(base, cache: SourceCache):
    class CachedSegmentTransformer(base):
        """A pysox Transformer whose per-sample chains on cached segments come from the cache."""

        def build_array(self, input_filepath=None, input_array=None, sample_rate_in=None, extra_args=None):
            if input_filepath is None and extra_args is None and input_array is not None:
                out = cache.transform_segment(
                    self, input_array, sample_rate_in,
                    lambda array: base.build_array(self, input_array=array, sample_rate_in=sample_rate_in))
                if out is not None:
                    return out
            return base.build_array(self, input_filepath=input_filepath, input_array=input_array,
                                    sample_rate_in=sample_rate_in, extra_args=extra_args)

    return CachedSegmentTransformer


def library_cache(recipe: Recipe, library: StemLibrary, budget_bytes: int) -> SourceCache:
    """A :class:`SourceCache` for rendering ``recipe`` from ``library`` within ``budget_bytes``.

    Whole files (and their channel conversion) are kept only when all of the library fits the
    budget (:func:`source_cache_bytes`): a larger library would be decoded whole, file after
    file, to use seconds of each. Otherwise only file info is cached.
    """
    need = source_cache_bytes(recipe, library)
    return SourceCache(budget_bytes if 0 < need <= budget_bytes else 0)
