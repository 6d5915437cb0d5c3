"""Stem audio for training: windows of files at the training rate and channel count, cached.

Arrays are float32 ``(samples, channels)``. :class:`AudioReader` reads whole files (kept in an
LRU cache when they fit) or windows of them; :func:`local_copy_of_library` maps an ``s3://``
library to local copies once per worker.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections import OrderedDict
from urllib.parse import urlparse

import numpy as np

from .. import storage


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``(samples, c)`` -> ``(samples, channels)``: mono is repeated, stereo averaged to mono."""
    if audio.shape[1] == channels:
        return audio
    if audio.shape[1] == 1:
        return np.repeat(audio, channels, axis=1)
    if channels == 1:
        return audio.mean(axis=1, keepdims=True)
    return audio[:, :channels]


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad ``(samples, channels)`` to ``length`` samples."""
    if audio.shape[0] >= length:
        return audio[:length]
    return np.pad(audio, ((0, length - audio.shape[0]), (0, 0)))


def excerpt(audio: np.ndarray, start: int, length: int, sr_in: int, sr_out: int) -> np.ndarray:
    """``length`` samples at ``sr_out`` from ``audio`` (at ``sr_in``) starting at output sample ``start``."""
    if sr_in == sr_out:
        return fit_length(audio[start:start + length], length)
    from ..audio import resample

    a = int(math.floor(start * sr_in / sr_out))
    n = int(math.ceil(length * sr_in / sr_out)) + 16
    return fit_length(resample(np.ascontiguousarray(audio[a:a + n]), sr_in, sr_out), length)


class AudioReader:
    """Reads stems at one sample rate and channel count; keeps decoded files in an LRU cache.

    Arrays are float32 ``(samples, channels)``. With ``cache=False``, and for files larger
    than a quarter of ``max_bytes``, windows are read from the file (soundfile formats)
    instead of decoding and caching the whole file.
    """

    def __init__(self, sample_rate: int, channels: int, max_bytes: int = 1 << 30, cache: bool = True):
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.max_bytes = int(max_bytes)
        self.cache = bool(cache)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._info: dict[str, tuple[int, int]] = {}

    def _native(self, path: str) -> tuple[int, int]:
        if path not in self._info:
            from ..audio import audio_info

            info = audio_info(path)
            self._info[path] = (int(info.frames), int(info.sample_rate))
        return self._info[path]

    def length(self, path: str) -> int:
        """Samples of ``path`` at the reader's rate."""
        frames, sr = self._native(path)
        return int(frames * self.sample_rate // sr) if sr != self.sample_rate else frames

    def full(self, path: str) -> np.ndarray:
        """The whole file, ``(samples, channels)`` at the reader's rate (cached when it fits)."""
        cached = self._cache.get(path)
        if cached is not None:
            self._cache.move_to_end(path)
            return cached
        from ..audio import read_audio

        audio, _ = read_audio(path, sample_rate=self.sample_rate)
        audio = np.ascontiguousarray(to_channels(audio, self.channels), dtype=np.float32)
        if self.cache and audio.nbytes <= self.max_bytes // 4:
            self._cache[path] = audio
            self._bytes += audio.nbytes
            while self._bytes > self.max_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.nbytes
        return audio

    def window(self, path: str, start: int, length: int) -> np.ndarray:
        """``length`` samples from ``start`` (reader's rate), zero-padded past the end."""
        frames, sr = self._native(path)
        nbytes = frames * self.channels * 4
        if path in self._cache or (self.cache and nbytes <= self.max_bytes // 4) or not path.lower().endswith(
                (".wav", ".flac", ".ogg", ".aif", ".aiff")):
            return fit_length(self.full(path)[start:start + length], length)
        import soundfile as sf

        a = int(math.floor(start * sr / self.sample_rate))
        n = int(math.ceil(length * sr / self.sample_rate)) + 16
        audio, _ = sf.read(path, start=a, stop=min(frames, a + n), dtype="float32", always_2d=True)
        audio = to_channels(audio, self.channels)
        if sr != self.sample_rate:
            from ..audio import resample

            audio = resample(audio, sr, self.sample_rate)
        return fit_length(np.ascontiguousarray(audio, dtype=np.float32), length)


def local_copy_of_library(library: dict) -> dict:
    """Map every ``s3://`` file of ``{label: {song: uri}}`` to a local cached copy."""
    out: dict = {}
    cache = os.path.join(tempfile.gettempdir(), "sepcluster-train-stems")
    for label, files in library.items():
        out[label] = {}
        for song, uri in files.items():
            if not storage.is_remote(uri):
                out[label][song] = urlparse(uri).path if str(uri).startswith("file://") else uri
                continue
            digest = hashlib.sha256(storage.redact(uri).encode()).hexdigest()[:20]
            dest = os.path.join(cache, digest + os.path.splitext(uri)[1])
            if not os.path.exists(dest):
                os.makedirs(cache, exist_ok=True)
                tmp = f"{dest}.part-{os.getpid()}"
                with open(tmp, "wb") as f:
                    f.write(storage.read_bytes(uri))
                os.replace(tmp, dest)
            out[label][song] = dest
    return out
